"""Serving the metrics over HTTP for `aegir queue run --metrics-port`: this process's
counters (metrics.py) and the database-wide gauges read at scrape time from the queue's
status (admin.status).

`/healthz` answers 200 while the runner's loop turns and the database answered lately,
503 (with the reason) otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine, func, select

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus

from . import metrics
from .admin import status
from .metrics import FINISHED

log = logging.getLogger("aegir.metrics")


class DatabaseCollector:
    """Database-wide gauges, read at scrape time."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def describe(self):
        return []

    def collect(self):
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
                .where(m.HostingTask.task_status.in_(FINISHED))
                .group_by(m.HostingTask.task_type, m.HostingTask.task_status)
            ).all()
        yield gauge("aegir_queue_tasks_by_outcome",
                    "Tasks whose current revision ended, by type and outcome (database rows: "
                    "a retried task counts once, as its last outcome).", ["type", "outcome"],
                    [([t, TaskStatus.label_of(s)], n) for t, s, n in rows])


def render(engine: Engine | None = None) -> str:
    """The exposition text: this process's counters, and the database's gauges."""
    registry = metrics.REGISTRY
    if engine is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Own())
        registry.register(DatabaseCollector(engine))
    return generate_latest(registry).decode()


class _Own:
    """This process's metrics, for a registry that adds the database's."""

    def collect(self):
        yield from metrics.REGISTRY.collect()


def serve(engine: Engine, port: int, address: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a daemon thread; returns the server (shutdown())."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 — http.server's naming
            path = self.path.split("?")[0]
            if path == "/healthz":
                ok, reason = metrics.health.check()
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
