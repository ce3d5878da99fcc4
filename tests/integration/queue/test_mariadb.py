"""MariaDB-only faults: several runner processes on one database, and a database restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from aegir_ansible.db import init_schema, make_engine
from aegir_ansible.db import models as m

from .conftest import ROOT, ThreadWorker, World, configure, procs_with, spawn_runner, wait_for


@pytest.fixture
def mysql_url(mysql_server_url, tmp_path):
    from tests.conftest import new_database_url

    url, drop = new_database_url("mysql", tmp_path, mysql_server_url)
    eng = make_engine(url)
    init_schema(eng)
    eng.dispose()
    configure(url)
    yield url
    drop()


def _sites(w, servers: int, per_server: int) -> list[int]:
    tasks = []
    for i in range(servers):
        w.server(f"web{i}.local")
        w.platform(f"P{i}", f"server_web{i}local")
    for j in range(per_server):
        for i in range(servers):
            w.site(f"s{j}.w{i}.test", f"platform_P{i}")
    for j in range(per_server):
        for i in range(servers):
            tasks.append(w.task("verify", f"s{j}.w{i}.test"))
    return tasks


def test_claims_by_four_processes_never_overlap(mysql_url, tmp_path):
    """The claim transaction alone (no playbooks): 4 processes, 400 tasks, each claimed once."""
    w = World(mysql_url)
    configure(mysql_url, server_concurrency=1000, batch_size=1)
    tasks = _sites(w, 4, 100)
    outs = [tmp_path / f"claimer{i}.txt" for i in range(4)]
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.queue.claim_stress", mysql_url, str(o)],
                              cwd=ROOT) for o in outs]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    took = time.time() - t0
    claimed = Counter()
    for o in outs:
        for line in o.read_text().splitlines():
            if not line.startswith("#"):
                claimed[int(line)] += 1
            else:
                print(o.name, line)
    assert sorted(claimed) == sorted(tasks)
    assert set(claimed.values()) == {1}
    print(f"400 tasks claimed and completed by 4 processes in {took:.1f}s "
          f"({400 / took:.0f} tasks/s, including process start-up)")
    with w.Session() as s:
        assert s.execute(select(func.count()).select_from(m.HostingTask)
                         .where(m.HostingTask.task_status == m.TASK_SUCCESS)).scalar() == 400
    w.close()


@pytest.mark.e2e
def test_four_runners_run_400_tasks_exactly_once(mysql_url, tmp_path):
    w = World(mysql_url)
    # Exactly once holds while no runner is declared lost; the tests' 3 s `runner_lost_after`
    # is for the fault tests, and a loaded CI machine can delay a heartbeat that long (seen:
    # a runner reaped, its verify batch re-queued and run again). Claims are the subject here.
    configure(mysql_url, batch_size=20, runner_lost_after=60)
    tasks = _sites(w, 4, 100)
    record = tmp_path / "record.txt"
    t0 = time.time()
    procs = [spawn_runner(mysql_url, "--concurrency", "2", env={"AEGIR_TEST_RECORD": str(record)},
                          playbooks=Path(__file__).parent / "playbooks_light",
                          log_path=tmp_path / f"runner{i}.log") for i in range(4)]
    try:
        def done():
            with w.Session() as s:
                return s.execute(select(func.count()).select_from(m.HostingTask)
                                 .join(m.Node, m.Node.vid == m.HostingTask.vid)
                                 .where(m.HostingTask.task_status > 0)).scalar() == 400
        wait_for(done, 170, "400 tasks to finish")
        took = time.time() - t0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    runs = Counter(int(x) for x in record.read_text().split())
    assert sorted(runs) == sorted(tasks)
    assert set(runs.values()) == {1}, [n for n, c in runs.items() if c > 1]
    with w.Session() as s:
        statuses = Counter(s.execute(select(m.HostingTask.task_status)
                                     .join(m.Node, m.Node.vid == m.HostingTask.vid)).scalars())
        starts = s.execute(select(func.count()).select_from(m.HostingTask)
                           .join(m.HostingTaskLog, m.HostingTaskLog.vid == m.HostingTask.vid)
                           .where(m.HostingTaskLog.message.like("Running playbook%"))).scalar()
    assert statuses == {m.TASK_SUCCESS: 400}
    assert starts == 400
    logs = "".join((tmp_path / f"runner{i}.log").read_text() for i in range(4))
    print(f"4 runners: 400 tasks in {took:.1f}s; runs per runner:",
          [(tmp_path / f"runner{i}.log").read_text().count(": finished") for i in range(4)])
    assert "Traceback" not in logs
    w.close()


class ThrowawayMariaDB:
    """A second mariadbd on its own port and data directory (never the shared server)."""

    def __init__(self, base: Path, port: int):
        self.base, self.port = base, port
        self.datadir = base / "data"
        self.sock = base / "mysqld.sock"
        self.proc = None

    def install(self):
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db",
                        "--skip-name-resolve"], check=True, capture_output=True, timeout=120)

    def start(self):
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.sock}", "--user=root",
             f"--pid-file={self.base / 'mysqld.pid'}", "--skip-name-resolve",
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
             f"--log-error={self.base / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import pymysql

        def up():
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root").close()
                return True
            except pymysql.err.OperationalError:
                return False

        wait_for(up, 60, "throwaway mariadbd")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.mark.e2e
def test_database_restart_while_tasks_run(mysql_server_url, tmp_path):
    if not shutil.which("mariadbd") or not shutil.which("mariadb-install-db"):
        pytest.skip("mariadbd not installed")
    db = ThrowawayMariaDB(tmp_path, 33000 + os.getpid() % 2000)
    db.install()
    db.start()
    try:
        admin_url = f"mysql+pymysql://root@127.0.0.1:{db.port}"
        eng = make_engine(admin_url)
        with eng.begin() as conn:
            conn.execute(text("CREATE DATABASE aegir CHARACTER SET utf8mb4"))
        eng.dispose()
        url = f"{admin_url}/aegir"
        eng = make_engine(url)
        init_schema(eng)
        eng.dispose()
        configure(url)
        w = World(url)
        w.server("web.local")
        w.server("web2.local")
        w.platform("P1", "server_weblocal")
        w.platform("P2", "server_web2local")
        w.site("a.test", "platform_P1")
        w.site("b.test", "platform_P2")
        t1 = w.task("install", "a.test", sleep="4.5")
        t2 = w.task("verify", "b.test", sleep="4.6")
        with ThreadWorker(url):
            wait_for(lambda: procs_with("sleep 4.5") and procs_with("sleep 4.6"), 60, "both running")
            db.stop()
            time.sleep(2)
            db.start()  # the playbooks ended while the database was down
            w.engine.dispose()
            w.wait_status(t1, (m.TASK_SUCCESS, m.TASK_ERROR), 60)
            w.wait_status(t2, (m.TASK_SUCCESS, m.TASK_ERROR), 60)
        for t in (t1, t2):
            assert w.status(t) == m.TASK_SUCCESS, w.log_text(t)
            log = w.log_text(t)
            assert "Sleep when asked" in log and "Task completed successfully" in log
        assert w.row(m.HostingSite, w.write(lambda fe: fe.find("a.test").nid)).status == m.SITE_ENABLED
        w.close()
    finally:
        db.stop()
