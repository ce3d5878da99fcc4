"""The job manager: claiming, heartbeats, reaping, cancel flags, re-queueing. SQL only.

Claim protocol (docs/queue.md, "Claiming"):

0. outside any transaction, without locks: a page of candidates (heads_query): the queued
   tasks that may start as far as the queue says (oldest of their target, not deferred,
   not behind a queued platform-wide task), the first few per server, in claim order
   (servers' tasks, platforms', sites'; then the type's priority; then the oldest). The
   database ranks and sorts; only nid and server come back. The page is kept for the next
   claims (_HeadsPage) and every claim checks its tasks again;

then one short transaction (READ COMMITTED on MariaDB/MySQL, BEGIN IMMEDIATE on SQLite):

1. read the running tasks (the queue rows held by runners);
2. lock the queue rows of the page's servers `FOR UPDATE SKIP LOCKED`, a few at a time (as
   many as the free slots need): a server another runner is claiming on right now is
   skipped, so claims on one server are serialised and claims on different servers run
   in parallel. Once locked, a server's running tasks are read again (step 1 may predate
   a claim another runner committed on it since); a server in back-off (unreachable
   lately) takes no run;
3. read the candidates of the locked servers (by nid, still queued) and choose what may
   start: per-server concurrency, one task per site/target at a time, no site task while a
   platform-wide task of its platform runs (and the reverse); a batch still open reads on;
4. lock the chosen task rows `FOR UPDATE SKIP LOCKED`, mark them processing (-1,
   executed=now) by primary key where still queued, record the claim, commit.

Deadlocks, lock-wait timeouts and "record has changed" (1213, 1205, 1020) retry the whole
transaction.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Engine, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import aliased

from aegir_ansible.db import models as m
from aegir_ansible.tasks import PLATFORM_WIDE_TYPES, TASK_TYPES

from . import metrics
from .tables import (SETTINGS, QueueRunner, QueueServer, QueueSetting, QueueTask, ServerHealth,
                     parse_setting)

log = logging.getLogger("aegir.queue")

# Task types several tasks of which (on one server) may run as one playbook run.
BATCHABLE_TYPES = frozenset({"verify"} | {t.name for t in TASK_TYPES.values() if t.batchable})

RETRYABLE_MYSQL_ERRORS = {1213, 1205, 1020}
# Lost connection / server gone / cannot connect: wait and try again.
CONNECTION_MYSQL_ERRORS = {2002, 2003, 2006, 2013, 2055, 1927, 1053, 4031}
# SQLite errors that pass: another writer, a file that cannot be opened or written now.
SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL")


class QueueError(Exception):
    pass


def is_retryable(exc: BaseException) -> bool:
    """A transient conflict: the transaction can simply be run again."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    if code in RETRYABLE_MYSQL_ERRORS:
        return True
    return "database is locked" in str(orig)


def is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    return isinstance(exc, OperationalError) and code in CONNECTION_MYSQL_ERRORS


def error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", None) if orig is not None else None
    return args[0] if args and isinstance(args[0], int) else None


