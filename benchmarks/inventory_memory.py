"""A runner's memory across the inventories of its runs (`benchmarks.run --only
inventory_memory`, issue 19): in a fresh process, the inventory of one-site runs built and
serialised as a run does (build_inventory with the run's limit, script_output, json.dumps) 30
times, each for another site, then the whole inventory twice (as every run did before the
limit). RSS after the 1st, 10th and 30th limited build and after each whole one.

    python -m benchmarks.inventory_memory URL SITE_NAME...
"""

from __future__ import annotations

import gc
import json
import sys
import time

from sqlalchemy.orm import Session

from aegir_ansible.db import make_engine
from aegir_ansible.inventory import build_inventory, run_limit, script_output


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main(url: str, sites: list[str]) -> None:
    engine = make_engine(url)
    out: dict = {"rss_start_mb": _rss_mb()}
    for i, site in enumerate(sites[:30], 1):
        with Session(engine) as s:
            inv = build_inventory(s, limit=run_limit([(site, {})]))
        data = json.dumps(script_output(inv))
        del inv, data
        if i in (1, 10, 30):
            out[f"rss_after_{i}_limited_mb"] = _rss_mb()
    for i in (1, 2):
        t0 = time.perf_counter()
        with Session(engine) as s:
            inv = build_inventory(s)
        data = json.dumps(script_output(inv))
        out["whole_json_mb"] = round(len(data) / 2**20, 1)
        del inv, data
        gc.collect()
        out[f"rss_after_{i}_whole_mb"] = _rss_mb()
        out[f"whole_{i}_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
