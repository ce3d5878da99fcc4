"""The worker loop: heartbeat, reap lost runners, honour cancel requests, claim, run.

The main thread never runs a playbook: each run has its own thread (ansible-playbook is a
child process), and records its own outcome when it ends, retrying while the database is
unreachable so that no outcome is lost across a database restart. Log rows go through
one batching writer thread.

Signals: SIGTERM or SIGINT stops claiming; running tasks get `shutdown_grace` seconds to
finish, then they are cancelled (tasks safe to repeat are queued again). A second SIGINT
cancels at once.

Database errors: transient ones (connection lost, server down, lock wait, deadlock) are
retried with back-off, at start-up too; after a reconnect and at every heartbeat the
runner reconciles what the database says it holds with what it runs (a claim whose
acknowledgement was lost goes back to the queue). An outcome the database refuses for
good (a missing grant, a schema or data error) fails its task with the database's message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from aegir_ansible import paths, sdnotify
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.logs import task_context

from . import metrics, outcome, rundirs
from .database import QueueError, check_database, is_transient
from .events import LogWriter
from .execution import Execution, clone_rollback
from .manager import JobManager
from .reap import reap
from .settings import Settings
from .types import Run

log = logging.getLogger("aegir.queue")


def default_playbooks_dir() -> Path:
    return Path(os.environ.get("AEGIR_PLAYBOOKS_DIR") or paths.playbooks_dir())


START_BACKOFF_MAX = 30.0  # longest wait between two attempts to reach the database at start-up


def until_reachable(fn, stopped=lambda: False, wait=time.sleep):
    """fn(), tried again with back-off (0.5 s doubling, at most START_BACKOFF_MAX) while the
    database cannot be reached; an error that cannot go away is raised. None if stopped."""
    delay = 0.5
    while not stopped():
        try:
            result = fn()
            metrics.health.db_ok()
            return result
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            metrics.health.db_failed()
            first = str(exc).splitlines()[0]
            log.warning("database unreachable at start-up (%s); trying again in %.1fs", first, delay)
            sdnotify.notifier().status(f"waiting for the database: {first}")
            wait(delay)
            delay = min(delay * 2, START_BACKOFF_MAX)
    return None


def _log_outcome(tr, status: int, stop_reason: str | None) -> None:
    """A failed task at error level, one with warnings at warning level (with the last
    line of its log that says why), so that an operator watching the journal sees them."""
    if status not in (TaskStatus.ERROR, TaskStatus.WARNING):
        return
    kinds = ("error",) if status == TaskStatus.ERROR else ("warning", "error")
    why = next((msg for kind, msg in reversed(tr.closing or []) if kind in kinds), "")
    why = (str(why).splitlines() or [""])[0][:300]
    if status == TaskStatus.ERROR:
        log.error("task %s (%s on %s) failed%s%s", tr.task.nid, tr.task.task_type, tr.task.target_name,
                  f" ({stop_reason})" if stop_reason else "", f": {why}" if why else "",
                  extra={"task": str(tr.task.nid)})
    else:
        log.warning("task %s (%s on %s) finished with warnings%s", tr.task.nid, tr.task.task_type,
                    tr.task.target_name, f": {why}" if why else "", extra={"task": str(tr.task.nid)})


class Worker:
    def __init__(self, engine: Engine, *, servers: list[str] | None = None, concurrency: int = 4,
                 once: bool = False, playbooks_dir: str | Path | None = None,
                 batch_size: int | None = None, grace: float | None = None,
                 install_signals: bool = True, notifier: sdnotify.Notifier | None = None):
        self.engine = engine
        # systemd (Type=notify): READY=1 once started, WATCHDOG=1 from the loop, STOPPING=1.
        self.notifier = notifier if notifier is not None else sdnotify.notifier()
        self.jm = JobManager(engine)
        self.server_names = list(servers or [])
        self.server_nids: list[int] | None = None
        self.concurrency = max(1, int(concurrency))
        self.once = once
        self.playbooks_dir = Path(playbooks_dir) if playbooks_dir else default_playbooks_dir()
        own_cfg = self.playbooks_dir / "ansible.cfg"
        self.ansible_cfg = own_cfg if own_cfg.is_file() else paths.ansible_cfg()
        self.batch_size = batch_size
        self.grace = grace
        self.install_signals = install_signals
        self.runner_id: str | None = None
        self.active: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.stop_requested_at: float | None = None
        self.hard_stop = False
        self.settings: Settings | None = None
        self._queue_mark: int | None = None
        self.failed = 0  # tasks this runner ran whose outcome is an error
        # Runs whose outcome the database refused even as a failure: not reconciled.
        self._abandoned: set[str] = set()
        self._db_ok_since: float | None = None  # connected since (None: in an outage)

    @property
    def _registered_id(self) -> str:
        """runner_id, which _start_up() sets before the runner does anything else."""
        if self.runner_id is None:
            raise RuntimeError("the runner is not registered")
        return self.runner_id

    # -- control -----------------------------------------------------------------------

    def request_stop(self, hard: bool = False) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.time()
            log.info("stop requested: no new tasks; waiting for %d running run(s)", len(self.active))
            self.notifier.stopping(f"stopping: waiting for {len(self.active)} run(s)")
        if hard:
            self.hard_stop = True
        self.wake.set()

    def _signal(self, signum, _frame) -> None:
        self.request_stop(hard=signum == signal.SIGINT and self.stop_requested_at is not None)

    def _resolve_servers(self) -> None:
        if not self.server_names:
            return
        from sqlalchemy.orm import Session

        from aegir_ansible.frontend import Frontend

        with Session(self.engine) as session:
            fe = Frontend(session)
            self.server_nids = [fe.find(n, types=("server",)).nid for n in self.server_names]

    def _effective(self, settings: Settings) -> Settings:
        values: dict[str, int | float] = {}
        if self.batch_size is not None:
            values["batch_size"] = self.batch_size
        if self.grace is not None:
            values["shutdown_grace"] = self.grace
        return settings.replace(**values) if values else settings

    # -- runs --------------------------------------------------------------------------

    def _start(self, run: Run, settings: Settings) -> None:
        ex = Execution(run, self.engine, self.writer, self.playbooks_dir,
                       timeout=settings.task_timeout, kill_grace=settings.kill_grace,
                       ansible_cfg=self.ansible_cfg, connect_timeout=settings.connect_timeout)
        with self._lock:
            self.active[run.run_id] = ex
        names = ", ".join(f"{t.nid} ({t.target_name})" for t in run.tasks)
        log.info("run %s: %s on %s", run.run_id[:8], run.task_type, names,
                 extra={"task": ",".join(str(t.nid) for t in run.tasks)})
        threading.Thread(target=self._run_thread, args=(ex, settings), daemon=True,
                         name=f"aegir-run-{run.run_id[:8]}").start()

    def _run_thread(self, ex: Execution, settings: Settings) -> None:
        with task_context(t.nid for t in ex.run.tasks):
            self._run_and_record(ex, settings)

    def _run_and_record(self, ex: Execution, settings: Settings) -> None:
        try:
            metrics.count("runs")
            res = ex.execute()
            if not res.requeue:
                outcome.judge(res, settings, ex.line)  # each task's status, decided once
            self.writer.flush()
            what = f"run {ex.run.run_id[:8]}"
            if res.requeue:
                self._record(lambda: self.jm.put_back(self._registered_id, ex.run, res.requeue), what)
                log.warning("run %s: not started, its tasks are back in the queue: %s",
                            ex.run.run_id[:8], res.requeue)
                return
            refused: set[int] = set()  # tasks failed because their outcome was refused
            self._record(lambda: outcome.record(self.jm, self._registered_id, res, settings), what,
                         on_permanent=lambda exc: refused.update(
                             self._record_each(res, settings, exc)))
            for tr in res.tasks.values():
                if tr.rollback:  # a clone made on the server that could not be recorded
                    rb = clone_rollback(ex, tr.task, tr.rollback)
                    outcome.judge(rb.execute(), settings, rb.line)  # its lines, not recorded
                    self.writer.flush()
            for nid, tr in res.tasks.items():
                # As recorded: a clone that could not be recorded, and an outcome the
                # database refused, are failures.
                status = TaskStatus.ERROR if nid in refused or tr.rollback else tr.status
                metrics.finished(tr.task.task_type, status, res.ended - res.started)
                self.failed += status == TaskStatus.ERROR
                _log_outcome(tr, status, res.stop_reason)
            self._server_reached(ex, settings)
            log.info("run %s: finished (%s) in %.1fs", ex.run.run_id[:8],
                     res.stop_reason or res.status, res.ended - res.started)
        except Exception:  # noqa: BLE001
            log.exception("run %s crashed", ex.run.run_id)
        finally:
            with self._lock:
                self.active.pop(ex.run.run_id, None)
            self.wake.set()

    def _server_reached(self, ex: Execution, settings: Settings) -> None:
        """Per-server back-off: a run that found its server unreachable makes the claims
        skip that server for a while (doubling); one that reached it ends the back-off."""
        stats = ex.result.stats
        if ex.run.server is None or ex.result.stop_reason or not stats:
            return
        dark = stats.get("dark") or {}
        reached = set(stats.get("processed") or {}) - set(dark)
        if not dark and not reached:
            return
        message = f"unreachable: {', '.join(sorted(dark))}" if dark and not reached else None
        self._record(lambda: self._note_server(ex.run.server, message, settings),
                     f"server {ex.run.server} health")

    def _note_server(self, server: int, message: str | None, settings: Settings) -> None:
        until = self.jm.server_reached(server, message, settings)
        if until:
            metrics.count("server_backoffs")
            log.warning("server %s unreachable: its queue is not claimed for %.0f s", server,
                        until - time.time())

    def _record(self, fn, what: str, on_permanent=None) -> None:
        """Retry until the database takes it: an outcome is never dropped for a transient
        error. An error that cannot go away (a missing grant, a schema or data error) is
        reported and handed to on_permanent, instead of being retried forever."""
        delay = 0.5
        while True:
            try:
                fn()
                return
            except SQLAlchemyError as exc:
                first = str(exc).splitlines()[0]
                if not is_transient(exc):
                    metrics.count("db_permanent_errors")
                    log.error("%s: the database refuses this write (%s); it cannot succeed "
                              "by retrying", what, first)
                    if on_permanent is not None:
                        on_permanent(exc)
                    return
                log.warning("%s: recording failed (%s); retrying in %.1fs", what, first, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _record_each(self, res, settings: Settings, exc: BaseException) -> set[int]:
        """An outcome the database refused: each task still held is recorded on its own;
        one the database refuses too is failed with the database's message (the playbook
        ran: what it changed on the server is not in the database). Returns those nids."""
        first = str(getattr(exc, "orig", exc)).splitlines()[0]
        held, failed = set(), set()
        self._record(lambda: held.update(self.jm.held_for_run(self._registered_id,
                                                              [tr.task for tr in res.tasks.values()])),
                     f"run {res.run.run_id[:8]}")
        for nid, tr in res.tasks.items():
            if nid not in held:
                continue
            one = dataclasses.replace(res, tasks={nid: tr})
            refused: list[BaseException] = []
            self._record(lambda one=one: outcome.record(self.jm, self._registered_id, one, settings),
                         f"task {nid}", on_permanent=refused.append)
            if not refused:
                continue
            why = str(getattr(refused[0], "orig", refused[0])).splitlines()[0] or first
            lines = [("error", f"The outcome of this task could not be recorded: the database "
                               f"refused it ({why}). The playbook ran "
                               f"({TaskStatus.label_of(tr.status)}): what it changed "
                               "on the server is not recorded; fix the database (grants, schema) "
                               "and run the task again.")]
            self._record(lambda tr=tr: self.jm.fail_unrecordable(
                self._registered_id, tr.task, max(0, int(res.ended - res.started)), lines),  # noqa: B023 (run now)
                f"task {nid}", on_permanent=lambda _exc: self._abandoned.add(res.run.run_id))
            metrics.count("outcome_refused")
            failed.add(nid)
        return failed

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve the queue until stopped (or, with `once`, until no task is ready). Returns
        the exit status: 1 when `once` and a task this runner ran failed, else 0."""
        old = {}
        if self.install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, self._signal)
        try:
            if not self._start_up():
                return 0
            self.writer = LogWriter(self.engine)
            try:
                self._loop()
            finally:
                self.writer.close()
                try:
                    self.jm.stop_runner(self._registered_id)
                except SQLAlchemyError:
                    pass
                log.info("runner %s stopped", self.runner_id)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return 1 if self.once and self.failed else 0

    def _start_up(self) -> bool:
        """Check the database and register; while the database cannot be reached, try
        again with back-off (a runner started before its database is not lost). False
        when stopped meanwhile."""

        def start():
            desc = check_database(self.engine)
            self._resolve_servers()
            self.runner_id = self.jm.register_runner(self.server_nids, self.concurrency)
            return desc

        desc = until_reachable(start, stopped=lambda: self.stop_requested_at is not None,
                               wait=self.wake.wait)
        if self.stop_requested_at is not None:
            return False
        log.info("database: %s", desc)
        self._check_migrations()
        rundirs.sweep()  # what runners killed on this machine left (inventories with passwords)
        log.info("runner %s started (concurrency %d%s)", self.runner_id, self.concurrency,
                 f", servers {', '.join(self.server_names)}" if self.server_names else "")
        self.notifier.ready(f"runner {self.runner_id}: serving "
                            + (", ".join(self.server_names) if self.server_names else "all servers"))
        return True

    def _check_migrations(self) -> None:
        """Warn when the backend's tables are behind this release (`aegir db upgrade` was
        not run after an upgrade): a new column's absence would fail tasks later."""
        from aegir_ansible.db import migrations

        try:
            pending = migrations.pending(self.engine)
        except Exception as exc:  # noqa: BLE001 — a check only (e.g. no SELECT on the version table)
            log.debug("migrations: cannot tell the schema revision: %s", str(exc).splitlines()[0])
            return
        if pending:
            log.warning("the backend's tables are behind this release (migrations not applied: %s): "
                        "run `aegir db upgrade`", ", ".join(pending))

    def _reconcile(self) -> None:
        """What the database says this runner holds, against what it runs (a claim whose
        acknowledgement was lost left tasks held for runs that never started)."""
        with self._lock:
            running = set(self.active) | self._abandoned
        back = self.jm.reconcile(self._registered_id, running)
        if back:
            metrics.count("reconciled_tasks", len(back))
            log.warning("task(s) %s were held by this runner for runs it never started (a "
                        "claim's acknowledgement was lost): back in the queue",
                        ", ".join(map(str, back)), extra={"task": ",".join(map(str, back))})

    def _loop(self) -> None:
        last_hb = 0.0
        self._db_ok_since = time.time()
        backoff = 0.5
        settings = None
        while True:
            now = time.time()
            metrics.health.loop_tick()
            self.notifier.watchdog()
            active_before = None
            try:
                settings = self._effective(self.jm.settings(max_age=self.SETTINGS_MAX_AGE))
                self.settings = settings
                metrics.health.configure(settings)
                if self._db_ok_since is None:
                    self._db_ok_since = now
                    log.info("database reachable again")
                    self._reconcile()
                if now - last_hb >= settings.heartbeat_interval:
                    state = self.jm.heartbeat(self._registered_id,
                                              "stopping" if self.stop_requested_at else None)
                    if state == "lost":
                        self._revive()
                    last_hb = now
                    self._reconcile()
                    # Reap others only after being connected a full period ourselves, so a
                    # database outage is not mistaken for dead runners.
                    if now - self._db_ok_since >= settings.runner_lost_after:
                        reaped = reap(self.jm, settings, exclude=self.runner_id)
                        if reaped:
                            log.warning("failed %d task(s) of lost runners: %s", len(reaped), reaped)
                for nid in self.jm.cancel_requests(self._registered_id):
                    with self._lock:
                        for ex in self.active.values():
                            if any(t.nid == nid for t in ex.run.tasks):
                                ex.cancelled.add(nid)
                                ex.stop("cancel")
                claimed = []
                if self.stop_requested_at is None:
                    with self._lock:
                        active_before = len(self.active)
                    slots = self.concurrency - active_before
                    if slots > 0:
                        self._queue_mark = self.jm.queue_mark()
                        claimed = self.jm.claim(self._registered_id, slots, settings,
                                                self.server_nids)
                    for run in claimed:
                        if run.problem:
                            log.warning("task %s is malformed: %s", run.tasks[0].nid, run.problem)
                            self.failed += 1
                            self._record(lambda run=run: outcome.fail_malformed(
                                self.jm, self._registered_id, run, run.problem),
                                f"task {run.tasks[0].nid}",
                                on_permanent=lambda _exc, run=run: self._abandoned.add(run.run_id))
                        else:
                            self._start(run, settings)
                backoff = 0.5
                metrics.health.db_ok()
            except QueueError:
                raise
            except SQLAlchemyError as exc:
                self._db_failed(exc)
                if self.stop_requested_at is None:
                    metrics.count("claim_errors")  # this round's claim could not be made
                claimed = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            with self._lock:
                active = len(self.active)
            if self.stop_requested_at is not None:
                grace = settings.shutdown_grace if settings else 60.0
                if active == 0:
                    return
                if self.hard_stop or time.time() - self.stop_requested_at > grace:
                    with self._lock:
                        for ex in self.active.values():
                            ex.stop("shutdown")
            elif (self.once and active_before == 0 and active == 0 and claimed == []
                  and not self.jm.skipped_servers):
                # No run was going before or after a claim that found nothing, and no
                # server was skipped for another runner's claim: no task is ready.
                return
            interval = settings.poll_interval if settings else 1.0
            if claimed:
                interval = 0  # more may be ready at once
            self._wait(interval)
            self.wake.clear()

    def _db_failed(self, exc: BaseException) -> None:
        """The database did not answer: say so once per outage."""
        if self._db_ok_since is not None:
            log.warning("database unreachable: %s", str(exc).splitlines()[0])
        self._db_ok_since = None
        metrics.health.db_failed()

    def _revive(self) -> None:
        """Another runner declared this one lost (no heartbeat in `runner_lost_after`: a
        stalled process or database) and failed or re-queued the tasks it held. Stop the runs
        of those tasks (a retry may already run elsewhere; their outcome is not recorded
        here), keep the runs of tasks claimed since, and be a running runner again."""
        held = self.jm.revive(self._registered_id, "stopping" if self.stop_requested_at else "running")
        with self._lock:
            lost = [ex for ex in self.active.values()
                    if not any(t.nid in held for t in ex.run.tasks)]
            for ex in lost:
                ex.stop("lost")
        log.error("this runner was declared lost by another runner (its heartbeats came too "
                  "late), which failed or re-queued its tasks; %d run(s) of those tasks stopped; "
                  "running again", len(lost))

    # How old the queue settings may be when the loop uses them (a change takes effect
    # within this time).
    SETTINGS_MAX_AGE = 1.0

    # Between polls, how often to look for newly queued tasks (one index lookup).
    NEW_TASK_CHECK = 0.1

    def _wait(self, interval: float) -> None:
        """Sleep until the next poll, a run's end (wake), or a newly queued task."""
        deadline = time.time() + interval
        while not self.wake.is_set():
            self.notifier.watchdog()  # the loop turns while it waits (and alive)
            left = deadline - time.time()
            if left <= 0:
                return
            if self.wake.wait(timeout=min(self.NEW_TASK_CHECK, left)):
                return
            if self.stop_requested_at is not None:
                continue
            with self._lock:
                if len(self.active) >= self.concurrency:
                    continue
            try:
                mark = self.jm.queue_mark()
            except SQLAlchemyError as exc:
                self._db_failed(exc)
                return  # the main loop retries with back-off
            if mark != self._queue_mark:
                self._queue_mark = mark
                return
