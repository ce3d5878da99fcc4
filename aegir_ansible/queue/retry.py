"""The retry policy, in one place: whether a task that did not succeed is queued again, when,
and with which line. A task is retried only if its type is safe to repeat (tasks.TASK_TYPES);
`retry_max_attempts` bounds the retries of failures and of lost runners, `retry_backoff`
doubles per attempt; a task stopped by the runner's shutdown or by the cancel of another task
of its batch is queued again at once; a task whose own cancel was asked for never is."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .settings import Settings
from .types import TaskRow


@dataclass(frozen=True)
class Retry:
    not_before: float
    message: str  # the `queue` line of the new revision


def retry_delay(settings: Settings, attempts: int) -> float:
    return settings.retry_backoff * (2 ** max(0, attempts - 1))


def after_run(task: TaskRow, settings: Settings, now: int, *, succeeded: bool,
              stop_reason: str | None, cancelled: set) -> Retry | None:
    """After the task's run ended (its outcome recorded): a retry, or None."""
    tt = task.type_info
    if succeeded or not (tt and tt.safe_to_repeat):
        return None
    if stop_reason == "cancel" and task.nid in cancelled:
        return None
    attempts = task.attempts or 1
    not_before: float
    if stop_reason == "shutdown":
        not_before, why = now, "the runner was stopped"
    elif stop_reason == "cancel":
        not_before, why = now, "another task of its batch was cancelled"
    elif attempts < settings.retry_max_attempts:
        not_before, why = now + retry_delay(settings, attempts), f"attempt {attempts} failed"
    else:
        return None
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(not_before))
    return Retry(not_before, f"Task queued again ({why}; it is safe to repeat): attempt "
                             f"{attempts + 1} not before {when}.")


def after_lost_runner(task: TaskRow, settings: Settings, now: int) -> Retry | None:
    """After its runner was lost while the task ran (its outcome unknown): a retry, or None."""
    tt = task.type_info
    attempts = task.attempts or 1
    if tt and tt.safe_to_repeat and attempts < settings.retry_max_attempts:
        return Retry(now, "Task queued again (its runner was lost; it is safe to repeat): "
                          f"attempt {attempts + 1}.")
    return None
