"""From ansible-runner events to hosting_task_log rows, and the batching log writer.

Log types are drush's, which the hostmaster UI knows and `hosting_task_parse_log()` reads:

| ansible event | type |
|---|---|
| play / task start, ok, skipped, summary | `info` |
| changed | `message` |
| failed (not ignored), unreachable, ansible `error` output | `error` |
| failed but ignored (`ignore_errors`), ansible warnings | `warning` |
| retries (`until:`), deprecation notices | `notice` |

The line text is the event's own `stdout` (rendered as ansible-playbook prints it), so a
`no_log` task's result appears censored, as ansible censors it. Extra vars, the
environment and the command line never go to the log.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from aegir_ansible.db import models as m
from aegir_ansible.db.queue_tables import LogBatch

from . import metrics
from .database import is_disconnect, is_retryable, is_transient

log = logging.getLogger("aegir.queue")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


_STARS = re.compile(r"\s\*+$")


def clean(text: str) -> str:
    """The event's text without colours, carriage returns and ansible's '****' rulers."""
    return _STARS.sub("", _ANSI.sub("", text or "").replace("\r", "").strip("\n").rstrip())


def event_host(ev: dict) -> str | None:
    data = ev.get("event_data") or {}
    return data.get("host") or data.get("remote_addr")


def classify(ev: dict) -> str | None:
    """The log type of an event, or None to skip it."""
    name = ev.get("event", "")
    data = ev.get("event_data") or {}
    if name in ("runner_on_failed", "runner_item_on_failed", "runner_on_async_failed"):
        return "warning" if data.get("ignore_errors") else "error"
    if name == "runner_on_unreachable":
        return "warning" if data.get("ignore_unreachable") else "error"
    if name in ("runner_on_ok", "runner_item_on_ok", "runner_on_async_ok"):
        res = data.get("res") or {}
        return "message" if res.get("changed") else "info"
    if name in ("runner_on_skipped", "runner_item_on_skipped"):
        return "info"
    if name == "runner_retry":
        return "notice"
    if name in ("playbook_on_play_start", "playbook_on_task_start", "playbook_on_handler_task_start",
                "playbook_on_no_hosts_matched", "playbook_on_no_hosts_remaining"):
        return "info"
    if name in ("warning", "system_warning"):
        return "warning"
    if name == "deprecated":
        return "notice"
    if name == "error":
        return "error"
    if name in ("verbose", "debug"):
        text = (ev.get("stdout") or "").lstrip()
        if text.startswith(("[ERROR]", "ERROR!")):
            return "error"
        if text.startswith("[WARNING]"):
            return "warning"
        if text.startswith("[DEPRECATION"):
            return "notice"
        return "info"
    return None


class LogWriter:
    """A thread that writes queued log rows in batches (every `interval` s or `max_rows`
    rows), one transaction per batch. Rows wait in memory while the database is down and
    are written when it is back.

    Each batch has a token, inserted with its rows (`aegir_ansible_log_batch`): when the
    commit's acknowledgement is lost, the retry of the same batch finds its token and
    writes nothing, so no line is logged twice."""

    # Tokens older than this are deleted (a batch is retried for as long as the database
    # is down; far less than this).
    TOKEN_TTL = 86400.0

    def __init__(self, engine: Engine, interval: float = 0.5, max_rows: int = 500):
        self.engine = engine
        self.interval = interval
        self.max_rows = max_rows
        self.q: queue.Queue = queue.Queue()
        self._pending: list[dict] = []
        self._batch: tuple[str, list[dict]] | None = None  # (token, rows) being written
        self._pruned = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._enqueued = 0
        self._written = 0
        self.thread = threading.Thread(target=self._loop, name="aegir-log-writer", daemon=True)
        self.thread.start()

    def put(self, row: dict) -> None:
        with self._lock:
            self._enqueued += 1
        self.q.put(row)

    def _drain(self) -> None:
        while len(self._pending) < self.max_rows * 4:
            try:
                self._pending.append(self.q.get_nowait())
            except queue.Empty:
                break

    def _write(self) -> bool:
        if self._batch is None:
            if not self._pending:
                return True
            # The batch is fixed with its token: a retry writes exactly these rows.
            self._batch = (uuid.uuid4().hex, self._pending[: self.max_rows])
            del self._pending[: len(self._batch[1])]
        token, batch = self._batch
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(LogBatch).values(token=token, written=time.time()))
                conn.execute(insert(m.HostingTaskLog), batch)
                self._prune(conn)
        except IntegrityError as exc:
            if "Duplicate" not in str(exc.orig) and "UNIQUE" not in str(exc.orig):
                log.warning("writing %d log rows failed (will retry): %s", len(batch), exc)
                return False
            log.info("a batch of %d log rows was already written (its commit's "
                     "acknowledgement was lost)", len(batch))
        except Exception as exc:  # noqa: BLE001 — keep the rows, try again later
            if not is_transient(exc):
                # It can never succeed (a missing grant, a schema or data error): say so
                # once and go on, or every later line and the outcome would wait for it.
                log.error("writing %d log rows failed and cannot succeed, they are dropped: %s",
                          len(batch), str(exc).splitlines()[0])
                metrics.count("db_permanent_errors")
                self._batch = None
                with self._lock:
                    self._written += len(batch)
                    self._flushed.notify_all()
                return True
            if not (is_disconnect(exc) or is_retryable(exc)):
                log.warning("writing %d log rows failed (will retry): %s", len(batch), exc)
            return False
        self._batch = None
        with self._lock:
            self._written += len(batch)
            self._flushed.notify_all()
        return True

    def _prune(self, conn) -> None:
        now = time.time()
        if now - self._pruned > 3600:
            conn.execute(delete(LogBatch).where(LogBatch.written < now - self.TOKEN_TTL))
            self._pruned = now

    def _loop(self) -> None:
        backoff = self.interval
        while True:
            try:
                self._pending.append(self.q.get(timeout=self.interval))
            except queue.Empty:
                pass
            self._drain()
            while self._pending or self._batch:
                if not self._write():
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    break
                backoff = self.interval
                self._drain()
            if self._stop.is_set() and self.q.empty() and not self._pending and not self._batch:
                return

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row put so far is written (True) or the timeout passes."""
        deadline = None if timeout is None else time.time() + timeout
        with self._lock:
            target = self._enqueued
            while self._written < target:
                left = None if deadline is None else deadline - time.time()
                if left is not None and left <= 0:
                    return False
                self._flushed.wait(timeout=min(left or 1.0, 1.0))
        return True

    def close(self, timeout: float | None = 30) -> None:
        self._stop.set()
        self.flush(timeout)
        self.thread.join(timeout=5)
