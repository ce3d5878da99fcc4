"""Read-side queries shared by the CLI: listings of servers, platforms, sites and tasks.

Each listing is one SELECT over current revisions (join on node.vid), never a query per
row.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import models as m


def servers(session: Session, include_deleted: bool = False) -> list[dict]:
    q = (
        select(m.Node.nid, m.HostingContext.name, m.Node.title, m.HostingServer.status,
               m.HostingServer.verified)
        .join(m.HostingServer, m.HostingServer.vid == m.Node.vid)
        .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
        .order_by(m.Node.nid)
    )
    if not include_deleted:
        q = q.where(m.HostingServer.status != m.SERVER_DELETED)
    services: dict[int, list[str]] = {}
    for nid, service, type_ in session.execute(
        select(m.HostingService.nid, m.HostingService.service, m.HostingService.type)
        .join(m.Node, m.Node.vid == m.HostingService.vid)
    ):
        services.setdefault(nid, []).append(f"{service}:{type_}")
    return [
        {"nid": nid, "name": name, "hostname": title,
         "status": m.ServerStatus.label_of(status),
         "services": " ".join(sorted(services.get(nid, []))), "verified": verified}
        for nid, name, title, status, verified in session.execute(q)
    ]


def platforms(session: Session, include_deleted: bool = False) -> list[dict]:
    server_ctx = select(m.HostingContext.nid, m.HostingContext.name).subquery()
    q = (
        select(m.Node.nid, m.HostingContext.name, m.Node.title, m.HostingPlatform.publish_path,
               server_ctx.c.name, m.HostingPlatform.status, m.HostingPlatform.verified)
        .join(m.HostingPlatform, m.HostingPlatform.vid == m.Node.vid)
        .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
        .outerjoin(server_ctx, server_ctx.c.nid == m.HostingPlatform.web_server)
        .order_by(m.Node.nid)
    )
    if not include_deleted:
        q = q.where(m.HostingPlatform.status != m.PLATFORM_DELETED)
    return [
        {"nid": nid, "name": name, "title": title, "root": root, "server": server,
         "status": m.PlatformStatus.label_of(status), "verified": verified}
        for nid, name, title, root, server, status, verified in session.execute(q)
    ]


def sites(session: Session, include_deleted: bool = False) -> list[dict]:
    plat_ctx = select(m.HostingContext.nid, m.HostingContext.name).subquery()
    db_ctx = select(m.HostingContext.nid.label("nid"), m.HostingContext.name.label("name")).subquery()
    q = (
        select(m.Node.nid, m.Node.title, plat_ctx.c.name, db_ctx.c.name, m.HostingSite.status,
               m.HostingSite.db_name, m.HostingSite.verified)
        .join(m.HostingSite, m.HostingSite.vid == m.Node.vid)
        .outerjoin(plat_ctx, plat_ctx.c.nid == m.HostingSite.platform)
        .outerjoin(db_ctx, db_ctx.c.nid == m.HostingSite.db_server)
        .where(m.Node.type == "site")
        .order_by(m.Node.nid)
    )
    if not include_deleted:
        q = q.where(m.HostingSite.status != m.SITE_DELETED)
    aliases: dict[int, list[str]] = {}
    for nid, alias in session.execute(
        select(m.HostingSiteAlias.nid, m.HostingSiteAlias.alias)
        .join(m.Node, m.Node.vid == m.HostingSiteAlias.vid)
        .order_by(m.HostingSiteAlias.alias)
    ):
        aliases.setdefault(nid, []).append(alias)
    return [
        {"nid": nid, "uri": uri, "platform": plat, "db_server": db,
         "status": m.SiteStatus.label_of(status), "db_name": db_name or "",
         "aliases": " ".join(aliases.get(nid, [])), "verified": verified}
        for nid, uri, plat, db, status, db_name, verified in session.execute(q)
    ]


def tasks(session: Session, status: int | None = None, limit: int = 50,
          target: int | None = None, task_type: str | None = None) -> list[dict]:
    target_ctx = select(m.HostingContext.nid, m.HostingContext.name).subquery()
    q = (
        select(m.Node.nid, m.Node.vid, m.HostingTask.task_type, target_ctx.c.name,
               m.HostingTask.rid, m.HostingTask.task_status, m.HostingTask.executed,
               m.HostingTask.delta, m.Node.created)
        .join(m.HostingTask, m.HostingTask.vid == m.Node.vid)
        .outerjoin(target_ctx, target_ctx.c.nid == m.HostingTask.rid)
        .where(m.Node.type == "task")
        .order_by(m.Node.nid.desc())
        .limit(limit)
    )
    if status is not None:
        q = q.where(m.HostingTask.task_status == status)
    if target is not None:
        q = q.where(m.HostingTask.rid == target)
    if task_type is not None:
        q = q.where(m.HostingTask.task_type == task_type)
    return [
        {"nid": nid, "vid": vid, "type": type_, "target": name or f"#{rid}",
         "status": m.TaskStatus.label_of(st), "executed": executed or 0,
         "delta": delta or 0, "created": created}
        for nid, vid, type_, name, rid, st, executed, delta, created in session.execute(q)
    ]


def task_arguments(session: Session, nid: int) -> dict[str | None, str | None]:
    return {
        name: value
        for name, value in session.execute(
            select(m.HostingTaskArgument.name, m.HostingTaskArgument.value)
            .join(m.Node, m.Node.vid == m.HostingTaskArgument.vid)
            .where(m.HostingTaskArgument.nid == nid)
        )
    }


def task_log(session: Session, nid: int, after_lid: int = 0) -> list[dict]:
    """Log lines of a task's current revision (as hostmaster shows them)."""
    return [
        {"lid": lid, "type": type_, "message": message, "timestamp": ts}
        for lid, type_, message, ts in session.execute(
            select(m.HostingTaskLog.lid, m.HostingTaskLog.type, m.HostingTaskLog.message,
                   m.HostingTaskLog.timestamp)
            .join(m.Node, m.Node.vid == m.HostingTaskLog.vid)
            .where(m.HostingTaskLog.nid == nid, m.HostingTaskLog.lid > after_lid)
            .order_by(m.HostingTaskLog.lid)
        )
    ]


