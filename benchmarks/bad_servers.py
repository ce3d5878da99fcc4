"""Benchmark (not a test): do bad servers slow the healthy ones? (issue 18, point 3)

Eight healthy servers (local connection), each with a queue of verify tasks of a light
playbook (one command on the host, then a short sleep), run by `aegir queue run` daemons,
batch size 1, server_concurrency 1. Measured twice on a fresh database each time:

- **alone**: only the healthy servers' tasks;
- **with bad servers**: the same, next to three bad servers with as many tasks each: one
  whose SSH port refuses connections, one whose SSH port accepts and never answers (hung),
  and one whose tasks are slow (a 4 s sleep on the host).

The figure is the healthy queues' throughput with the bad servers over their throughput
alone (`ratio`; 1.0 = no effect), for 1 runner x 8 and 2 runners x 4 runs at once.

    .venv/bin/python -m benchmarks.bad_servers [--tasks 6] [--repeat 1] [--db sqlite|URL]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from aegir_ansible.db import init_schema, make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend
from aegir_ansible.queue import admin

from .run import Database

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLAYBOOKS = Path(__file__).parent / "playbooks_bad"
HEALTHY = 8


class Silent:
    """A port that accepts TCP connections and never answers (a hung sshd)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _world(url: str, tasks: int, bad: bool, silent_port: int) -> tuple[list[int], list[int]]:
    """Servers, platforms, sites and their queued verify tasks: (healthy, bad) task nids."""
    engine = make_engine(url)
    init_schema(engine)
    for k, v in {"batch_size": 1, "poll_interval": 0.5, "retry_max_attempts": 1,
                 "connect_timeout": 3}.items():
        admin.set_setting(engine, k, str(v))
    session_maker = make_sessionmaker(engine)
    healthy, bad_tasks = [], []

    def write(fn):
        with session_maker() as s, s.begin():
            return fn(Frontend(s))

    write(lambda fe: fe.add_server("web0.local", local=True, http="nginx", db="mysql",
                                   db_user="root", db_password="x", queue_verify=False))
    servers = [("web0.local", {"local": True}, "0.3", healthy)]
    for i in range(1, HEALTHY):
        servers.append((f"web{i}.local", {"local": True}, "0.3", healthy))
    if bad:
        servers += [("refused.local", {"address": "127.0.0.1", "ssh_port": _closed_port()}, "0.3", bad_tasks),
                    ("hung.local", {"address": "127.0.0.1", "ssh_port": silent_port}, "0.3", bad_tasks),
                    ("slow.local", {"local": True}, "4", bad_tasks)]
    for host, kw, _sleep, _into in servers:
        if host != "web0.local":
            write(lambda fe, host=host, kw=kw: fe.add_server(host, http="nginx", queue_verify=False, **kw))
        write(lambda fe, host=host: fe.add_platform(f"P{host.split('.')[0]}", f"/tmp/aegir-bench-{host}",
                                                    f"server_{host.replace('.', '')}",
                                                    queue_verify=False))
    for j in range(tasks):
        for host, _kw, sleep, into in servers:
            uri = f"s{j}.{host.split('.')[0]}.test"
            write(lambda fe, uri=uri, host=host: fe.add_site(uri, f"platform_P{host.split('.')[0]}",
                                                             queue_install=False))
            into.append(write(lambda fe, uri=uri, sleep=sleep: fe.add_task(
                "verify", uri, {"sleep": sleep})))
    engine.dispose()
    return healthy, bad_tasks


def _left(engine, nids) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(m.HostingTask)
                         .join(m.Node, m.Node.vid == m.HostingTask.vid)
                         .where(m.Node.nid.in_(nids),
                                m.HostingTask.task_status.in_((m.TASK_QUEUED, m.TASK_PROCESSING)))
                         ).scalar()


def measure(db: str, tasks: int, runners: int, concurrency: int, bad: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="aegir-bench-bad-") as tmp:
        # run.Database: a fresh SQLite file or MariaDB database, dropped afterwards.
        database = Database("sqlite" if db == "sqlite" else "mysql", Path(tmp), db.rstrip("/"))
        url = database.url
        silent = Silent()
        try:
            healthy, bad_tasks = _world(url, tasks, bad, silent.port)
            env = {**os.environ, "AEGIR_DB_URL": url}
            env.pop("ANSIBLE_CONFIG", None)
            cpu0 = _children_cpu()
            t0 = time.perf_counter()
            procs = [subprocess.Popen([str(BIN / "aegir"), "queue", "run", "--concurrency",
                                       str(concurrency), "--playbooks", str(PLAYBOOKS)],
                                      env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(runners)]
            engine = make_engine(url)
            try:
                while _left(engine, healthy):
                    time.sleep(0.05)
                took = time.perf_counter() - t0
                bad_left = _left(engine, bad_tasks) if bad_tasks else 0
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(60)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
                cpu = _children_cpu() - cpu0
                engine.dispose()
        finally:
            silent.close()
            database.close()
    return {"runners": runners, "concurrency": concurrency, "bad": bad,
            "healthy_tasks": len(healthy), "seconds": round(took, 2),
            "healthy_tasks_per_s": round(len(healthy) / took, 3),
            "cpu_s": round(cpu, 1), "bad_tasks_not_done_yet": bad_left}


def _children_cpu() -> float:
    """CPU seconds of the runners and everything they ran (ansible-playbook, ssh): the
    runners wait for their children, and the benchmark for the runners."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=6, help="tasks per server")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--db", default="sqlite", help="sqlite, or a MariaDB server URL")
    ap.add_argument("--layouts", default="1x8,2x4", help="runners x concurrency, comma-separated")
    args = ap.parse_args(argv)
    rows = []
    for layout in args.layouts.split(","):
        runners, concurrency = (int(x) for x in layout.split("x"))
        alone, mixed = [], []
        for _ in range(args.repeat):
            alone.append(measure(args.db, args.tasks, runners, concurrency, False))
            mixed.append(measure(args.db, args.tasks, runners, concurrency, True))
        a = statistics.median(r["healthy_tasks_per_s"] for r in alone)
        b = statistics.median(r["healthy_tasks_per_s"] for r in mixed)
        # On 2 cores the runs are CPU-bound: the slow server's tasks are real runs that take
        # their share of the CPU whatever the scheduling. cpu_share = the CPU the healthy runs
        # need alone over the CPU of the whole mixed run: the ratio a scheduler that loses no
        # time to bad servers (no slot held by a hung connection, no retry storm) reaches.
        ca = statistics.median(r["cpu_s"] for r in alone)
        cb = statistics.median(r["cpu_s"] for r in mixed)
        row = {"layout": layout, "healthy_tasks": alone[0]["healthy_tasks"],
               "alone_tasks_per_s": a, "with_bad_tasks_per_s": b, "ratio": round(b / a, 3),
               "cpu_share": round(ca / cb, 3) if cb else None,
               "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "runs": alone + mixed}
        print(json.dumps(row))
        rows.append(row)
    print("| layout (runners x runs) | healthy tasks | alone tasks/s | with bad servers tasks/s "
          "| ratio | cpu_share | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['healthy_tasks']} | {r['alone_tasks_per_s']} | "
              f"{r['with_bad_tasks_per_s']} | {r['ratio']} | {r['cpu_share']} | {r['load']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
