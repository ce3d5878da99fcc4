"""Writes of a task's rows that several steps share: re-queueing a task as hostmaster's
retry does (a new revision), releasing its queue row, and its log lines."""

from __future__ import annotations

import time

from sqlalchemy import insert, select, update

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.db.queue_tables import QueueTask

from .types import TaskRow


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
        task_status=TaskStatus.QUEUED, executed=0, delta=0))
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
