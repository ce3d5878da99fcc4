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
import re
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

from . import catalogue, synthetic

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZES = {
    "small": {"servers": 3, "platforms": 10, "sites": 1_000, "reverify_sites": 100,
              "naive_sample": 3, "claim_tasks": 400, "memory_tasks": 200,
              "run_cost_sites": (100, 2_000), "claim_depths": (400, 2_000), "claim_depth_quota": 400},
    "large": {"servers": 10, "platforms": 100, "sites": 10_000, "reverify_sites": 1_000,
              "naive_sample": 5, "claim_tasks": 2_000, "memory_tasks": 1_000,
              "run_cost_sites": (100, 20_000), "claim_depths": (2_000, 20_000),
              "claim_depth_quota": 2_000},
}
INVENTORY_KEYS = ("servers", "platforms", "sites")
OPTIONS = {"mitogen": False}


def mitogen_env() -> dict:
    """Environment that makes ansible-playbook (run by the queue runner) use Mitogen's
    linear strategy; needs `pip install mitogen` in the venv (an opt-in, not a dependency)."""
    import ansible_mitogen

    strategy = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategy), "ANSIBLE_STRATEGY": "mitogen_linear"}


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


def run_child(cmd: list[str], env: dict | None = None, cwd=REPO) -> tuple[float, int, str, str]:
    """Wall time, peak RSS in MB (the child and its waited-for descendants), stdout, stderr."""
    # The collection's own ansible.cfg (the repository root), whatever the cwd: the playbooks
    # folder holds none since the repository became the collection in place.
    full_env = {**os.environ, **(env or {}), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=cwd)
        _, status, rusage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode()
        stderr = err.read().decode()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {stderr[-2000:]}{stdout[-3000:]}")
    return elapsed, rusage.ru_maxrss // 1024, stdout, stderr


class Database:
    """A fresh benchmark database (SQLite file or a MariaDB database), dropped afterwards."""

    def __init__(self, kind: str, workdir: Path, mysql_url: str):
        self.kind = kind
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / 'bench.sqlite'}"
            self._drop = lambda: None
        else:
            # AEGIR_BENCH_DB_PREFIX: for a MariaDB shared with others (their own names).
            name = f"{os.environ.get('AEGIR_BENCH_DB_PREFIX', 'aegir_bench_')}{uuid.uuid4().hex[:8]}"
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
    synthetic.build(db.engine, **{k: size[k] for k in INVENTORY_KEYS})
    rows = []

    # Python build alone, and its statement count
    times, statements = [], []
    for _ in range(repeat):
        engine = make_engine(db.url)
        count = []
        event.listen(engine, "before_cursor_execute", lambda *a: count.append(1))  # noqa: B023 (own engine)
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


# -- helpers for the queue measurements ------------------------------------------------------

def _task_outcomes(db: Database, nids: list[int]) -> dict:
    """Counts of the tasks' current status, and of tasks whose summary line says changed=0."""
    from sqlalchemy import func, select

    from aegir_ansible.db import models as m

    out = {"success": 0, "error": 0, "warning": 0, "other": 0, "unchanged": 0}
    with db.engine.connect() as c:
        for start in range(0, len(nids), 1000):
            chunk = nids[start:start + 1000]
            for status, n in c.execute(
                select(m.HostingTask.task_status, func.count())
                .join(m.Node, m.Node.vid == m.HostingTask.vid)
                .where(m.Node.nid.in_(chunk)).group_by(m.HostingTask.task_status)
            ):
                key = {m.TASK_SUCCESS: "success", m.TASK_ERROR: "error",
                       m.TASK_WARNING: "warning"}.get(status, "other")
                out[key] += n
            out["unchanged"] += c.execute(
                select(func.count(func.distinct(m.HostingTaskLog.nid)))
                .where(m.HostingTaskLog.nid.in_(chunk),
                       m.HostingTaskLog.message.like("Summary for % changed=0 %"))
            ).scalar()
    return out


