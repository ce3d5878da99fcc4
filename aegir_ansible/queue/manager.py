"""The job manager: the queue's state in the database as one runner sees it — runners and
their heartbeats, the claim (claim.py holds its protocol), cancel flags, releasing a task with
its final status, putting back what did not start, and server back-off. Each write is one
claim-style transaction (database.transaction)."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from sqlalchemy import Engine, case, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.db.queue_tables import (
    QueuedTask,
    QueueRunner,
    QueueServer,
    QueueSync,
    QueueTask,
    ServerHealth,
)

from . import database
from .claim import Claim, HeadsPage
from .revisions import add_log, log_row
from .settings import Settings, load_settings
from .sql import heads_query, indexed_rows, queued_rows_query, queued_servers_query, wide_query
from .types import Run, TaskRow

log = logging.getLogger("aegir.queue")

# -- the index of queued tasks (aegir_ansible_queued) ---------------------------------------
#
# The claim's page of heads reads the queued tasks from the backend's own index instead of
# scanning hosting_task (task_status has no index there) and joining every queued row to its
# target. Hostmaster queues a task as a new node, and a retry (hosting_task_retry, and
# revisions.requeue) as a new revision: both are a new hosting_task.vid, above the newest one
# the index has seen (`mark`), so a sync reads the revisions above it by primary key range.
# Revisions committed out of order (a lower vid committed after a higher one was seen) are
# caught by reading again SYNC_LAG revisions below the mark; anything else (a status set
# back to queued in place, a node deleted) by the full comparison every RESYNC_EVERY
# seconds, the only scan of hosting_task. The index is a hint: every claim checks its tasks
# against the frontend tables again, drops the rows of tasks no longer queued and fixes those
# whose server or platform changed (claim.Claim.consider).

SYNC_LAG = 256  # revisions read again below the mark
SYNC_EVERY = 1.0  # a runner syncs at least this often (seconds) when it reads a page
RESYNC_EVERY = 60.0  # the full comparison with hosting_task (seconds)
_COLS = ("nid", "vid", "rid", "server", "level", "priority", "site", "platform", "wide_platform")


def _chunks(items: list, n: int = 1000):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _put_queued(conn, rows: list[dict], replace: bool) -> None:
    """Write these rows to the index; `replace`: rows of the same nids go first."""
    if replace:
        for part in _chunks([r["nid"] for r in rows]):
            conn.execute(delete(QueuedTask).where(QueuedTask.nid.in_(part)))
    for part in _chunks(rows):
        conn.execute(insert(QueuedTask), part)


def _key(row) -> tuple:
    return (row["vid"], row["server"], row["site"], row["platform"], row["wide_platform"])


def _merge_queued(conn, rows: list[dict], full: bool) -> int:
    """Bring the index in step with these frontend rows: rows missing or different are
    written; with `full` (rows are every queued task) the index rows not among them are
    dropped. Read the frontend first, then the index: a task claimed in between is only
    re-added as a stale row (the next claim that reads it drops it)."""
    want = {r["nid"]: r for r in rows}
    if full:
        have_rows = conn.execute(select(*[getattr(QueuedTask, c) for c in _COLS])).mappings().all()
    else:
        have_rows = [r for part in _chunks(list(want)) for r in conn.execute(
            select(*[getattr(QueuedTask, c) for c in _COLS]).where(QueuedTask.nid.in_(part))).mappings()]
    have = {r["nid"]: r for r in have_rows}
    write = [r for nid, r in want.items() if nid not in have or _key(have[nid]) != _key(r)]
    if full:
        drop = [r["vid"] for nid, r in have.items() if nid not in want]
        for part in _chunks(drop):
            conn.execute(delete(QueuedTask).where(QueuedTask.vid.in_(part)))
    _put_queued(conn, write, replace=any(r["nid"] in have for r in write))
    return len(write)


def sync_index(conn, now: float, top: int) -> str | None:
    """One sync of the index (in the caller's transaction), up to hosting_task.vid `top`:
    the revisions above the mark (less SYNC_LAG), or everything when the last full
    comparison is RESYNC_EVERY old (or the frontend's newest revision is below the mark: a
    restored database). Skipped (None) while another runner syncs. Returns "full" or
    "incremental"."""
    state = conn.execute(select(QueueSync.mark, QueueSync.resynced_at).where(QueueSync.id == 1)
                         .with_for_update(skip_locked=True)).first()
    if state is None:
        if conn.execute(select(QueueSync.id).where(QueueSync.id == 1)).first() is not None:
            return None  # another runner is syncing
        conn.execute(insert(QueueSync).values(id=1, mark=0, resynced_at=0))
        mark, resynced_at = 0, 0.0
    else:
        mark, resynced_at = state
    full = now - resynced_at >= RESYNC_EVERY or top < mark
    if full:
        rows = [dict(r) for r in conn.execute(queued_rows_query()).mappings()]
    else:
        rows = [dict(r) for r in conn.execute(
            queued_rows_query(vid_range=(max(0, mark - SYNC_LAG), top))).mappings()]
    _merge_queued(conn, rows, full)
    values: dict = {"mark": top}
    if full:
        values["resynced_at"] = now
    conn.execute(update(QueueSync).where(QueueSync.id == 1).values(**values))
    return "full" if full else "incremental"


def requeued_in_place(conn, vids: list[int]) -> None:
    """These revisions were set back to queued in place (put back, reconciled): their rows
    in the index, written now. Takes the sync's lock (a sync may be writing the same rows)."""
    if not vids:
        return
    conn.execute(select(QueueSync.id).where(QueueSync.id == 1).with_for_update())
    rows = [dict(r) for part in _chunks(list(vids))
            for r in conn.execute(queued_rows_query(vids=part)).mappings()]
    _merge_queued(conn, rows, full=False)


class JobManager:
    """The queue's state in the database, for one runner (or an admin command)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.scan_limit = 2000
        self._known_server_rows: set[int] = set()
        self._heads: HeadsPage | None = None
        self._mark: int | None = None
        self._settings: tuple[float, Settings] | None = None  # (read at, settings)
        self._synced: tuple[int, float] = (-1, 0.0)  # (top vid, at) of this runner's last sync
        # Servers the last claim skipped because another runner was claiming on them.
        self.skipped_servers: set[int] = set()

    # -- transactions --------------------------------------------------------------------

    def _conn(self):
        return database.connect(self.engine)

    def tx(self, fn, what="transaction"):
        """fn(conn) in one claim-style transaction, retried on conflicts."""
        return database.transaction(self.engine, fn, what)

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
            values: dict[str, float | str] = {"heartbeat": time.time()}
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
        if cached is None or fresh:
            cached = self._read_heads(key, servers, now, per_server)
        claimed: list[Run] = []
        self.skipped_servers = set()
        for _attempt in (0, 1):
            if not cached.heads:
                break
            self.ensure_server_rows({server for _nid, server in cached.heads})
            left = slots - len(claimed)
            runs, gone = self.tx(lambda conn: self._claim(conn, runner_id, left, settings, now,  # noqa: B023 (tx runs it now)
                                                           cached), "claim")  # noqa: B023
            cached.drop(gone)  # after the commit: a retried transaction sees the whole page
            claimed += runs
            if fresh or len(claimed) >= slots or (runs and not cached.stale(key, now, max_age)):
                break
            # The kept page gave less than it could (other runners took its tasks): read a
            # new one.
            cached = self._read_heads(key, servers, now, per_server)
            fresh = True
        return claimed

    def sync_queued(self, now: float | None = None) -> str | None:
        """Bring the index of queued tasks in step (sync_index), when the frontend has a
        new task revision since this runner's last sync or that sync is SYNC_EVERY old."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            top = conn.execute(select(func.max(m.HostingTask.vid))).scalar() or 0
        if top == self._synced[0] and now - self._synced[1] < SYNC_EVERY:
            return None
        try:
            done = self.tx(lambda conn: sync_index(conn, now, top), "queue sync")
        except IntegrityError:  # another runner created the sync row, or wrote a row first
            done = self.tx(lambda conn: sync_index(conn, now, top), "queue sync")
        self._synced = (top, now)
        return done

    def _read_heads(self, key, servers, now, per_server) -> HeadsPage:
        """Outside any transaction, without locks: the claim checks every task again."""
        self.sync_queued(now)
        with self.engine.connect() as conn:
            wide = dict(conn.execute(wide_query()).all())
            present = set(conn.execute(queued_servers_query()).scalars())
            only = sorted(present if servers is None else present & set(servers))
            q = heads_query(now, servers=only, orphans=servers is None, wide=wide,
                            per_server=per_server)
            rows = conn.execute(q).all() if q is not None else []
        heads = [(nid, server) for nid, server, *_rest in rows]
        self._heads = HeadsPage(key, now, per_server, heads, wide, indexed_rows(rows))
        return self._heads

    def _claim(self, conn, runner_id, slots, settings, now, cached: HeadsPage):
        """One claim transaction (steps 1-4 of the module's docstring): (runs, gone)."""
        claim = Claim(conn, runner_id, slots, settings, now, cached)
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
                   m.HostingTask.task_status == TaskStatus.PROCESSING)
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
            .where(m.HostingTask.vid == task.vid, m.HostingTask.task_status == TaskStatus.PROCESSING)
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
                                m.HostingTask.task_status == TaskStatus.PROCESSING)
                         .values(task_status=TaskStatus.QUEUED, executed=0))
            requeued_in_place(conn, vids)
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
                                m.HostingTask.task_status == TaskStatus.PROCESSING)
                         .values(task_status=TaskStatus.QUEUED, executed=0))
            requeued_in_place(conn, [t.vid for t in mine])
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
            if not self.finish(conn, runner_id, task, TaskStatus.ERROR, delta,
                               last_error=lines[-1][1][:1000]):
                return False
            add_log(conn, [log_row(task, t, msg) for t, msg in lines])
            return True

        return self.tx(fn, f"failing task {task.nid}")

    def stop_runner(self, runner_id: str) -> None:
        self.tx(lambda conn: conn.execute(update(QueueRunner).where(QueueRunner.id == runner_id)
                                          .values(state="stopped", heartbeat=time.time())),
                "stop runner")
