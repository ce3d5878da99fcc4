"""`aegir queue run` as systemd runs it (Type=notify): READY=1 once the database answered,
WATCHDOG=1 keep-alives from its loop, STOPPING=1 on SIGTERM, over a real NOTIFY_SOCKET;
JSON log lines with failed tasks at error level; /healthz and the process metrics."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from aegir_ansible.db import models as m

from .conftest import configure, spawn_runner, wait_for
from .test_metrics_and_logs import free_port, sample, scrape


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Listener:
    """The service manager's end of NOTIFY_SOCKET: every datagram, with when it came (a
    thread receives them as they arrive)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode().split("\n")))

    def has(self, field: str) -> list[float]:
        return [t for t, fields in list(self.got) if field in fields]

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_runner_under_systemd(world, tmp_path):
    configure(world.url, retry_max_attempts=1)
    world.server()
    world.platform("p1")
    world.site("a.example.com", "platform_p1")
    listener = Listener(tmp_path / "notify")
    port = free_port()
    log_path = tmp_path / "runner.log"
    # 2 s watchdog: a keep-alive every 0.5-1 s from a loop that turns every 0.2 s.
    runner = spawn_runner(world.url, "--metrics-port", str(port), "--log-format", "json",
                          log_path=log_path,
                          env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"})
    try:
        wait_for(lambda: listener.has("READY=1"), timeout=60, what="READY=1")
        ready = next(fields for _t, fields in listener.got if "READY=1" in fields)
        assert f"MAINPID={runner.pid}" in ready
        assert any(f.startswith("STATUS=runner ") for f in ready), ready
        code, body = get(port, "/healthz")
        assert (code, body.strip()) == (200, "ok")
        text = scrape(port)
        for name in ("process_resident_memory_bytes", "process_start_time_seconds",
                     "process_cpu_seconds_total", "python_info"):
            assert sample(text, name) is not None, name
        assert sample(text, "aegir_runs_total") == 0

        failing = world.task("verify", "a.example.com", fail="yes")
        world.wait_status(failing, (m.TASK_ERROR,), timeout=120)
        wait_for(lambda: len(listener.has("WATCHDOG=1")) >= 3, timeout=30, what="keep-alives")
        pings = listener.has("WATCHDOG=1")
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 2.0, gaps  # within the watchdog timeout, always
        assert min(gaps) >= 0.4, gaps  # at most every quarter of it
        wait_for(lambda: sample(scrape(port), "aegir_tasks_finished_total", type="verify",
                                outcome="error") == 1, timeout=30, what="the failure counted")
    finally:
        runner.send_signal(signal.SIGTERM)
        rc = runner.wait(timeout=60)
    assert rc == 0
    assert listener.has("STOPPING=1")
    listener.close()

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert records and all(set(r) >= {"ts", "level", "logger", "task", "msg"} for r in records)
    failed = [r for r in records if r["task"] == str(failing) and r["level"] == "error"]
    assert failed and "failed" in failed[0]["msg"] and "verify on a.example.com" in failed[0]["msg"], records


def test_healthz_follows_the_loop():
    """503 with the reason while the loop does not turn, 200 once it does."""
    from aegir_ansible.queue import exporter, metrics

    h = metrics.health
    saved = (h.loop_at, h.db_ok_at, h.db_failing_since, h.loop_stale)
    server = exporter.serve(None, 0)  # type: ignore[arg-type] — /healthz needs no engine
    port = server.server_address[1]
    try:
        h.loop_at = None
        code, body = get(port, "/healthz")
        assert code == 503 and "not started" in body
        h.loop_at, h.db_failing_since = time.monotonic() - 1000, None
        code, body = get(port, "/healthz")
        assert code == 503 and "has not turned" in body
        h.loop_tick()
        h.db_failed()
        h.db_failing_since = time.monotonic() - 1000
        code, body = get(port, "/healthz")
        assert code == 503 and "database has not answered" in body
        h.db_ok()
        assert get(port, "/healthz") == (200, "ok\n")
    finally:
        server.shutdown()
        h.loop_at, h.db_ok_at, h.db_failing_since, h.loop_stale = saved
