"""Reaping: the tasks of runners whose heartbeat is stale ("runner lost") are failed, their
outcome unknown; those the retry policy allows are queued again (retry.after_lost_runner)."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.db.queue_tables import QueueRunner, QueueTask

from . import retry
from .manager import JobManager
from .revisions import add_log, log_row, release, requeue
from .settings import Settings
from .sql import target_query, task_rows


def reap(jm: JobManager, settings: Settings, exclude: str | None = None) -> list[int]:
    """Fail the tasks of runners whose heartbeat is stale; re-queue those the retry policy
    allows. Returns the task nids handled."""
    handled: list[int] = []
    for runner_id, hostname, heartbeat in jm.lost_runners(settings.runner_lost_after, exclude):
        def fn(conn, runner_id=runner_id, heartbeat=heartbeat, hostname=hostname):
            row = conn.execute(select(QueueRunner.state, QueueRunner.heartbeat)
                               .where(QueueRunner.id == runner_id)
                               .with_for_update(skip_locked=True)).first()
            if row is None or row[0] not in ("running", "stopping") or \
                    row[1] >= time.time() - settings.runner_lost_after:
                return []
            conn.execute(update(QueueRunner).where(QueueRunner.id == runner_id).values(state="lost"))
            tasks = task_rows(conn.execute(
                target_query(TaskStatus.PROCESSING).where(QueueTask.runner_id == runner_id)))
            now = int(time.time())
            done = []
            for task in tasks:
                ago = int(time.time() - heartbeat)
                msg = (f"Runner lost: the queue runner {runner_id} on {hostname} stopped sending "
                       f"heartbeats {ago} seconds ago while this task ran; its outcome is unknown "
                       "and the task is marked failed.")
                add_log(conn, [log_row(task, "error", msg, now)])
                executed = conn.execute(select(m.HostingTask.executed)
                                        .where(m.HostingTask.vid == task.vid)).scalar() or now
                conn.execute(update(m.HostingTask).where(m.HostingTask.vid == task.vid)
                             .values(task_status=TaskStatus.ERROR, delta=max(0, now - executed)))
                again = retry.after_lost_runner(task, settings, now)
                if again:
                    requeue(conn, task.nid, again.not_before, again.message)
                else:
                    release(conn, task.nid, last_error=msg[:1000])
                done.append(task.nid)
            return done

        handled += jm.tx(fn, f"reaping runner {runner_id}") or []
    return handled
