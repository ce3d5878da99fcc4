"""Prometheus metrics of the queue runner process and its health (prometheus_client);
exporter.py serves them over HTTP with the database's gauges.

Counters count events of this runner process (tasks it finished, runs it executed, claims
it retried or could not make, database writes refused): each runner exports its own, and
Prometheus sums them. What the database says about all runners (queue depth per server,
running tasks, finished task rows, runner heartbeats) is read at scrape time and exported
as gauges: every runner reports the same figures there, so aggregate those with max(), not
sum().

Health: whether the runner's loop turns and the database answered lately (`/healthz`).
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, PlatformCollector, ProcessCollector, Summary

from aegir_ansible.db.models import TaskStatus

REGISTRY = CollectorRegistry(auto_describe=True)
# The process's own: process_cpu_seconds_total, process_resident_memory_bytes,
# process_open_fds, process_start_time_seconds ...; python_info.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# The statuses a finished task has (their labels are the metrics' `outcome`).
FINISHED = (TaskStatus.SUCCESS, TaskStatus.ERROR, TaskStatus.WARNING)

TASKS_FINISHED = Counter("aegir_tasks_finished", "Tasks this runner finished, by type and outcome.",
                         ["type", "outcome"], registry=REGISTRY)
TASK_DURATION = Summary("aegir_task_duration_seconds",
                        "Duration of the runs of the tasks this runner finished, by type and outcome.",
                        ["type", "outcome"], registry=REGISTRY)

# count(name) -> the counter it bumps.
_COUNTERS = {
    "runs": Counter("aegir_runs", "Playbook runs this runner executed.", registry=REGISTRY),
    "claim_conflicts": Counter("aegir_claim_conflicts",
                               "Claim transactions this runner retried after a deadlock or lock wait.",
                               registry=REGISTRY),
    "tx_conflicts": Counter("aegir_tx_conflicts",
                            "Other transactions this runner retried after a deadlock or lock wait.",
                            registry=REGISTRY),
    "claim_errors": Counter("aegir_claim_errors",
                            "Claims this runner could not make (database errors).", registry=REGISTRY),
    "db_permanent_errors": Counter(
        "aegir_db_permanent_errors",
        "Writes the database refused for good (missing grant, schema or data error); alert on it.",
        registry=REGISTRY),
    "outcome_refused": Counter("aegir_outcome_refused",
                               "Tasks failed because the database refused their outcome.",
                               registry=REGISTRY),
    "reconciled_tasks": Counter(
        "aegir_reconciled_tasks",
        "Tasks this runner held for runs it never started (a lost claim acknowledgement), "
        "put back in the queue.", registry=REGISTRY),
    "server_backoffs": Counter("aegir_server_backoffs",
                               "Times this runner found a server unreachable and backed off.",
                               registry=REGISTRY),
}


def count(name: str, n: int = 1) -> None:
    _COUNTERS[name].inc(n)


def counter_value(name: str) -> float:
    """This process's count (for tests and `queue status`)."""
    return _COUNTERS[name]._value.get()


def finished(task_type: str | None, status: int, seconds: float) -> None:
    """A task this runner finished (its outcome written)."""
    outcome = TaskStatus.label_of(status)
    TASKS_FINISHED.labels(task_type or "", outcome).inc()
    TASK_DURATION.labels(task_type or "", outcome).observe(max(0.0, seconds))


class Health:
    """Whether this runner works: its loop turns and the database answered lately."""

    # The loop turns at least every poll interval; a claim or a write may wait for the
    # database up to its read timeout.
    LOOP_STALE_MIN = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self.loop_at: float | None = None
        self.db_ok_at: float | None = None
        self.db_failing_since: float | None = None
        self.loop_stale = self.LOOP_STALE_MIN
        self.db_grace = 20.0

    def configure(self, settings) -> None:
        self.loop_stale = max(self.LOOP_STALE_MIN, 10 * settings.poll_interval)
        self.db_grace = 2 * settings.heartbeat_interval

    def loop_tick(self) -> None:
        self.loop_at = time.monotonic()

    def db_ok(self) -> None:
        with self._lock:
            self.db_ok_at, self.db_failing_since = time.monotonic(), None

    def db_failed(self) -> None:
        with self._lock:
            if self.db_failing_since is None:
                self.db_failing_since = time.monotonic()

    def check(self) -> tuple[bool, str]:
        now = time.monotonic()
        with self._lock:
            if self.loop_at is None:
                return False, "the runner's loop has not started"
            if now - self.loop_at > self.loop_stale:
                return False, f"the runner's loop has not turned for {now - self.loop_at:.0f} s"
            if self.db_failing_since is not None and now - self.db_failing_since > self.db_grace:
                return False, (f"the database has not answered for "
                               f"{now - (self.db_ok_at or self.db_failing_since):.0f} s")
            return True, "ok"


health = Health()
