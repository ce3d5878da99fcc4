"""The queue's bookkeeping tables (owned by the queue runner).

Everything the dispatcher needs besides Aegir's own `hosting_task*` tables lives here, in
`aegir_ansible_*` tables created by `aegir db init`:

- `aegir_ansible_queue_setting`: global settings (name -> value), editable by the frontend;
  a missing row means the documented default (`aegir_ansible.queue.settings`).
- `aegir_ansible_queue_server`: one row per server queue (server nid): paused flag and an
  optional concurrency override. Rows are created on demand; its rows are also what a
  claim locks (FOR UPDATE SKIP LOCKED) to serialise claims on one server.
- `aegir_ansible_runner`: one row per runner process, with its heartbeat.
- `aegir_ansible_task`: per task node: not-before time (queued for later), attempts, and
  while it runs, which runner holds it and whether a cancel was requested.
- `aegir_ansible_log_batch`: the token of each batch of log rows written, in the batch's
  own transaction: a batch retried after a lost acknowledgement (the commit happened, the
  reply did not arrive) finds its token and is not written twice.
- `aegir_ansible_server_health`: per server, consecutive unreachable runs and the time
  before which its queue is not claimed (back-off).
- `aegir_ansible_queued`: an index of the queued tasks (one row per task node whose current
  revision is QUEUED), with what orders them per server: the claim's page of heads reads it
  by (server, level, priority, nid) instead of scanning `hosting_task` (whose `task_status`
  has no index) and joining every queued row to its target. It is a hint kept in step by
  the runners (`aegir_ansible.queue.manager.sync_index`): every claim checks its tasks against the
  frontend tables again.
- `aegir_ansible_queue_sync`: one row: the newest task revision id the index has seen and
  when it was last compared whole with the frontend; its lock serialises the syncs.

The task -> server relation is computed from the frontend tables
(`aegir_ansible.queue.sql.target_query`) whenever a task is claimed; `aegir_ansible_queued`
only keeps a copy to order the candidates.
"""

from __future__ import annotations

from sqlalchemy import Double, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .backend import BackendBase


class QueueSetting(BackendBase):
    __tablename__ = "aegir_ansible_queue_setting"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), nullable=False, default="")


class QueueServer(BackendBase):
    __tablename__ = "aegir_ansible_queue_server"
    server_nid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    paused: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    # NULL: the global `server_concurrency` setting.
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)


class QueueRunner(BackendBase):
    __tablename__ = "aegir_ansible_runner"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    pid: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    started: Mapped[float] = mapped_column(Double, nullable=False, default=0)
    heartbeat: Mapped[float] = mapped_column(Double, nullable=False, default=0)
    # running, stopping, stopped, lost
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    servers: Mapped[str] = mapped_column(Text, nullable=False, default="")
    concurrency: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class QueueTask(BackendBase):
    __tablename__ = "aegir_ansible_task"
    nid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Not run before this unix time (0: as soon as possible).
    not_before: Mapped[float] = mapped_column(Double, nullable=False, default=0, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    # While running: the revision being run, the runner holding it, when it was claimed.
    vid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runner_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Tasks run together (one playbook run, coalesced) share a run id.
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                                  server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    __table_args__ = (Index("aegir_ansible_task_runner", "runner_id"),)


class LogBatch(BackendBase):
    __tablename__ = "aegir_ansible_log_batch"
    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    written: Mapped[float] = mapped_column(Double, nullable=False, default=0)
    __table_args__ = (Index("aegir_ansible_log_batch_written", "written"),)


class ServerHealth(BackendBase):
    __tablename__ = "aegir_ansible_server_health"
    server_nid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Consecutive runs that found the server unreachable (0 after a run that reached it).
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Its queue is not claimed before this unix time.
    backoff_until: Mapped[float] = mapped_column(Double, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class QueuedTask(BackendBase):
    """A queued task as the claim orders it (a copy of the frontend's, kept in step)."""

    __tablename__ = "aegir_ansible_queued"
    nid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    vid: Mapped[int] = mapped_column(Integer, nullable=False)  # the queued revision
    rid: Mapped[int] = mapped_column(Integer, nullable=False)  # its target
    server: Mapped[int | None] = mapped_column(Integer, nullable=True)  # NULL: not found
    level: Mapped[int] = mapped_column(Integer, nullable=False)  # types.TARGET_LEVELS
    priority: Mapped[int] = mapped_column(Integer, nullable=False)  # the task type's
    site: Mapped[int | None] = mapped_column(Integer, nullable=True)
    platform: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The platform, for a platform-wide task (it holds back the site tasks queued after it).
    wide_platform: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (
        Index("aegir_ansible_queued_order", "server", "level", "priority", "nid"),
        Index("aegir_ansible_queued_target", "rid", "nid"),
        Index("aegir_ansible_queued_wide", "wide_platform", "nid"),
        Index("aegir_ansible_queued_vid", "vid", unique=True),
    )


class QueueSync(BackendBase):
    """The sync state of aegir_ansible_queued (one row, id 1)."""

    __tablename__ = "aegir_ansible_queue_sync"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The newest hosting_task.vid seen by the last sync.
    mark: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When the index was last compared whole with hosting_task (unix time).
    resynced_at: Mapped[float] = mapped_column(Double, nullable=False, default=0)
