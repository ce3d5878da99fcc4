"""Benchmarks of aegir-ansible (not tests): run each measurement several times, print
median figures and ratios, and write them with the machine's description to
benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.run                  # small sizes (CI-friendly)
    .venv/bin/python -m benchmarks.run --size large     # the issue's sizes
    .venv/bin/python -m benchmarks.run --only inventory --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, event, text

from aegir_ansible.db import init_schema, make_engine, make_sessionmaker
from aegir_ansible.inventory import build_inventory

from . import synthetic

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZES = {
    "small": {"servers": 3, "platforms": 10, "sites": 1_000},
    "large": {"servers": 10, "platforms": 100, "sites": 10_000},
}


def median(values):
    return statistics.median(values)


def machine() -> str:
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import ansible

    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem} RAM, {platform.platform()}, "
            f"Python {platform.python_version()}, ansible-core {ansible.__version__}")


def run_child(cmd: list[str], env: dict | None = None, cwd=REPO) -> tuple[float, int, str]:
    """Wall time, peak RSS in MB (the child and its waited-for descendants), stdout."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("ANSIBLE_CONFIG", None)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=cwd)
        _, status, rusage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
    return elapsed, rusage.ru_maxrss // 1024, stdout


class Database:
    """A fresh benchmark database (SQLite file or a MariaDB database), dropped afterwards."""

    def __init__(self, kind: str, workdir: Path, mysql_url: str):
        self.kind = kind
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / 'bench.sqlite'}"
            self._drop = lambda: None
        else:
            name = f"aegir_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(mysql_url)
            with admin.begin() as c:
                c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))

            def drop():
                with admin.begin() as c:
                    c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                admin.dispose()

            self.url = f"{mysql_url}/{name}"
            self._drop = drop
        engine = make_engine(self.url)
        init_schema(engine)
        self.engine = engine

    def close(self):
        self.engine.dispose()
        self._drop()


# -- 1. inventory ---------------------------------------------------------------------------

def bench_inventory(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    synthetic.build(db.engine, **size)
    rows = []

    # Python build alone, and its statement count
    times, statements = [], []
    for _ in range(repeat):
        engine = make_engine(db.url)
        count = []
        event.listen(engine, "before_cursor_execute", lambda *a: count.append(1))
        start = time.perf_counter()
        with make_sessionmaker(engine)() as s:
            inv = build_inventory(s)
        times.append(time.perf_counter() - start)
        statements.append(len(count))
        engine.dispose()
    n_hosts = len(inv.hosts)
    rows.append({"measure": "inventory: Python build", "db": db.kind, "hosts": n_hosts,
                 "median_s": median(times), "statements": max(statements)})

    # The identical inventory as a static YAML file: Ansible parsing a file is the floor.
    listing = json.loads(run_child([str(BIN / "ansible-inventory"), "-i",
                                    "playbooks/aegir_inventory.py", "--list", "--export"],
                                   env={"AEGIR_DB_URL": db.url})[2])
    static = workdir / f"static-{db.kind}.yml"
    _write_static_yaml(listing, static)
    plugin_cfg = workdir / f"bench-{db.kind}.aegir.yml"
    plugin_cfg.write_text(f"plugin: aegir\ndb_url: '{db.url}'\n")

    variants = {
        "static YAML file (floor)": [str(BIN / "ansible-inventory"), "-i", str(static), "--list"],
        "inventory script": [str(BIN / "ansible-inventory"), "-i", "playbooks/aegir_inventory.py", "--list"],
        "inventory plugin": [str(BIN / "ansible-inventory"), "-i", str(plugin_cfg), "--list"],
    }
    floor = None
    for name, cmd in variants.items():
        samples = [run_child(cmd, env={"AEGIR_DB_URL": db.url}) for _ in range(repeat)]
        t = median([s[0] for s in samples])
        rss = max(s[1] for s in samples)
        floor = floor or t
        rows.append({"measure": f"inventory: ansible-inventory --list, {name}", "db": db.kind,
                     "hosts": n_hosts, "median_s": t, "peak_rss_mb": rss,
                     "ratio_to_floor": t / floor})
    return rows


def _write_static_yaml(listing: dict, path: Path) -> None:
    """ansible-inventory's --list JSON as a plain static YAML inventory: same hosts, groups
    and values (the unsafe wrappers unwrapped: nothing in them is a template anyway)."""
    import yaml

    def conv(v):
        if isinstance(v, dict) and set(v) == {"__ansible_unsafe"}:
            return v["__ansible_unsafe"]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    hostvars = listing.get("_meta", {}).get("hostvars", {})
    children, seen = {}, set()
    for gname, group in listing.items():
        if gname in ("_meta", "all", "ungrouped"):
            continue
        hosts = {}
        for h in group.get("hosts", []):
            hosts[h] = None if h in seen else (conv(hostvars.get(h, {})) or None)  # vars once
            seen.add(h)
        children[gname] = {"hosts": hosts}
        if group.get("vars"):
            children[gname]["vars"] = conv(group["vars"])
    path.write_text(yaml.dump({"all": {"children": children}}, Dumper=yaml.CSafeDumper,
                              default_flow_style=False, sort_keys=False))


MEASUREMENTS = {"inventory": bench_inventory}


def format_rows(rows: list[dict]) -> str:
    cols = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--only", default=",".join(MEASUREMENTS), help="comma-separated measurements")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", default="sqlite,mysql", help="sqlite, mysql or both")
    ap.add_argument("--mysql-url", default=os.environ.get("AEGIR_BENCH_MYSQL_URL",
                                                          "mysql+pymysql://root@127.0.0.1:3306"))
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    all_rows: list[dict] = []
    for name in args.only.split(","):
        fn = MEASUREMENTS[name]
        for kind in args.db.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                db = Database(kind, Path(tmp), args.mysql_url)
                try:
                    rows = fn(db, size, args.repeat, Path(tmp))
                finally:
                    db.close()
            for r in rows:
                print(json.dumps(r), flush=True)
            all_rows.extend(rows)
    report = (f"# Benchmark results\n\nCommand: `python -m benchmarks.run {' '.join(argv or sys.argv[1:])}`"
              f"\n\nSize: {args.size} ({size['servers']} servers, {size['platforms']} platforms, "
              f"{size['sites']} sites); median of {args.repeat} runs.\n\nMachine: {machine()}\n\n"
              f"{format_rows(all_rows)}\n")
    print(report)
    Path(args.results).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