def is_transient(exc: BaseException) -> bool:
    """An error that may go away if the same write is tried again later: the connection
    was lost or the server is down, a lock wait timed out, a deadlock, a busy SQLite
    file. Anything else the database says about a statement (no grant 1142/1044/1045, an
    unknown column or table 1054/1146, data too long or wrong 1406/1366, ...) will be
    said again: retrying it forever hides it."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, SQLAlchemyError):
        return False
    if not isinstance(exc, DBAPIError):
        return True  # SQLAlchemy's own state after a lost connection (pending rollback...)
    if is_disconnect(exc) or is_retryable(exc):
        return True
    orig = exc.orig
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name is not None:
        return sqlite_name.startswith(SQLITE_TRANSIENT)
    if isinstance(orig, OSError) or error_code(exc) is None:
        return isinstance(exc, OperationalError)  # a socket error or timeout, no server errno
    return False


def with_retries(fn, *, attempts: int = 8, what: str = "transaction"):
    """Run fn() again on deadlocks / lock waits (short random backoff)."""
    import random

    for i in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_retryable(exc) or i == attempts - 1:
                raise
            log.debug("%s: retrying after %s", what, exc.orig)
            metrics.count("claim_conflicts" if what.startswith("claim") else "tx_conflicts")
            time.sleep(min(0.02 * (2 ** i), 1.0) * (0.5 + random.random()))
    return None  # pragma: no cover


# -- server capability -------------------------------------------------------------------

def parse_server_version(version: str) -> tuple[str, tuple[int, ...]]:
    """('mariadb'|'mysql', (major, minor, patch)) from SELECT VERSION()."""
    flavour = "mariadb" if "mariadb" in version.lower() else "mysql"
    # MariaDB 10.x replication builds may prefix '5.5.5-'.
    v = version.split("-", 1)[1] if version.startswith("5.5.5-") else version
    nums = re.match(r"(\d+)\.(\d+)\.?(\d+)?", v)
    if not nums:
        raise QueueError(f"cannot parse the database server version {version!r}")
    return flavour, tuple(int(x or 0) for x in nums.groups())


def skip_locked_problem(version: str) -> str | None:
    """Why this server cannot run several runners safely, or None if it can."""
    flavour, ver = parse_server_version(version)
    if flavour == "mariadb" and ver < (10, 6, 0):
        return (f"MariaDB {version} has no SELECT ... FOR UPDATE SKIP LOCKED (it arrived in 10.6): "
                "upgrade to MariaDB 10.6 or newer to run the queue")
    if flavour == "mysql" and ver < (8, 0, 1):
        return (f"MySQL {version} has no SELECT ... FOR UPDATE SKIP LOCKED (it arrived in 8.0.1): "
                "upgrade to MySQL 8 to run the queue")
    return None


def check_database(engine: Engine) -> str:
    """Fail clearly when the database cannot run the queue; return a description."""
    if engine.dialect.name == "sqlite":
        return "SQLite (one machine only: claims are serialised with BEGIN IMMEDIATE)"
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT VERSION()").scalar()
    problem = skip_locked_problem(version)
    if problem:
        raise QueueError(problem)
    return f"{engine.dialect.name} {version} (SKIP LOCKED supported)"


# -- the task -> target -> server relation -------------------------------------------------

@dataclass
class TaskRow:
    vid: int
    nid: int
    task_type: str | None
    rid: int
    target_type: str | None
    target_name: str | None
    site_status: int | None
    platform_status: int | None
    server_status: int | None
    server: int | None
    platform: int | None
    site: int | None
    task_status: int | None = None
    not_before: float | None = None
    attempts: int | None = None
    runner_id: str | None = None
    run_id: str | None = None
    cancel_requested: int | None = None
    has_queue_row: bool = False

    @property
    def type_info(self):
        return TASK_TYPES.get(self.task_type or "")

    @property
    def priority(self) -> int:
        tt = self.type_info
        return tt.priority if tt else 0

    @property
    def order(self) -> tuple:
        """Claim order among ready tasks of a server: servers' tasks before platforms'
        before sites' (what a site needs is set up first), then the task type's priority
        (lower first), then the oldest."""
        level = {"server": 0, "platform": 1, "site": 2}.get(self.target_type or "", 3)
        return (level, self.priority, self.nid)

    @property
    def platform_wide(self) -> bool:
        tt = self.type_info
        return bool(tt and tt.platform_wide and self.target_type == "platform")

    def problem(self) -> str | None:
        """Why this row cannot run at all (a malformed task), or None."""
        tt = self.type_info
        if tt is None:
            return (f"Unknown task type {self.task_type!r}: this backend runs "
                    f"{', '.join(sorted(TASK_TYPES))}.")
        if self.target_type is None:
            return f"The task's target (node {self.rid}) does not exist."
        if self.target_type not in ("site", "platform", "server"):
            return f"The task's target (node {self.rid}) is a {self.target_type}, not a site, platform or server."
        if self.target_type not in tt.objects:
            return f"Task type {self.task_type!r} does not apply to a {self.target_type}."
        name = self.target_name or f"#{self.rid}"
        status = {"site": self.site_status, "platform": self.platform_status,
                  "server": self.server_status}[self.target_type]
        if status is None:
            return f"The {self.target_type} {name} has no current {self.target_type} record."
        if status == -2:
            return f"The {self.target_type} {name} is deleted: no task can run on it."
        if self.target_type == "site" and self.platform_status == -2:
            return f"The platform of site {name} is deleted."
        if self.server is None:
            return f"Cannot find the server of {self.target_type} {name} (its platform or web server is missing)."
        return None


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


def _rows(result) -> list[TaskRow]:
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
    runner), not by scanning hosting_task for status -1: claims read this every time."""
    return target_query(m.TASK_PROCESSING, servers=servers).where(QueueTask.runner_id.is_not(None))


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
                case({"server": 0, "platform": 1, "site": 2}, value=rn.type, else_=3).label("level"),
                case({name: tt.priority for name, tt in TASK_TYPES.items()},
                     value=t.task_type, else_=0).label("priority"),
                func.row_number().over(partition_by=t.rid, order_by=t.nid).label("target_rank"),
            )

        q, a = _joined(columns, context=False)
        _HEADS = (q.where(a.t.task_status == 0), a)
    return _HEADS


