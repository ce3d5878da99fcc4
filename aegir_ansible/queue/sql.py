"""The queue's SQL: the task -> target -> server relation as one select over the frontend
tables (computed whenever a task is claimed), the rows of the queue's index of queued tasks
(aegir_ansible_queued) computed from it, and the queries the claim and the status read.
Builders only: they return statements and run nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Integer, and_, bindparam, case, func, select, union_all
from sqlalchemy.orm import aliased

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.db.queue_tables import QueuedTask, QueueTask
from aegir_ansible.tasks import PLATFORM_WIDE_TYPES, TASK_TYPES

from .types import TARGET_LEVELS, TaskRow


@dataclass(frozen=True)
class _Aliases:
    """The tables of the task -> target -> server relation, as aliased in one select."""

    t: type[m.HostingTask]
    rn: type[m.Node]
    ctx: type[m.HostingContext]
    s: type[m.HostingSite]
    sp: type[m.HostingPlatform]
    rp: type[m.HostingPlatform]
    sv: type[m.HostingServer]
    qt: type[QueueTask]

    @property
    def server(self):
        return func.coalesce(self.sv.nid, self.rp.web_server, self.sp.web_server)

    @property
    def platform(self):
        return func.coalesce(self.rp.nid, self.sp.nid)


def _joined(columns, context: bool = True):
    """SELECT columns(aliases) over each task revision that is its node's current one,
    joined to its target (site, platform or server), the target's server and its queue row."""
    t = m.HostingTask
    tn = aliased(m.Node, name="tn")
    rn = aliased(m.Node, name="rn")
    spn = aliased(m.Node, name="spn")
    a = _Aliases(t=t, rn=rn, ctx=m.HostingContext, s=m.HostingSite,
                 sp=aliased(m.HostingPlatform, name="sp"),
                 rp=aliased(m.HostingPlatform, name="rp"), sv=m.HostingServer, qt=QueueTask)
    q = (
        select(*columns(a))
        .select_from(t)
        .join(tn, tn.vid == t.vid)
        .outerjoin(rn, rn.nid == t.rid)
    )
    if context:
        q = q.outerjoin(a.ctx, a.ctx.nid == t.rid)
    q = (
        q.outerjoin(a.s, and_(a.s.vid == rn.vid, rn.type == "site"))
        .outerjoin(spn, spn.nid == a.s.platform)
        .outerjoin(a.sp, a.sp.vid == spn.vid)
        .outerjoin(a.rp, and_(a.rp.vid == rn.vid, rn.type == "platform"))
        .outerjoin(a.sv, and_(a.sv.vid == rn.vid, rn.type == "server"))
        .outerjoin(a.qt, a.qt.nid == t.nid)
        .where(tn.type == "task")
    )
    return q, a


def _row_columns(a: _Aliases):
    """TaskRow's fields, in order (then the queue row's key: has_queue_row)."""
    t, rn, qt = a.t, a.rn, a.qt
    return (t.vid, t.nid, t.task_type, t.rid, rn.type, a.ctx.name, a.s.status,
            func.coalesce(a.rp.status, a.sp.status), a.sv.status, a.server, a.platform,
            a.s.nid, t.task_status, qt.not_before, qt.attempts, qt.runner_id, qt.run_id,
            qt.cancel_requested, qt.nid)


def task_rows(result) -> list[TaskRow]:
    """The TaskRows of a result of target_query()."""
    return [TaskRow(*r[:18], has_queue_row=r[18] is not None) for r in result]


def indexed_rows(rows) -> dict[int, tuple]:
    """nid -> (vid, server, site, platform) of rows of heads_query: the index rows a claim
    checks (claim.HeadsPage.indexed)."""
    return {nid: (vid, server, site, platform) for nid, server, vid, site, platform in rows}


_BASE_TARGET_SELECT = None


def _base_select():
    global _BASE_TARGET_SELECT
    if _BASE_TARGET_SELECT is None:
        # Built once: constructing this many-join select costs milliseconds of Python, and
        # claims use it several times each (statements are immutable; .where() copies).
        _BASE_TARGET_SELECT = _joined(_row_columns)
    return _BASE_TARGET_SELECT


def target_query(status: int | None = None, servers: list[int] | None = None, nids=None, limit=None):
    q, a = _base_select()
    if status is not None:
        q = q.where(a.t.task_status == status)
    if servers:
        q = q.where(a.server.in_(servers))
    if nids is not None:
        q = q.where(a.t.nid.in_(list(nids)))
    q = q.order_by(a.t.nid)
    if limit:
        q = q.limit(limit)
    return q


def running_query(servers: list[int] | None = None):
    """The tasks runners hold now (on these servers). Read from the queue rows (indexed by
    runner), not by scanning hosting_task for processing tasks: claims read this every time."""
    return target_query(TaskStatus.PROCESSING, servers=servers).where(QueueTask.runner_id.is_not(None))


def _level_priority(a: _Aliases):
    return (case(TARGET_LEVELS, value=a.rn.type, else_=3),
            case({name: tt.priority for name, tt in TASK_TYPES.items()}, value=a.t.task_type, else_=0))


_QUEUED_ROWS = None