def _queue_run(db: Database, *args: str, env: dict | None = None) -> tuple[float, int, float]:
    """`aegir queue run --once ARGS` as its own process: wall time, peak RSS, and the sum of
    its runs' playbook times (from its log)."""
    t, rss, _, err = run_child([str(BIN / "aegir"), "queue", "run", "--once", *args],
                               env={"AEGIR_DB_URL": db.url, **(env or {})})
    runs = sum(float(x) for x in re.findall(r"finished \([^)]*\) in ([0-9.]+)s", err))
    return t, rss, runs


class SshFrontend:
    """A synthetic frontend whose one server is a real harness server (sshd, nginx, PHP-FPM
    on a loopback address) reached over SSH as root with the harness key; its one platform
    is a copy of the fixture platform; `sites` enabled sites on it."""

    def __init__(self, db: Database, sites: int):
        from tests.harness.platform import make_platform
        from tests.harness.servers import ServerSet, Slot

        self.db = db
        self.slot = Slot.acquire()
        self.servers = None
        try:
            self.servers = ServerSet.start(self.slot)
            web = self.web = self.servers.servers["nginx"]
            make_platform(web, "p0")
            settings = {
                "connection": "ssh", "address": web.address, "ssh_user": web.ssh_user,
                "ssh_port": web.ssh_port, "ssh_private_key_file": web.ssh_private_key,
                "aegir_root": web.aegir_root, "script_user": web.script_user,
                "web_group": web.web_group, "http_listen_address": web.address,
                "http_test_cmd": json.dumps(web.http_test_cmd),
                "http_reload_cmd": json.dumps(web.http_reload_cmd),
                "php_fastcgi": web.php_fastcgi, "db_grant_host": web.db_grant_host,
            }
            self.nids = synthetic.build(db.engine, servers=1, platforms=1, sites=sites,
                                        server_settings=settings,
                                        platform_root=f"{web.aegir_root}/platforms")
        except BaseException:
            self.close()
            raise

    def bootstrap(self) -> float:
        """Make the sites exist on the server without installing them (no database, no
        installer): a verify of the server and platform, then ONE batched site verify
        (playbooks/verify_batch.yml) allowed to create the missing settings.php secret
        (`_aegir_site_install`), which writes directories, settings.php, sites.php, vhosts and
        cron jobs. Returns its wall time."""
        env = {"AEGIR_DB_URL": self.db.url}
        pb = [str(BIN / "ansible-playbook"), "-i", "aegir_inventory.py"]
        # The server and platform first (the synthetic db service is not real: not checked).
        t = run_child([*pb, "verify.yml", "--limit", "aegir_servers,aegir_platforms",
                       "-e", json.dumps({"aegir_db_service": "none"})], env=env, cwd=REPO / "playbooks")[0]
        from sqlalchemy import select

        from aegir_ansible.db import models as m

        with self.db.engine.connect() as c:
            sites = list(c.execute(select(m.HostingContext.name)
                                   .where(m.HostingContext.nid.in_(self.nids["sites"]))).scalars())
            server = c.execute(select(m.HostingContext.name)
                               .where(m.HostingContext.nid == self.nids["servers"][0])).scalar()
        extra = Path(tempfile.mkstemp(suffix=".json")[1])
        extra.write_text(json.dumps({"_aegir_site_install": True, "aegir_batch_sites": sites}))
        try:
            return t + run_child([*pb, "verify_batch.yml", "--limit", server, "-e", f"@{extra}"],
                                 env=env, cwd=REPO / "playbooks")[0]
        finally:
            extra.unlink()

    def close(self):
        if self.servers is not None:
            self.servers.stop()
        self.slot.release()


# -- 2. bulk re-verify -------------------------------------------------------------------------

