"""The cost of preparing and starting one run against the number of sites in the frontend
(`benchmarks.run --only run_cost`, issue 19).

A synthetic frontend (100 servers, 100 platforms, N sites); one verify task queued on one
site, claimed by JobManager.claim, and executed in-process by the queue's Execution with the
no-op playbook of benchmarks/playbooks (one debug task, no connection): what is left is the
run's own cost — its inventory built from the database (`prepare_s`), written, read by
ansible-playbook at its start, the playbook, the run's end. Wall time and CPU time (this
process and its children: ansible-playbook and its workers), the inventory's size, median of
`repeat` runs, each a new task.

Measured with the run's inventory limited to its targets (the queue's way) and, once, with
the whole inventory (every site, as before issue 19: `run_limit` patched to give no limit).
`ratio_vs_smallest` = the figure / the same figure with the smallest N.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from aegir_ansible.inventory import build_inventory, run_limit, script_output
from aegir_ansible.queue import execution, outcome
from aegir_ansible.queue import prepare as prepare_mod
from aegir_ansible.queue.events import LogWriter
from aegir_ansible.queue.manager import JobManager

from . import synthetic

REPO = Path(__file__).resolve().parents[1]
SERVERS, PLATFORMS = 100, 100


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _one_run(db, jm: JobManager, runner: str, site: int, writer: LogWriter) -> dict:
    synthetic.queue_tasks(db.engine, "verify", [site])
    settings = jm.settings(max_age=0)
    runs = []
    for _ in range(50):  # the claim page may lag a fresh task by a poll
        runs = jm.claim(runner, 1, settings)
        if runs:
            break
        time.sleep(0.05)
    if len(runs) != 1 or len(runs[0].tasks) != 1:
        raise RuntimeError(f"run_cost: expected one run of one task, claimed {runs}")
    ex = execution.Execution(runs[0], db.engine, writer, REPO / "benchmarks" / "playbooks")
    prepare = {}
    real_prepare = execution.prepare

    def timed_prepare(*args, **kw):
        t0 = time.perf_counter()
        try:
            return real_prepare(*args, **kw)
        finally:
            prepare["s"] = time.perf_counter() - t0

    execution.prepare = timed_prepare
    cpu0, t0 = _cpu(), time.perf_counter()
    try:
        res = ex.execute()
    finally:
        execution.prepare = real_prepare
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    if res.status != "successful":
        raise RuntimeError(f"run_cost: the run ended {res.status!r} (rc {res.rc})")
    outcome.judge(res, settings, lambda *_line: None)
    outcome.record(jm, runner, res, settings)
    return {"wall_s": wall, "cpu_s": cpu, "prepare_s": prepare["s"]}


def _inventory_bytes(db, target: str | None) -> int:
    from sqlalchemy.orm import Session

    with Session(db.engine) as s:
        inv = build_inventory(s, limit=None if target is None else run_limit([(target, {})]))
    return len(json.dumps(script_output(inv)))


def bench_run_cost(db_factory, sizes: list[int], repeat: int, full_at: list[int]) -> list[dict]:
    """`db_factory()`: a fresh benchmark Database. One row per (N, way)."""
    rows = []
    for n in sizes:
        db = db_factory()
        try:
            t0 = time.perf_counter()
            nids = synthetic.build(db.engine, servers=SERVERS, platforms=PLATFORMS, sites=n)
            setup = time.perf_counter() - t0
            site = nids["sites"][len(nids["sites"]) // 2]
            from sqlalchemy import select

            from aegir_ansible.db import models as m

            with db.engine.connect() as c:
                target = c.execute(select(m.HostingContext.name).where(m.HostingContext.nid == site)).scalar()
            jm = JobManager(db.engine)
            runner = jm.register_runner(None, 1)
            writer = LogWriter(db.engine)
            try:
                ways = [("limited", None)] + ([("full", lambda _targets: None)] if n in full_at else [])
                for way, patched in ways:
                    real = prepare_mod.run_limit
                    if patched is not None:
                        prepare_mod.run_limit = patched
                    try:
                        _one_run(db, jm, runner, site, writer)  # warm (imports, caches)
                        samples = [_one_run(db, jm, runner, site, writer)
                                   for _ in range(repeat if way == "limited" else 1)]
                    finally:
                        prepare_mod.run_limit = real
                    med = {k: sorted(s[k] for s in samples)[len(samples) // 2] for k in samples[0]}
                    rows.append({"measure": f"run_cost: one one-site verify run (no-op playbook), "
                                            f"{SERVERS} servers, {PLATFORMS} platforms",
                                 "db": db.kind, "sites": n, "inventory": way,
                                 "inventory_kb": round(_inventory_bytes(
                                     db, target if way == "limited" else None) / 1024, 1),
                                 "prepare_s": med["prepare_s"], "prepare_start_wall_s": med["wall_s"],
                                 "cpu_s": med["cpu_s"], "runs": len(samples),
                                 "setup_s": round(setup, 1),
                                 "load": " ".join(f"{x:.1f}" for x in os.getloadavg())})
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                writer.close()
                jm.stop_runner(runner)
        finally:
            db.close()
    base = {r["inventory"]: r for r in rows if r["sites"] == min(sizes)}
    for r in rows:
        b = base.get("limited")
        if b is not None:
            r["wall_ratio_vs_smallest_limited"] = round(r["prepare_start_wall_s"] / b["prepare_start_wall_s"], 2)
            r["cpu_ratio_vs_smallest_limited"] = round(r["cpu_s"] / b["cpu_s"], 2)
    return rows
