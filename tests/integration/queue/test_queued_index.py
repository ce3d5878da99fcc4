"""The queue's index of queued tasks (aegir_ansible_queued): kept in step with hosting_task by
the runners' syncs (new revisions by vid range, a full comparison now and then) and by the
claims (rows of tasks no longer queued dropped, moved tasks fixed). No playbooks."""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update

from aegir_ansible.db import models as m
from aegir_ansible.db.queue_tables import QueuedTask, QueueSync, QueueTask
from aegir_ansible.queue import admin, manager, revisions
from aegir_ansible.queue.manager import JobManager

from .conftest import configure
from .test_claim import nids, servers_with_sites


def indexed(w) -> dict[int, tuple]:
    with w.engine.connect() as c:
        return {nid: (vid, server) for nid, vid, server in
                c.execute(select(QueuedTask.nid, QueuedTask.vid, QueuedTask.server))}


def fresh_claim(w, runner="r1", slots=10, servers=None):
    """A claim by a new JobManager (it syncs before its first page)."""
    jm = JobManager(w.engine)
    return jm, jm.claim(runner, slots, jm.settings(), servers)


def test_the_index_follows_the_queue(world):
    w = servers_with_sites(world, ["a.test", "b.test"], ["c.test"])
    configure(w.url, server_concurrency=5)
    t = [w.task("verify", u) for u in ("a.test", "b.test", "c.test")]
    second = w.task("disable", "a.test")  # behind a.test's verify
    jm = JobManager(w.engine)
    assert jm.sync_queued() == "full"  # a new database: the first sync compares everything
    assert set(indexed(w)) == {*t, second}
    runs = jm.claim("r1", 10, jm.settings())
    assert nids(runs) == sorted(t)
    assert set(indexed(w)) == {second}  # claimed tasks leave the index in their claim
    # A task queued now is read by the next sync, from the revisions above the mark.
    later = w.task("verify", "c.test")
    assert JobManager(w.engine).sync_queued() == "incremental"
    assert set(indexed(w)) == {second, later}


def test_a_retry_is_a_new_revision_the_sync_finds(world):
    w = servers_with_sites(world, ["a.test"], [])
    task = w.task("verify", "a.test")
    jm, runs = fresh_claim(w)
    assert nids(runs) == [task]
    assert indexed(w) == {}

    def fail_and_retry(conn):
        t = runs[0].tasks[0]
        assert jm.finish(conn, "r1", t, m.TASK_ERROR, 1)
        return revisions.requeue(conn, t.nid, 0, "Task queued again (test).")

    new_vid = jm.tx(fail_and_retry)
    assert new_vid > runs[0].tasks[0].vid
    jm2, again = fresh_claim(w, runner="r2")
    assert nids(again) == [task] and again[0].tasks[0].vid == new_vid


def test_a_task_put_back_returns_to_the_index(world):
    w = servers_with_sites(world, ["a.test"], [])
    task = w.task("verify", "a.test")
    jm, runs = fresh_claim(w)
    assert indexed(w) == {}
    jm.put_back("r1", runs[0], "the database was lost")
    assert set(indexed(w)) == {task}  # in place (same revision): written by put_back itself
    assert nids(jm.claim("r1", 10, jm.settings())) == [task]


def test_a_lost_claim_acknowledgement_returns_to_the_index(world):
    w = servers_with_sites(world, ["a.test"], [])
    task = w.task("verify", "a.test")
    jm, runs = fresh_claim(w)
    assert jm.reconcile("r1", set()) == [task]  # the runner never started that run
    assert set(indexed(w)) == {task}
    assert nids(jm.claim("r1", 10, jm.settings())) == [task]


