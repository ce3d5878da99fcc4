"""EXPLAIN (and time) the statements of a claim on MariaDB at a given queue depth (issue 19).

    python -m benchmarks.claims_explain MYSQL_SERVER_URL [DEPTH ...]

For each depth: a fresh database (named $AEGIR_BENCH_DB_PREFIX + random), 100 servers, 100
platforms, DEPTH sites with one queued `enable` task each; then the statements a claim makes,
each EXPLAINed and timed (median of 5): the page of heads (heads_query, wide_query), the
running tasks (running_query, and again per locked server), the page's tasks (target_query
by nid), the lock of the chosen task rows. Prints one JSON line per statement and depth, with
`rows_examined` = the sum of the `rows` column of EXPLAIN.
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
from aegir_ansible.queue import sql as jobs  # the claim statements

from . import synthetic


def _explain(conn, stmt) -> tuple[list[dict], float]:
    compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
    sql = str(compiled)
    rows = [dict(r._mapping) for r in conn.execute(text("EXPLAIN " + sql))]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        conn.execute(text(sql)).all()
        times.append(time.perf_counter() - t0)
    return rows, statistics.median(times)


def statements(conn, now: float) -> dict:
    heads = [tuple(h) for h in conn.execute(jobs.heads_query(now, per_server=16))]
    take = [nid for nid, _server in heads[:16]]
    servers = sorted({s for _n, s in heads[:16] if s is not None})[:4]
    vids = list(conn.execute(select(m.HostingTask.vid).where(m.HostingTask.nid.in_(take))).scalars())
    return {
        "wide_query": jobs.wide_query(),
        "heads_query (page)": jobs.heads_query(now, per_server=16),
        "running_query": jobs.running_query(),
        "running_query (locked servers)": jobs.running_query(servers),
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
            with engine.connect() as conn:
                conn.execute(text("ANALYZE TABLE hosting_task, node, hosting_site, hosting_platform, "
                                  "hosting_server, aegir_ansible_task"))
                for label, stmt in statements(conn, time.time()).items():
                    plan, secs = _explain(conn, stmt)
                    print(json.dumps({"depth": depth, "statement": label, "median_ms": round(secs * 1000, 2),
                                      "rows_examined": sum(int(str(r.get("rows") or 0).split()[0]) for r in plan),
                                      "plan": [{k: r.get(k) for k in ("table", "type", "key", "rows", "Extra")}
                                               for r in plan]}), flush=True)
            engine.dispose()
        finally:
            with admin.begin() as c:
                c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()


if __name__ == "__main__":
    main(sys.argv[1], [int(d) for d in sys.argv[2:]] or [2_000, 20_000])
