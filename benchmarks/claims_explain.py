"""EXPLAIN (and time) the statements of a claim on MariaDB at a given queue depth (issue 19).

    python -m benchmarks.claims_explain MYSQL_SERVER_URL [DEPTH ...]

For each depth: a fresh database (named $AEGIR_BENCH_DB_PREFIX + random), 100 servers, 100
platforms, DEPTH sites with one queued `enable` task each, the queue's index of queued tasks
synced (a full sync, timed); then the statements a claim makes, each EXPLAINed and timed
(median of 5): the sync of the index (the incremental read of new revisions; the full one,
every RESYNC_EVERY seconds), the page of heads (queued_servers_query, heads_query,
wide_query), the running tasks (running_query, and again per locked server), the page's
tasks (the index rows and target_query by nid), the lock of the chosen task rows. Prints one
JSON line per statement and depth, with `rows_examined` = the sum of the `rows` column of
EXPLAIN (an estimate: it ignores LIMIT) and `handler_reads` = the rows MariaDB actually
read for one execution (the growth of the session's Handler_read_* counters).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid

from sqlalchemy import create_engine, select, text

from aegir_ansible.db import init_schema, make_engine
from aegir_ansible.db import models as m
from aegir_ansible.db.queue_tables import QueuedTask
from aegir_ansible.queue import manager
from aegir_ansible.queue import sql as jobs  # the claim statements

from . import synthetic


def _handler_reads(conn) -> int:
    return sum(int(v) for _k, v in conn.execute(text("SHOW SESSION STATUS LIKE 'Handler_read%'")))


def _explain(conn, stmt) -> tuple[list[dict], float, int]:
    compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
    sql = str(compiled)
    rows = [dict(r._mapping) for r in conn.execute(text("EXPLAIN " + sql))]
    times, reads = [], []
    a = _handler_reads(conn)
    show = _handler_reads(conn) - a  # what one SHOW reads itself
    for _ in range(5):
        before = _handler_reads(conn)
        t0 = time.perf_counter()
        conn.execute(text(sql)).all()
        times.append(time.perf_counter() - t0)
        reads.append(_handler_reads(conn) - before - show)
    return rows, statistics.median(times), min(reads)


def statements(conn, now: float) -> dict:
    servers_all = list(conn.execute(jobs.queued_servers_query()).scalars())
    wide = dict(conn.execute(jobs.wide_query()).all())
    heads = [tuple(h) for h in conn.execute(jobs.heads_query(now, servers=servers_all, wide=wide,
                                                             per_server=16))]
    take = [nid for nid, _server in heads[:16]]
    servers = sorted({s for _n, s in heads[:16] if s is not None})[:4]
    vids = list(conn.execute(select(m.HostingTask.vid).where(m.HostingTask.nid.in_(take))).scalars())
    top = conn.execute(select(jobs.func.max(m.HostingTask.vid))).scalar()
    return {
        "sync: new revisions (vid > mark - SYNC_LAG)": jobs.queued_rows_query(
            vid_range=(top - manager.SYNC_LAG, top)),
        "sync: full (every RESYNC_EVERY s)": jobs.queued_rows_query(),
        "queued_servers_query": jobs.queued_servers_query(),
        "wide_query": jobs.wide_query(),
        "heads_query (page)": jobs.heads_query(now, servers=servers_all, wide=wide, per_server=16),
        "running_query": jobs.running_query(),
        "running_query (locked servers)": jobs.running_query(servers),
        "index rows of the page's tasks": select(QueuedTask.nid, QueuedTask.vid).where(
            QueuedTask.nid.in_(take)),
        "target_query (page's tasks)": jobs.target_query(0, nids=take),
        "lock chosen tasks": select(m.HostingTask.vid).where(
            m.HostingTask.vid.in_(vids), m.HostingTask.task_status == 0),
        "queue_mark": select(jobs.func.max(m.HostingTask.vid)),
    }


def main(url: str, depths: list[int]) -> None:
    prefix = os.environ.get("AEGIR_BENCH_DB_PREFIX", "aegir_bench_")
    for depth in depths:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        admin = create_engine(url)
        with admin.begin() as c:
            c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            engine = make_engine(f"{url}/{name}")
            init_schema(engine)
            nids = synthetic.build(engine, servers=100, platforms=100, sites=depth)
            synthetic.queue_tasks(engine, "enable", nids["sites"])
            jm = manager.JobManager(engine)
            t0 = time.perf_counter()
            jm.sync_queued()
            print(json.dumps({"depth": depth, "statement": "first full sync of the index (JobManager.sync_queued)",
                              "median_ms": round((time.perf_counter() - t0) * 1000, 2)}), flush=True)
            with engine.connect() as conn:
                conn.execute(text("ANALYZE TABLE hosting_task, node, hosting_site, hosting_platform, "
                                  "hosting_server, aegir_ansible_task, aegir_ansible_queued"))
                for label, stmt in statements(conn, time.time()).items():
                    plan, secs, reads = _explain(conn, stmt)
                    print(json.dumps({"depth": depth, "statement": label, "median_ms": round(secs * 1000, 2),
                                      "rows_examined": sum(int(str(r.get("rows") or 0).split()[0]) for r in plan),
                                      "handler_reads": reads,
                                      "plan": [{k: r.get(k) for k in ("table", "type", "key", "rows", "Extra")}
                                               for r in plan]}), flush=True)
            engine.dispose()
        finally:
            with admin.begin() as c:
                c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()


if __name__ == "__main__":
    main(sys.argv[1], [int(d) for d in sys.argv[2:]] or [2_000, 20_000])