def queued_rows_query(*, vid_range: tuple[int, int] | None = None, vids=None):
    """The frontend's queued tasks (current revision QUEUED) as rows of the queue's index
    (aegir_ansible_queued): nid, vid, rid, server, level, priority, site, platform,
    wide_platform. `vid_range` (lo, hi]: only those revisions, and only those the index does
    not have (a range of hosting_task's primary key: the incremental sync); `vids`: only
    these revisions. Without either, every queued task: a scan of hosting_task (the
    periodic full sync only)."""
    global _QUEUED_ROWS
    if _QUEUED_ROWS is None:
        def columns(a):
            level, priority = _level_priority(a)
            wide = case((and_(a.t.task_type.in_(sorted(PLATFORM_WIDE_TYPES)), a.rn.type == "platform"),
                         a.platform), else_=None)
            return (a.t.nid.label("nid"), a.t.vid.label("vid"), a.t.rid.label("rid"),
                    a.server.label("server"), level.label("level"), priority.label("priority"),
                    a.s.nid.label("site"), a.platform.label("platform"), wide.label("wide_platform"))

        q, a = _joined(columns, context=False)
        _QUEUED_ROWS = (q.where(a.t.task_status == TaskStatus.QUEUED), a)
    q, a = _QUEUED_ROWS
    if vid_range is not None:
        q = q.where(a.t.vid > vid_range[0], a.t.vid <= vid_range[1],
                    ~select(QueuedTask.vid).where(QueuedTask.vid == a.t.vid).exists())
    if vids is not None:
        q = q.where(a.t.vid.in_(list(vids)))
    return q


def wide_query():
    """The oldest queued platform-wide task of each platform: it holds back the site tasks
    of its platform queued after it. (From the queue's index, by its wide_platform index:
    such tasks are rare.)"""
    q = QueuedTask
    return (select(q.wide_platform, func.min(q.nid)).where(q.wide_platform.is_not(None))
            .group_by(q.wide_platform))


def queued_servers_query():
    """The servers that have queued tasks (from the queue's index: one index entry per
    server on MariaDB, `Using index for group-by`)."""
    return select(QueuedTask.server).where(QueuedTask.server.is_not(None)).distinct()


_HEADS: dict[tuple, object] = {}


def heads_query(now: float, limit: int | None = None, *, servers: list[int],
                orphans: bool = True, wide: dict[int, int] | None = None,
                per_server: int | None = None):
    """(nid, server, vid, site, platform) of the queued tasks that may start as far as the queue alone says
    (oldest of their target, not deferred, not behind a platform-wide task: `wide` maps
    platform to the oldest queued one, from wide_query()), in claim order: servers' tasks
    before platforms' before sites' (what a site needs is set up first), then the task
    type's priority (lower first), then the oldest. Of these `servers` (queued_servers_query
    gives those with queued tasks); `orphans` adds the tasks whose server cannot be found
    (malformed: they are failed); `per_server` keeps the first N of each server (one busy
    server cannot fill the page), `limit` the first N in all. None when there is nothing to
    read (no server, no orphans).

    Read from the queue's index (aegir_ansible_queued), one branch per server walking its
    (server, level, priority, nid) index for the first N ready tasks (UNION ALL): the cost
    follows the servers and N, not the depth of the queue. A task is the oldest of its
    target when no queued task of its target has a lower nid (the (rid, nid) index). The
    vid, site and platform are the index row's, for the claim to check it (Claim.consider).

    Returns the statement with its values bound. The statement itself is built once per
    shape (numbers of servers and of platform-wide tasks) with bound parameters and kept:
    building a select of a hundred branches costs tens of milliseconds of Python."""
    servers = sorted(set(servers))
    wide_items = sorted((wide or {}).items())
    if not servers and not orphans:
        return None
    # Shapes by powers of two (padded with a server and a platform that do not exist: their
    # branch and condition match nothing): a draining queue has every number of servers,
    # and each shape is a statement kept here and compiled in the engine's cache.
    servers += [-1] * (_pow2(len(servers)) - len(servers))
    wide_items += [(-1, 0)] * (_pow2(len(wide_items)) - len(wide_items))
    n = per_server or limit
    shape = (len(servers), orphans, len(wide_items), bool(n), bool(limit))
    stmt = _HEADS.get(shape)
    if stmt is None:
        stmt = _HEADS[shape] = _heads_statement(*shape)
    values: dict = {"now": now, "n": n or 0, "limit": limit or 0}
    values.update({f"s{i}": s for i, s in enumerate(servers)})
    for i, (platform, first) in enumerate(wide_items):
        values[f"wp{i}"], values[f"wf{i}"] = platform, first
    return stmt.params(values)  # type: ignore[attr-defined]


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 0 else 0


def _heads_statement(n_servers: int, orphans: bool, n_wide: int, n: bool, limit: bool):
    qd = QueuedTask
    older = aliased(QueuedTask, name="older")
    qt = QueueTask
    held_back = [and_(qd.site.is_not(None), qd.platform == bindparam(f"wp{i}"), qd.nid > bindparam(f"wf{i}"))
                 for i in range(n_wide)]
    ready = (func.coalesce(qt.not_before, 0) <= bindparam("now"),
             ~select(older.nid).where(older.rid == qd.rid, older.nid < qd.nid).exists(),
             *[~cond for cond in held_back])
    branches = []
    conds = [qd.server == bindparam(f"s{i}") for i in range(n_servers)]
    for cond in conds + ([qd.server.is_(None)] if orphans else []):
        b = (select(qd.nid, qd.server, qd.level, qd.priority, qd.vid, qd.site, qd.platform)
             .select_from(qd).outerjoin(qt, qt.nid == qd.nid)
             .where(cond, *ready).order_by(qd.level, qd.priority, qd.nid))
        if n:
            b = b.limit(bindparam("n", type_=Integer))
        branches.append(b.subquery())
    if len(branches) == 1:
        c = branches[0].c
    else:
        c = union_all(*[select(*b.c) for b in branches]).subquery().c
    q = select(c.nid, c.server, c.vid, c.site, c.platform).order_by(c.level, c.priority, c.nid)
    return q.limit(bindparam("limit", type_=Integer)) if limit else q
