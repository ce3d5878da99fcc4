"""Synthetic Aegir frontends of any size, written with bulk inserts in hostmaster's shape
(node + node_revision per entity, hosting rows on the same vid, contexts, services)."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import Engine, insert

from aegir_ansible import defaults
from aegir_ansible.db import models as m
from aegir_ansible.db.backend import ServerSettings, SiteSettings


def build(engine: Engine, *, servers: int = 10, platforms: int = 100, sites: int = 10_000,
          server_settings: dict | None = None, platform_root: str = "/var/aegir/platforms",
          site_status: int = m.SITE_ENABLED) -> dict:
    """Fill an initialised, empty database. Returns the nids created, by kind.

    Server 1 also runs the db service; platforms are spread over the servers and sites over
    the platforms round-robin; every third site has a www alias.
    """
    now = int(time.time())
    nid = 0
    nodes, revs = [], []

    def node(type_, title):
        nonlocal nid
        nid += 1
        nodes.append({"nid": nid, "vid": nid, "type": type_, "language": "", "title": title,
                      "uid": 1, "status": 1, "created": now, "changed": now, "comment": 0,
                      "promote": 0, "sticky": 0, "tnid": 0, "translate": 0})
        revs.append({"nid": nid, "vid": nid, "uid": 1, "title": title, "log": "",
                     "timestamp": now, "status": 1, "comment": 0, "promote": 0, "sticky": 0})
        return nid

    ctx, srv, svc, ips, dbs, settings = [], [], [], [], [], []
    server_nids = []
    for i in range(servers):
        title = f"web{i}.bench.example"
        n = node("server", title)
        server_nids.append(n)
        ctx.append({"nid": n, "name": f"server_web{i}benchexample"})
        srv.append({"vid": n, "nid": n, "human_name": title, "verified": now, "status": 1})
        svc.append({"vid": n, "nid": n, "service": "http", "type": "nginx" if i % 2 == 0 else "apache",
                    "restart_cmd": None, "port": 80, "available": 1})
        ips.append({"nid": n, "ip_address": f"10.1.{i // 250}.{i % 250 + 1}"})
        settings.append({"nid": n, "connection": "ssh", "ssh_user": defaults.SSH_USER,
                         "ssh_port": defaults.SSH_PORT,
                         "python_interpreter": defaults.PYTHON_INTERPRETER,
                         "aegir_root": defaults.AEGIR_ROOT, "script_user": defaults.SCRIPT_USER,
                         "web_group": defaults.WEB_GROUP,
                         "http_listen_address": defaults.HTTP_LISTEN_ADDRESS,
                         "php_fastcgi": defaults.PHP_FASTCGI, **(server_settings or {})})
        if i == 0:
            svc.append({"vid": n, "nid": n, "service": "db", "type": "mysql", "restart_cmd": None,
                        "port": 3306, "available": 1})
            dbs.append({"vid": n, "nid": n, "db_user": "aegir_root", "db_passwd": "bench-secret"})
    profile = node("package", "standard")
    pkgs = [{"vid": profile, "nid": profile, "package_type": "profile", "short_name": "standard",
             "old_short_name": "", "description": ""}]
    plat_rows, plat_nids = [], []
    for i in range(platforms):
        n = node("platform", f"Bench {i}")
        plat_nids.append(n)
        ctx.append({"nid": n, "name": f"platform_Bench{i}"})
        plat_rows.append({"vid": n, "nid": n, "publish_path": f"{platform_root}/p{i}", "makefile": "",
                          "web_server": server_nids[i % servers], "verified": now, "status": 1,
                          "make_working_copy": 0})
    site_rows, alias_rows, site_settings, site_nids = [], [], [], []
    for i in range(sites):
        uri = f"s{i:05d}.bench.example"
        n = node("site", uri)
        site_nids.append(n)
        ctx.append({"nid": n, "name": uri})
        site_rows.append({"vid": n, "nid": n, "client": 0, "db_server": server_nids[0],
                          "db_name": f"s{i:05d}benchexamp", "platform": plat_nids[i % platforms],
                          "profile": profile, "language": "en", "last_cron": None,
                          "cron_key": secrets.token_hex(8), "verified": now, "status": site_status})
        site_settings.append({"nid": n, "cron_interval": 3600})
        if i % 3 == 0:
            alias_rows.append({"vid": n, "nid": n, "alias": f"www.{uri}", "automatic": 0,
                               "redirection": ""})
    with engine.begin() as c:
        for table, rows in ((m.Node, nodes), (m.NodeRevision, revs), (m.HostingContext, ctx),
                            (m.HostingServer, srv), (m.HostingService, svc),
                            (m.HostingIpAddress, ips), (m.HostingDbServer, dbs),
                            (ServerSettings, settings), (m.HostingPackage, pkgs),
                            (m.HostingPlatform, plat_rows), (m.HostingSite, site_rows),
                            (m.HostingSiteAlias, alias_rows), (SiteSettings, site_settings)):
            for start in range(0, len(rows), 5000):
                if rows[start:start + 5000]:
                    c.execute(insert(table), rows[start:start + 5000])
    return {"servers": server_nids, "platforms": plat_nids, "sites": site_nids}


def queue_tasks(engine: Engine, task_type: str, rids: list[int], created: int | None = None) -> list[int]:
    """Queue one task of `task_type` on each target node id, as hosting_add_task() does
    (a task node + revision in QUEUED state), with bulk inserts. Returns the task nids."""
    from sqlalchemy import func, select

    now = created or int(time.time())
    # SQLite: the write lock at BEGIN. A deferred transaction that reads, then writes after a
    # runner committed, fails at once with "database is locked" (no busy wait in WAL mode).
    with engine.connect().execution_options(sqlite_immediate=True) as c, c.begin():
        base = max(c.execute(select(func.max(m.Node.nid))).scalar() or 0,
                   c.execute(select(func.max(m.NodeRevision.vid))).scalar() or 0,
                   c.execute(select(func.max(m.Node.vid))).scalar() or 0)
        titles = dict(c.execute(select(m.Node.nid, m.Node.title).where(m.Node.nid.in_(rids))).all()) \
            if len(rids) <= 5000 else {}
        nodes, revs, tasks, nids = [], [], [], []
        for i, rid in enumerate(rids):
            n = base + 1 + i
            nids.append(n)
            title = f"{task_type.capitalize()}: {titles.get(rid, rid)}"
            nodes.append({"nid": n, "vid": n, "type": "task", "language": "", "title": title,
                          "uid": 1, "status": 1, "created": now, "changed": now, "comment": 0,
                          "promote": 0, "sticky": 0, "tnid": 0, "translate": 0})
            revs.append({"nid": n, "vid": n, "uid": 1, "title": title, "log": "",
                         "timestamp": now, "status": 1, "comment": 0, "promote": 0, "sticky": 0})
            tasks.append({"vid": n, "nid": n, "task_type": task_type, "rid": rid,
                          "task_status": m.TASK_QUEUED, "executed": 0, "delta": 0})
        for table, rows in ((m.Node, nodes), (m.NodeRevision, revs), (m.HostingTask, tasks)):
            for start in range(0, len(rows), 5000):
                c.execute(insert(table), rows[start:start + 5000])
    return nids
