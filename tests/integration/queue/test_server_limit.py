"""The per-server limit holds across runners: it is checked in the claim transaction after
the server's queue row is locked, not against what was running when the transaction began."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aegir_ansible.db import models as m
from aegir_ansible.queue.claim import Claim
from aegir_ansible.queue.manager import JobManager

from .conftest import World, configure, spawn_runner, wait_for
from .test_mariadb import mysql_url  # noqa: F401 — the fixture

STAMPS = Path(__file__).parent / "playbooks_stamps"
PER_SERVER = 6


def test_a_claim_committed_meanwhile_counts_against_the_limit(mysql_url):  # noqa: F811
    """Runner B begins its claim (reads what runs: nothing), runner A claims a task on the
    server and commits, then B locks that server and chooses: B must see A's run."""
    w = World(mysql_url)
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    w.site("b.test", "platform_P1")
    t1, t2 = w.task("install", "a.test"), w.task("install", "b.test")
    jm_a, jm_b = JobManager(w.engine), JobManager(w.engine)
    settings = jm_a.settings()
    a, b = jm_a.register_runner(None, 4), jm_b.register_runner(None, 4)
    page = jm_b._read_heads((), None, time.time(), 16)
    jm_b.ensure_server_rows({s for _n, s in page.heads})
    with jm_b._conn() as conn, conn.begin():
        claim = Claim(conn, b, 4, settings, time.time(), page)
        runs_a = jm_a.claim(a, 4, settings)
        assert [t.nid for r in runs_a for t in r.tasks] == [t1]
        claim.choose(jm_b.scan_limit)
        runs_b = claim.mark_claimed()
    assert runs_b == [], "two runs at once on a server whose limit is 1"
    assert w.status(t2) == m.TASK_QUEUED
    w.close()


def _violations(stamps: Path, server_of: dict[int, int]) -> list[tuple]:
    """Pairs of runs on one server whose [start, end] overlap."""
    runs: dict[str, list] = {}
    for line in stamps.read_text().split("\n"):
        if line.strip():
            what, run, stamp, *nids = line.split()
            entry = runs.setdefault(run, [0.0, 0.0, [int(n) for n in nids]])
            entry[0 if what == "start" else 1] = float(stamp)
    by_server = defaultdict(list)
    for start, end, nids in runs.values():
        assert start and end, nids
        by_server[server_of[nids[0]]].append((start, end, nids))
    bad = []
    for intervals in by_server.values():
        intervals.sort()
        for (s1, e1, n1), (s2, _e2, n2) in zip(intervals, intervals[1:]):
            if s2 < e1:
                bad.append((n1, n2))
    return bad


@pytest.mark.e2e
def test_four_runners_never_overlap_on_one_server(mysql_url, tmp_path):  # noqa: F811
    """4 runner processes, 6 servers with server_concurrency 1, 36 tasks: the runs' own
    start and end stamps never overlap on one server."""
    w = World(mysql_url)
    configure(mysql_url, batch_size=1, runner_lost_after=60)
    servers = 6
    for i in range(servers):
        w.server(f"web{i}.local")
        w.platform(f"P{i}", f"server_web{i}local")
    tasks = []
    for j in range(PER_SERVER):
        for i in range(servers):
            w.site(f"s{j}.w{i}.test", f"platform_P{i}")
            tasks.append(w.task("verify", f"s{j}.w{i}.test"))
    server_of = {}
    for i in range(servers):
        web = w.write(lambda fe, i=i: fe.find(f"server_web{i}local").nid)
        for j in range(PER_SERVER):
            server_of[tasks[j * servers + i]] = web
    stamps = tmp_path / "stamps.txt"
    procs = [spawn_runner(mysql_url, "--concurrency", "2", env={"AEGIR_TEST_STAMPS": str(stamps)},
                          playbooks=STAMPS, log_path=tmp_path / f"runner{i}.log")
             for i in range(4)]
    try:
        def done():
            with w.Session() as s:
                return s.execute(select(func.count()).select_from(m.HostingTask)
                                 .join(m.Node, m.Node.vid == m.HostingTask.vid)
                                 .where(m.HostingTask.task_status > 0)).scalar() == len(tasks)
        wait_for(done, 400, "the tasks to finish")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    assert _violations(stamps, server_of) == []
    w.close()
