"""A claimer process for the claim-throughput benchmark (`benchmarks.run --only claims`).

Claims as a runner does (JobManager.claim, `slots` runs per claim), does not run a playbook,
records each run's outcome through the real outcome path (outcome.record: status, log line,
entity hooks, release), until the queue stays empty. Waits until the given start time so
that all claimers start together; prints one JSON line with its figures.

    python -m benchmarks.claimer URL START_AT SLOTS [QUOTA]

QUOTA: stop after claiming that many tasks (the queue-depth measurement claims a fixed
number of tasks from a deeper queue). Also reports the time spent reading the page of
heads (JobManager._read_heads, the statement whose cost follows the depth) and the RSS.
"""

from __future__ import annotations

import json
import sys
import time

from aegir_ansible.db import make_engine
from aegir_ansible.queue import outcome
from aegir_ansible.queue.manager import JobManager
from aegir_ansible.queue.types import RunResult, TaskResult


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(url: str, start_at: float, slots: int, quota: int = 0) -> None:
    engine = make_engine(url)
    jm = JobManager(engine)
    runner = jm.register_runner(None, slots)
    pages = {"n": 0, "s": 0.0}
    read_heads = jm._read_heads

    def timed_read_heads(*a, **kw):
        t0 = time.perf_counter()
        try:
            return read_heads(*a, **kw)
        finally:
            pages["n"] += 1
            pages["s"] += time.perf_counter() - t0

    jm._read_heads = timed_read_heads
    rss_at = {}
    time.sleep(max(0.0, start_at - time.time()))
    first = time.time()
    last_done = first
    tasks = claims = empty = empty_total = 0
    claim_s = record_s = 0.0
    while empty < 10 and not (quota and tasks >= quota):
        settings = jm.settings(max_age=1.0)  # as a runner's loop does
        t0 = time.perf_counter()
        runs = jm.claim(runner, slots, settings)
        claim_s += time.perf_counter() - t0
        claims += 1
        if not runs:
            empty += 1
            empty_total += 1
            time.sleep(0.02)
            continue
        empty = 0
        t0 = time.perf_counter()
        for run in runs:
            now = time.time()
            hosts = [t.target_name for t in run.tasks]
            res = RunResult(run, started=now, ended=now, status="successful", rc=0,
                            tasks={t.nid: TaskResult(t) for t in run.tasks},
                            stats={"processed": dict.fromkeys(hosts, 1)},
                            by_host={t.target_name: [t] for t in run.tasks}, limit=hosts)
            outcome.judge(res, settings, lambda *_line: None)  # every host ran and was ok
            outcome.record(jm, runner, res, settings)
            tasks += len(run.tasks)
        record_s += time.perf_counter() - t0
        for mark in (1000, 5000, 20000):
            if tasks >= mark and mark not in rss_at:
                rss_at[mark] = round(_rss_mb(), 1)
        last_done = time.time()
    jm.stop_runner(runner)
    print(json.dumps({"first": first, "last_done": last_done, "tasks": tasks, "claims": claims,
                      "empty_claims": empty_total, "claim_s": round(claim_s, 3),
                      "record_s": round(record_s, 3), "pages": pages["n"],
                      "pages_s": round(pages["s"], 3), "rss_mb": round(_rss_mb(), 1),
                      "rss_at": rss_at}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
