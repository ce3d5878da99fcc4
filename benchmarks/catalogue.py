"""The task catalogue's batching measured (benchmarks.run --only flush_cache): flush_cache of
N sites of one server as the queue batches it (playbooks/flush_cache_batch.yml on the server
host, one aegir_drush call for the whole batch) against one playbook run per task.

The sites, server and platform are the re-verify measurement's (SshFrontend: a real harness
server over SSH, the sites made to exist by one batched verify, without databases). Since
the sites have no database, the platform's drush is replaced by a light one (BENCH_DRUSH, a
PHP script that prints what `drush cache-rebuild` prints and exits 0): everything else is
real (the queue runner, the inventory, ansible-playbook over SSH, the aegir_drush module,
one drush process per site, each task's outcome and log). The figure is the orchestration
cost the batching removes; a real drush adds its own time per site to both ways alike.
"""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

from . import synthetic

BENCH_DRUSH = """#!/usr/bin/env php
<?php
// Benchmark drush (benchmarks/catalogue.py): answers like `drush cache-rebuild`.
fwrite(STDOUT, "[success] Cache rebuild complete (benchmark drush).\\n");
"""


def _runs(stderr: str) -> int:
    """How many playbook runs the runner's log says it finished."""
    return len(re.findall(r"finished \([^)]*\) in [0-9.]+s", stderr))


def _light_drush(fe) -> None:
    drush = Path(fe.web.aegir_root) / "platforms" / "p0" / "vendor" / "bin" / "drush"
    drush.write_text(BENCH_DRUSH)
    user = pwd.getpwnam(fe.web.script_user)
    os.chown(drush, user.pw_uid, user.pw_gid)
    drush.chmod(0o755)


def bench_flush_cache(db, size: dict, repeat: int, workdir: Path) -> list[dict]:
    from .run import BIN, SshFrontend, _task_outcomes, median, run_child

    n, k = size["reverify_sites"], size["naive_sample"]
    fe = SshFrontend(db, n)
    rows = []

    def queue_run(*args):
        t, rss, _, err = run_child([str(BIN / "aegir"), "queue", "run", "--once", *args],
                                   env={"AEGIR_DB_URL": db.url})
        return t, _runs(err), rss

    try:
        fe.bootstrap()
        _light_drush(fe)
        sites = fe.nids["sites"]
        sample = synthetic.queue_tasks(db.engine, "flush_cache", sites[:k])
        t_sample, runs_sample, _ = queue_run("--batch-size", "1")
        got = _task_outcomes(db, sample)
        naive = t_sample / k * n
        rows.append({"measure": f"flush_cache: one playbook run per task (measured on {k} tasks, "
                                f"scaled x{n / k:g})", "db": db.kind, "sites": n, "median_s": naive,
                     "playbook_runs": f"{runs_sample} for {k} ({n} scaled)",
                     "per_task_s": t_sample / k, "tasks_ok": f"{got['success']}/{k}"})
        times, runs, checks, rss = [], [], [], []
        for _ in range(repeat):
            nids = synthetic.queue_tasks(db.engine, "flush_cache", sites)
            t, r, peak = queue_run()
            times.append(t)
            runs.append(r)
            rss.append(peak)
            checks.append(_task_outcomes(db, nids))
        t = median(times)
        rows.append({"measure": f"flush_cache: batched, {n} queued tasks -> {n} outcomes", "db": db.kind,
                     "sites": n, "median_s": t, "playbook_runs": " ".join(str(r) for r in runs),
                     "per_task_s": t / n, "tasks_ok": " ".join(f"{c['success']}/{n}" for c in checks),
                     "runs_s": " ".join(f"{x:.1f}" for x in times), "peak_rss_mb": max(rss),
                     "time_ratio_vs_one_run_per_task": naive / t})
    finally:
        fe.close()
    return rows
