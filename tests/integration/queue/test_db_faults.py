"""Database faults through a proxy in front of MariaDB (tests/integration/queue/dbproxy.py): commits
whose acknowledgement is lost, an outage while a run is prepared, a hanging database, a
database down at start-up, writes the database refuses for good, `--once` over a slow link."""

from __future__ import annotations

import logging
import re
import time
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, select, text

from aegir_ansible.cli import main
from aegir_ansible.db import models as m
from aegir_ansible.db.queue_tables import QueueTask
from aegir_ansible.queue import metrics

from .conftest import PLAYBOOKS, ThreadWorker, World, configure, run_once, spawn_runner, wait_for
from .dbproxy import DBProxy
from .test_mariadb import mysql_url  # noqa: F401 — the fixture


@pytest.fixture
def proxy():
    p = DBProxy()
    yield p
    p.close()


@pytest.fixture
def two_sites(mysql_url):  # noqa: F811
    w = World(mysql_url)
    w.server("web.local")
    w.server("web2.local")
    w.platform("P1", "server_weblocal")
    w.platform("P2", "server_web2local")
    w.site("a.test", "platform_P1")
    w.site("b.test", "platform_P2")
    yield w
    w.close()


def starts(w, nid) -> int:
    return sum(1 for t, msg in w.log(nid) if msg.startswith("Running playbook"))


def test_lost_claim_acknowledgement_puts_the_tasks_back(two_sites, proxy):
    """The claim commits, its acknowledgement never arrives: the runner reconciles what it
    holds once it is connected again, and the tasks run (once each)."""
    w = two_sites
    t1, t2 = w.task("install", "a.test"), w.task("install", "b.test")
    lost = proxy.lose_commit_ack(r"UPDATE hosting_task SET task_status=-1")
    with ThreadWorker(proxy.url(w.url)):
        wait_for(lost.is_set, 30, "the claim's lost acknowledgement")
        wait_for(lambda: starts(w, t1) and starts(w, t2), 60, "both tasks to start")
        recovered = time.time() - lost.at()
        w.wait_status(t1, (m.TASK_SUCCESS,), 60)
        w.wait_status(t2, (m.TASK_SUCCESS,), 60)
    print(f"\nFIGURE lost claim ack: tasks 2, lost 0, duplicated {starts(w, t1) + starts(w, t2) - 2}, "
          f"recovered (ack lost -> both started) {recovered:.1f}s")
    assert starts(w, t1) == starts(w, t2) == 1
    with w.Session() as s:
        assert [q.attempts for q in s.scalars(select(QueueTask).order_by(QueueTask.nid))] == [1, 1]


def test_lost_log_acknowledgement_writes_no_line_twice(two_sites, proxy):
    """A batch of log rows commits, its acknowledgement is lost, the writer tries again:
    the task's log has the same lines as the same run without the fault."""
    w = two_sites
    t = w.task("install", "a.test")
    lost = proxy.lose_commit_ack(r"INSERT INTO hosting_task_log.*Running playbook")
    with ThreadWorker(proxy.url(w.url)):
        w.wait_status(t, (m.TASK_SUCCESS,), 60)
        assert lost.is_set()
        clean = w.task("install", "b.test")
        w.wait_status(clean, (m.TASK_SUCCESS,), 60)
    assert starts(w, t) == 1
    print(f"\nFIGURE lost log ack: tasks 1, log rows {len(w.log(t))}, lost 0, duplicated "
          f"{len(w.log(t)) - len(w.log(clean))}")
    faulty = [(typ, msg.replace("a.test", "X")) for typ, msg in w.log(t)]
    expected = [(typ, msg.replace("b.test", "X")) for typ, msg in w.log(clean)]
    assert [re.sub(r"\d+ seconds", "N seconds", msg) for _t, msg in faulty] == \
        [re.sub(r"\d+ seconds", "N seconds", msg) for _t, msg in expected]


def test_database_lost_while_the_run_is_prepared(two_sites, proxy):
    """A 3 s outage starting at the run's inventory query: the task goes back to the queue
    and runs when the database is back, instead of failing without running."""
    w = two_sites
    t = w.task("install", "a.test")
    proxy.cut_at(r"FROM hosting_service", 3)
    with ThreadWorker(proxy.url(w.url)):
        wait_for(lambda: starts(w, t), 90, "the task to start")
        recovered = time.time() - proxy.outages[0][1]
        w.wait_status(t, (m.TASK_SUCCESS, m.TASK_ERROR), 90)
    print(f"\nFIGURE outage at prepare (3 s): tasks 1, lost 0, duplicated {starts(w, t) - 1}, "
          f"recovered (database back -> run started) {recovered:.1f}s")
    log = w.log_text(t)
    assert w.status(t) == m.TASK_SUCCESS, log
    assert "Could not prepare" not in log
    assert "Task put back in the queue: the database was lost" in log
    assert starts(w, t) == 1


def test_a_hanging_database_is_reported(two_sites, proxy, caplog):
    """The database stops answering (connections stay open): the runner's default client
    read timeout turns it into an error it logs, and it goes on when the database is back."""
    w = two_sites
    caplog.set_level(logging.WARNING, logger="aegir.queue")
    with ThreadWorker(proxy.url(w.url)):
        time.sleep(1)
        proxy.hanging = True
        hung = time.time()
        try:
            wait_for(lambda: any("database unreachable" in r.getMessage() for r in caplog.records),
                     120, "a warning about the hanging database")
            reported = time.time() - hung
        finally:
            proxy.hanging = False
        back = time.time()
        t = w.task("install", "a.test")
        wait_for(lambda: starts(w, t), 60, "the task to start")
        recovered = time.time() - back
        w.wait_status(t, (m.TASK_SUCCESS,), 60)
    print(f"\nFIGURE database hang: reported after {reported:.1f}s; a task queued once it answers "
          f"again started after {recovered:.1f}s; tasks 1, lost 0, duplicated {starts(w, t) - 1}")


