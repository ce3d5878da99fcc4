"""Running one claimed run (a task, or a coalesced batch of tasks) with ansible-runner.

The run's private directory is prepared first (prepare.py: the inventory, the extra vars, the
ansible-playbook wrapper); events become log lines as they come (events.py, through the
batching LogWriter); what the run said (stats, set_stats) is kept on the RunResult for the
judgement (outcome.judge), which the worker makes once the run has ended.

Nothing goes to ansible-runner's `env/` files (`suppress_env_files`), no per-event JSON
files are written (the event handler returns False), and `AEGIR_DB_URL` is blanked in
ansible's environment (the inventory is already built).

Stopping a run (cancel, timeout, shutdown): SIGTERM to the ansible-playbook main process
(ansible then stops its workers), then after `kill_grace` seconds runner's SIGKILL of the
process group, and finally SIGKILL of every process still carrying the run's marker
environment variable (process.py; ansible's workers call setsid(), so they escape the group).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from aegir_ansible.db.models import TaskStatus

from . import process, rundirs
from .database import is_transient
from .events import LogWriter, classify, clean, event_host
from .prepare import TARGETS_GROUP, prepare
from .types import NOT_STARTED, Run, RunResult, TaskResult, TaskRow

log = logging.getLogger("aegir.queue")


class Execution:
    """One run in its own thread; `stop(reason)` asks it to stop."""

    def __init__(self, run: Run, engine, writer: LogWriter, playbooks_dir: Path,
                 timeout: float = 0, kill_grace: float = 5.0, ansible_cfg: Path | None = None,
                 connect_timeout: int = 10, host_vars: dict | None = None):
        self.run = run
        self.host_vars = host_vars or {}  # more variables of each target host
        self.engine = engine
        self.writer = writer
        self.playbooks_dir = Path(playbooks_dir)
        self.ansible_cfg = ansible_cfg
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.connect_timeout = connect_timeout
        self.stop_reason: str | None = None
        self.cancelled: set[int] = set()
        self._term_sent_at: float | None = None
        self.pid: int | None = None
        self.result = RunResult(run, started=time.time())
        self.result.tasks = {t.nid: TaskResult(t) for t in run.tasks}
        self.finished = threading.Event()

    # called from the worker thread
    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    # -- helpers ----------------------------------------------------------------------

    def line(self, task: TaskRow, type_: str, message: str, ts: float | None = None) -> None:
        """A log line of the task (through the batching writer)."""
        res = self.result.tasks[task.nid]
        res.types.add(type_)
        self.writer.put({"vid": task.vid, "nid": task.nid, "type": type_[:16], "message": message,
                         "error": "", "timestamp": int(ts or time.time())})

    def _fail(self, task: TaskRow, message: str) -> None:
        res = self.result.tasks[task.nid]
        res.status = TaskStatus.ERROR
        self.line(task, "error", message)

    # -- ansible-runner callbacks -----------------------------------------------------

    def event_handler(self, ev: dict) -> bool:
        try:
            self._event(ev)
        except Exception:  # noqa: BLE001 — never break the run over a log line
            log.exception("event handling failed")
        return False  # no per-event JSON files

    def _event(self, ev: dict) -> None:
        if self.pid is None and ev.get("pid"):
            self.pid = int(ev["pid"])
        name = ev.get("event")
        if name == "playbook_on_stats":
            data = ev.get("event_data") or {}
            self.result.stats = {k: data.get(k) or {} for k in ("ok", "changed", "failures", "dark",
                                                                "skipped", "ignored", "rescued",
                                                                "processed")}
            self.result.artifact = data.get("artifact_data") or {}
            return
        type_ = classify(ev)
        if type_ is None:
            return
        text = clean(ev.get("stdout", ""))
        if not text:
            if name == "playbook_on_task_start":
                text = f"TASK [{(ev.get('event_data') or {}).get('task', '')}]"
            else:
                return
        host = event_host(ev)
        by_host = self.result.by_host
        targets = by_host.get(host) if host else None
        if host and targets is None and host == self.result.batch_server:
            targets = [t for ts in by_host.values() for t in ts]
        if host and targets is None:
            return  # a host outside this run's targets (e.g. a delegate): not ours to log
        for task in targets or [t for ts in by_host.values() for t in ts]:
            self.line(task, type_, text)

    def cancel_callback(self) -> bool:
        now = time.time()
        if (self.stop_reason is None and self.timeout
                and now - self.result.started > self.timeout):
            self.stop_reason = "timeout"
        if self.stop_reason is None:
            return False
        if self._term_sent_at is None:
            self._term_sent_at = now
            pid = self.pid or process.main_pid(self.run.run_id)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            return False
        return now - self._term_sent_at > self.kill_grace

    # -- the run ----------------------------------------------------------------------

    def execute(self) -> RunResult:
        """Run the playbook; never raises. Log rows are queued on the writer; the tasks'
        statuses are judged afterwards (outcome.judge)."""
        import ansible_runner

        try:
            run_dir = rundirs.RunDir()
        except (OSError, RuntimeError) as exc:
            for t in self.run.tasks:
                self._fail(t, f"Could not create the run's private directory: {exc}")
            self.result.status, self.result.ended = NOT_STARTED, time.time()
            self.finished.set()
            return self.result
        tmp = run_dir.path
        try:
            try:
                prepared = prepare(tmp, self.result, self.engine, self.playbooks_dir,
                                   self.host_vars, self._fail)
            except Exception as exc:  # noqa: BLE001 — e.g. the database went away, a bad row
                if isinstance(exc, SQLAlchemyError) and is_transient(exc):
                    # Nothing ran: the tasks are queued again rather than failed.
                    log.warning("run %s: the database was lost while the run was prepared (%s)",
                                self.run.run_id[:8], str(exc).splitlines()[0])
                    self.result.requeue = ("the database was lost while the run was prepared "
                                           f"({type(exc).__name__}); it runs again later.")
                    self.result.status = NOT_STARTED
                    return self.result
                log.exception("preparing run %s failed", self.run.run_id)
                for t in self.run.tasks:
                    self._fail(t, f"Could not prepare the run: {type(exc).__name__}: {exc}")
                prepared = None
            if prepared is None:
                self.result.status = NOT_STARTED
                return self.result
            playbook, hosts = prepared
            for t in self.run.tasks:
                if self.result.tasks[t.nid].status != TaskStatus.ERROR:
                    what = f" together with {len(hosts) - 1} other task(s)" if len(hosts) > 1 else ""
                    self.line(t, "message", f"Running playbook {playbook} on {t.target_name}{what}.")
            env = {
                "PATH": f"{tmp / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                process.MARKER: self.run.run_id,
                "AEGIR_DB_URL": "",
                "AEGIR_DB_ADMIN_PASSWORD": "",
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                # Bounded connections: a server that accepts and never answers (or stops
                # answering) is unreachable after this long, instead of holding the slot.
                "ANSIBLE_TIMEOUT": str(self.connect_timeout),
                "ANSIBLE_SSH_EXTRA_ARGS": os.environ.get("ANSIBLE_SSH_EXTRA_ARGS") or (
                    f"-o ServerAliveInterval={max(1, self.connect_timeout)} "
                    "-o ServerAliveCountMax=3"),
            }
            cfg = self.ansible_cfg or self.playbooks_dir / "ansible.cfg"
            if cfg.is_file():
                env["ANSIBLE_CONFIG"] = str(cfg)
            try:
                r = ansible_runner.run(
                    private_data_dir=str(tmp),
                    project_dir=str(self.playbooks_dir),
                    playbook=playbook,
                    inventory=str(tmp / "inventory" / "aegir.sh"),
                    limit=TARGETS_GROUP,
                    extravars=str(tmp / "extravars.json"),
                    envvars=env,
                    settings={"pexpect_timeout": 0.2, "suppress_output_file": True,
                              "suppress_ansible_output": True},
                    suppress_env_files=True,
                    quiet=True,
                    ident="run",
                    event_handler=self.event_handler,
                    cancel_callback=self.cancel_callback,
                )
                self.result.status, self.result.rc = r.status, r.rc
            except Exception as exc:  # noqa: BLE001 — runner raised (e.g. #1343)
                log.exception("ansible-runner failed for run %s", self.run.run_id)
                self.result.status, self.result.rc = "error", None
                for t in self.run.tasks:
                    self.line(t, "error", f"ansible-runner failed: {type(exc).__name__}: {exc}")
            finally:
                left = process.kill_marked(self.run.run_id, grace=1.0 if self.stop_reason else 0.2)
                if left:
                    log.info("run %s: ended %d leftover process(es)", self.run.run_id, len(left))
            return self.result
        finally:
            self.result.ended = time.time()
            self.result.stop_reason = self.stop_reason
            self.result.cancelled = set(self.cancelled)
            run_dir.remove()
            self.finished.set()

def clone_rollback(ex: Execution, task: TaskRow, reported: dict) -> Execution:
    """A run of playbooks/clone-rollback.yml removing a clone that was made on the server
    but could not be recorded (hooks.py); its lines go to the clone task's log."""
    run = Run(run_id=str(uuid.uuid4()), server=ex.run.server, task_type="clone-rollback",
              tasks=[task])
    return Execution(run, ex.engine, ex.writer, ex.playbooks_dir, timeout=ex.timeout,
                     kill_grace=ex.kill_grace, ansible_cfg=ex.ansible_cfg,
                     host_vars={"aegir_site_clone_rollback": reported})
