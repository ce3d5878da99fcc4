"""Prometheus metrics of the queue, served over HTTP by `aegir queue run --metrics-port`.

What all runners share is read from the database at scrape time (queue depth per server,
running tasks, task outcomes and durations by type, runner heartbeats), so every runner
reports the same picture; what only this process knows (claim conflicts it retried, runs
it executed) comes from in-process counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import Engine, func, select

from aegir_ansible.db import models as m

log = logging.getLogger("aegir.metrics")

# In-process counters, bumped by the job manager and the worker.
COUNTERS: Counter = Counter()
_counter_lock = threading.Lock()


def count(name: str, n: int = 1) -> None:
    with _counter_lock:
        COUNTERS[name] += n


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(engine: Engine) -> str:
    from .admin import status  # noqa: PLC0415 — admin imports the CLI-side helpers lazily

    lines: list[str] = []

    def metric(name, kind, help_, samples):
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")

    st = status(engine)
    metric("aegir_queue_enabled", "gauge", "1 when the queue setting 'enabled' is on.",
           [({}, int(bool(st["enabled"])))])
    metric("aegir_queue_depth", "gauge", "Queued tasks per server queue.",
           [({"server": q["server"]}, q["queued"]) for q in st["queues"]])
    metric("aegir_queue_waiting", "gauge", "Queued tasks waiting for a later time, per server.",
           [({"server": q["server"]}, q["waiting"]) for q in st["queues"]])
    metric("aegir_queue_running_tasks", "gauge", "Running tasks per server queue.",
           [({"server": q["server"]}, len(q["running"])) for q in st["queues"]])
    metric("aegir_queue_paused", "gauge", "1 when a server's queue is paused.",
           [({"server": q["server"]}, int(q["paused"])) for q in st["queues"]])
    now = time.time()
    metric("aegir_runner_heartbeat_age_seconds", "gauge",
           "Seconds since each live runner's last heartbeat.",
           [({"runner": r["id"], "state": r["state"]}, r["heartbeat_age"]) for r in st["runners"]])
    metric("aegir_runner_heartbeat_timestamp_seconds", "gauge",
           "Unix time of each live runner's last heartbeat.",
           [({"runner": r["id"], "state": r["state"]}, round(now - r["heartbeat_age"], 1))
            for r in st["runners"]])

    with engine.connect() as conn:
        rows = conn.execute(
            select(m.HostingTask.task_type, m.HostingTask.task_status, func.count(),
                   func.coalesce(func.sum(m.HostingTask.delta), 0))
            .join(m.Node, m.Node.vid == m.HostingTask.vid)
            .where(m.HostingTask.task_status.in_((m.TASK_SUCCESS, m.TASK_ERROR, m.TASK_WARNING)))
            .group_by(m.HostingTask.task_type, m.HostingTask.task_status)
        ).all()
    outcome = {m.TASK_SUCCESS: "success", m.TASK_ERROR: "error", m.TASK_WARNING: "warning"}
    metric("aegir_tasks_finished_total", "counter", "Finished tasks by type and outcome.",
           [({"type": t, "outcome": outcome[s]}, n) for t, s, n, _d in rows])
    metric("aegir_task_duration_seconds", "summary",
           "Duration (hosting_task.delta) of finished tasks by type and outcome.",
           [])
    for t, s, n, d in rows:
        labels = f'type="{_label(t)}",outcome="{outcome[s]}"'
        lines.append(f"aegir_task_duration_seconds_sum{{{labels}}} {int(d)}")
        lines.append(f"aegir_task_duration_seconds_count{{{labels}}} {n}")

    with _counter_lock:
        counters = dict(COUNTERS)
    metric("aegir_claim_conflicts_total", "counter",
           "Claim transactions this process retried after a deadlock or lock wait.",
           [({}, counters.get("claim_conflicts", 0))])
    metric("aegir_claim_errors_total", "counter",
           "Claims this process could not make (database errors).",
           [({}, counters.get("claim_errors", 0))])
    metric("aegir_runs_total", "counter", "Playbook runs this process executed.",
           [({}, counters.get("runs", 0))])
    return "\n".join(lines) + "\n"


def serve(engine: Engine, port: int, address: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve /metrics in a daemon thread; returns the server (shutdown() to stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 — http.server's naming
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body = render(engine).encode()
                code = 200
            except Exception as exc:  # noqa: BLE001 — a scrape must not kill the runner
                log.warning("metrics: %s", exc)
                body, code = f"# metrics unavailable: {exc}\n".encode(), 503
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="aegir-metrics").start()
    log.info("metrics on http://%s:%d/metrics", address, server.server_address[1])
    return server
