"""The runner end to end with the queue's small test playbooks on local-connection servers."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from aegir_ansible.cli import main
from aegir_ansible.db import models as m
from aegir_ansible.db.queue_tables import QueueTask
from aegir_ansible.queue import admin

from .conftest import configure, run_once

SECRET = "s3cret-admin-pw"


def all_log_text(w) -> str:
    with w.Session() as s:
        return "\n".join(s.execute(select(m.HostingTaskLog.message)).scalars())


def test_outcomes_and_entity_updates(world):
    w = world
    web = w.server("web.local")
    w.server("web2.local")
    p1 = w.platform("P1", "server_weblocal")
    p2 = w.platform("P2", "server_web2local")
    a = w.site("a.test", "platform_P1", status=m.SITE_QUEUED)
    b = w.site("b.test", "platform_P1")
    c = w.site("c.test", "platform_P2")
    t_server = w.task("verify", "server_weblocal")
    t_install = w.task("install", "a.test")
    t_disable = w.task("disable", "b.test")
    t_delete = w.task("delete", "c.test")
    t_lock = w.task("lock", "platform_P2")
    run_once(w.url)

    for t in (t_server, t_install, t_disable, t_delete, t_lock):
        row = w.task_row(t)
        assert row.task_status == m.TASK_SUCCESS, w.log_text(t)
        assert row.executed > 0 and row.delta >= 0
        log = w.log_text(t)
        assert "[message] Running playbook" in log
        assert "[success] Task completed successfully" in log
    assert "ok: [a.test]" in w.log_text(t_install)
    assert "TASK [Say hello]" in w.log_text(t_install)

    site_a = w.row(m.HostingSite, a)
    assert site_a.status == m.SITE_ENABLED and site_a.verified > 0
    assert site_a.db_name == "atest"  # what the run used (the inventory's suggestion)
    assert w.row(m.HostingSite, b).status == m.SITE_DISABLED
    assert w.row(m.HostingSite, c).status == m.SITE_DELETED
    with w.Session() as s:
        assert s.get(m.HostingContext, c) is None
    assert w.row(m.HostingPlatform, p2).status == m.PLATFORM_LOCKED
    assert w.row(m.HostingServer, web).verified > 0
    # server verify queued a verify of its platform, which the same --once run drained
    with w.Session() as s:
        pv = s.execute(select(m.HostingTask).join(m.Node, m.Node.vid == m.HostingTask.vid)
                       .where(m.HostingTask.rid == p1, m.HostingTask.task_type == "verify")).scalars().all()
    assert len(pv) == 1 and pv[0].task_status == m.TASK_SUCCESS
    plat = w.row(m.HostingPlatform, p1)
    assert plat.status == m.PLATFORM_ENABLED and plat.verified > 0
    # the claim bookkeeping is released
    with w.Session() as s:
        assert s.execute(select(func.count()).select_from(QueueTask)
                         .where(QueueTask.runner_id.is_not(None))).scalar() == 0
    # log rows carry the task's current vid (the UI shows logs by vid); no secret in them
    with w.Session() as s:
        bad = s.execute(select(func.count()).select_from(m.HostingTaskLog)
                        .join(m.Node, m.Node.nid == m.HostingTaskLog.nid)
                        .where(m.HostingTaskLog.vid != m.Node.vid)).scalar()
    assert bad == 0
    assert SECRET not in all_log_text(w)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_task_arguments_are_never_templated(world):
    w = world
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    payload = "{{ lookup('pipe','touch " + marker + "') }}"
    t = w.task("verify", "a.test", x=payload)
    run_once(w.url)
    assert w.status(t) == m.TASK_SUCCESS, w.log_text(t)
    assert not os.path.exists(marker)
    assert f"x={payload}" in w.log_text(t)  # came through as plain text


def test_malformed_rows_and_unreachable_server_do_not_stop_the_runner(world):
    w = world
    w.server("web.local")
    w.server("dead.local", local=False, address="127.0.0.1", ssh_port=1, with_db=False)
    w.platform("P1", "server_weblocal")
    w.platform("PD", "server_deadlocal")
    w.site("a.test", "platform_P1")
    w.site("b.test", "platform_P1")
    w.site("gone.test", "platform_P1")
    unknown = w.task("verify", "b.test")
    deleted = w.task("verify", "gone.test")
    dead = w.task("verify", "platform_PD", x="connect")
    ok = w.task("verify", "a.test")
    with w.Session() as s, s.begin():
        s.get(m.HostingTask, s.get(m.Node, unknown).vid).task_type = "frobnicate"
        gone = s.execute(select(m.HostingContext.nid).where(m.HostingContext.name == "gone.test")).scalar()
        s.get(m.HostingSite, s.get(m.Node, gone).vid).status = m.SITE_DELETED
    configure(w.url, retry_max_attempts=1)
    run_once(w.url)
    assert w.status(ok) == m.TASK_SUCCESS, w.log_text(ok)
    assert w.status(unknown) == m.TASK_ERROR
    assert "Unknown task type 'frobnicate'" in w.log_text(unknown)
    assert w.status(deleted) == m.TASK_ERROR
    assert "site gone.test is deleted" in w.log_text(deleted)
    assert w.status(dead) == m.TASK_ERROR
    log = w.log_text(dead)
    assert "UNREACHABLE" in log and "[error]" in log


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_batch_failure_is_per_task(world):
    w = world
    configure(w.url, retry_max_attempts=1)
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    tasks = {}
    for uri in ("a.test", "bad.test", "c.test"):
        w.site(uri, "platform_P1")
        tasks[uri] = w.task("verify", uri)
    run_once(w.url)
    assert w.status(tasks["a.test"]) == m.TASK_SUCCESS
    assert w.status(tasks["c.test"]) == m.TASK_SUCCESS
    assert w.status(tasks["bad.test"]) == m.TASK_ERROR
    log_a, log_bad = w.log_text(tasks["a.test"]), w.log_text(tasks["bad.test"])
    assert "together with 2 other task(s)" in log_a
    assert "bad.test was asked to fail" in log_bad and "bad.test" not in log_a
    assert w.row(m.HostingSite, w.write(lambda fe: fe.find("bad.test").nid)).verified == 0
    assert w.row(m.HostingSite, w.write(lambda fe: fe.find("a.test").nid)).verified > 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_retries_with_backoff_only_for_safe_types(world):
    w = world
    # A backoff long enough that "too early" holds however slow the machine; the test then
    # makes the retry due itself instead of sleeping.
    configure(w.url, retry_max_attempts=2, retry_backoff=60)
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    w.site("b.test", "platform_P1")
    v = w.task("verify", "a.test", fail="yes")
    i = w.task("install", "b.test", fail="yes")
    first_vid = w.task_row(v).vid
    t0 = time.time()
    run_once(w.url)
    assert w.status(i) == m.TASK_ERROR  # install is not safe to repeat: no retry
    row = w.task_row(v)
    assert row.task_status == m.TASK_QUEUED and row.vid != first_vid  # a new revision
    assert "[error]" in w.log_text(v, first_vid)
    assert "attempt 2" in w.log_text(v)
    with w.Session() as s:
        qt = s.get(QueueTask, v)
        assert qt.attempts == 1 and qt.not_before >= t0 + 60
        args = s.execute(select(m.HostingTaskArgument.value)
                         .where(m.HostingTaskArgument.vid == row.vid)).scalars().all()
        assert args == ["yes"]  # arguments carried over to the new revision
    run_once(w.url)  # too early: the retry waits for its backoff
    assert w.status(v) == m.TASK_QUEUED
    admin.defer(w.engine, v, time.time() - 1)  # the backoff has passed
    run_once(w.url)
    assert w.status(v) == m.TASK_ERROR  # second attempt failed: final
    with w.Session() as s:
        assert s.get(QueueTask, v).attempts == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli(world):
    w = world
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    t = w.task("verify", "a.test")
    cli = CliRunner()

    def aegir(*args):
        r = cli.invoke(main, ["--db", w.url, *args], catch_exceptions=False)
        return r.exit_code, r.output + (r.stderr if hasattr(r, "stderr") else "")

    code, out = aegir("queue", "settings", "--set", "task_timeout=120", "--server",
                      "server_weblocal", "--server-concurrency", "2")
    assert code == 0 and "task_timeout" in out and "120" in out
    code, out = aegir("queue", "settings", "--set", "task_timeout=-3")
    assert code == 2 and "must not be negative" in out
    code, out = aegir("queue", "status")
    assert code == 0 and "server_weblocal" in out
    assert [ln for ln in out.splitlines() if ln.startswith("server_weblocal")][0].split()[1:3] == ["2", "1"]
    code, out = aegir("task", "defer", str(t), "--delay", "3600")
    assert code == 0
    code, out = aegir("queue", "status", "--json")
    assert '"waiting": 1' in out
    code, out = aegir("task", "cancel", str(t))
    assert code == 0 and "cancelled" in out
    assert w.status(t) == m.TASK_WARNING
    code, out = aegir("task", "log", str(t))
    assert "[warning] Task was cancelled." in out
    code, out = aegir("task", "cancel", str(t))
    assert code == 1 and "not queued or running" in out  # refused: 1 (docs/cli.md)


def test_an_idle_runner_starts_a_new_task_before_its_next_poll(world):
    """Between polls a runner looks for newly queued tasks (the newest task revision id),
    so a task queued on an idle runner does not wait for `poll_interval` (here 120 s)."""
    from .conftest import ThreadWorker, wait_for

    w = world
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    configure(w.url, poll_interval=120, heartbeat_interval=120)
    with ThreadWorker(w.url) as worker:
        wait_for(lambda: worker.runner_id, what="the runner to start")
        time.sleep(1.0)  # the runner is now waiting for its next poll, two minutes away
        nid = w.task("enable", "a.test")
        wait_for(lambda: w.status(nid) == m.TASK_SUCCESS, timeout=60,
                 what="the task queued between polls to run")