def test_a_dropped_connection_logs_one_warning_not_a_traceback(mysql_url, proxy, caplog):  # noqa: F811
    """A connection the database dropped is returned to the pool: SQLAlchemy's "Exception
    during reset" traceback at error level becomes one warning line."""
    from aegir_ansible.db import make_engine

    eng = make_engine(proxy.url(mysql_url))
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.pool")
    try:
        conn = eng.connect()
        conn.execute(text("SELECT 1"))
        conn.commit()
        proxy.drop_all()
        time.sleep(0.3)
        conn.close()  # the pool resets (rolls back) the dead connection
    finally:
        eng.dispose()
    pool = [r for r in caplog.records if r.name.startswith("sqlalchemy.pool")]
    assert [r.getMessage() for r in pool if r.levelno >= logging.ERROR or r.exc_info] == []
    assert any("database connection dropped" in r.getMessage() and r.levelno == logging.WARNING
               for r in pool)


def test_runner_started_while_the_database_is_down_waits_for_it(two_sites, proxy, tmp_path):
    w = two_sites
    t = w.task("install", "a.test")
    proxy.refusing = True
    log_path = tmp_path / "runner.log"
    proc = spawn_runner(proxy.url(w.url), "--once", log_path=log_path)
    try:
        wait_for(lambda: "trying again" in log_path.read_text(), 30, "a retry at start-up")
        assert proc.poll() is None, log_path.read_text()
        proxy.refusing = False
        back = time.time()
        wait_for(lambda: starts(w, t), 90, "the task to start")
        recovered = time.time() - back
        assert proc.wait(90) == 0, log_path.read_text()
        print(f"\nFIGURE database down at start-up: tasks 1, lost 0, duplicated {starts(w, t) - 1}, "
              f"recovered (database back -> run started) {recovered:.1f}s")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert w.status(t) == m.TASK_SUCCESS


@pytest.fixture
def no_site_update(mysql_url):  # noqa: F811
    """A database user with every right on the test database except UPDATE of hosting_site
    (as a backend user missing a grant): its URL."""
    eng = create_engine(mysql_url)
    db = eng.url.database
    user, password = f"aegir_t{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with eng.begin() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        for table in inspect(conn).get_table_names():
            rights = "SELECT, INSERT, DELETE" if table == "hosting_site" else "SELECT, INSERT, UPDATE, DELETE"
            conn.execute(text(f"GRANT {rights} ON `{db}`.`{table}` TO '{user}'@'%'"))
    url = eng.url.set(username=user, password=password).render_as_string(hide_password=False)
    yield url
    with eng.begin() as conn:
        conn.execute(text(f"DROP USER '{user}'@'%'"))
    eng.dispose()


def test_outcome_the_database_refuses_fails_the_task(two_sites, no_site_update, caplog):
    """The install ran but the site's status cannot be written (no UPDATE grant): the task
    fails with the database's message instead of staying "processing" for ever."""
    w = two_sites
    t = w.task("install", "a.test")
    refused = metrics.counter_value("outcome_refused")
    caplog.set_level(logging.ERROR, logger="aegir.queue")
    with ThreadWorker(no_site_update):
        w.wait_status(t, (m.TASK_ERROR,), 60)
    log = w.log_text(t)
    assert "could not be recorded" in log and "UPDATE command denied" in log, log
    assert starts(w, t) == 1
    assert metrics.counter_value("outcome_refused") == refused + 1
    assert any("refuses this write" in r.getMessage() for r in caplog.records)
    with w.Session() as s:
        assert s.get(QueueTask, t).runner_id is None


def test_once_drains_the_queue_when_a_run_ends_during_a_claim(mysql_url, proxy):  # noqa: F811
    """`--once` runs until no task is ready: a run that ends while a claim is under way
    (the claim's lock of the server rows answers slowly here) does not make it exit with
    tasks still queued."""
    w = World(mysql_url)
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    tasks = []
    for i in range(6):
        w.site(f"s{i}.test", "platform_P1")
        tasks.append(w.task("verify", f"s{i}.test"))
    configure(mysql_url, batch_size=1)
    proxy.slow(r"FROM aegir_ansible_queue_server .*FOR UPDATE SKIP LOCKED", 1.5)
    run_once(proxy.url(mysql_url))
    assert [w.status(t) for t in tasks] == [m.TASK_SUCCESS] * len(tasks)
    w.close()


def test_once_exit_status(two_sites):
    w = two_sites
    ok = w.task("verify", "a.test")
    r = CliRunner().invoke(main, ["--db", w.url, "queue", "run", "--once", "--playbooks", str(PLAYBOOKS)])
    assert r.exit_code == 0, r.output
    assert w.status(ok) == m.TASK_SUCCESS
    configure(w.url, retry_max_attempts=1)
    bad = w.task("install", "b.test", fail="yes")
    r = CliRunner().invoke(main, ["--db", w.url, "queue", "run", "--once", "--playbooks", str(PLAYBOOKS)])
    assert w.status(bad) == m.TASK_ERROR
    assert r.exit_code == 1, r.output
