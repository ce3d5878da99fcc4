"""A run's outcome: the judgement of each task's status, made once when the run has ended,
and writing it back the way hostmaster expects it.

The judgement (`judge`) reads what the run said — the per-host stats, the log types its
lines had (like hosting_task_parse_log: any error => error, else any warning => warning),
what a batch's sites reported — and why it stopped (cancel, timeout, shutdown), and sets
each task's final `status` (1 success, 2 error, 3 warning; a cancelled task is 3 with a
"Task was cancelled." line, as hostmaster's own cancel does) and its closing lines.

Recording (`record`): per task, the status, `delta`, the closing lines, the entity hooks
(hooks.py) and a retry (retry.py). All of a task's changes are one transaction, and they
happen only if the task is still held by this runner (a task a reaper has already failed is
left alone).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus

from . import retry
from .database import is_disconnect
from .hooks import TargetCache, run_hooks
from .manager import JobManager
from .revisions import add_log, log_row, release, requeue
from .settings import Settings
from .types import NOT_STARTED, Run, RunResult, TaskResult, TaskRow

log = logging.getLogger("aegir.queue")

_COUNTS = ("ok", "changed", "failures", "dark", "skipped", "ignored", "rescued")


# -- the judgement -----------------------------------------------------------------------

def judge(res: RunResult, settings: Settings, say) -> None:
    """Decide every task's status and closing lines (TaskResult.status, .closing), once.
    say(task, type, message) writes a log line of the task now (the run's own lines: why a
    host failed, its summary)."""
    if res.status != NOT_STARTED:
        _judge_hosts(res, say)
    for tr in res.tasks.values():
        tr.status, tr.closing = _closing(res, tr, settings)


def _judge_hosts(res: RunResult, say) -> None:
    """What the playbook run said of each target host (its tasks' statuses, until the stop
    reason, if any, decides)."""
    reported = (res.artifact or {}).get("aegir_results") or {}
    strays = sorted(set(res.stats.get("processed") or {}) - set(res.limit))
    if strays and not res.stop_reason:
        # Never expected (the limit is the targets group): the run is not to be trusted.
        for tasks in res.by_host.values():
            for t in tasks:
                _fail(res, t, say, "The playbook ran on hosts outside this run's targets "
                                   f"({', '.join(strays[:10])}): the task is failed.")
    else:
        for host, tasks in res.by_host.items():
            for t in tasks:
                tr = res.tasks[t.nid]
                if isinstance(reported, dict) and isinstance(reported.get(host), dict):
                    tr.result = reported[host]
                if res.stop_reason:
                    continue  # the stop reason decides (below)
                if res.batch_server:
                    _judge_batch_site(res, host, t, tr, reported, say)
                else:
                    _judge_host(res, host, t, tr, say)


def _fail(res: RunResult, t: TaskRow, say, message: str) -> None:
    res.tasks[t.nid].status = TaskStatus.ERROR
    say(t, "error", message)


def _from_types(tr: TaskResult) -> TaskStatus:
    return (TaskStatus.ERROR if "error" in tr.types
            else TaskStatus.WARNING if "warning" in tr.types else TaskStatus.SUCCESS)


def _no_result(res: RunResult, what: str) -> str:
    if res.rc not in (0, None) or res.status != "successful":
        return f"ansible-playbook failed (status {res.status}, rc {res.rc})"
    return what


def _judge_host(res: RunResult, host: str, t: TaskRow, tr: TaskResult, say) -> None:
    """A task run on its own host: that host's stats, then its lines' types."""
    stats = res.stats
    failed = (stats.get("failures") or {}).get(host, 0)
    dark = (stats.get("dark") or {}).get(host, 0)
    seen = host in (stats.get("processed") or {})
    if failed or dark:
        tr.status = TaskStatus.ERROR
        if "error" not in tr.types:
            say(t, "error", f"The playbook failed on {host}.")
    elif not seen:
        tr.status = TaskStatus.ERROR
        say(t, "error", f"{_no_result(res, 'the playbook did not run on this host')}: "
                        f"{host} has no result.")
    else:
        tr.status = _from_types(tr)
    if seen:
        counts = " ".join(f"{k}={(stats.get(k) or {}).get(host, 0)}" for k in _COUNTS)
        say(t, "info", f"Summary for {host}: {counts}")


def _judge_batch_site(res: RunResult, host: str, t: TaskRow, tr: TaskResult, reported,
                      say) -> None:
    """A site of a batch run: the server host's stats, then the site's own reported
    result ({failed: msg} or {changed: [...]})."""
    server = res.batch_server
    mine = reported.get(host) if isinstance(reported, dict) else None
    failed = (res.stats.get("failures") or {}).get(server, 0)
    dark = (res.stats.get("dark") or {}).get(server, 0)
    changes = []
    if failed or dark:
        tr.status = TaskStatus.ERROR
        if "error" not in tr.types:
            say(t, "error", f"The playbook failed on {server}, the server of {host}.")
    elif not isinstance(mine, dict):
        tr.status = TaskStatus.ERROR
        say(t, "error", f"{_no_result(res, 'the playbook did not report this site')}: "
                        f"{host} has no result.")
    elif mine.get("failed"):
        tr.status = TaskStatus.ERROR
        say(t, "error", f"failed: [{host}] => {mine['failed']}")
    else:
        changes = [str(c) for c in (mine.get("changed") or [])]
        if changes:
            say(t, "message", f"changed: [{host}] => {'; '.join(changes)}")
        else:
            say(t, "info", f"ok: [{host}]")
        tr.status = _from_types(tr)
    if isinstance(mine, dict):
        bad = 1 if tr.status == TaskStatus.ERROR else 0
        say(t, "info", f"Summary for {host}: ok={1 - bad} changed={1 if changes else 0} "
                       f"failures={bad} dark={1 if dark else 0} skipped=0 ignored=0 rescued=0")


def _closing(res: RunResult, tr: TaskResult, settings: Settings) -> tuple[int, list[tuple]]:
    """The status to record and the closing log lines (type, message)."""
    reason = res.stop_reason
    took = int(res.ended - res.started)
    if reason == "cancel" and tr.task.nid not in res.cancelled:
        reason = "interrupted"
    if reason == "interrupted":
        others = ", ".join(str(n) for n in sorted(res.cancelled))
        return TaskStatus.WARNING, [("warning", "Task was cancelled: it ran in one playbook run "
                                                f"with task {others}, whose cancel was requested.")]
    if reason == "cancel":
        return TaskStatus.WARNING, [("warning", "Task was cancelled.")]
    if reason == "timeout":
        return TaskStatus.ERROR, [("error", f"Task timed out after {took} seconds (task_timeout "
                                            f"{settings.task_timeout}): the playbook and its "
                                            "processes were stopped.")]
    if reason == "shutdown":
        return TaskStatus.WARNING, [("warning", "Task was cancelled: the queue runner was stopped "
                                                "and the task did not finish within "
                                                f"{settings.shutdown_grace:g} seconds.")]
    if tr.status == TaskStatus.ERROR:
        return TaskStatus.ERROR, [("error", f"Task failed after {took} seconds.")]
    if tr.status == TaskStatus.WARNING:
        return TaskStatus.WARNING, [("warning", f"Task finished with warnings after {took} seconds.")]
    return TaskStatus.SUCCESS, [("success", f"Task completed successfully in {took} seconds.")]


# -- recording ---------------------------------------------------------------------------

RECORD_CHUNK = 200


def record(jm: JobManager, runner_id: str, res: RunResult, settings: Settings) -> None:
    """Write every task's judged outcome, retried on conflicts. The tasks of a batch are
    written in transactions of up to RECORD_CHUNK tasks (one commit per chunk, not per task;
    each task's changes are still all-or-nothing), with a handful of statements per chunk
    plus the entity hooks; if a chunk fails, its tasks are written one transaction each, so
    that one task's problem cannot hold back the others' outcomes."""
    items = list(res.tasks.items())
    for start in range(0, len(items), RECORD_CHUNK):
        chunk = items[start:start + RECORD_CHUNK]
        if len(chunk) > 1:
            try:
                jm.tx(lambda conn, chunk=chunk: _record_chunk(
                    conn, jm, runner_id, res, [tr for _nid, tr in chunk], settings),
                    f"outcomes of {len(chunk)} tasks")
                continue
            except SQLAlchemyError as exc:
                if is_disconnect(exc):
                    raise  # the worker retries the whole record() once the database is back
                log.warning("recording %d outcomes together failed (%s); one by one now",
                            len(chunk), str(exc).splitlines()[0])
        for nid, tr in chunk:
            jm.tx(lambda conn, tr=tr: _record_task(conn, jm, runner_id, res, tr, settings),
                  f"outcome of task {nid}")


def _succeeded(res: RunResult, tr: TaskResult) -> bool:
    return tr.succeeded and not res.stop_reason


def _judged(tr: TaskResult) -> list[tuple[str, str]]:
    """The task's closing lines: judge() set them before anything is recorded."""
    if tr.closing is None:
        raise RuntimeError(f"task {tr.task.nid}: its outcome is recorded before it is judged")
    return tr.closing


def _last_error(res: RunResult, tr: TaskResult) -> str | None:
    return None if _succeeded(res, tr) else _judged(tr)[-1][1][:1000]


def _record_task(conn, jm, runner_id, res: RunResult, tr: TaskResult, settings: Settings) -> None:
    task = tr.task
    now = int(time.time())
    if not jm.finish(conn, runner_id, task, tr.status, res.seconds,
                     last_error=_last_error(res, tr)):
        log.warning("task %s is no longer held by this runner: its outcome is not recorded",
                    task.nid)
        return
    add_log(conn, [log_row(task, t, msg, now) for t, msg in _judged(tr)])
    _after(conn, res, tr, settings, now)


def _record_chunk(conn, jm, runner_id, res: RunResult, trs: list[TaskResult],
                  settings: Settings) -> None:
    """The outcomes of many tasks of one run: the held tasks locked in one read, the queue
    rows released, the statuses and the log lines written in a few statements, then each
    task's entity hooks (their reads done once for the chunk) and re-queueing."""
    now = int(time.time())
    held = jm.held(conn, runner_id, [tr.task for tr in trs])
    done = []
    for tr in trs:
        if tr.task.nid in held:
            done.append(tr)
        else:
            log.warning("task %s is no longer held by this runner: its outcome is not recorded",
                        tr.task.nid)
    if not done:
        return
    by_error: dict[str | None, list[int]] = defaultdict(list)
    by_status: dict[int, list[int]] = defaultdict(list)
    for tr in done:
        by_error[_last_error(res, tr)].append(tr.task.nid)
        by_status[tr.status].append(tr.task.vid)
    for last_error, nids in by_error.items():
        release(conn, nids, last_error=last_error)
    for status, vids in by_status.items():
        conn.execute(update(m.HostingTask).where(m.HostingTask.vid.in_(vids))
                     .values(task_status=status, delta=res.seconds))
    add_log(conn, [log_row(tr.task, t, msg, now) for tr in done for t, msg in _judged(tr)])
    cache = TargetCache(conn, [tr.task.rid for tr in done])
    for tr in done:
        _after(conn, res, tr, settings, now, cache)


def _after(conn, res: RunResult, tr: TaskResult, settings: Settings, now: int,
           cache: TargetCache | None = None) -> None:
    """What follows a task's status: the entity hooks, and re-queueing (retry.py)."""
    succeeded = _succeeded(res, tr)
    run_hooks(conn, tr, succeeded, now, cache)
    again = retry.after_run(tr.task, settings, now, succeeded=succeeded,
                            stop_reason=res.stop_reason, cancelled=res.cancelled)
    if again:
        requeue(conn, tr.task.nid, again.not_before, again.message)


def fail_malformed(jm: JobManager, runner_id: str, run: Run, message: str) -> None:
    task = run.tasks[0]

    def fn(conn):
        if jm.finish(conn, runner_id, task, TaskStatus.ERROR, 0, last_error=message[:1000]):
            add_log(conn, [log_row(task, "error", message, int(time.time()))])

    jm.tx(fn, f"failing malformed task {task.nid}")
