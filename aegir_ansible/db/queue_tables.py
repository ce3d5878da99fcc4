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

The task -> server relation is never stored: it is computed from the frontend tables
(`aegir_ansible.queue.sql.target_query`) every time.
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