def _project_way(db: Database, sites: list, repeat: int, naive: float, label: str,
                 env: dict | None = None) -> dict:
    """`repeat` times: all the sites' verify tasks queued, one `aegir queue run --once`
    until every outcome is recorded; the row with the median and the per-repeat checks."""
    n = len(sites)
    times, checks, rss, playbook_times = [], [], [], []
    for _ in range(repeat):
        nids = synthetic.queue_tasks(db.engine, "verify", sites)
        t, peak, pb = _queue_run(db, env=env)
        times.append(t)
        playbook_times.append(pb)
        rss.append(peak)
        checks.append(_task_outcomes(db, nids))
    t = median(times)
    return {"measure": f"re-verify: {label}", "db": db.kind, "sites": n, "median_s": t,
            "per_task_s": t / n, "runs_s": " ".join(f"{x:.1f}" for x in times),
            "playbook_s": " ".join(f"{x:.1f}" for x in playbook_times),
            "tasks_ok": " ".join(f"{c['success']}/{n}" for c in checks),
            "unchanged": " ".join(f"{c['unchanged']}/{n}" for c in checks),
            "peak_rss_mb": max(rss), "speedup_vs_naive": naive / t}


def bench_reverify(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    n, k = size["reverify_sites"], size["naive_sample"]
    fe = SshFrontend(db, n)
    rows = []
    try:
        boot = fe.bootstrap()
        rows.append({"measure": f"re-verify: setup, install-free bootstrap of {n} sites (one run)",
                     "db": db.kind, "sites": n, "median_s": boot})
        sites = fe.nids["sites"]

        # The naive way: one playbook run per task, one after another (batch size 1), on a
        # sample of k tasks, scaled to n.
        sample = synthetic.queue_tasks(db.engine, "verify", sites[:k])
        t_sample = _queue_run(db, "--batch-size", "1")[0]
        got = _task_outcomes(db, sample)
        naive = t_sample / k * n
        rows.append({"measure": f"re-verify: naive, one run per task (measured on {k} tasks, "
                                f"scaled x{n / k:g})", "db": db.kind, "sites": n,
                     "median_s": naive, "per_task_s": t_sample / k, "sample_s": t_sample,
                     "tasks_ok": f"{got['success']}/{k}", "unchanged": f"{got['unchanged']}/{k}"})

        # The project's way: n queued verify tasks, one runner, until every outcome is recorded.
        rows.append(_project_way(db, sites, repeat, naive, f"project way, {n} queued tasks -> "
                                                           f"{n} outcomes"))
        if OPTIONS["mitogen"]:
            rows.append(_project_way(db, sites, repeat, naive, "project way with Mitogen "
                                     f"(mitogen_linear), {n} tasks", env=mitogen_env()))
    finally:
        fe.close()
    return rows


def _enable_https(db: Database, fe: SshFrontend) -> None:
    """Turn the frontend's server into an Aegir HTTPS server (https_nginx, self-signed
    certificate service, port 443) and every site into https "required", as hostmaster's
    hosting_https module writes it."""
    from sqlalchemy import insert, update

    from aegir_ansible.db import models as m

    server = fe.nids["servers"][0]
    with db.engine.begin() as c:
        c.execute(update(m.HostingService).where(m.HostingService.vid == server,
                                                 m.HostingService.service == "http")
                  .values(type="https_nginx"))
        c.execute(insert(m.HostingService).values(vid=server, nid=server, service="Certificate",
                                                  type="SelfSigned", port=0, available=1))
        c.execute(insert(m.HostingHttpsServer).values(vid=server, nid=server, https_port=443))
        c.execute(insert(m.HostingHttpsSite), [
            {"vid": n, "nid": n, "https_enabled": m.HTTPS_REQUIRED, "client_authentication": 0}
            for n in fe.nids["sites"]])


def bench_reverify_https(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    """Re-verify of N https sites whose certificates are valid, next to the same N sites
    without https: the certificates of all the sites of a server are checked in one module
    call (aegir_certificates), so the difference stays one round trip per server."""
    n = size["reverify_sites"]
    fe = SshFrontend(db, n)
    rows = []
    try:
        rows.append({"measure": f"re-verify https: setup, install-free bootstrap of {n} sites",
                     "db": db.kind, "sites": n, "median_s": fe.bootstrap()})
        sites = fe.nids["sites"]
        plain = _project_way(db, sites, repeat, 1.0, f"https: project way, {n} sites without https")
        rows.append(plain)
        _enable_https(db, fe)
        nids = synthetic.queue_tasks(db.engine, "verify", sites)
        t = _queue_run(db)[0]
        got = _task_outcomes(db, nids)
        rows.append({"measure": f"re-verify https: setup, {n} self-signed certificates issued (one run)",
                     "db": db.kind, "sites": n, "median_s": t, "tasks_ok": f"{got['success']}/{n}"})
        https_row = _project_way(db, sites, repeat, 1.0,
                                 f"https: project way, {n} https sites with valid certificates")
        https_row["vs_without_https"] = https_row["median_s"] / plain["median_s"]
        rows.append(https_row)
    finally:
        fe.close()
    for r in rows:
        r.pop("speedup_vs_naive", None)
    return rows


# -- 3. latency -------------------------------------------------------------------------------

def _start_daemon(db: Database, *args: str, extra_env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "AEGIR_DB_URL": db.url, **(extra_env or {})}
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.Popen([str(BIN / "aegir"), "queue", "run", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from sqlalchemy import func, select

    from aegir_ansible.db.queue_tables import QueueRunner

    deadline = time.time() + 30
    while time.time() < deadline:
        with db.engine.connect() as c:
            if c.execute(select(func.count()).select_from(QueueRunner)
                         .where(QueueRunner.pid == proc.pid, QueueRunner.state == "running")).scalar():
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the queue runner did not start")


def _stop_daemon(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_done(db: Database, nids: list[int], timeout: float = 600) -> float:
    """Poll every 20 ms until none of the tasks is queued or running; returns the time."""
    from sqlalchemy import func, select

    from aegir_ansible.db import models as m

    deadline = time.time() + timeout
    while time.time() < deadline:
        with db.engine.connect() as c:
            left = c.execute(select(func.count()).select_from(m.HostingTask)
                             .join(m.Node, m.Node.vid == m.HostingTask.vid)
                             .where(m.Node.nid.in_(nids),
                                    m.HostingTask.task_status.in_((m.TASK_QUEUED,
                                                                   m.TASK_PROCESSING)))).scalar()
        if not left:
            return time.perf_counter()
        time.sleep(0.02)
    raise RuntimeError(f"tasks {nids[:5]}... not done after {timeout}s")


def _latency(db: Database, site: int, repeat: int, extra_env: dict | None = None):
    proc = _start_daemon(db, extra_env=extra_env)
    try:
        time.sleep(1.0)
        times, ok = [], 0
        for _ in range(repeat + 1):  # the first one also opens the SSH master connection
            nid = synthetic.queue_tasks(db.engine, "verify", [site])
            start = time.perf_counter()
            times.append(_wait_done(db, nid, 60) - start)
            ok += _task_outcomes(db, nid)["success"]
            time.sleep(1.0)
    finally:
        _stop_daemon(proc)
    return times, ok


def bench_latency(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    fe = SshFrontend(db, 1)
    rows = []
    try:
        fe.bootstrap()
        site = fe.nids["sites"][0]
        variants = [("", None)] + ([(" with Mitogen", mitogen_env())] if OPTIONS["mitogen"] else [])
        for label, extra_env in variants:
            times, ok = _latency(db, site, repeat, extra_env)
            rows.append({"measure": f"latency: one site verify queued on an idle runner -> success "
                                    f"recorded{label}", "db": db.kind, "sites": 1,
                         "median_s": median(times[1:]), "first_s": times[0],
                         "runs_s": " ".join(f"{x:.2f}" for x in times[1:]),
                         "tasks_ok": f"{ok}/{len(times)}"})
    finally:
        fe.close()
    return rows


# -- 4. claim throughput --------------------------------------------------------------------

def _run_claimers(url: str, procs_n: int, slots: int, quota: int = 0) -> list[dict]:
    """Start `procs_n` claimer processes together (benchmarks/claimer.py); their JSON lines."""
    start_at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.claimer", url, str(start_at), str(slots),
                               str(quota)], cwd=REPO, env={**os.environ}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(procs_n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"claimer failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    print("claimers: " + json.dumps(results), file=sys.stderr, flush=True)
    return results


def bench_claims(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    if db.kind != "mysql":
        return []  # several runner processes: MariaDB only (SQLite is one runner only)
    n, procs_n, slots = size["claim_tasks"], 4, 4
    nids = synthetic.build(db.engine, servers=10, platforms=10, sites=n)
    rates, claims = [], []
    for _ in range(repeat):
        tasks = synthetic.queue_tasks(db.engine, "enable", nids["sites"])
        results = _run_claimers(db.url, procs_n, slots)
        done = _task_outcomes(db, tasks)
        total = sum(r["tasks"] for r in results)
        if total != n or done["success"] != n:
            raise RuntimeError(f"claims: {total} tasks claimed, {done} recorded, expected {n}")
        wall = max(r["last_done"] for r in results) - min(r["first"] for r in results)
        rates.append(n / wall)
        claims.append(sum(r["claims"] for r in results))
    return [{"measure": f"claims: {procs_n} runner processes, {n} enable tasks (claim + outcome, "
                        "no playbook)", "db": db.kind, "tasks": n, "tasks_per_s": median(rates),
             "tasks_per_s_each": " ".join(f"{x:.0f}" for x in rates), "claims": max(claims)}]


def bench_claims_depth(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    """Claims at queue depth (issue 19): 4 claimer processes claim (and record) the same
    number of tasks, `claim_depth_quota`, from queues of each depth of `claim_depths` (one
    enable task per site, 100 servers): tasks/s, and the time the claimers spent reading
    pages of heads (the ranking of every queued task)."""
    if db.kind != "mysql":
        return []
    procs_n, slots, quota = 4, 4, size["claim_depth_quota"]
    rows, made = [], [db]
    for depth in size["claim_depths"]:
        if made:
            d = made.pop()
        else:
            sub = workdir / uuid.uuid4().hex[:8]
            sub.mkdir()
            d = Database(db.kind, sub, OPTIONS["mysql_url"])
        try:
            nids = synthetic.build(d.engine, servers=100, platforms=100, sites=depth)
            tasks = synthetic.queue_tasks(d.engine, "enable", nids["sites"])
            with d.engine.begin() as c:
                c.execute(text("ANALYZE TABLE hosting_task, node, hosting_site"))
            results = _run_claimers(d.url, procs_n, slots, min(depth, quota) // procs_n)
            done = _task_outcomes(d, tasks)
            total = sum(r["tasks"] for r in results)
            if done["success"] != total:
                raise RuntimeError(f"claims: {total} tasks claimed, {done} recorded")
            wall = max(r["last_done"] for r in results) - min(r["first"] for r in results)
            rows.append({"measure": f"claims_depth: {procs_n} runner processes claim {quota} enable tasks "
                                    "from a queue of `depth` over 100 servers (claim + outcome, no playbook)",
                         "db": d.kind, "depth": depth, "tasks": total, "tasks_per_s": total / wall,
                         "claim_s": sum(r["claim_s"] for r in results),
                         "record_s": sum(r["record_s"] for r in results),
                         "pages": sum(r["pages"] for r in results),
                         "pages_s": sum(r["pages_s"] for r in results),
                         "ms_per_page": 1000 * sum(r["pages_s"] for r in results)
                         / max(1, sum(r["pages"] for r in results)),
                         "claimer_rss_mb": " ".join(str(r["rss_mb"]) for r in results),
                         "load": " ".join(f"{x:.1f}" for x in os.getloadavg())})
            print(json.dumps(rows[-1]), flush=True)
        finally:
            d.close()
    base = rows[0]["tasks_per_s"] if rows else None
    for r in rows:
        r["ratio_vs_shallowest"] = round(r["tasks_per_s"] / base, 2)
    return rows


def bench_claims_memory(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    """A runner's memory along many claims and outcomes (issue 19): one claimer process
    (JobManager.claim with 4 slots + outcome.record, as a runner's loop without playbooks)
    drains a queue of `claim_depths[-1]` enable tasks over 100 servers; its RSS after 1,000,
    5,000 and 20,000 tasks and at the end."""
    if db.kind != "mysql":
        return []
    depth = size["claim_depths"][-1]
    nids = synthetic.build(db.engine, servers=100, platforms=100, sites=depth)
    tasks = synthetic.queue_tasks(db.engine, "enable", nids["sites"])
    r = _run_claimers(db.url, 1, 4)[0]
    done = _task_outcomes(db, tasks)
    if r["tasks"] != depth or done["success"] != depth:
        raise RuntimeError(f"claims_memory: {r['tasks']} claimed, {done} recorded, expected {depth}")
    at = {int(k): v for k, v in r["rss_at"].items()}
    row = {"measure": f"claims_memory: one claimer process, {depth} enable tasks over 100 servers "
                      "(claim + outcome, 4 slots)", "db": db.kind, "tasks": depth,
           "tasks_per_s": depth / (r["last_done"] - r["first"]),
           **{f"rss_after_{k}_mb": v for k, v in sorted(at.items())}, "rss_end_mb": r["rss_mb"]}
    if 1000 in at:
        row["end_vs_1000"] = round(r["rss_mb"] / at[1000], 3)
    row["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return [row]


def bench_inventory_memory(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    """RSS of a process building 30 one-site run inventories, then two whole ones, on a
    frontend of run_cost's largest size (benchmarks/inventory_memory.py)."""
    from sqlalchemy import select

    from aegir_ansible.db import models as m

    n = max(size["run_cost_sites"])
    nids = synthetic.build(db.engine, servers=100, platforms=100, sites=n)
    picks = nids["sites"][:: max(1, len(nids["sites"]) // 30)][:30]
    with db.engine.connect() as c:
        names = list(c.execute(select(m.HostingContext.name).where(m.HostingContext.nid.in_(picks))).scalars())
    p = subprocess.run([sys.executable, "-m", "benchmarks.inventory_memory", db.url, *names], cwd=REPO,
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"inventory_memory failed: {p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return [{"measure": f"inventory_memory: one process, 30 one-site run inventories then 2 whole ones, "
                        f"{n} sites, 100 servers, 100 platforms", "db": db.kind, "sites": n, **r,
             "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}]


# -- 5. runner memory -----------------------------------------------------------------------

def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def bench_memory(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    from sqlalchemy import func, select

    from aegir_ansible.db import models as m

    n, batch = size["memory_tasks"], 10
    nids = synthetic.build(db.engine, servers=10, platforms=10, sites=n)
    tasks = synthetic.queue_tasks(db.engine, "verify", nids["sites"])
    env = {**os.environ, "AEGIR_DB_URL": db.url}
    env.pop("ANSIBLE_CONFIG", None)
    start = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "aegir"), "queue", "run", "--once", "--batch-size", str(batch),
                             "--playbooks", str(REPO / "benchmarks" / "playbooks")],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    from aegir_ansible.db.queue_tables import QueueRunner

    samples = []  # (tasks done, rss), from the moment the runner has registered itself
    while proc.poll() is None:
        with db.engine.connect() as c:
            if c.execute(select(func.count()).select_from(QueueRunner)
                         .where(QueueRunner.pid == proc.pid)).scalar():
                break
        time.sleep(0.05)
    while proc.poll() is None:
        rss = _rss_mb(proc.pid)
        with db.engine.connect() as c:
            done = c.execute(select(func.count()).select_from(m.HostingTask)
                             .where(m.HostingTask.task_status.in_((m.TASK_SUCCESS, m.TASK_ERROR,
                                                                   m.TASK_WARNING)))).scalar()
        if rss is not None:
            samples.append((done, rss))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"queue run failed: {proc.stderr.read().decode()[-2000:]}")
    got = _task_outcomes(db, tasks)
    idle = samples[0][1]  # the runner started and registered, before its first run ends
    warm = next((r for d, r in samples if d >= n // 10), samples[-1][1])
    end = samples[-1][1]
    return [{"measure": f"memory: runner RSS over {n} tasks ({n // batch} runs of a no-op playbook, "
                        f"batch {batch})", "db": db.kind, "tasks": n, "median_s": wall,
             "tasks_ok": f"{got['success']}/{n}", "rss_start_mb": round(idle, 1),
             "rss_after_10pct_mb": round(warm, 1), "rss_end_mb": round(end, 1),
             "growth_from_start_pct": round(100 * (end - idle) / idle, 1),
             "growth_after_10pct_pct": round(100 * (end - warm) / warm, 1)}]


def bench_run_cost(db: Database, size: dict, repeat: int, workdir: Path) -> list[dict]:
    from . import run_cost

    sizes = list(size["run_cost_sites"])
    made = [db]

    def fresh():  # the given database first, then a new one of the same kind per size
        if made:
            return made.pop()
        sub = workdir / uuid.uuid4().hex[:8]
        sub.mkdir()
        return Database(db.kind, sub, OPTIONS["mysql_url"])

    return run_cost.bench_run_cost(fresh, sizes, repeat, full_at=[max(sizes)])


MEASUREMENTS = {"inventory": bench_inventory, "reverify": bench_reverify,
                "reverify_https": bench_reverify_https, "latency": bench_latency,
                "claims": bench_claims, "memory": bench_memory,
                "flush_cache": catalogue.bench_flush_cache, "run_cost": bench_run_cost,
                "claims_depth": bench_claims_depth, "claims_memory": bench_claims_memory,
                "inventory_memory": bench_inventory_memory}


def format_tables(rows: list[dict], provenance: str = "") -> dict[str, str]:
    """One table per measurement (rows grouped by the prefix of `measure`), each with the
    line saying which command produced it."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["measure"].split(":", 1)[0], []).append(r)
    return {name: f"### {name}\n\n{provenance}{format_rows(group)}" for name, group in groups.items()}


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


def _write_results(path: Path, size: str, head: str, tables: dict[str, str]) -> str:
    """Replace, in this size's section of RESULTS.md, the tables of the measurements just
    run; keep the other measurements' tables (each says the command that produced it) and
    the other sizes' sections. Returns the new section."""
    sections: dict[str, str] = {}
    if path.is_file():
        for part in path.read_text().split("\n## --size ")[1:]:
            sections[part.split("\n", 1)[0].strip()] = "## --size " + part.rstrip("\n") + "\n"
    kept: dict[str, str] = {}
    if size in sections:
        old = sections[size]
        command = re.search(r"^Command: .*$", old, re.M)
        for part in old.split("\n### ")[1:]:
            name, body = part.split("\n", 1)
            body = body.strip("\n")
            if command and not body.startswith("Command:"):
                body = command.group(0) + "\n\n" + body  # from a run of the older layout
            kept[name.strip()] = f"### {name.strip()}\n\n{body}"
    kept.update(tables)
    tables_order = ("inventory", "run_cost", "re-verify", "latency", "claims", "claims_depth",
                    "claims_memory", "inventory_memory", "memory", "flush_cache")
    order = [n for n in tables_order if n in kept] + [n for n in kept if n not in tables_order]
    sections[size] = head + "\n\n".join(kept[n] for n in order) + "\n"
    order = sorted(sections, key=lambda k: (k != "small", k))
    path.write_text("# Benchmark results\n\nWritten by `python -m benchmarks.run` (see README.md); one "
                    "section per size; each table from the latest run that measured it.\n\n" +
                    "\n".join(sections[k] for k in order))
    return sections[size]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--only", default=",".join(MEASUREMENTS), help="comma-separated measurements")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", default="sqlite,mysql", help="sqlite, mysql or both")
    ap.add_argument("--mysql-url", default=os.environ.get("AEGIR_BENCH_MYSQL_URL",
                                                          "mysql+pymysql://root@127.0.0.1:3306"))
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--mitogen", action="store_true",
                    help="also measure re-verify and latency with Mitogen (pip install mitogen)")
    args = ap.parse_args(argv)
    OPTIONS["mitogen"] = args.mitogen
    OPTIONS["mysql_url"] = args.mysql_url
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
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    sizes = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {' / '.join(f'{x:,}' for x in v)}"
                      for k, v in size.items())
    command = " ".join(argv if argv is not None else sys.argv[1:])
    provenance = (f"Command: `.venv/bin/python -m benchmarks.run {command}`; median of "
                  f"{args.repeat} runs; load average at the end {load} (other work on the "
                  "machine inflates wall times).\n\n")
    head = (f"## --size {args.size}\n\nSizes: {sizes}.\n\nMachine (latest run): {machine()}.\n\n")
    section = _write_results(Path(args.results), args.size, head, format_tables(all_rows, provenance))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