# -- tenant isolation: host names and databases no two live sites may share --------------------

@functools.cache
def reserved_db_names() -> frozenset[str]:
    """The database server's own schema and account names (lower-cased), from the one list in
    roles/aegir_db/vars/main.yml that the role checks too."""
    import yaml

    from .paths import project_root

    doc = yaml.safe_load((project_root() / "roles" / "aegir_db" / "vars" / "main.yml").read_text())
    return frozenset(str(n).lower() for n in doc["_aegir_db_reserved_names"])


def is_reserved_db_name(name: str) -> bool:
    return name.lower() in reserved_db_names()


@dataclass
class SiteClaims:
    """What one live site claims: its host names and its database (db server nid, name)."""

    nid: int
    uri: str
    aliases: list[str]
    db_server: int
    db_name: str


@dataclass
class Conflicts:
    """Per site nid: why its host names or its database may not be used, and the aliases it
    must not be served under (shared with another live site)."""

    names: dict[int, list[str]] = field(default_factory=dict)
    contested: dict[int, set[str]] = field(default_factory=dict)
    db: dict[int, list[str]] = field(default_factory=dict)


def isolation_conflicts(sites: list[SiteClaims], db_owners: dict[tuple[int, str], int],
                        name_owners: dict[str, int] | None = None) -> Conflicts:
    """Host names and databases claimed by more than one live site.

    A name stays the site's that was last served under it by a successful task (`name_owners`,
    {name: site nid}); failing that, the site whose uri it is; the others naming it are in
    conflict. A name no claimant holds that way is nobody's: all of them are in conflict, since
    the backend cannot tell who is right. A database (db server,
    name) recorded in `db_owners` ({(db_server, db_name): site nid}) is its recorder's; else one
    named by several live sites is nobody's; a reserved name is never a site's."""
    out = Conflicts()
    by_nid = {s.nid: s for s in sites}
    claims: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for s in sites:
        claims[s.uri.lower()].append((s.nid, "uri"))
        for alias in dict.fromkeys(a.lower() for a in s.aliases):
            if alias != s.uri.lower():
                claims[alias].append((s.nid, "alias"))
    for name, who in claims.items():
        nids = {nid for nid, _kind in who}
        if len(nids) < 2:
            continue
        uri_owners = {nid for nid, kind in who if kind == "uri"}
        keeper = (name_owners or {}).get(name)
        if keeper not in nids:
            keeper = next(iter(uri_owners)) if len(uri_owners) == 1 else None
        for nid, kind in who:
            if nid == keeper:
                continue
            others = sorted({by_nid[o].uri for o, _k in who if o != nid})
            out.names.setdefault(nid, []).append(
                f"{kind} {name!r} is already used by site {', '.join(map(repr, others))}")
            out.contested.setdefault(nid, set()).add(name)
    users: dict[tuple[int, str], list[int]] = defaultdict(list)
    for s in sites:
        if s.db_name:
            users[(s.db_server, s.db_name)].append(s.nid)
    for s in sites:
        if not s.db_name:
            continue
        key = (s.db_server, s.db_name)
        owner = db_owners.get(key)
        if is_reserved_db_name(s.db_name):
            why = "is reserved for the database server itself"
        elif owner is not None and owner != s.nid:
            why = f"belongs to site {by_nid[owner].uri!r}" if owner in by_nid else \
                f"belongs to site #{owner}"
        elif owner is None and len(users[key]) > 1:
            why = "is also the database of site " + ", ".join(
                repr(by_nid[o].uri) for o in users[key] if o != s.nid)
        else:
            continue
        out.db.setdefault(s.nid, []).append(f"database {s.db_name!r} {why}")
    return out