def wide_query():
    """The oldest queued platform-wide task of each platform: it holds back the site tasks
    of its platform queued after it. (Few rows: such tasks are rare.)"""
    q, a = _joined(lambda a: (a.platform, func.min(a.t.nid)), context=False)
    return (q.where(a.t.task_status == 0, a.t.task_type.in_(sorted(PLATFORM_WIDE_TYPES)),
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


# -- claiming ------------------------------------------------------------------------------

@dataclass
class Run:
    """Tasks that run as one playbook run (one task, or a coalesced batch)."""

    run_id: str
    server: int | None
    task_type: str | None
    tasks: list[TaskRow] = field(default_factory=list)
    # Set for malformed tasks: they are failed with this message instead of being run.
    problem: str | None = None


@dataclass
class Settings:
    values: dict

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def load_settings(conn) -> Settings:
    values = {name: spec.default for name, spec in SETTINGS.items()}
    for name, raw in conn.execute(select(QueueSetting.name, QueueSetting.value)):
        if name in SETTINGS:
            try:
                values[name] = parse_setting(name, raw)
            except ValueError:
                log.warning("ignoring bad queue setting %s=%r", name, raw)
    return Settings(values)


@dataclass
class _HeadsPage:
    """The first tasks of each server (heads_query), kept between claims: the query ranks
    every queued task, so a runner reads the page once and claims from it until it is a
    poll interval old or a server's share is used up. Every claim checks its tasks again."""

    key: tuple
    read_at: float
    per_server: int
    heads: list[tuple[int, int | None]]
    wide: dict[int, int]
    full: set[int] = field(default_factory=set)  # servers that may have more than their share

    def __post_init__(self):
        count: dict = defaultdict(int)
        for _nid, server in self.heads:
            count[server] += 1
        self.full = {s for s, n in count.items() if n >= self.per_server}

    def drop(self, nids: set[int]) -> None:
        self.heads = [h for h in self.heads if h[0] not in nids]

    def stale(self, key: tuple, now: float, max_age: float) -> bool:
        if not self.heads or key != self.key or now - self.read_at >= max_age:
            return True
        return bool(self.full - {server for _nid, server in self.heads})


class _Claim:
    """The state of one claim transaction: what runs now (per server, target, site and
    platform), the servers locked so far and their free slots, the runs being filled."""

    def __init__(self, conn, runner_id: str, slots: int, settings: Settings, now: float,
                 page: _HeadsPage):
        self.conn = conn
        self.runner_id = runner_id
        self.settings = settings
        self.now = now
        self.page = page
        self.slots = slots  # runs this claim may still start
        if settings.concurrency > 0:
            # An exact global limit: claims take turns on the setting's row.
            conn.execute(select(QueueSetting.name).where(QueueSetting.name == "concurrency")
                         .with_for_update())
        self.runs: list[Run] = []
        self.bad: list[tuple[TaskRow, str]] = []
        self.chosen: list[tuple[TaskRow, Run]] = []
        self.gone: set[int] = set()  # tasks of the page no longer queued, or claimed now
        self.skipped: set[int] = set()  # servers another runner was claiming on
        self.free_by_server: dict[int, int] = {}
        self.open_to: list[int] = []  # locked servers that may take a run
        self.open_batches: dict[tuple, Run] = {}
        self.run_keys_by_server: dict[int, set] = defaultdict(set)
        self.busy_targets, self.busy_sites = set(), set()
        self.busy_wide_platforms, self.busy_site_platforms = set(), set()
        all_runs = set()
        for r in _rows(conn.execute(running_query())):
            key = r.run_id or f"task:{r.nid}"
            all_runs.add(key)
            if r.server is not None:
                self.run_keys_by_server[r.server].add(key)
            self._busy(r)
        self.global_free = (settings.concurrency - len(all_runs)
                            if settings.concurrency > 0 else 10**9)

    def _busy(self, r: TaskRow) -> None:
        self.busy_targets.add(r.rid)
        if r.site:
            self.busy_sites.add(r.site)
            if r.platform:
                self.busy_site_platforms.add(r.platform)
        if r.platform_wide:
            self.busy_wide_platforms.add(r.platform)

    def wants_more(self) -> bool:
        if (self.slots > 0 and self.global_free > 0
                and any(self.free_by_server[s] > 0 for s in self.open_to)):
            return True
        return any(len(run.tasks) < self.settings.batch_size for run in self.open_batches.values())

    def lock(self, group: list[int]) -> list[int]:
        """Lock these servers' queues, skipping those another runner is claiming on: claims
        on one server are serialised, claims on different servers run in parallel. Returns
        the servers that may take a run now."""
        got, locked = [], []
        for nid, paused, conc in self.conn.execute(
            select(QueueServer.server_nid, QueueServer.paused, QueueServer.concurrency)
            .where(QueueServer.server_nid.in_(group))
            .order_by(QueueServer.server_nid)
            .with_for_update(skip_locked=True)
        ).all():
            locked.append((nid, paused, conc))
        self.skipped.update(set(group) - {nid for nid, _paused, _conc in locked})
        self._recount([nid for nid, _paused, _conc in locked])
        backing_off = set(self.conn.execute(
            select(ServerHealth.server_nid)
            .where(ServerHealth.server_nid.in_([nid for nid, _p, _c in locked]),
                   ServerHealth.backoff_until > self.now)).scalars()) if locked else set()
        for nid, paused, conc in locked:
            cap = conc if conc is not None else self.settings.server_concurrency
            self.free_by_server[nid] = cap - len(self.run_keys_by_server[nid])
            if nid in backing_off:
                self.free_by_server[nid] = 0  # unreachable lately: no slot until its back-off ends
            if not paused and self.free_by_server[nid] > 0:
                got.append(nid)
        self.open_to.extend(got)
        return got

    def _recount(self, servers: list[int]) -> None:
        """The runs on these servers, read again now that their queue rows are locked. The
        read at the start of the transaction may predate a claim another runner committed
        on them since (READ COMMITTED): counting from it let two runners each start a run
        on a server whose limit is one."""
        if not servers:
            return
        for nid in servers:
            self.run_keys_by_server[nid] = set()
        for r in _rows(self.conn.execute(running_query(servers))):
            self.run_keys_by_server[r.server].add(r.run_id or f"task:{r.nid}")
            self._busy(r)

    def blocked(self, r: TaskRow) -> bool:
        """Its target, site or platform is busy (one task per target at a time; site tasks
        and platform-wide tasks of one platform exclude each other)."""
        if r.rid in self.busy_targets or (r.site and r.site in self.busy_sites):
            return True
        if r.site and r.platform in self.busy_wide_platforms:
            return True
        return r.platform_wide and (r.platform in self.busy_site_platforms
                                    or r.platform in self.busy_wide_platforms)

    def run_for(self, r: TaskRow) -> Run | None:
        """The run this task joins: an open batch of its kind, or a new run if a slot of its
        server (and of the runner, and of the global limit) is free."""
        batch_key = (r.server, r.task_type, r.target_type)
        if r.task_type in BATCHABLE_TYPES and self.settings.batch_size > 1:
            run = self.open_batches.get(batch_key)
            if run is not None and len(run.tasks) < self.settings.batch_size:
                return run
        if self.slots <= 0 or self.global_free <= 0 or self.free_by_server[r.server] <= 0:
            return None
        run = Run(uuid.uuid4().hex, r.server, r.task_type)
        self.runs.append(run)
        self.slots -= 1
        self.global_free -= 1
        self.free_by_server[r.server] -= 1
        if r.task_type in BATCHABLE_TYPES:
            self.open_batches[batch_key] = run
        return run

    def consider(self, take: list[int]) -> None:
        """Read these queued tasks (in this order) and choose those that may start."""
        order = {nid: i for i, nid in enumerate(take)}
        rows = sorted(_rows(self.conn.execute(target_query(0, nids=take))) if take else [],
                      key=lambda r: order[r.nid])
        self.gone.update(set(take) - {r.nid for r in rows})
        for r in rows:
            problem = r.problem()
            if problem:
                self.bad.append((r, problem))
                self.gone.add(r.nid)
                continue
            if r.server not in self.free_by_server:
                continue  # its server changed since the page was read
            if self.blocked(r):
                continue
            run = self.run_for(r)
            if run is None:
                continue
            run.tasks.append(r)
            self.chosen.append((r, run))
            self.gone.add(r.nid)
            self._busy(r)

    def choose(self, scan_limit: int) -> None:
        heads = self.page.heads
        # Tasks whose server cannot be found are failed (malformed).
        self.consider([nid for nid, server in heads if server is None])
        # Then the page's servers in claim order, a few at a time: lock only as many
        # servers as the free slots need, so that other runners can claim on the others.
        tried: set[int] = set()
        while self.wants_more() or not tried:
            group = []
            for _nid, server in heads:
                if server is not None and server not in tried and server not in group:
                    group.append(server)
                    if len(group) >= max(1, self.slots):
                        break
            if not group:
                break
            tried.update(group)
            got = set(self.lock(group))
            self.consider([nid for nid, server in heads if server in got])

        # Batches still open: read on, in longer pages of the locked servers' tasks.
        page, seen = 8 * self.page.per_server, {nid for nid, _server in heads} | self.gone
        while self.open_batches and self.wants_more() and page < scan_limit and self.open_to:
            room = max(self.settings.batch_size - len(run.tasks)
                       for run in self.open_batches.values())
            page = min(scan_limit, max(2 * page, len(seen) + room))
            more = list(self.conn.execute(heads_query(self.now, page, only=self.open_to,
                                                      orphans=False, wide=self.page.wide)))
            self.consider([nid for nid, _server in more if nid not in seen])
            seen.update(nid for nid, _server in more)
            if len(more) < page:
                break

    def mark_claimed(self) -> list[Run]:
        """Lock the chosen task rows, mark them processing, record the claim. Returns the
        runs that got tasks (malformed tasks as runs with a problem)."""
        conn, now = self.conn, self.now
        bad_runs = [Run(uuid.uuid4().hex, r.server, r.task_type, [r], problem=p)
                    for r, p in self.bad]
        candidates = self.chosen + [(run.tasks[0], run) for run in bad_runs]
        if not candidates:
            return []
        got = set(conn.execute(
            select(m.HostingTask.vid)
            .where(m.HostingTask.vid.in_([r.vid for r, _ in candidates]),
                   m.HostingTask.task_status == 0)
            .with_for_update(skip_locked=True)
        ).scalars())
        if not got:
            return []
        ts = int(now)
        conn.execute(update(m.HostingTask).where(m.HostingTask.vid.in_(got),
                                                 m.HostingTask.task_status == 0)
                     .values(task_status=m.TASK_PROCESSING, executed=ts, delta=0))
        conn.execute(update(m.Node).where(m.Node.vid.in_(got)).values(changed=ts))
        new_rows = []
        for r, run in candidates:
            if r.vid not in got:
                continue
            values = dict(vid=r.vid, runner_id=self.runner_id, claimed_at=now,
                          run_id=run.run_id, cancel_requested=0)
            if r.has_queue_row:
                conn.execute(update(QueueTask).where(QueueTask.nid == r.nid)
                             .values(attempts=QueueTask.attempts + 1, **values))
            else:
                new_rows.append(dict(nid=r.nid, not_before=0, attempts=1, **values))
            r.task_status = m.TASK_PROCESSING
            r.attempts = (r.attempts or 0) + 1 if r.has_queue_row else 1
            r.runner_id = self.runner_id
            r.run_id = run.run_id
        if new_rows:
            conn.execute(insert(QueueTask), new_rows)
        result = []
        for run in self.runs + bad_runs:
            run.tasks = [t for t in run.tasks if t.vid in got]
            if run.tasks:
                result.append(run)
        return result


class JobManager:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.mysql = engine.dialect.name != "sqlite"
        self.scan_limit = 2000
        self._known_server_rows: set[int] = set()
        self._heads: _HeadsPage | None = None
        self._mark: int | None = None
        self._settings: tuple[float, Settings] | None = None  # (read at, settings)
        # Servers the last claim skipped because another runner was claiming on them.
        self.skipped_servers: set[int] = set()

    # -- transactions --------------------------------------------------------------------

    def _conn(self):
        conn = self.engine.connect()
        if self.mysql:
            return conn.execution_options(isolation_level="READ COMMITTED")
        return conn.execution_options(sqlite_immediate=True)

    def tx(self, fn, what="transaction"):
        """fn(conn) in one claim-style transaction, retried on conflicts."""

        def once():
            with self._conn() as conn:
                with conn.begin():
                    return fn(conn)

        return with_retries(once, what=what)

    def settings(self, max_age: float = 0.0) -> Settings:
        """The queue settings; a runner's loop passes max_age (1 s): a change of setting
        takes effect within a second, and a busy loop does not read them before every
        claim."""
        now = time.monotonic()
        if self._settings is None or now - self._settings[0] >= max_age:
            with self.engine.connect() as conn:
                self._settings = (now, load_settings(conn))
        return self._settings[1]

    # -- runners -------------------------------------------------------------------------

    def register_runner(self, servers: list[int] | None, concurrency: int) -> str:
        runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        now = time.time()

        def fn(conn):
            conn.execute(insert(QueueRunner).values(
                id=runner_id, hostname=socket.gethostname(), pid=os.getpid(), started=now,
                heartbeat=now, state="running", servers=",".join(map(str, servers or [])),
                concurrency=concurrency))

        self.tx(fn, "register runner")
        return runner_id

    def heartbeat(self, runner_id: str, state: str | None = None) -> str | None:
        """Record that the runner is alive; returns its state as stored (None if gone)."""

        def fn(conn):
            values = {"heartbeat": time.time()}
            if state:
                values["state"] = state
            conn.execute(update(QueueRunner).where(QueueRunner.id == runner_id,
                                                   QueueRunner.state != "lost").values(**values))
            return conn.execute(select(QueueRunner.state).where(QueueRunner.id == runner_id)).scalar()

        return self.tx(fn, "heartbeat")

    def revive(self, runner_id: str, state: str = "running") -> set[int]:
        """After another runner declared this one lost (its heartbeats came late) and
        handled the tasks it held: mark it alive again, so that what it claims from now on is
        reaped if it really dies. Returns the nids it still holds (claimed after the reaping)."""

        def fn(conn):
            conn.execute(update(QueueRunner).where(QueueRunner.id == runner_id)
                         .values(state=state, heartbeat=time.time()))
            return set(conn.execute(select(QueueTask.nid)
                                    .where(QueueTask.runner_id == runner_id)).scalars())

        return self.tx(fn, "revive runner")

    # -- claim ---------------------------------------------------------------------------

    def ensure_server_rows(self, server_nids) -> None:
        wanted = {n for n in server_nids if n is not None} - self._known_server_rows
        if not wanted:
            return  # queue rows are never deleted: once seen, no need to look again

        def fn(conn):
            have = set(conn.execute(select(QueueServer.server_nid).where(
                QueueServer.server_nid.in_(wanted))).scalars())
            for nid in sorted(wanted - have):
                conn.execute(insert(QueueServer).values(server_nid=nid, paused=0))

        try:
            self.tx(fn, "queue rows")
        except DBAPIError as exc:  # another runner inserted the same row: fine
            if "Duplicate" not in str(exc.orig) and "UNIQUE" not in str(exc.orig):
                raise
            return
        self._known_server_rows |= wanted

    def claim(self, runner_id: str, slots: int, settings: Settings,
              servers: list[int] | None = None) -> list[Run]:
        """Claim up to `slots` runs (a coalesced batch counts once). Returns the runs to
        execute, and malformed tasks as runs with a `problem`."""
        if slots <= 0 or not settings.enabled:
            return []
        now = time.time()
        key = tuple(servers or ())
        max_age = min(1.0, settings.poll_interval)
        per_server = max(16, 4 * slots)
        cached = self._heads
        fresh = cached is None or cached.stale(key, now, max_age)
        if fresh:
            cached = self._read_heads(key, servers, now, per_server)
        claimed: list[Run] = []
        self.skipped_servers = set()
        for _attempt in (0, 1):
            if not cached.heads:
                break
            self.ensure_server_rows({server for _nid, server in cached.heads})
            left = slots - len(claimed)
            runs, gone = self.tx(lambda conn: self._claim(conn, runner_id, left, settings, now,
                                                           cached), "claim")
            cached.drop(gone)  # after the commit: a retried transaction sees the whole page
            claimed += runs
            if fresh or len(claimed) >= slots or (runs and not cached.stale(key, now, max_age)):
                break
            # The kept page gave less than it could (other runners took its tasks): read a
            # new one.
            cached = self._read_heads(key, servers, now, per_server)
            fresh = True
        return claimed

    def _read_heads(self, key, servers, now, per_server) -> _HeadsPage:
        """Outside any transaction, without locks: the claim checks every task again."""
        with self.engine.connect() as conn:
            wide = dict(conn.execute(wide_query()).all())
            heads = [tuple(h) for h in conn.execute(heads_query(
                now, only=servers, orphans=servers is None, wide=wide, per_server=per_server))]
        self._heads = _HeadsPage(key, now, per_server, heads, wide)
        return self._heads

    def _claim(self, conn, runner_id, slots, settings, now, cached: _HeadsPage):
        """One claim transaction (steps 1-4 of the module's docstring): (runs, gone)."""
        claim = _Claim(conn, runner_id, slots, settings, now, cached)
        claim.choose(self.scan_limit)
        self.skipped_servers |= claim.skipped
        return claim.mark_claimed(), claim.gone

    def queue_mark(self) -> int | None:
        """The newest task revision id: it changes whenever hostmaster queues a task (a new
        task, or a retry as a new revision). One index lookup, cheap enough to ask ten
        times a second, so a runner can start a new task at once instead of at its next
        poll."""
        with self.engine.connect() as conn:
            mark = conn.execute(select(func.max(m.HostingTask.vid))).scalar()
        if mark != self._mark:
            self._mark = mark
            self._heads = None  # the kept page does not have the new tasks
        return mark

    # -- cancel, reaping, release --------------------------------------------------------

    def cancel_requests(self, runner_id: str) -> set[int]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(QueueTask.nid).where(
                QueueTask.runner_id == runner_id, QueueTask.cancel_requested == 1)).scalars())

    @staticmethod
    def held(conn, runner_id: str, tasks: list[TaskRow]) -> set[int]:
        """The nids of these tasks that this runner still holds for their run, status still
        "processing"; their queue and task rows are locked until the transaction ends."""
        want = {t.nid: (t.run_id, t.vid) for t in tasks}
        rows = conn.execute(
            select(QueueTask.nid, QueueTask.run_id, QueueTask.vid)
            .join(m.HostingTask, m.HostingTask.vid == QueueTask.vid)
            .where(QueueTask.nid.in_(list(want)), QueueTask.runner_id == runner_id,
                   m.HostingTask.task_status == m.TASK_PROCESSING)
            .with_for_update())
        return {nid for nid, run_id, vid in rows if want.get(nid) == (run_id, vid)}

    @staticmethod
    def finish(conn, runner_id: str, task: TaskRow, status: int, delta: int,
               last_error: str | None = None) -> bool:
        """Release the task's queue row and write its final status, if this runner still
        holds the task for this run (a reaper may have failed it meanwhile). Two guarded
        UPDATEs, no read: False when the task was not held (nothing written), or when its
        status is no longer "processing" (released; the status is left as it is)."""
        held = conn.execute(
            update(QueueTask)
            .where(QueueTask.nid == task.nid, QueueTask.runner_id == runner_id,
                   QueueTask.run_id == task.run_id, QueueTask.vid == task.vid)
            .values(runner_id=None, claimed_at=None, run_id=None, cancel_requested=0, vid=None,
                    last_error=last_error)).rowcount
        if held != 1:
            return False
        return conn.execute(
            update(m.HostingTask)
            .where(m.HostingTask.vid == task.vid, m.HostingTask.task_status == m.TASK_PROCESSING)
            .values(task_status=status, delta=delta)).rowcount == 1

    def lost_runners(self, lost_after: float, exclude: str | None = None) -> list[tuple]:
        cutoff = time.time() - lost_after
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(QueueRunner.id, QueueRunner.hostname, QueueRunner.heartbeat)
                .where(QueueRunner.state.in_(("running", "stopping")),
                       QueueRunner.heartbeat < cutoff, QueueRunner.id != (exclude or ""))
            ))

    def reconcile(self, runner_id: str, running: set[str]) -> list[int]:
        """Put back in the queue the tasks this runner holds for runs it does not execute:
        a claim whose commit happened but whose acknowledgement was lost (the runner saw
        an error and never started those runs). The claim's run id is its token: what the
        database holds under this runner with a run id the runner does not know was never
        started. Returns their nids."""

        def fn(conn):
            rows = conn.execute(select(QueueTask.nid, QueueTask.vid, QueueTask.run_id)
                                .where(QueueTask.runner_id == runner_id)
                                .with_for_update()).all()
            orphans = [(nid, vid) for nid, vid, run_id in rows if run_id not in running]
            if not orphans:
                return []
            vids = [vid for _nid, vid in orphans if vid is not None]
            conn.execute(update(m.HostingTask)
                         .where(m.HostingTask.vid.in_(vids),
                                m.HostingTask.task_status == m.TASK_PROCESSING)
                         .values(task_status=m.TASK_QUEUED, executed=0))
            conn.execute(update(QueueTask)
                         .where(QueueTask.nid.in_([nid for nid, _vid in orphans]),
                                QueueTask.runner_id == runner_id)
                         .values(runner_id=None, claimed_at=None, run_id=None, vid=None,
                                 cancel_requested=0,
                                 attempts=case((QueueTask.attempts > 0, QueueTask.attempts - 1),
                                               else_=0)))
            return sorted(nid for nid, _vid in orphans)

        return self.tx(fn, "reconcile")

    def put_back(self, runner_id: str, run: Run, why: str) -> None:
        """A run that could not start (the database was lost while it was prepared): its
        tasks go back to the queue as they were, with a `queue` line saying why."""

        def fn(conn):
            rows = conn.execute(select(QueueTask.nid, QueueTask.run_id, QueueTask.vid)
                                .where(QueueTask.nid.in_([t.nid for t in run.tasks]),
                                       QueueTask.runner_id == runner_id)
                                .with_for_update()).all()
            mine = [t for t in run.tasks if (t.nid, t.run_id, t.vid) in
                    {(nid, run_id, vid) for nid, run_id, vid in rows}]
            if not mine:
                return
            conn.execute(update(m.HostingTask)
                         .where(m.HostingTask.vid.in_([t.vid for t in mine]),
                                m.HostingTask.task_status == m.TASK_PROCESSING)
                         .values(task_status=m.TASK_QUEUED, executed=0))
            conn.execute(update(QueueTask).where(QueueTask.nid.in_([t.nid for t in mine]))
                         .values(runner_id=None, claimed_at=None, run_id=None, vid=None,
                                 cancel_requested=0,
                                 attempts=case((QueueTask.attempts > 0, QueueTask.attempts - 1),
                                               else_=0)))
            add_log(conn, [log_row(t, "queue", f"Task put back in the queue: {why}") for t in mine])

        self.tx(fn, f"putting back run {run.run_id[:8]}")

    def server_reached(self, server: int, unreachable: str | None, settings: Settings) -> float:
        """After a run on this server: reached (unreachable None) ends its back-off; not
        reached doubles it (from `unreachable_backoff`, at most `unreachable_backoff_max`).
        Returns the time its queue is claimed again (0: now)."""

        def fn(conn):
            row = conn.execute(select(ServerHealth.failures).where(ServerHealth.server_nid == server)
                               .with_for_update()).first()
            if unreachable is None:
                if row is not None and row[0]:
                    conn.execute(update(ServerHealth).where(ServerHealth.server_nid == server)
                                 .values(failures=0, backoff_until=0, last_error=None))
                return 0.0
            failures = (row[0] if row else 0) + 1
            until = time.time() + min(settings.unreachable_backoff * 2 ** (failures - 1),
                                      settings.unreachable_backoff_max)
            values = dict(failures=failures, backoff_until=until, last_error=unreachable[:1000])
            if row is None:
                conn.execute(insert(ServerHealth).values(server_nid=server, **values))
            else:
                conn.execute(update(ServerHealth).where(ServerHealth.server_nid == server)
                             .values(**values))
            return until

        try:
            return self.tx(fn, "server health") or 0.0
        except IntegrityError:  # another runner created the row meanwhile: again
            return self.tx(fn, "server health") or 0.0

    def held_for_run(self, runner_id: str, tasks: list[TaskRow]) -> set[int]:
        """The nids of these tasks this runner still holds for their run (not recorded yet)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(QueueTask.nid, QueueTask.run_id, QueueTask.vid)
                                .where(QueueTask.nid.in_([t.nid for t in tasks]),
                                       QueueTask.runner_id == runner_id)).all()
        want = {t.nid: (t.run_id, t.vid) for t in tasks}
        return {nid for nid, run_id, vid in rows if want.get(nid) == (run_id, vid)}

    def fail_unrecordable(self, runner_id: str, task: TaskRow, delta: int,
                          lines: list[tuple[str, str]]) -> bool:
        """Fail a task whose outcome the database refuses (a missing grant, a schema or
        data error): status error and these lines, nothing else. False if no longer held."""

        def fn(conn):
            if not self.finish(conn, runner_id, task, m.TASK_ERROR, delta,
                               last_error=lines[-1][1][:1000]):
                return False
            add_log(conn, [log_row(task, t, msg) for t, msg in lines])
            return True

        return self.tx(fn, f"failing task {task.nid}")

    def stop_runner(self, runner_id: str) -> None:
        self.tx(lambda conn: conn.execute(update(QueueRunner).where(QueueRunner.id == runner_id)
                                          .values(state="stopped", heartbeat=time.time())),
                "stop runner")


# -- revisions: re-queueing a task as hostmaster's retry does -------------------------------

def requeue(conn, task_nid: int, not_before: float, message: str) -> int:
    """Put the task back in the queue as a new revision (hosting_task_retry): the old
    revision keeps its status and log; the new one is QUEUED, with a `queue` log line."""
    now = int(time.time())
    node = conn.execute(select(m.Node.vid, m.Node.title).where(m.Node.nid == task_nid)).first()
    old_vid, title = node
    old = conn.execute(select(m.HostingTask.task_type, m.HostingTask.rid)
                       .where(m.HostingTask.vid == old_vid)).first()
    rev = conn.execute(insert(m.NodeRevision).values(
        nid=task_nid, uid=0, title=title, log=message, timestamp=now, status=1, comment=0,
        promote=0, sticky=0))
    new_vid = rev.inserted_primary_key[0]
    conn.execute(insert(m.HostingTask).values(
        vid=new_vid, nid=task_nid, task_type=old.task_type, rid=old.rid,
        task_status=m.TASK_QUEUED, executed=0, delta=0))
    args = conn.execute(select(m.HostingTaskArgument.name, m.HostingTaskArgument.value)
                        .where(m.HostingTaskArgument.vid == old_vid)).all()
    if args:
        conn.execute(insert(m.HostingTaskArgument),
                     [dict(vid=new_vid, nid=task_nid, name=n, value=v) for n, v in args])
    conn.execute(update(m.Node).where(m.Node.nid == task_nid).values(vid=new_vid, changed=now))
    conn.execute(update(QueueTask).where(QueueTask.nid == task_nid).values(
        not_before=not_before, vid=None, runner_id=None, claimed_at=None, run_id=None,
        cancel_requested=0))
    conn.execute(insert(m.HostingTaskLog).values(
        vid=new_vid, nid=task_nid, type="queue", message=message, error="", timestamp=now))
    return new_vid


def release(conn, task_nid: int | list[int], last_error: str | None = None) -> None:
    """Free the queue row(s): no runner holds the task(s) any more."""
    nids = task_nid if isinstance(task_nid, list) else [task_nid]
    conn.execute(update(QueueTask).where(QueueTask.nid.in_(nids)).values(
        runner_id=None, claimed_at=None, run_id=None, cancel_requested=0, vid=None,
        last_error=last_error))


def add_log(conn, rows: list[dict]) -> None:
    if rows:
        conn.execute(insert(m.HostingTaskLog), rows)


def log_row(task: TaskRow, type_: str, message: str, ts: float | None = None) -> dict:
    return {"vid": task.vid, "nid": task.nid, "type": type_[:16], "message": message,
            "error": "", "timestamp": int(ts or time.time())}


def delete_queue_row(conn, nid: int) -> None:
    conn.execute(delete(QueueTask).where(QueueTask.nid == nid))
