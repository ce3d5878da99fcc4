"""Claiming: per-server queues and the rules on what may run together (no playbooks)."""

from __future__ import annotations

import time

import pytest

from aegir_ansible.db import models as m
from aegir_ansible.queue import admin
from aegir_ansible.queue.database import check_database, skip_locked_problem
from aegir_ansible.queue.manager import JobManager

from .conftest import configure


def claim(world, slots=10, servers=None, runner="r1"):
    jm = JobManager(world.engine)
    return jm.claim(runner, slots, jm.settings(), servers)


def nids(runs):
    return sorted(t.nid for r in runs for t in r.tasks)


def servers_with_sites(world, p1_sites, p2_sites):
    """Two servers web.local and web2.local, a platform on each (P1, P2), these sites."""
    world.server("web.local")
    world.server("web2.local")
    world.platform("P1", "server_weblocal")
    world.platform("P2", "server_web2local")
    for platform, uris in (("platform_P1", p1_sites), ("platform_P2", p2_sites)):
        for uri in uris:
            world.site(uri, platform)
    return world


@pytest.fixture
def two_servers(world):
    return servers_with_sites(world, ["a.test", "b.test"], ["c.test", "d.test"])


def test_each_server_has_its_own_queue(two_servers):
    w = two_servers
    t = [w.task("install", u) for u in ("a.test", "b.test", "c.test", "d.test")]
    runs = claim(w)
    # server_concurrency defaults to 1: one run per server, the oldest task of each.
    assert nids(runs) == [t[0], t[2]]
    assert {r.server for r in runs} == {w.row(m.HostingPlatform, w.write(lambda fe: fe.find("platform_P1").nid)).web_server,
                                        w.row(m.HostingPlatform, w.write(lambda fe: fe.find("platform_P2").nid)).web_server}
    for nid in (t[0], t[2]):
        row = w.task_row(nid)
        assert row.task_status == m.TASK_PROCESSING and row.executed > 0
    assert claim(w, runner="r2") == []  # both servers busy
    web2 = w.write(lambda fe: fe.find("server_web2local").nid)
    admin.set_server(w.engine, "server_web2local", concurrency=2)
    runs = claim(w, runner="r2", servers=[web2])
    assert nids(runs) == [t[3]]


def test_never_two_tasks_on_one_site(two_servers):
    w = two_servers
    configure(w.url, server_concurrency=5)
    first = w.task("verify", "a.test")
    second = w.task("disable", "a.test")
    other = w.task("verify", "b.test")
    assert nids(claim(w, slots=5)) == [first, other]
    assert claim(w, slots=5, runner="r2") == []
    assert w.status(second) == m.TASK_QUEUED


def test_platform_wide_tasks_exclude_site_tasks(two_servers):
    w = two_servers
    configure(w.url, server_concurrency=5)
    lock = w.task("lock", "platform_P1")
    site_task = w.task("verify", "a.test")
    assert nids(claim(w)) == [lock]  # the site task waits for the platform-wide task
    assert claim(w) == []
    # ... and a running site task holds back a platform-wide task of its platform
    w2 = w.task("verify", "c.test")
    assert nids(claim(w)) == [w2]
    delete = w.task("delete", "platform_P2")
    assert claim(w) == []
    assert w.status(site_task) == w.status(delete) == m.TASK_QUEUED


def test_order_and_fifo_per_target(two_servers):
    w = two_servers
    configure(w.url, server_concurrency=10, batch_size=1)
    v = w.task("verify", "a.test")        # priority 40
    i = w.task("install", "b.test")       # priority 20
    e = w.task("enable", "a.test")        # waits behind v (same target, FIFO)
    p = w.task("verify", "platform_P1")   # platform before sites
    runs = claim(w, slots=10)
    order = [r.tasks[0].nid for r in runs]
    assert order == [p, i, v]
    assert w.status(e) == m.TASK_QUEUED


def test_not_before_pause_and_disable(two_servers):
    w = two_servers
    t = w.task("verify", "a.test")
    admin.defer(w.engine, t, time.time() + 3600)
    assert claim(w) == []
    admin.defer(w.engine, t, time.time() - 1)
    admin.set_server(w.engine, "server_weblocal", paused=True)
    assert claim(w) == []
    admin.set_server(w.engine, "server_weblocal", paused=False)
    admin.set_setting(w.engine, "enabled", "0")
    assert claim(w) == []
    admin.set_setting(w.engine, "enabled", "1")
    assert nids(claim(w)) == [t]


def test_verify_tasks_are_coalesced(two_servers):
    w = two_servers
    configure(w.url, batch_size=1)
    a, b, c = w.task("verify", "a.test"), w.task("verify", "b.test"), w.task("verify", "c.test")
    assert sorted(nids([r]) for r in claim(w)) == [[a], [c]]  # no batching, one run per server
    w2 = type(w)(w.url)
    configure(w.url, batch_size=2)
    d, e = w.task("verify", "d.test"), w.task("install", "b.test")
    runs = claim(w2, runner="r2")
    assert runs == []  # both servers are busy with one run each
    # a fresh database state: release the runs as if they ended
    from aegir_ansible.db.queue_tables import QueueTask
    with w.Session() as s, s.begin():
        for nid in (a, c):
            s.get(m.HostingTask, s.get(m.Node, nid).vid).task_status = m.TASK_SUCCESS
            s.get(QueueTask, nid).runner_id = None
    runs = claim(w2, runner="r2")
    # b's verify was queued before the install on b (FIFO per target); d on server 2
    assert sorted(nids([r]) for r in runs) == [[b], [d]]
    assert w.status(e) == m.TASK_QUEUED
    w2.close()


