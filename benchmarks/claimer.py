"""A claimer process for the claim-throughput benchmark (`benchmarks.run --only claims`).

Claims as a runner does (JobManager.claim, `slots` runs per claim), does not run a playbook,
records each run's outcome through the real outcome path (outcome.record: status, log line,
entity hooks, release), until the queue stays empty. Waits until the given start time so
that all claimers start together; prints one JSON line with its figures.

    python -m benchmarks.claimer URL START_AT SLOTS
"""

from __future__ import annotations

import json
import sys
import time

from aegir_ansible.db import make_engine
from aegir_ansible.queue import outcome
from aegir_ansible.queue.manager import JobManager
from aegir_ansible.queue.types import RunResult, TaskResult


def main(url: str, start_at: float, slots: int) -> None:
    engine = make_engine(url)
    jm = JobManager(engine)
    runner = jm.register_runner(None, slots)
    time.sleep(max(0.0, start_at - time.time()))
    first = time.time()
    last_done = first
    tasks = claims = empty = empty_total = 0
    claim_s = record_s = 0.0
    while empty < 10:
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
        last_done = time.time()
    jm.stop_runner(runner)
    print(json.dumps({"first": first, "last_done": last_done, "tasks": tasks, "claims": claims,
                      "empty_claims": empty_total, "claim_s": round(claim_s, 3),
                      "record_s": round(record_s, 3)}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
