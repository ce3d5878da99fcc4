"""`aegir queue run --metrics-port`: Prometheus metrics scraped over HTTP; the runner's
structured (logfmt) log lines carry the task id."""

from __future__ import annotations

import re
import signal
import socket
import urllib.request

from aegir_ansible.db import models as m

from .conftest import spawn_runner, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def sample(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', metric))
        if metric.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def test_metrics_endpoint_and_structured_logs(world, tmp_path):
    world.server()
    world.platform("p1")
    world.site("a.example.com", "platform_p1")
    world.site("b.example.com", "platform_p1")
    ok = world.task("verify", "a.example.com")
    port = free_port()
    log_path = tmp_path / "runner.log"
    runner = spawn_runner(world.url, "--metrics-port", str(port), log_path=log_path)
    try:
        wait_for(lambda: world.status(ok) == m.TASK_SUCCESS, timeout=120, what="the verify task")
        text = wait_for(lambda: (t := scrape(port)) and sample(
            t, "aegir_tasks_finished_total", type="verify", outcome="success") == 1 and t,
            timeout=30, what="metrics")
        assert sample(text, "aegir_queue_depth", server="server_weblocal") == 0
        assert sample(text, "aegir_queue_running_tasks", server="server_weblocal") == 0
        assert sample(text, "aegir_task_duration_seconds_count", type="verify", outcome="success") == 1
        assert sample(text, "aegir_task_duration_seconds_sum", type="verify", outcome="success") >= 0
        assert sample(text, "aegir_runner_heartbeat_age_seconds") is not None
        assert sample(text, "aegir_claim_conflicts_total") == 0
        assert sample(text, "aegir_runs_total") == 1
        assert "# TYPE aegir_queue_depth gauge" in text

        # a new queued task shows in the depth while the queue is paused
        from aegir_ansible.queue import admin

        admin.set_server(world.engine, "server_weblocal", paused=True)
        world.task("verify", "b.example.com")
        wait_for(lambda: sample(scrape(port), "aegir_queue_depth", server="server_weblocal") == 1,
                 timeout=30, what="queue depth 1")
        assert sample(scrape(port), "aegir_queue_paused", server="server_weblocal") == 1
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)
    lines = log_path.read_text().splitlines()
    assert lines and all(re.match(r'^ts=\S+ level=\w+ logger=\S+ task=\S+ msg=', line)
                         for line in lines), lines[:5]
    run_lines = [line for line in lines if "msg=\"run " in line]
    assert run_lines and all(f"task={ok}" in line for line in run_lines), run_lines


def test_task_log_follow_streams_a_running_task(world, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    world.server()
    world.platform("p1")
    world.site("a.example.com", "platform_p1")
    nid = world.task("verify", "a.example.com", sleep=4)
    runner = spawn_runner(world.url, log_path=tmp_path / "runner.log")
    follower = None
    try:
        wait_for(lambda: world.status(nid) == m.TASK_PROCESSING, timeout=60, what="processing")
        follower = subprocess.Popen(
            [str(Path(sys.executable).parent / "aegir"), "--db", world.url, "task", "log", str(nid),
             "--follow"], stdout=subprocess.PIPE, text=True)
        first = follower.stdout.readline()
        assert first.strip(), "no log line while the task runs"
        seen_while_running = world.status(nid) == m.TASK_PROCESSING
        rest = follower.communicate(timeout=120)[0]
        assert follower.returncode == 0
        assert seen_while_running, "the first line came only after the task ended"
        assert "[success]" in (first + rest).splitlines()[-1]
        assert world.status(nid) == m.TASK_SUCCESS
    finally:
        if follower and follower.poll() is None:
            follower.kill()
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)