def test_a_status_set_back_in_place_is_found_by_the_full_sync(world, monkeypatch):
    """Hostmaster saving a task without a new revision (status 0 in place) is not a new vid:
    below the mark less SYNC_LAG, only the full comparison (every RESYNC_EVERY seconds)
    finds it."""
    monkeypatch.setattr(manager, "SYNC_LAG", 0)
    w = servers_with_sites(world, ["a.test"], [])
    task = w.task("verify", "a.test")
    jm, runs = fresh_claim(w)
    vid = runs[0].tasks[0].vid
    with w.engine.begin() as c:  # done, then queued again in place
        c.execute(update(m.HostingTask).where(m.HostingTask.vid == vid).values(task_status=m.TASK_QUEUED))
        c.execute(update(QueueTask).where(QueueTask.nid == task).values(runner_id=None, run_id=None, vid=None))
    assert fresh_claim(w)[1] == []  # not a new revision: the incremental sync does not see it
    monkeypatch.setattr(manager, "RESYNC_EVERY", 0.0)
    jm2, runs = fresh_claim(w, runner="r2")
    assert nids(runs) == [task]


def test_a_revision_the_index_missed_below_the_mark_is_read_again(world):
    """A revision committed after a newer one was synced (vids out of commit order) is below
    the mark: the sync reads SYNC_LAG revisions below it again."""
    w = servers_with_sites(world, ["a.test", "b.test"], [])
    first = w.task("verify", "a.test")
    jm = JobManager(w.engine)
    jm.sync_queued()
    with w.engine.begin() as c:  # as if `first` had committed after the sync
        c.execute(delete(QueuedTask).where(QueuedTask.nid == first))
    w.task("verify", "b.test")  # a new revision: the next sync reads from the mark less the lag
    assert JobManager(w.engine).sync_queued() == "incremental"
    assert first in indexed(w)


def test_rows_of_tasks_no_longer_queued_are_dropped_by_the_claim(world):
    w = servers_with_sites(world, ["a.test", "b.test"], [])
    configure(w.url, server_concurrency=5)
    cancelled = w.task("verify", "a.test")
    other = w.task("verify", "b.test")
    JobManager(w.engine).sync_queued()
    assert admin.cancel(w.engine, cancelled) == "cancelled"  # status WARNING, the row stays
    assert cancelled in indexed(w)
    jm, runs = fresh_claim(w)
    assert nids(runs) == [other]
    assert indexed(w) == {}


def test_a_task_whose_site_moved_is_claimed_on_its_new_server(world):
    w = servers_with_sites(world, ["a.test"], [])
    configure(w.url, server_concurrency=5)
    task = w.task("verify", "a.test")
    web = w.write(lambda fe: fe.find("server_weblocal").nid)
    web2 = w.write(lambda fe: fe.find("server_web2local").nid)
    p2 = w.write(lambda fe: fe.find("platform_P2").nid)
    site = w.write(lambda fe: fe.find("a.test").nid)
    JobManager(w.engine).sync_queued()
    assert indexed(w)[task][1] == web
    with w.engine.begin() as c:  # migrated to P2 (on web2) after the index saw it
        vid = c.execute(select(m.Node.vid).where(m.Node.nid == site)).scalar()
        c.execute(update(m.HostingSite).where(m.HostingSite.vid == vid).values(platform=p2))
    jm = JobManager(w.engine)
    assert jm.claim("r1", 10, jm.settings()) == []  # read under web: fixed, not claimed there
    assert indexed(w)[task][1] == web2
    jm._heads = None
    runs = jm.claim("r1", 10, jm.settings())
    assert nids(runs) == [task] and runs[0].server == web2


def test_the_sync_state_is_one_row(world):
    w = servers_with_sites(world, ["a.test"], [])
    w.task("verify", "a.test")
    JobManager(w.engine).sync_queued()
    JobManager(w.engine).sync_queued(time.time() + 1)
    with w.engine.connect() as c:
        rows = c.execute(select(QueueSync.id, QueueSync.mark)).all()
        top = c.execute(select(m.HostingTask.vid).order_by(m.HostingTask.vid.desc())).first()[0]
    assert rows == [(1, top)]
