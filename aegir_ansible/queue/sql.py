"""The queue's SQL: the task -> target -> server relation as one select over the frontend
tables (never stored: computed every time), and the queries the claim and the status read
from it. Builders only: they return statements and run nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import aliased

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.db.queue_tables import QueueTask
from aegir_ansible.tasks import PLATFORM_WIDE_TYPES, TASK_TYPES

from .types import TARGET_LEVELS, TaskRow


@dataclass(frozen=True)
class _Aliases:
    """The tables of the task -> target -> server relation, as aliased in one select."""

    t: object
    rn: object
    ctx: object
    s: object
    sp: object
    rp: object
    sv: object
    qt: object

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


_HEADS = None


def _heads_base():
    """Queued tasks, narrow: nid, server, and what orders and filters them: `target_rank`
    is 1 for the oldest queued task of its target (tasks of one target run first in, first
    out). Narrow because the database ranks and sorts every queued row: wide rows (names,
    long texts) made that ten times slower on MariaDB."""
    global _HEADS
    if _HEADS is None:
        def columns(a):
            t, rn = a.t, a.rn
            return (
                t.nid.label("nid"), a.server.label("server"), a.s.nid.label("site"),
                a.platform.label("platform"), a.qt.not_before.label("not_before"),
                case(TARGET_LEVELS, value=rn.type, else_=3).label("level"),
                case({name: tt.priority for name, tt in TASK_TYPES.items()},
                     value=t.task_type, else_=0).label("priority"),
                func.row_number().over(partition_by=t.rid, order_by=t.nid).label("target_rank"),
            )

        q, a = _joined(columns, context=False)
        _HEADS = (q.where(a.t.task_status == TaskStatus.QUEUED), a)
    return _HEADS


def wide_query():
    """The oldest queued platform-wide task of each platform: it holds back the site tasks
    of its platform queued after it. (Few rows: such tasks are rare.)"""
    q, a = _joined(lambda a: (a.platform, func.min(a.t.nid)), context=False)
    return (q.where(a.t.task_status == TaskStatus.QUEUED, a.t.task_type.in_(sorted(PLATFORM_WIDE_TYPES)),
                    a.rn.type == "platform")
            .group_by(a.platform))


def heads_query(now: float, limit: int | None = None, *, only: list[int] | None = None,
                orphans: bool = True, wide: dict[int, int] | None = None,
                per_server: int | None = None):
    """(nid, server) of the queued tasks that may start as far as the queue alone says
    (oldest of their target, not deferred, not behind a platform-wide task: `wide` maps
    platform to the oldest queued one, from wide_query()), in claim order: servers' tasks
    before platforms' before sites' (what a site needs is set up first), then the task
    type's priority (lower first), then the oldest. `only` restricts the servers;
    `orphans` adds the tasks whose server cannot be found (malformed: they are failed);
    `per_server` keeps the first N of each server (one busy server cannot fill the page)."""
    q, a = _heads_base()
    server = a.server
    if only is not None:
        cond = server.in_(only or [-1])
        q = q.where(or_(cond, server.is_(None)) if orphans else cond)
    elif not orphans:
        q = q.where(server.is_not(None))
    c = q.subquery().c
    held_back = [and_(c.site.is_not(None), c.platform == platform, c.nid > first)
                 for platform, first in sorted((wide or {}).items())]
    order = (c.level, c.priority, c.nid)
    ready = (c.target_rank == 1, func.coalesce(c.not_before, 0) <= now,
             *[~cond for cond in held_back])
    if per_server:
        rank = func.row_number().over(partition_by=c.server, order_by=order)
        c = select(c.nid, c.server, c.level, c.priority, rank.label("server_rank")) \
            .where(*ready).subquery().c
        q = select(c.nid, c.server).where(c.server_rank <= per_server)
        order = (c.level, c.priority, c.nid)
    else:
        q = select(c.nid, c.server).where(*ready)
    q = q.order_by(*order)
    return q.limit(limit) if limit else q
