"""Fixtures of the site life cycle tests (backup, restore, backup-delete, migrate, clone,
login-reset) on the harness' real servers.

- `lc_env` (module): a static inventory of both servers with a platform on each (the roles'
  way, tests.e2e.roles.helpers.Env), servers and platforms verified.
- `lc_frontend` (module): a SQLite Aegir database whose servers are the harness servers
  (registered as `aegir server add` would, ssh as root with the harness key), a platform on
  each, both verified through the queue runner; `run_queue()` drains the queue with the real
  playbooks.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from sqlalchemy import select

from aegir_ansible import paths
from aegir_ansible.db import init_schema, make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend
from aegir_ansible.queue import admin
from aegir_ansible.queue.worker import Worker
from tests.e2e.roles.helpers import Env, settings_secret  # noqa: F401 (re-exported)

REAL_PLAYBOOKS = paths.playbooks_dir()


def archive_members(path) -> dict[str, bytes]:
    """{name: content} of every regular file of a .tar.gz."""
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[member.name] = tar.extractfile(member).read()
    return out


def archive_bytes(path) -> bytes:
    """The whole decompressed tar stream (to grep it for secrets)."""
    import gzip

    return gzip.decompress(Path(path).read_bytes())


@pytest.fixture(scope="module")
def lc_env(fresh_servers, test_db_server, make_platform, run_playbook, tmp_path_factory):
    """Both servers reset, platform_<key> on each, servers and platforms verified."""
    e = Env(fresh_servers, test_db_server, make_platform, run_playbook, tmp_path_factory.mktemp("lc"),
            platform_label="lc", platform_name="platform_{key}", db_prefix="l", db_name_max=16)
    e.run("verify.yml", limit="aegir_servers:aegir_platforms").assert_ok()
    yield e
    e.cleanup()


# -- a frontend (SQLite) whose servers are the harness servers ------------------------------

FAST = {"poll_interval": "0.2", "heartbeat_interval": "0.5", "retry_max_attempts": "1"}


class LcFrontend:
    def __init__(self, url: str, servers, db, make_platform):
        self.url = url
        self.servers = servers
        self.db = db
        self.engine = make_engine(url)
        init_schema(self.engine)
        for k, v in FAST.items():
            admin.set_setting(self.engine, k, v)
        self.Session = make_sessionmaker(self.engine)
        self.platforms: dict[str, str] = {}
        self.roots: dict[str, str] = {}
        for key, server in servers.items():
            self.write(lambda fe, key=key, server=server: fe.add_server(
                f"{key}.lc.example.test", name=f"server_{key}", http=server.http_service,
                db="mysql", db_user=db.admin_user, db_password=db.admin_password,
                address=server.address, ssh_user="root", ssh_private_key_file=str(server.ssh_private_key),
                aegir_root=server.aegir_root, script_user=server.script_user,
                web_group=server.web_group, http_listen_address=server.address,
                http_test_cmd=list(server.http_test_cmd), http_reload_cmd=list(server.http_reload_cmd),
                php_fastcgi=server.php_fastcgi, db_grant_host=server.db_grant_host, db_host=db.host,
                queue_verify=True))
            root = make_platform(server, "lcq")
            self.roots[key] = root
            self.platforms[key] = f"platform_lcq_{key}"
            self.write(lambda fe, key=key, root=root: fe.add_platform(
                f"lcq {key}", root, f"server_{key}", name=f"platform_lcq_{key}", queue_verify=True))

    def write(self, fn):
        with self.Session() as s, s.begin():
            return fn(Frontend(s))

    def task(self, task_type, target, args=None) -> int:
        return self.write(lambda fe: fe.add_task(task_type, target, args))

    def task_with_raw_args(self, task_type, target, args: dict[str, str]) -> int:
        """A task whose argument names hostmaster writes but Frontend.add_task refuses (bids)."""
        nid = self.task(task_type, target)
        with self.Session() as s, s.begin():
            vid = s.get(m.Node, nid).vid
            for k, v in args.items():
                s.add(m.HostingTaskArgument(vid=vid, nid=nid, name=k, value=v))
        return nid

    def run_queue(self):
        Worker(self.engine, once=True, install_signals=False, playbooks_dir=REAL_PLAYBOOKS).run()

    def status(self, nid) -> int:
        with self.Session() as s:
            return s.get(m.HostingTask, s.get(m.Node, nid).vid).task_status

    def log_text(self, nid) -> str:
        with self.Session() as s:
            vid = s.get(m.Node, nid).vid
            rows = s.execute(select(m.HostingTaskLog.type, m.HostingTaskLog.message)
                             .where(m.HostingTaskLog.vid == vid).order_by(m.HostingTaskLog.lid))
            return "\n".join(f"[{t}] {msg}" for t, msg in rows)

    def assert_ok(self, nid):
        assert self.status(nid) in (m.TASK_SUCCESS, m.TASK_WARNING), self.log_text(nid)

    def site(self, ref):
        """(node, hosting_site row, context name) of a site by context name or nid."""
        with self.Session() as s:
            ctx = Frontend(s).find(ref, types=("site",))
            node = s.get(m.Node, ctx.nid)
            row = s.get(m.HostingSite, node.vid)
            s.expunge_all()
            return node, row, ctx.name

    def nid(self, name) -> int:
        with self.Session() as s:
            return Frontend(s).find(name).nid

    def query(self, stmt):
        with self.Session() as s:
            return s.execute(stmt).all()

    def close(self):
        self.engine.dispose()


@pytest.fixture(scope="module")
def lc_frontend(fresh_servers, test_db_server, make_platform, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lcq")
    fe = LcFrontend(f"sqlite:///{tmp / 'aegir.sqlite'}", fresh_servers, test_db_server, make_platform)
    fe.run_queue()  # server verify, then the platform verifies it queues
    fe.run_queue()
    with fe.Session() as s:
        bad = s.execute(select(m.HostingTask.nid, m.HostingTask.task_status)
                        .join(m.Node, m.Node.vid == m.HostingTask.vid)
                        .where(m.HostingTask.task_status != m.TASK_SUCCESS)).all()
    assert not bad, "\n".join(fe.log_text(n) for n, _ in bad)
    yield fe
    dbs = [r.db_name for (r,) in fe.query(select(m.HostingSite)) if r.db_name]
    for name in dbs:
        try:
            test_db_server.drop_database(name)
        except Exception:  # noqa: BLE001
            pass
        for host in test_db_server.user_hosts(name):
            try:
                test_db_server.drop_user(name, host)
            except Exception:  # noqa: BLE001
                pass
    fe.close()
