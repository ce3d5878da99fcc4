"""Claiming: the protocol, and the state of one claim transaction.

Claim protocol (docs/queue.md, "Claiming"):

0. outside any transaction, without locks: the queue's index of queued tasks brought in
   step (manager.sync_index: the task revisions added since the last sync), then a page of
   candidates (heads_query, from that index): the queued tasks that may start as far as
   the queue says (oldest of their target, not deferred, not behind a queued
   platform-wide task), the first few per server, in claim order (servers' tasks,
   platforms', sites'; then the type's priority; then the oldest). Only nid and server
   come back. The page is kept for the next claims (HeadsPage) and every claim checks its
   tasks again;

then one short transaction (READ COMMITTED on MariaDB/MySQL, BEGIN IMMEDIATE on SQLite):

1. read the running tasks (the queue rows held by runners);
2. lock the queue rows of the page's servers `FOR UPDATE SKIP LOCKED`, a few at a time (as
   many as the free slots need): a server another runner is claiming on right now is
   skipped, so claims on one server are serialised and claims on different servers run
   in parallel. Once locked, a server's running tasks are read again (step 1 may predate
   a claim another runner committed on it since); a server in back-off (unreachable
   lately) takes no run;
3. read the candidates of the locked servers (by nid, still queued; the index rows of
   those no longer queued are dropped, of those moved fixed) and choose what may start:
   per-server concurrency, one task per site/target at a time, no site task while a
   platform-wide task of its platform runs (and the reverse); a batch still open reads on;
4. lock the chosen task rows `FOR UPDATE SKIP LOCKED`, mark them processing
   (executed=now) by primary key where still queued, drop their index rows, record the
   claim, commit.

Deadlocks, lock-wait timeouts and "record has changed" (1213, 1205, 1020) retry the whole
transaction (database.with_retries).

JobManager.claim (manager.py) reads the page and runs the transaction; Claim is its state.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import delete, insert, select, update

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.db.queue_tables import QueuedTask, QueueServer, QueueSetting, QueueTask, ServerHealth
from aegir_ansible.tasks import TASK_TYPES

from .settings import Settings
from .sql import heads_query, indexed_rows, running_query, target_query, task_rows
from .types import Run, TaskRow

# Task types several tasks of which (on one server) may run as one playbook run.
BATCHABLE_TYPES = frozenset({"verify"} | {t.name for t in TASK_TYPES.values() if t.batchable})


@dataclass
class HeadsPage:
    """The first tasks of each server (heads_query), kept between claims: a runner reads
    the page once and claims from it until it is a poll interval old or a server's share is
    used up. Every claim checks its tasks again."""

    key: tuple
    read_at: float
    per_server: int
    heads: list[tuple[int, int | None]]
    wide: dict[int, int]
    # nid -> (vid, server, site, platform) of the index rows read (checked by the claims).
    indexed: dict[int, tuple] = field(default_factory=dict)
    full: set[int] = field(default_factory=set)  # servers that may have more than their share

    def __post_init__(self):
        count: dict = defaultdict(int)
        for _nid, server in self.heads:
            count[server] += 1
        self.full = {s for s, n in count.items() if n >= self.per_server}

    def drop(self, nids: set[int]) -> None:
        self.heads = [h for h in self.heads if h[0] not in nids]

    def stale(self, key: tuple, now: float, max_age: float) -> bool:
        if not self.heads or key != self.key or now - self.read_at >= max_age:
            return True
        return bool(self.full - {server for _nid, server in self.heads})


class Claim:
    """The state of one claim transaction: what runs now (per server, target, site and
    platform), the servers locked so far and their free slots, the runs being filled."""

    def __init__(self, conn, runner_id: str, slots: int, settings: Settings, now: float,
                 page: HeadsPage):
        self.conn = conn
        self.runner_id = runner_id
        self.settings = settings
        self.now = now
        self.page = page
        self.slots = slots  # runs this claim may still start
        if settings.concurrency > 0:
            # An exact global limit: claims take turns on the setting's row.
            conn.execute(select(QueueSetting.name).where(QueueSetting.name == "concurrency")
                         .with_for_update())
        self.runs: list[Run] = []
        self.bad: list[tuple[TaskRow, str]] = []
        self.chosen: list[tuple[TaskRow, Run]] = []
        self.gone: set[int] = set()  # tasks of the page no longer queued, or claimed now
        self.skipped: set[int] = set()  # servers another runner was claiming on
        self.free_by_server: dict[int, int] = {}
        self.open_to: list[int] = []  # locked servers that may take a run
        self.open_batches: dict[tuple, Run] = {}
        self.run_keys_by_server: dict[int, set] = defaultdict(set)
        self.busy_targets: set[int] = set()
        self.busy_sites: set[int] = set()
        self.busy_wide_platforms: set[int | None] = set()
        self.busy_site_platforms: set[int] = set()
        all_runs = set()
        for r in task_rows(conn.execute(running_query())):
            key = r.run_id or f"task:{r.nid}"
            all_runs.add(key)
            if r.server is not None:
                self.run_keys_by_server[r.server].add(key)
            self._busy(r)
        self.global_free = (settings.concurrency - len(all_runs)
                            if settings.concurrency > 0 else 10**9)

    def _busy(self, r: TaskRow) -> None:
        self.busy_targets.add(r.rid)
        if r.site:
            self.busy_sites.add(r.site)
            if r.platform:
                self.busy_site_platforms.add(r.platform)
        if r.platform_wide:
            self.busy_wide_platforms.add(r.platform)

    def wants_more(self) -> bool:
        if (self.slots > 0 and self.global_free > 0
                and any(self.free_by_server[s] > 0 for s in self.open_to)):
            return True
        return any(len(run.tasks) < self.settings.batch_size for run in self.open_batches.values())

    def lock(self, group: list[int]) -> list[int]:
        """Lock these servers' queues, skipping those another runner is claiming on: claims
        on one server are serialised, claims on different servers run in parallel. Returns
        the servers that may take a run now."""
        got, locked = [], []
        for nid, paused, conc in self.conn.execute(
            select(QueueServer.server_nid, QueueServer.paused, QueueServer.concurrency)
            .where(QueueServer.server_nid.in_(group))
            .order_by(QueueServer.server_nid)
            .with_for_update(skip_locked=True)
        ).all():
            locked.append((nid, paused, conc))
        self.skipped.update(set(group) - {nid for nid, _paused, _conc in locked})
        self._recount([nid for nid, _paused, _conc in locked])
        backing_off = set(self.conn.execute(
            select(ServerHealth.server_nid)
            .where(ServerHealth.server_nid.in_([nid for nid, _p, _c in locked]),
                   ServerHealth.backoff_until > self.now)).scalars()) if locked else set()
        for nid, paused, conc in locked:
            cap = conc if conc is not None else self.settings.server_concurrency
            self.free_by_server[nid] = cap - len(self.run_keys_by_server[nid])
            if nid in backing_off:
                self.free_by_server[nid] = 0  # unreachable lately: no slot until its back-off ends
            if not paused and self.free_by_server[nid] > 0:
                got.append(nid)
        self.open_to.extend(got)
        return got

    def _recount(self, servers: list[int]) -> None:
        """The runs on these servers, read again now that their queue rows are locked. The
        read at the start of the transaction may predate a claim another runner committed
        on them since (READ COMMITTED): counting from it let two runners each start a run
        on a server whose limit is one."""
        if not servers:
            return
        for nid in servers:
            self.run_keys_by_server[nid] = set()
        for r in task_rows(self.conn.execute(running_query(servers))):
            if r.server is not None:  # always: running_query(servers) reads these servers' tasks
                self.run_keys_by_server[r.server].add(r.run_id or f"task:{r.nid}")
            self._busy(r)

    def blocked(self, r: TaskRow) -> bool:
        """Its target, site or platform is busy (one task per target at a time; site tasks
        and platform-wide tasks of one platform exclude each other)."""
        if r.rid in self.busy_targets or (r.site and r.site in self.busy_sites):
            return True
        if r.site and r.platform in self.busy_wide_platforms:
            return True
        return r.platform_wide and (r.platform in self.busy_site_platforms
                                    or r.platform in self.busy_wide_platforms)

    def run_for(self, r: TaskRow) -> Run | None:
        """The run this task joins: an open batch of its kind, or a new run if a slot of its
        server (and of the runner, and of the global limit) is free."""
        if r.server is None:  # not reached: consider() fails the tasks without one (problem())
            raise RuntimeError(f"task {r.nid} has no server")
        batch_key = (r.server, r.task_type, r.target_type)
        if r.task_type in BATCHABLE_TYPES and self.settings.batch_size > 1:
            run = self.open_batches.get(batch_key)
            if run is not None and len(run.tasks) < self.settings.batch_size:
                return run
        if self.slots <= 0 or self.global_free <= 0 or self.free_by_server[r.server] <= 0:
            return None
        run = Run(uuid.uuid4().hex, r.server, r.task_type)
        self.runs.append(run)
        self.slots -= 1
        self.global_free -= 1
        self.free_by_server[r.server] -= 1
        if r.task_type in BATCHABLE_TYPES:
            self.open_batches[batch_key] = run
        return run

    def consider(self, take: list[int]) -> None:
        """Read these queued tasks (in this order) and choose those that may start. Their
        rows in the queue's index (as the page read them) are checked against what the
        frontend says now: the rows of tasks no longer queued are dropped, those whose
        revision, server or platform changed are written again (such a task waits for the
        next page). Both by the row's vid as read: a row a sync wrote since is left alone."""
        if not take:
            return
        order = {nid: i for i, nid in enumerate(take)}
        indexed = self.page.indexed
        rows = sorted(task_rows(self.conn.execute(target_query(TaskStatus.QUEUED, nids=take))),
                      key=lambda r: order[r.nid])
        gone = set(take) - {r.nid for r in rows}
        self.gone.update(gone)
        stale = [indexed[nid][0] for nid in gone if nid in indexed]
        if stale:
            self.conn.execute(delete(QueuedTask).where(QueuedTask.vid.in_(stale)))
        moved = set()
        for r in rows:
            was = indexed.get(r.nid)
            if was is not None and was != (r.vid, r.server, r.site, r.platform):
                self.conn.execute(update(QueuedTask).where(QueuedTask.nid == r.nid, QueuedTask.vid == was[0])
                                  .values(vid=r.vid, server=r.server, site=r.site, platform=r.platform))
                if was[1:] != (r.server, r.site, r.platform):
                    moved.add(r.nid)
        for r in rows:
            if r.nid in moved:
                self.gone.add(r.nid)  # the next page has it where it is now
                continue
            problem = r.problem()
            if problem:
                self.bad.append((r, problem))
                self.gone.add(r.nid)
                continue
            if r.server not in self.free_by_server:
                continue  # its server changed since the page was read
            if self.blocked(r):
                continue
            run = self.run_for(r)
            if run is None:
                continue
            run.tasks.append(r)
            self.chosen.append((r, run))
            self.gone.add(r.nid)
            self._busy(r)

    def choose(self, scan_limit: int) -> None:
        heads = self.page.heads
        # Tasks whose server cannot be found are failed (malformed).
        self.consider([nid for nid, server in heads if server is None])
        # Then the page's servers in claim order, a few at a time: lock only as many
        # servers as the free slots need, so that other runners can claim on the others.
        tried: set[int] = set()
        while self.wants_more() or not tried:
            group = []
            for _nid, server in heads:
                if server is not None and server not in tried and server not in group:
                    group.append(server)
                    if len(group) >= max(1, self.slots):
                        break
            if not group:
                break
            tried.update(group)
            got = set(self.lock(group))
            self.consider([nid for nid, server in heads if server in got])

        # Batches still open: read on, in longer pages of the locked servers' tasks.
        page, seen = 8 * self.page.per_server, {nid for nid, _server in heads} | self.gone
        while self.open_batches and self.wants_more() and page < scan_limit and self.open_to:
            room = max(self.settings.batch_size - len(run.tasks)
                       for run in self.open_batches.values())
            page = min(scan_limit, max(2 * page, len(seen) + room))
            more = list(self.conn.execute(heads_query(self.now, page, servers=self.open_to,
                                                      orphans=False, wide=self.page.wide)))
            self.page.indexed.update(indexed_rows(more))
            self.consider([nid for nid, *_rest in more if nid not in seen])
            seen.update(nid for nid, *_rest in more)
            if len(more) < page:
                break

    def mark_claimed(self) -> list[Run]:
        """Lock the chosen task rows, mark them processing, record the claim. Returns the
        runs that got tasks (malformed tasks as runs with a problem)."""
        conn, now = self.conn, self.now
        bad_runs = [Run(uuid.uuid4().hex, r.server, r.task_type, [r], problem=p)
                    for r, p in self.bad]
        candidates = self.chosen + [(run.tasks[0], run) for run in bad_runs]
        if not candidates:
            return []
        got = set(conn.execute(
            select(m.HostingTask.vid)
            .where(m.HostingTask.vid.in_([r.vid for r, _ in candidates]),
                   m.HostingTask.task_status == TaskStatus.QUEUED)
            .with_for_update(skip_locked=True)
        ).scalars())
        if not got:
            return []
        ts = int(now)
        conn.execute(update(m.HostingTask).where(m.HostingTask.vid.in_(got),
                                                 m.HostingTask.task_status == TaskStatus.QUEUED)
                     .values(task_status=TaskStatus.PROCESSING, executed=ts, delta=0))
        conn.execute(update(m.Node).where(m.Node.vid.in_(got)).values(changed=ts))
        conn.execute(delete(QueuedTask).where(QueuedTask.vid.in_(got)))
        new_rows = []
        for r, run in candidates:
            if r.vid not in got:
                continue
            values = dict(vid=r.vid, runner_id=self.runner_id, claimed_at=now,
                          run_id=run.run_id, cancel_requested=0)
            if r.has_queue_row:
                conn.execute(update(QueueTask).where(QueueTask.nid == r.nid)
                             .values(attempts=QueueTask.attempts + 1, **values))
            else:
                new_rows.append(dict(nid=r.nid, not_before=0, attempts=1, **values))
            r.task_status = TaskStatus.PROCESSING
            r.attempts = (r.attempts or 0) + 1 if r.has_queue_row else 1
            r.runner_id = self.runner_id
            r.run_id = run.run_id
        if new_rows:
            conn.execute(insert(QueueTask), new_rows)
        result = []
        for run in self.runs + bad_runs:
            run.tasks = [t for t in run.tasks if t.vid in got]
            if run.tasks:
                result.append(run)
        return result