def test_batches_take_several_sites(two_servers):
    w = two_servers
    a, b = w.task("verify", "a.test"), w.task("verify", "b.test")
    c, d = w.task("verify", "c.test"), w.task("verify", "d.test")
    runs = claim(w)
    assert sorted(nids([r]) for r in runs) == [[a, b], [c, d]]
    assert all(len({t.run_id for t in r.tasks}) == 1 for r in runs)


def test_malformed_rows_are_claimed_to_be_failed(two_servers):
    w = two_servers
    ok = w.task("verify", "a.test")
    unknown = w.task("verify", "b.test")
    missing = w.task("verify", "c.test")
    deleted = w.task("verify", "d.test")
    d = w.write(lambda fe: fe.find("d.test"))  # before: a write inside the session waits on it
    with w.Session() as s, s.begin():
        s.get(m.HostingTask, s.get(m.Node, unknown).vid).task_type = "frobnicate"
        s.get(m.HostingTask, s.get(m.Node, missing).vid).rid = 999999
        s.get(m.HostingSite, d.vid).status = m.SITE_DELETED
    runs = claim(w)
    problems = {r.tasks[0].nid: r.problem for r in runs if r.problem}
    assert "Unknown task type 'frobnicate'" in problems[unknown]
    assert "does not exist" in problems[missing]
    assert "is deleted" in problems[deleted]
    assert ok in nids([r for r in runs if not r.problem])


def test_skip_locked_version_check(engine):
    assert skip_locked_problem("10.11.6-MariaDB-0+deb12u1") is None
    assert skip_locked_problem("8.0.36") is None
    assert "10.6" in skip_locked_problem("10.5.23-MariaDB")
    assert "5.5.5-10.4" and "10.6" in skip_locked_problem("5.5.5-10.4.1-MariaDB-log")
    assert "MySQL 8" in skip_locked_problem("5.7.44-log")
    assert check_database(engine)  # this database can run the queue


@pytest.fixture
def crowded(world):
    """60 sites on one server (busy), one site on another: a queue longer than a page."""
    return servers_with_sites(world, [f"s{i}.test" for i in range(60)], ["lone.test"])


def test_claim_reads_a_page_not_the_queue(crowded):
    """A claim sees past the oldest tasks (another server's task queued last, a
    higher-priority task queued last) while reading fewer rows than the queue holds."""
    from sqlalchemy import event

    w = crowded
    configure(w.url, server_concurrency=1, batch_size=1)
    queued = [w.task("enable", f"s{i}.test") for i in range(58)]
    urgent = w.task("login-reset", "s57.test")   # behind s57's enable: FIFO per target
    urgent2 = w.task("login-reset", "s58.test")
    lone = w.task("enable", "lone.test")
    jm = JobManager(w.engine)
    # The queue's index learns of each new task once (a sync reads the new revisions); the
    # claims then read pages of the index, not the queue.
    assert jm.sync_queued() == "full"
    rows_read = []

    @event.listens_for(w.engine, "after_cursor_execute")
    def count(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and cursor.description:
            rows_read.append(max(cursor.rowcount, 0))

    try:
        runs = jm.claim("r1", 2, jm.settings())
    finally:
        event.remove(w.engine, "after_cursor_execute", count)
    # One run per server: the login-reset (priority 10) of s58 first on the busy server,
    # and the other server's task although 60 tasks were queued before it.
    assert sorted(t.nid for r in runs for t in r.tasks) == sorted([urgent2, lone])
    assert sum(rows_read) < len(queued), rows_read
    assert w.status(urgent) == m.TASK_QUEUED


def test_a_kept_page_never_gives_a_task_twice(crowded):
    w = crowded
    configure(w.url, server_concurrency=50, batch_size=1)
    queued = [w.task("enable", f"s{i}.test") for i in range(40)]
    a, b = JobManager(w.engine), JobManager(w.engine)
    first = nids(a.claim("ra", 4, a.settings()))      # reads and keeps a page
    second = nids(b.claim("rb", 10, b.settings()))
    third = nids(a.claim("ra", 10, a.settings()))     # from its kept page, checked again
    assert first == queued[:4] and second == queued[4:14]
    assert third == queued[14:24]
    assert a._heads is not None and a._heads.read_at < time.time()
    everything = first + second + third
    assert len(set(everything)) == len(everything)


def test_settings_are_read_at_most_once_per_max_age(two_servers):
    """A runner's loop reads the settings at most once a second; a direct read is fresh."""
    w = two_servers
    jm = JobManager(w.engine)
    assert jm.settings(max_age=60).enabled
    admin.set_setting(w.engine, "enabled", "0")
    assert jm.settings(max_age=60).enabled  # kept: younger than max_age
    assert not jm.settings().enabled        # max_age 0: read again
    admin.set_setting(w.engine, "enabled", "1")
    assert jm.settings(max_age=60).enabled is False
    assert jm.settings(max_age=0.0).enabled
