"""Running one claimed run (a task, or a coalesced batch of tasks) with ansible-runner.

Each run gets a fresh private data directory (mode 0700, rundirs.py) that is removed
afterwards, or by the next runner started on the machine if this one is killed:

- `inventory/hosts.json` (0600): the inventory built in-process from the database (every
  string wrapped `__ansible_unsafe`), plus `aegir_task_args` / `aegir_task_nid` /
  `aegir_task_type` as variables of each target host, and the group `aegir_run_targets`
  of the run's target hosts. It holds the database admin passwords, so the script that
  hands it to ansible removes it as soon as ansible has read it;
- `extravars.json` (0600): for a single-task run, the same three values as extra vars,
  also wrapped as untrusted: task arguments come from the database and are never
  templated;
- `bin/ansible-playbook`: a tiny wrapper that asks the kernel to SIGTERM ansible-playbook
  if the runner dies (PR_SET_PDEATHSIG), then execs the real one. A runner killed with
  SIGKILL thus takes its playbooks down with it instead of leaving them running
  unsupervised.

The limit is that one group, never a list of names: Ansible reads a limit as patterns
(`,` `:` `&` `!` `~` `*` `[` and group names), so a name could match other hosts. A run whose
playbook reached a host outside its targets fails all its tasks.

Nothing goes to ansible-runner's `env/` files (`suppress_env_files`), no per-event JSON
files are written (the event handler returns False), and `AEGIR_DB_URL` is blanked in
ansible's environment (the inventory is already built).

Stopping a run (cancel, timeout, shutdown): SIGTERM to the ansible-playbook main process
(ansible then stops its workers), then after `kill_grace` seconds runner's SIGKILL of the
process group, and finally SIGKILL of every process still carrying the run's marker
environment variable (ansible's workers call setsid(), so they escape the group).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from aegir_ansible.db import models as m
from aegir_ansible.inventory import build_inventory, run_limit, script_output, unsafe
from aegir_ansible.queries import isolation_refusal
from aegir_ansible.tasks import playbook_name

from . import rundirs, task_args
from .events import LogWriter, classify, clean, event_host
from .jobs import Run, TaskRow, is_transient

log = logging.getLogger("aegir.queue")

MARKER = "AEGIR_QUEUE_RUN"
# The inventory group of a run's target hosts, its --limit ("aegir_" names are reserved:
# no context can be named so, validation.check_context_name).
TARGETS_GROUP = "aegir_run_targets"


@dataclass
class TaskResult:
    task: TaskRow
    status: int = m.TASK_SUCCESS
    types: set = field(default_factory=set)
    messages: list = field(default_factory=list)  # extra lines written with the outcome
    facts: dict = field(default_factory=dict)  # inventory vars the run used for this host
    result: dict = field(default_factory=dict)  # what the playbook reported (set_stats)
    rollback: dict | None = None  # a clone to remove: made on the server, not recorded


@dataclass
class RunResult:
    run: Run
    started: float
    ended: float = 0.0
    status: str = ""  # ansible-runner status, or our own reason
    rc: int | None = None
    stop_reason: str | None = None  # cancel, timeout, shutdown, lost
    cancelled: set = field(default_factory=set)  # task nids whose cancel was requested
    tasks: dict = field(default_factory=dict)  # nid -> TaskResult
    # Set when the run did not start for a reason outside its tasks (the database was lost
    # while it was prepared): why; its tasks go back to the queue instead of failing.
    requeue: str | None = None


# -- processes ---------------------------------------------------------------------------

def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
        return int(data[data.rfind(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
        return data[data.rfind(")") + 2:].split()[0] in ("Z", "X")
    except OSError:
        return True


def marked_processes(run_id: str) -> list[int]:
    """Live processes started for this run (they inherit the marker variable)."""
    marker = f"{MARKER}={run_id}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and _environ_has(int(entry), marker):
            if not _zombie(int(entry)):
                found.append(int(entry))
    return found


def kill_marked(run_id: str, grace: float = 1.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process of the run still alive; returns their pids."""
    pids = marked_processes(run_id)
    if not pids:
        return []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline and any(not _zombie(p) for p in pids):
        time.sleep(0.05)
    for pid in marked_processes(run_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


_WRAPPER = """#!{python} -IS
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != {parent}:
    sys.exit("aegir queue runner is gone")
os.execv({real!r}, [{real!r}] + sys.argv[1:])
"""


def _find_ansible_playbook() -> str:
    here = Path(sys.executable).parent / "ansible-playbook"
    if here.exists():
        return str(here)
    found = shutil.which("ansible-playbook")
    if not found:
        raise RuntimeError("ansible-playbook not found beside the Python running the queue nor on PATH")
    return found


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# -- a run -------------------------------------------------------------------------------

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
        self.by_host: dict[str, list[TaskRow]] = {}
        # A batch run (playbooks/<type>_batch.yml): the play's host is the sites' server, whose
        # events are logged to every task of the run; each site's result comes from set_stats.
        self.batch_server: str | None = None
        self.limit: list[str] = []
        self.stats: dict = {}
        self.artifact: dict = {}
        self.finished = threading.Event()

    # called from the worker thread
    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    # -- helpers ----------------------------------------------------------------------

    def _line(self, task: TaskRow, type_: str, message: str, ts: float | None = None) -> None:
        res = self.result.tasks[task.nid]
        res.types.add(type_)
        self.writer.put({"vid": task.vid, "nid": task.nid, "type": type_[:16], "message": message,
                         "error": "", "timestamp": int(ts or time.time())})

    def _fail(self, task: TaskRow, message: str) -> None:
        res = self.result.tasks[task.nid]
        res.status = m.TASK_ERROR
        self._line(task, "error", message)

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
            self.stats = {k: data.get(k) or {} for k in
                          ("ok", "changed", "failures", "dark", "skipped", "ignored", "rescued", "processed")}
            self.artifact = data.get("artifact_data") or {}
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
        targets = self.by_host.get(host) if host else None
        if host and targets is None and host == self.batch_server:
            targets = [t for ts in self.by_host.values() for t in ts]
        if host and targets is None:
            return  # a host outside this run's targets (e.g. a delegate): not ours to log
        for task in targets or [t for ts in self.by_host.values() for t in ts]:
            self._line(task, type_, text)

    def cancel_callback(self) -> bool:
        now = time.time()
        if (self.stop_reason is None and self.timeout
                and now - self.result.started > self.timeout):
            self.stop_reason = "timeout"
        if self.stop_reason is None:
            return False
        if self._term_sent_at is None:
            self._term_sent_at = now
            pid = self.pid or self._find_main_pid()
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            return False
        return now - self._term_sent_at > self.kill_grace

    def _find_main_pid(self) -> int | None:
        me = os.getpid()
        for pid in marked_processes(self.run.run_id):
            if _ppid(pid) == me:
                return pid
        return None

    # -- the run ----------------------------------------------------------------------

    def _prepare(self, tmp: Path) -> tuple[str, list[str]] | None:
        run = self.run
        for t in run.tasks:
            self.result.tasks[t.nid] = TaskResult(t)
        with Session(self.engine) as session:
            batch_server = None
            if run.task_type and len(run.tasks) > 1 and run.server is not None and \
                    (self.playbooks_dir / f"{playbook_name(run.task_type)}_batch.yml").is_file() and \
                    all(t.target_type == "site" for t in run.tasks):
                batch_server = session.execute(
                    select(m.HostingContext.name).where(m.HostingContext.nid == run.server)
                ).scalar()
            args_rows = session.execute(
                select(m.HostingTaskArgument.vid, m.HostingTaskArgument.name,
                       m.HostingTaskArgument.value)
                .where(m.HostingTaskArgument.vid.in_([t.vid for t in run.tasks]))
            ).all()
            args: dict[int, dict] = {t.vid: {} for t in run.tasks}
            for vid, name, value in args_rows:
                if name is not None:
                    args[vid][name] = value if value is not None else ""
            # Node and backup ids in the arguments, resolved for the playbook (task_args.py).
            resolved: dict[int, dict | str] = {}
            for t in run.tasks:
                try:
                    resolved[t.vid] = task_args.resolve(session, t, args[t.vid])
                except task_args.ArgumentError as exc:
                    resolved[t.vid] = f"Bad task argument: {exc}."
            # Only the run's targets (and the sites their arguments name) among the sites.
            inv = build_inventory(session, limit=run_limit((t.target_name, args[t.vid]) for t in run.tasks))
        hosts = []
        for t in run.tasks:
            name = t.target_name
            if name in inv.rejected:
                self._fail(t, f"Refused: the {inv.rejected[name]}.")
                continue
            if not name or name not in inv.hosts:
                self._fail(t, f"The {t.target_type} {name or '#' + str(t.rid)} is not in the "
                              "inventory (is its server or platform deleted?).")
                continue
            if isinstance(resolved[t.vid], str):
                self._fail(t, resolved[t.vid])
                continue
            hv = inv.hosts[name]
            refusal = isolation_refusal(t.task_type, hv) if t.target_type == "site" else None
            if refusal:
                self._fail(t, refusal)
                continue
            hv.update(resolved[t.vid])
            hv.update(self.host_vars)
            self.result.tasks[t.nid].facts = {k: v for k, v in hv.items() if "password" not in k}
            hv["aegir_task_args"] = args[t.vid]
            hv["aegir_task_nid"] = t.nid
            hv["aegir_task_type"] = t.task_type
            self.by_host.setdefault(name, []).append(t)
            hosts.append(name)
        if not hosts:
            return None
        playbook = self.playbooks_dir / f"{playbook_name(run.task_type)}.yml"
        self.limit = hosts
        extravars = {}
        if len(hosts) > 1 and batch_server and batch_server in inv.hosts:
            # Many sites of one server: the batch playbook on the server host, no task per site.
            playbook = self.playbooks_dir / f"{playbook_name(run.task_type)}_batch.yml"
            self.batch_server = batch_server
            self.limit = [batch_server]
            extravars = {"aegir_batch_sites": hosts}
        if not playbook.is_file():
            for t in run.tasks:
                if self.result.tasks[t.nid].status != m.TASK_ERROR:
                    self._fail(t, f"No playbook for task type {run.task_type!r}: "
                                  f"{playbook} does not exist.")
            return None
        (tmp / "inventory").mkdir(mode=0o700)
        # The inventory script's own output (strings wrapped untrusted), served by a script
        # so that ansible's script plugin reads it exactly as from aegir_inventory.py.
        output = script_output(inv)
        output[TARGETS_GROUP] = {"hosts": list(self.limit)}
        output["all"]["children"].append(TARGETS_GROUP)
        hosts_json = shlex.quote(str(tmp / "inventory" / "hosts.json"))
        _write(tmp / "inventory" / "hosts.json", json.dumps(output))
        # Read once by ansible at start; then the passwords in it are on no disk any more.
        _write(tmp / "inventory" / "aegir.sh",
               f"#!/bin/sh\n/bin/cat {hosts_json} && exec /bin/rm -f {hosts_json}\n", 0o700)
        if len(run.tasks) == 1:
            t = run.tasks[0]
            _write(tmp / "extravars.json", json.dumps(unsafe({
                "aegir_task_args": args[t.vid], "aegir_task_nid": t.nid,
                "aegir_task_type": t.task_type})))
        else:
            _write(tmp / "extravars.json", json.dumps(unsafe(extravars)))
        (tmp / "bin").mkdir(mode=0o700)
        _write(tmp / "bin" / "ansible-playbook",
               _WRAPPER.format(python=sys.executable, parent=os.getpid(),
                               real=_find_ansible_playbook()), 0o700)
        return playbook.name, hosts

    def execute(self) -> RunResult:
        """Run the playbook; never raises. Log rows are queued on the writer."""
        import ansible_runner

        try:
            run_dir = rundirs.RunDir()
        except (OSError, RuntimeError) as exc:
            for t in self.run.tasks:
                self.result.tasks.setdefault(t.nid, TaskResult(t))
                self._fail(t, f"Could not create the run's private directory: {exc}")
            self.result.status, self.result.ended = "not started", time.time()
            self.finished.set()
            return self.result
        tmp = run_dir.path
        try:
            try:
                prepared = self._prepare(tmp)
            except Exception as exc:  # noqa: BLE001 — e.g. the database went away, a bad row
                if isinstance(exc, SQLAlchemyError) and is_transient(exc):
                    # Nothing ran: the tasks are queued again rather than failed.
                    log.warning("run %s: the database was lost while the run was prepared (%s)",
                                self.run.run_id[:8], str(exc).splitlines()[0])
                    self.result.requeue = ("the database was lost while the run was prepared "
                                           f"({type(exc).__name__}); it runs again later.")
                    self.result.status = "not started"
                    return self.result
                log.exception("preparing run %s failed", self.run.run_id)
                for t in self.run.tasks:
                    self.result.tasks.setdefault(t.nid, TaskResult(t))
                    self._fail(t, f"Could not prepare the run: {type(exc).__name__}: {exc}")
                prepared = None
            if prepared is None:
                self.result.status = "not started"
                return self.result
            playbook, hosts = prepared
            for t in self.run.tasks:
                if self.result.tasks[t.nid].status != m.TASK_ERROR:
                    what = f" together with {len(hosts) - 1} other task(s)" if len(hosts) > 1 else ""
                    self._line(t, "message", f"Running playbook {playbook} on {t.target_name}{what}.")
            env = {
                "PATH": f"{tmp / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                MARKER: self.run.run_id,
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
                    self._line(t, "error", f"ansible-runner failed: {type(exc).__name__}: {exc}")
            finally:
                left = kill_marked(self.run.run_id, grace=1.0 if self.stop_reason else 0.2)
                if left:
                    log.info("run %s: ended %d leftover process(es)", self.run.run_id, len(left))
            self._judge()
            return self.result
        finally:
            self.result.ended = time.time()
            self.result.stop_reason = self.stop_reason
            self.result.cancelled = set(self.cancelled)
            run_dir.remove()
            self.finished.set()

    def _judge(self) -> None:
        """Per-task status from the per-host stats and the log types (like
        hosting_task_parse_log: any error => error, else any warning => warning)."""
        res = self.result
        reported = (self.artifact or {}).get("aegir_results") or {}
        strays = sorted(set(self.stats.get("processed") or {}) - set(self.limit))
        if strays and not self.stop_reason:
            # Never expected (the limit is the targets group): the run is not to be trusted.
            for tasks in self.by_host.values():
                for t in tasks:
                    self._fail(t, "The playbook ran on hosts outside this run's targets "
                                  f"({', '.join(strays[:10])}): the task is failed.")
            return
        for host, tasks in self.by_host.items():
            for t in tasks:
                tr = res.tasks[t.nid]
                if isinstance(reported, dict) and isinstance(reported.get(host), dict):
                    tr.result = reported[host]
                if self.stop_reason:
                    continue  # decided by the worker (cancelled / timed out / shut down)
                if self.batch_server:
                    self._judge_batch(host, t, tr, reported)
                    continue
                failed = (self.stats.get("failures") or {}).get(host, 0)
                dark = (self.stats.get("dark") or {}).get(host, 0)
                seen = host in (self.stats.get("processed") or {})
                if failed or dark:
                    tr.status = m.TASK_ERROR
                    if "error" not in tr.types:
                        self._line(t, "error", f"The playbook failed on {host}.")
                elif not seen:
                    tr.status = m.TASK_ERROR
                    why = (f"ansible-playbook failed (status {res.status}, rc {res.rc})"
                           if res.rc not in (0, None) or res.status != "successful"
                           else "the playbook did not run on this host")
                    self._line(t, "error", f"{why}: {host} has no result.")
                elif "error" in tr.types:
                    tr.status = m.TASK_ERROR
                elif "warning" in tr.types:
                    tr.status = m.TASK_WARNING
                else:
                    tr.status = m.TASK_SUCCESS
                if seen:
                    counts = " ".join(f"{k}={(self.stats.get(k) or {}).get(host, 0)}"
                                      for k in ("ok", "changed", "failures", "dark", "skipped",
                                                "ignored", "rescued"))
                    self._line(t, "info", f"Summary for {host}: {counts}")

    def _judge_batch(self, host: str, t: TaskRow, tr: TaskResult, reported) -> None:
        """A site of a batch run: the server host's stats, then the site's own reported
        result ({failed: msg} or {changed: [...]})."""
        res, server = self.result, self.batch_server
        mine = reported.get(host) if isinstance(reported, dict) else None
        failed = (self.stats.get("failures") or {}).get(server, 0)
        dark = (self.stats.get("dark") or {}).get(server, 0)
        changes = []
        if failed or dark:
            tr.status = m.TASK_ERROR
            if "error" not in tr.types:
                self._line(t, "error", f"The playbook failed on {server}, the server of {host}.")
        elif not isinstance(mine, dict):
            tr.status = m.TASK_ERROR
            why = (f"ansible-playbook failed (status {res.status}, rc {res.rc})"
                   if res.rc not in (0, None) or res.status != "successful"
                   else "the playbook did not report this site")
            self._line(t, "error", f"{why}: {host} has no result.")
        elif mine.get("failed"):
            tr.status = m.TASK_ERROR
            self._line(t, "error", f"failed: [{host}] => {mine['failed']}")
        else:
            changes = [str(c) for c in (mine.get("changed") or [])]
            if changes:
                self._line(t, "message", f"changed: [{host}] => {'; '.join(changes)}")
            else:
                self._line(t, "info", f"ok: [{host}]")
            tr.status = (m.TASK_ERROR if "error" in tr.types
                         else m.TASK_WARNING if "warning" in tr.types else m.TASK_SUCCESS)
        if isinstance(mine, dict):
            bad = 1 if tr.status == m.TASK_ERROR else 0
            self._line(t, "info", f"Summary for {host}: ok={1 - bad} changed={1 if changes else 0} "
                                  f"failures={bad} dark={1 if dark else 0} skipped=0 ignored=0 "
                                  "rescued=0")


def clone_rollback(ex: Execution, task: TaskRow, reported: dict) -> Execution:
    """A run of playbooks/clone_rollback.yml removing a clone that was made on the server
    but could not be recorded (outcome.py); its lines go to the clone task's log."""
    import uuid

    run = Run(run_id=str(uuid.uuid4()), server=ex.run.server, task_type="clone-rollback",
              tasks=[task])
    return Execution(run, ex.engine, ex.writer, ex.playbooks_dir, timeout=ex.timeout,
                     kill_grace=ex.kill_grace, ansible_cfg=ex.ansible_cfg,
                     host_vars={"aegir_site_clone_rollback": reported})
