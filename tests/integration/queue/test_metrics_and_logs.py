"""`aegir queue run --metrics-port`: Prometheus metrics scraped over HTTP; the runner's
structured (logfmt) log lines carry the task id."""

from __future__ import annotations

import re
import signal
import socket
import urllib.error
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


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0  # not listening yet, or too busy to answer


def test_counters_count_this_runners_events(world, tmp_path):
    """A verify that fails, is retried and fails again: this runner finished two tasks
    with an error (the counter never goes down), while the database holds one such row
    (a gauge)."""
    from .conftest import configure

    configure(world.url, retry_max_attempts=2, retry_backoff=0)
    world.server()
    world.platform("p1")
    world.site("a.example.com", "platform_p1")
    t = world.task("verify", "a.example.com", fail="yes")
    port = free_port()
    runner = spawn_runner(world.url, "--metrics-port", str(port), log_path=tmp_path / "runner.log")
    try:
        def twice():
            if not health(port):
                return False
            text = scrape(port)
            return sample(text, "aegir_tasks_finished_total", type="verify", outcome="error") == 2 and text

        text = wait_for(twice, timeout=120, what="two finished attempts")
        assert world.status(t) == m.TASK_ERROR
        assert sample(text, "aegir_queue_tasks_by_outcome", type="verify", outcome="error") == 1
        assert "# TYPE aegir_tasks_finished_total counter" in text
        assert "# TYPE aegir_queue_tasks_by_outcome gauge" in text
        assert sample(text, "aegir_runs_total") == 2
        assert health(port) == 200
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)


def test_claim_errors_and_health_follow_the_database(mysql_server_url, tmp_path):
    """Through a proxy that stops the database: claims fail (counted), /healthz says 503,
    and 200 again once the database is back."""
    from aegir_ansible.db import init_schema, make_engine
    from tests.conftest import new_database_url

    from .conftest import configure
    from .dbproxy import DBProxy

    url, drop = new_database_url("mysql", tmp_path, mysql_server_url)
    eng = make_engine(url)
    init_schema(eng)
    eng.dispose()
    configure(url)
    proxy = DBProxy()
    port = free_port()
    runner = spawn_runner(proxy.url(url), "--metrics-port", str(port), log_path=tmp_path / "runner.log")
    try:
        wait_for(lambda: health(port) == 200, 60, "a healthy runner")
        assert sample(scrape(port), "aegir_claim_errors_total") == 0
        proxy.refusing = True
        proxy.drop_all()
        wait_for(lambda: health(port) == 503, 30, "an unhealthy runner")
        proxy.refusing = False
        wait_for(lambda: health(port) == 200, 30, "a healthy runner again")
        assert sample(scrape(port), "aegir_claim_errors_total") >= 1
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)
        proxy.close()
        drop()
