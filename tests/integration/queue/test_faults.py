"""Faults the runner survives: cancel, timeout, SIGKILL, SIGTERM."""

from __future__ import annotations

import random
import signal
import time

import pytest
from click.testing import CliRunner

from aegir_ansible.cli import main
from aegir_ansible.db import models as m
from aegir_ansible.db.queue_tables import QueueRunner
from aegir_ansible.queue.manager import JobManager
from aegir_ansible.queue.reap import reap

from .conftest import ThreadWorker, configure, procs_with, run_once, spawn_runner, wait_for


def unique_sleep() -> str:
    return f"{60 + random.random():.6f}"


@pytest.fixture
def site_world(world):
    world.server("web.local")
    world.server("web2.local")
    world.platform("P1", "server_weblocal")
    world.platform("P2", "server_web2local")
    world.site("a.test", "platform_P1")
    world.site("b.test", "platform_P2")
    return world


def test_cancel_stops_the_playbook_and_all_its_processes(site_world):
    w = site_world
    secs = unique_sleep()
    t = w.task("install", "a.test", sleep=secs)
    with ThreadWorker(w.url):
        wait_for(lambda: procs_with(f"sleep {secs}"), 60, "the playbook's sleep")
        t0 = time.time()
        r = CliRunner().invoke(main, ["--db", w.url, "task", "cancel", str(t), "--wait", "30"])
        assert r.exit_code == 0, r.output
        assert time.time() - t0 < 15
        assert w.status(t) == m.TASK_WARNING
        assert "[warning] Task was cancelled." in w.log_text(t)
        wait_for(lambda: not procs_with(f"sleep {secs}"), 5, "no leftover sleep")
        assert not procs_with("AEGIR_QUEUE_RUN")
        # the runner keeps going
        nxt = w.task("verify", "a.test")
        w.wait_status(nxt, (m.TASK_SUCCESS,), 60)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_task_timeout_kills_the_run(site_world):
    w = site_world
    configure(w.url, task_timeout=2)
    secs = unique_sleep()
    t = w.task("install", "a.test", sleep=secs)
    t0 = time.time()
    run_once(w.url)
    assert time.time() - t0 < 30
    assert w.status(t) == m.TASK_ERROR
    assert "Task timed out after" in w.log_text(t)
    assert not procs_with(f"sleep {secs}")


def test_sigkilled_runner_tasks_are_failed_or_requeued(site_world, tmp_path):
    """Its playbooks die with it (no double run), and another runner declares it lost
    within a bounded time: failed, and re-queued only for types safe to repeat."""
    w = site_world
    s1, s2 = unique_sleep(), unique_sleep()
    verify = w.task("verify", "a.test", sleep=s1, sleep_once=str(tmp_path / "once"))
    install = w.task("install", "b.test", sleep=s2)
    verify_vid = w.task_row(verify).vid
    proc = spawn_runner(w.url, log_path=tmp_path / "runner.log")
    try:
        wait_for(lambda: procs_with(f"sleep {s1}") and procs_with(f"sleep {s2}"), 60,
                 "both playbooks running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # PR_SET_PDEATHSIG: the orphaned playbooks stop instead of running unsupervised (their
        # sleeps would last 60 s; ansible-playbook's own SIGTERM cleanup can take over 10 s
        # on a loaded 2-core machine).
        wait_for(lambda: not procs_with(f"sleep {s1}") and not procs_with(f"sleep {s2}"), 30,
                 "the orphaned playbooks to stop")
        assert w.status(verify) == w.status(install) == m.TASK_PROCESSING
        with ThreadWorker(w.url):
            started = time.time()
            w.wait_status(install, (m.TASK_ERROR,), 30)
            assert time.time() - started < 15  # lost_after 3 s + a connected period + polls
            assert "Runner lost" in w.log_text(install)
            assert "Runner lost" in w.log_text(verify, verify_vid)
            w.wait_status(verify, (m.TASK_SUCCESS,), 60)  # re-queued and run again
            assert w.task_row(verify).vid != verify_vid
            assert "attempt 2" in w.log_text(verify)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_runner_declared_lost_stops_those_runs_and_runs_on(site_world):
    """A runner whose heartbeats came too late (a stalled process or database) is declared
    lost by another runner, which fails the task it held. The runner stops that playbook
    (the task's outcome is not recorded a second time), is a running runner again (so what
    it claims next is reaped if it really dies), and runs what is queued next."""
    w = site_world
    secs = unique_sleep()
    t = w.task("install", "a.test", sleep=secs)
    with ThreadWorker(w.url) as worker:
        wait_for(lambda: procs_with(f"sleep {secs}"), 60, "the playbook's sleep")
        jm = JobManager(w.engine)
        settings = jm.settings().replace(runner_lost_after=-1.0)  # to this reaper, every runner looks lost
        reaped: list[int] = []  # (a reaper skips a runner row locked by its heartbeat: again)
        wait_for(lambda: reaped.extend(reap(jm, settings)) or reaped, 10, "the reaping")
        assert reaped == [t]
        assert w.status(t) == m.TASK_ERROR and "Runner lost" in w.log_text(t)
        wait_for(lambda: not procs_with(f"sleep {secs}"), 15, "the lost task's playbook to stop")

        def state():
            with w.Session() as s:
                return s.get(QueueRunner, worker.runner_id).state

        wait_for(lambda: state() == "running", 10, "the runner to be running again")
        nxt = w.task("verify", "b.test")
        w.wait_status(nxt, (m.TASK_SUCCESS,), 60)
    assert w.status(t) == m.TASK_ERROR
    assert w.log_text(t).count("Runner lost") == 1
    assert "Task was cancelled" not in w.log_text(t)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigterm_finishes_within_grace_then_cancels(site_world, tmp_path):
    w = site_world
    long = unique_sleep()
    short = w.task("verify", "a.test", sleep="3")
    stuck = w.task("install", "b.test", sleep=long)
    proc = spawn_runner(w.url, "--grace", "6", log_path=tmp_path / "runner.log")
    try:
        wait_for(lambda: procs_with(f"sleep {long}") and procs_with("sleep 3"), 60, "both running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert w.status(short) == m.TASK_SUCCESS, w.log_text(short)
    assert w.status(stuck) == m.TASK_WARNING
    assert "queue runner was stopped" in w.log_text(stuck)
    assert not procs_with(f"sleep {long}")
