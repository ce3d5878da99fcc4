"""Prometheus metrics of the queue runner and its health, served over HTTP by
`aegir queue run --metrics-port` (prometheus_client).

Counters count events of this runner process (tasks it finished, runs it executed, claims
it retried or could not make, database writes refused): each runner exports its own, and
Prometheus sums them. What the database says about all runners (queue depth per server,
running tasks, finished task rows, runner heartbeats) is read at scrape time and exported
as gauges: every runner reports the same figures there, so aggregate those with max(), not
sum().

`/healthz` answers 200 while the runner's loop turns and the database answered lately,
503 (with the reason) otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Summary, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine, func, select

from aegir_ansible.db import models as m

log = logging.getLogger("aegir.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

OUTCOMES = {m.TASK_SUCCESS: "success", m.TASK_ERROR: "error", m.TASK_WARNING: "warning"}

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
    outcome = OUTCOMES.get(status, str(status))
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


class DatabaseCollector:
    """Database-wide gauges, read at scrape time."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def describe(self):
        return []

    def collect(self):
        from .admin import status  # noqa: PLC0415 — admin imports the job manager

        st = status(self.engine)

        def gauge(name, help_, labels, samples):
            g = GaugeMetricFamily(name, help_, labels=labels)
            for values, value in samples:
                g.add_metric(values, value)
            return g

        yield gauge("aegir_queue_enabled", "1 when the queue setting 'enabled' is on.", [],
                    [([], int(bool(st["enabled"])))])
        yield gauge("aegir_queue_depth", "Queued tasks per server queue.", ["server"],
                    [([q["server"]], q["queued"]) for q in st["queues"]])
        yield gauge("aegir_queue_waiting", "Queued tasks waiting for a later time, per server.",
                    ["server"], [([q["server"]], q["waiting"]) for q in st["queues"]])
        yield gauge("aegir_queue_running_tasks", "Running tasks per server queue.", ["server"],
                    [([q["server"]], len(q["running"])) for q in st["queues"]])
        yield gauge("aegir_queue_paused", "1 when a server's queue is paused.", ["server"],
                    [([q["server"]], int(q["paused"])) for q in st["queues"]])
        yield gauge("aegir_queue_backoff_seconds",
                    "Seconds before an unreachable server's queue is claimed again.", ["server"],
                    [([q["server"]], q.get("backoff", 0)) for q in st["queues"]])
        now = time.time()
        yield gauge("aegir_runner_heartbeat_age_seconds",
                    "Seconds since each live runner's last heartbeat.", ["runner", "state"],
                    [([r["id"], r["state"]], r["heartbeat_age"]) for r in st["runners"]])
        yield gauge("aegir_runner_heartbeat_timestamp_seconds",
                    "Unix time of each live runner's last heartbeat.", ["runner", "state"],
                    [([r["id"], r["state"]], round(now - r["heartbeat_age"], 1))
                     for r in st["runners"]])
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(m.HostingTask.task_type, m.HostingTask.task_status, func.count())
                .join(m.Node, m.Node.vid == m.HostingTask.vid)
                .where(m.HostingTask.task_status.in_(tuple(OUTCOMES)))
                .group_by(m.HostingTask.task_type, m.HostingTask.task_status)
            ).all()
        yield gauge("aegir_queue_tasks_by_outcome",
                    "Tasks whose current revision ended, by type and outcome (database rows: "
                    "a retried task counts once, as its last outcome).", ["type", "outcome"],
                    [([t, OUTCOMES[s]], n) for t, s, n in rows])


def render(engine: Engine | None = None) -> str:
    """The exposition text: this process's counters, and the database's gauges."""
    registry = REGISTRY
    if engine is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Own())
        registry.register(DatabaseCollector(engine))
    return generate_latest(registry).decode()


class _Own:
    """This process's metrics, for a registry that adds the database's."""

    def collect(self):
        yield from REGISTRY.collect()


def serve(engine: Engine, port: int, address: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a daemon thread; returns the server (shutdown())."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 — http.server's naming
            path = self.path.split("?")[0]
            if path == "/healthz":
                ok, reason = health.check()
                self._send(200 if ok else 503, f"{reason}\n".encode(), "text/plain; charset=utf-8")
                return
            if path not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body, code = render(engine).encode(), 200
            except Exception as exc:  # noqa: BLE001 — a scrape must not kill the runner
                log.warning("metrics: %s", str(exc).splitlines()[0])
                body, code = f"# metrics unavailable: {exc}\n".encode(), 503
            self._send(code, body, CONTENT_TYPE_LATEST)

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="aegir-metrics").start()
    log.info("metrics on http://%s:%d/metrics (health: /healthz)", address, server.server_address[1])
    return server