# Site tasks that write a vhost or sites.php from the site's names, and those that touch its
# database (create, alter, dump, import, drop) or write its credentials.
NAME_TASKS = frozenset({"install", "verify", "enable", "disable", "clone", "migrate"})
DB_TASKS = frozenset({"install", "verify", "backup", "restore", "delete", "clone", "migrate"})


def isolation_refusal(task_type: str | None, site_vars: dict) -> str | None:
    """Why a task may not run on a site (its inventory variables), or None."""
    why: list[str] = []
    if task_type in NAME_TASKS:
        why += site_vars.get("aegir_site_conflicts") or []
    if task_type in DB_TASKS:
        why += site_vars.get("aegir_site_db_conflicts") or []
    if not why:
        return None
    return (f"Refused: {'; '.join(why)}. A site may only use host names and a database no other "
            "live site uses; correct the site's aliases or database name in the frontend.")


HOSTMASTER_CONTEXT = "hostmaster"


def hostmaster_title():
    """The title (uri) of the live site whose context is `hostmaster` (hostmaster's own site),
    as a scalar subquery, so the inventory reads it in its server query (no extra statement)."""
    return (
        select(m.Node.title)
        .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
        .join(m.HostingSite, m.HostingSite.vid == m.Node.vid)
        .where(m.HostingContext.name == HOSTMASTER_CONTEXT, m.Node.type == "site",
               m.HostingSite.status != m.SITE_DELETED)
        .order_by(m.Node.nid).limit(1)
        .scalar_subquery())


def hostmaster_url(title: str | None) -> str:
    """The frontend's own URL, as provision's `master_url`: http:// and hostmaster's site
    title, or "" when there is none. Disabled sites redirect to <this>/hosting/disabled/<uri>."""
    return f"http://{title.strip().lower()}" if title and title.strip() else ""
