"""The job manager: claiming, heartbeats, reaping, cancel flags, re-queueing. SQL only.

Claim protocol (one short transaction; READ COMMITTED on MariaDB/MySQL, BEGIN IMMEDIATE on
SQLite):

1. read (no lock) the oldest queued tasks with the server each one targets, computed from
   the frontend tables (task -> site -> platform -> web server, or the platform's, or the
   server itself);
2. lock the queue rows of the servers that have work, `FOR UPDATE SKIP LOCKED`: a server
   another runner is claiming on right now is skipped this round, so claims on one server
   are serialised and claims on different servers run in parallel;
3. read the running tasks again (fresh, committed) and choose, per locked server, what may
   start: per-server concurrency, one task per site/target at a time, no site task while a
   platform-wide task of its platform runs (and the reverse), oldest task first per target,
   then priority;
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

from sqlalchemy import Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import aliased

from aegir_ansible.db import models as m
from aegir_ansible.tasks import TASK_TYPES

from . import metrics
from .tables import SETTINGS, QueueRunner, QueueServer, QueueSetting, QueueTask, parse_setting

log = logging.getLogger("aegir.queue")

# Task types several tasks of which (on one server) may run as one playbook run.
BATCHABLE_TYPES = frozenset({"verify"})

RETRYABLE_MYSQL_ERRORS = {1213, 1205, 1020}
# Lost connection / server gone / cannot connect: wait and try again.
CONNECTION_MYSQL_ERRORS = {2002, 2003, 2006, 2013, 2055, 1927, 1053, 4031}


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


def _target_select(*extra):
    t = m.HostingTask
    tn = aliased(m.Node, name="tn")
    rn = aliased(m.Node, name="rn")
    ctx = m.HostingContext
    s = m.HostingSite
    spn = aliased(m.Node, name="spn")
    sp = aliased(m.HostingPlatform, name="sp")
    rp = aliased(m.HostingPlatform, name="rp")
    sv = m.HostingServer
    qt = QueueTask
    server = func.coalesce(sv.nid, rp.web_server, sp.web_server)
    q = (
        select(t.vid, t.nid, t.task_type, t.rid, rn.type, ctx.name, s.status,
               func.coalesce(rp.status, sp.status), sv.status, server,
               func.coalesce(rp.nid, sp.nid), s.nid, t.task_status,
               qt.not_before, qt.attempts, qt.runner_id, qt.run_id, qt.cancel_requested, qt.nid,
               *extra)
        .select_from(t)
        .join(tn, tn.vid == t.vid)
        .outerjoin(rn, rn.nid == t.rid)
        .outerjoin(ctx, ctx.nid == t.rid)
        .outerjoin(s, and_(s.vid == rn.vid, rn.type == "site"))
        .outerjoin(spn, spn.nid == s.platform)
        .outerjoin(sp, sp.vid == spn.vid)
        .outerjoin(rp, and_(rp.vid == rn.vid, rn.type == "platform"))
        .outerjoin(sv, and_(sv.vid == rn.vid, rn.type == "server"))
        .outerjoin(qt, qt.nid == t.nid)
        .where(tn.type == "task")
    )
    return q, server


def _rows(result) -> list[TaskRow]:
    out = []
    for r in result:
        out.append(TaskRow(*r[:18], has_queue_row=r[18] is not None))
    return out


_BASE_TARGET_SELECT = None


def target_query(status: int | None = None, servers: list[int] | None = None, nids=None, limit=None):
    global _BASE_TARGET_SELECT
    if _BASE_TARGET_SELECT is None:
        # Built once: constructing this many-join select costs milliseconds of Python, and
        # claims use it several times each (statements are immutable; .where() copies).
        _BASE_TARGET_SELECT = _target_select()
    q, server = _BASE_TARGET_SELECT
    if status is not None:
        q = q.where(m.HostingTask.task_status == status)
    if servers:
        q = q.where(server.in_(servers))
    if nids is not None:
        q = q.where(m.HostingTask.nid.in_(list(nids)))
    q = q.order_by(m.HostingTask.nid)
    if limit:
        q = q.limit(limit)
    return q


def queued_servers_query(servers: list[int] | None = None):
    """The distinct servers (None for malformed tasks) of the queued tasks: what a claim
    needs to know before its transaction, without reading every queued row."""
    sub = target_query(0, servers).order_by(None).subquery()
    return select(list(sub.c)[9]).distinct()  # column 9: the server (TaskRow.server)


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


class JobManager:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.mysql = engine.dialect.name != "sqlite"
        self.scan_limit = 2000
        self._known_server_rows: set[int] = set()

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

    def settings(self) -> Settings:
        with self.engine.connect() as conn:
            return load_settings(conn)

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
        with self.engine.connect() as conn:
            with_work = list(conn.execute(queued_servers_query(servers)).scalars())
        if not with_work:
            return []
        self.ensure_server_rows(set(with_work))
        return self.tx(lambda conn: self._claim(conn, runner_id, slots, settings, servers, now),
                       "claim")

    def _claim(self, conn, runner_id, slots, settings, servers, now) -> list[Run]:
        if settings.concurrency > 0:
            # An exact global limit: claims take turns on the setting's row.
            conn.execute(select(QueueSetting.name).where(QueueSetting.name == "concurrency")
                         .with_for_update())
        queued = _rows(conn.execute(target_query(0, servers, limit=self.scan_limit)))
        if not queued:
            return []
        runs: list[Run] = []
        problems = [(r, r.problem()) for r in queued]
        bad = [(r, p) for r, p in problems if p]
        good = [r for r, p in problems if not p]

        # Lock the queues of the servers with work; skip those another runner is claiming on.
        wanted = sorted({r.server for r in good})
        locked: dict[int, tuple[int, int | None]] = {}
        if wanted:
            for nid, paused, conc in conn.execute(
                select(QueueServer.server_nid, QueueServer.paused, QueueServer.concurrency)
                .where(QueueServer.server_nid.in_(wanted))
                .order_by(QueueServer.server_nid)
                .with_for_update(skip_locked=True)
            ):
                locked[nid] = (paused, conc)

        running = _rows(conn.execute(target_query(-1))) if locked or settings.concurrency else []
        run_keys_by_server: dict[int, set] = defaultdict(set)
        all_runs = set()
        busy_targets, busy_sites = set(), set()
        busy_wide_platforms, busy_site_platforms = set(), set()
        my_runs = set()
        for r in running:
            key = r.run_id or f"task:{r.nid}"
            all_runs.add(key)
            if r.server is not None:
                run_keys_by_server[r.server].add(key)
            busy_targets.add(r.rid)
            if r.site:
                busy_sites.add(r.site)
                if r.platform:
                    busy_site_platforms.add(r.platform)
            if r.platform_wide:
                busy_wide_platforms.add(r.platform)
            if r.runner_id == runner_id:
                my_runs.add(key)
        global_free = (settings.concurrency - len(all_runs)) if settings.concurrency > 0 else 10**9

        # Oldest queued task per target only (FIFO per target); a queued platform-wide task
        # holds back site tasks of its platform queued after it.
        first_per_target: dict[int, TaskRow] = {}
        wide_queued: dict[int, int] = {}
        for r in good:  # ordered by nid
            first_per_target.setdefault(r.rid, r)
            if r.platform_wide:
                wide_queued.setdefault(r.platform, r.nid)
        eligible = [r for r in first_per_target.values()
                    if r.server in locked and not locked[r.server][0]
                    and (r.not_before or 0) <= now]
        eligible.sort(key=lambda r: r.order)

        free_by_server = {}
        for nid, (paused, conc) in locked.items():
            cap = conc if conc is not None else settings.server_concurrency
            free_by_server[nid] = cap - len(run_keys_by_server[nid])
        open_batches: dict[tuple, Run] = {}
        chosen: list[tuple[TaskRow, Run]] = []
        for r in eligible:
            if r.rid in busy_targets or (r.site and r.site in busy_sites):
                continue
            if r.site and r.platform in busy_wide_platforms:
                continue
            if r.site and r.platform in wide_queued and wide_queued[r.platform] < r.nid:
                continue
            if r.platform_wide and (r.platform in busy_site_platforms
                                    or r.platform in busy_wide_platforms):
                continue
            batch_key = (r.server, r.task_type, r.target_type)
            run = None
            if r.task_type in BATCHABLE_TYPES and settings.batch_size > 1:
                run = open_batches.get(batch_key)
                if run is not None and len(run.tasks) >= settings.batch_size:
                    run = None
            if run is None:
                if slots <= 0 or global_free <= 0 or free_by_server[r.server] <= 0:
                    continue
                run = Run(uuid.uuid4().hex, r.server, r.task_type)
                runs.append(run)
                slots -= 1
                global_free -= 1
                free_by_server[r.server] -= 1
                if r.task_type in BATCHABLE_TYPES:
                    open_batches[batch_key] = run
            run.tasks.append(r)
            chosen.append((r, run))
            busy_targets.add(r.rid)
            if r.site:
                busy_sites.add(r.site)
                busy_site_platforms.add(r.platform)
            if r.platform_wide:
                busy_wide_platforms.add(r.platform)

        bad_runs = [Run(uuid.uuid4().hex, r.server, r.task_type, [r], problem=p) for r, p in bad]
        candidates = [(r, run) for r, run in chosen] + [(run.tasks[0], run) for run in bad_runs]
        if not candidates:
            return []
        vids = [r.vid for r, _ in candidates]
        got = set(conn.execute(
            select(m.HostingTask.vid)
            .where(m.HostingTask.vid.in_(vids), m.HostingTask.task_status == 0)
            .with_for_update(skip_locked=True)
        ).scalars())
        if not got:
            return []
        ts = int(now)
        conn.execute(update(m.HostingTask).where(m.HostingTask.vid.in_(got),
                                                 m.HostingTask.task_status == 0)
                     .values(task_status=m.TASK_PROCESSING, executed=ts, delta=0))
        conn.execute(update(m.Node).where(m.Node.vid.in_(got)).values(changed=ts))
        claimed_nids_new, claimed_old = [], []
        for r, run in candidates:
            if r.vid not in got:
                continue
            values = dict(vid=r.vid, runner_id=runner_id, claimed_at=now, run_id=run.run_id,
                          cancel_requested=0)
            if r.has_queue_row:
                claimed_old.append((r.nid, values))
            else:
                claimed_nids_new.append(dict(nid=r.nid, not_before=0, attempts=1, **values))
            r.task_status = m.TASK_PROCESSING
            r.attempts = (r.attempts or 0) + 1 if r.has_queue_row else 1
            r.runner_id = runner_id
            r.run_id = run.run_id
        for nid, values in claimed_old:
            conn.execute(update(QueueTask).where(QueueTask.nid == nid)
                         .values(attempts=QueueTask.attempts + 1, **values))
        if claimed_nids_new:
            conn.execute(insert(QueueTask), claimed_nids_new)
        result = []
        for run in runs + bad_runs:
            run.tasks = [t for t in run.tasks if t.vid in got]
            if run.tasks:
                result.append(run)
        return result

    # -- cancel, reaping, release --------------------------------------------------------

    def cancel_requests(self, runner_id: str) -> set[int]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(QueueTask.nid).where(
                QueueTask.runner_id == runner_id, QueueTask.cancel_requested == 1)).scalars())

    def still_mine(self, conn, runner_id: str, task: TaskRow) -> bool:
        row = conn.execute(
            select(QueueTask.runner_id, QueueTask.run_id, m.HostingTask.task_status)
            .join(m.Node, m.Node.nid == QueueTask.nid)
            .join(m.HostingTask, m.HostingTask.vid == m.Node.vid)
            .where(QueueTask.nid == task.nid, m.HostingTask.vid == task.vid)
            .with_for_update()
        ).first()
        return bool(row and row[0] == runner_id and row[1] == task.run_id
                    and row[2] == m.TASK_PROCESSING)

    def lost_runners(self, lost_after: float, exclude: str | None = None) -> list[tuple]:
        cutoff = time.time() - lost_after
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(QueueRunner.id, QueueRunner.hostname, QueueRunner.heartbeat)
                .where(QueueRunner.state.in_(("running", "stopping")),
                       QueueRunner.heartbeat < cutoff, QueueRunner.id != (exclude or ""))
            ))

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


def release(conn, task_nid: int, last_error: str | None = None) -> None:
    conn.execute(update(QueueTask).where(QueueTask.nid == task_nid).values(
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
