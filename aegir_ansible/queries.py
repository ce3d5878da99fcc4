"""Read-side queries shared by the CLI: listings of servers, platforms, sites and tasks.

Each listing is one SELECT over current revisions (join on node.vid), never a query per
row.
"""

from __future__ import annotations

from sqlalchemy import func, select
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
         "status": m.SERVER_STATUS_NAMES.get(status, str(status)),
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
         "status": m.PLATFORM_STATUS_NAMES.get(status, str(status)), "verified": verified}
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
         "status": m.STATUS_NAMES.get(status, str(status)), "db_name": db_name or "",
         "aliases": " ".join(aliases.get(nid, [])), "verified": verified}
        for nid, uri, plat, db, status, db_name, verified in session.execute(q)
    ]


def tasks(session: Session, status: int | None = None, limit: int = 50,
          target: int | None = None) -> list[dict]:
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
    return [
        {"nid": nid, "vid": vid, "type": type_, "target": name or f"#{rid}",
         "status": m.TASK_STATUS_NAMES.get(st, str(st)), "executed": executed or 0,
         "delta": delta or 0, "created": created}
        for nid, vid, type_, name, rid, st, executed, delta, created in session.execute(q)
    ]


def task_arguments(session: Session, nid: int) -> dict[str, str]:
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


def count_tasks_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(m.HostingTask.task_status, func.count())
        .join(m.Node, m.Node.vid == m.HostingTask.vid)
        .group_by(m.HostingTask.task_status)
    )
    return {m.TASK_STATUS_NAMES.get(st, str(st)): n for st, n in rows}
