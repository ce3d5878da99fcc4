"""What a run's directory holds, prepared from the database before ansible starts.

Each run gets a fresh private data directory (mode 0700, rundirs.py) that is removed
afterwards, or by the next runner started on the machine if this one is killed:

- `inventory/hosts.json` (0600): the inventory built in-process from the database (every
  string wrapped `__ansible_unsafe`), plus `aegir_task_args` / `aegir_task_nid` /
  `aegir_task_type` as variables of each target host, and the group `aegir_run_targets`
  of the run's target hosts. It holds the database admin passwords, so the script that
  hands it to ansible removes it as soon as ansible has read it;
- `extravars.json` (0600): for a single-task run, the same three values as extra vars,
  also wrapped as untrusted: task arguments come from the database and are never
  templated;
- `bin/ansible-playbook`: a tiny wrapper that asks the kernel to SIGTERM ansible-playbook
  if the runner dies (PR_SET_PDEATHSIG), then execs the real one. A runner killed with
  SIGKILL thus takes its playbooks down with it instead of leaving them running
  unsupervised.

The limit is that one group, never a list of names: Ansible reads a limit as patterns
(`,` `:` `&` `!` `~` `*` `[` and group names), so a name could match other hosts. A run whose
playbook reached a host outside its targets fails all its tasks.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.inventory import build_inventory, run_limit, script_output, unsafe
from aegir_ansible.queries import isolation_refusal
from aegir_ansible.tasks import playbook_name

from . import process, task_args
from .types import RunResult

# The inventory group of a run's target hosts, its --limit ("aegir_" names are reserved:
# no context can be named so, validation.check_context_name).
TARGETS_GROUP = "aegir_run_targets"


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def prepare(tmp: Path, res: RunResult, engine, playbooks_dir: Path, host_vars: dict,
            fail) -> tuple[str, list[str]] | None:
    """Fill the run directory `tmp` for the run of `res` (module docstring); set the run's
    hosts, limit and batch server on `res`. A task that cannot run is failed with
    fail(task, message). Returns (playbook file name, target hosts), or None when no task
    of the run can run."""
    run = res.run
    with Session(engine) as session:
        batch_server = None
        if run.task_type and len(run.tasks) > 1 and run.server is not None and \
                (playbooks_dir / f"{playbook_name(run.task_type)}_batch.yml").is_file() and \
                all(t.target_type == "site" for t in run.tasks):
            batch_server = session.execute(
                select(m.HostingContext.name).where(m.HostingContext.nid == run.server)
            ).scalar()
        args_rows = session.execute(
            select(m.HostingTaskArgument.vid, m.HostingTaskArgument.name,
                   m.HostingTaskArgument.value)
            .where(m.HostingTaskArgument.vid.in_([t.vid for t in run.tasks]))
        ).all()
        args: dict[int, dict] = {t.vid: {} for t in run.tasks}
        for vid, name, value in args_rows:
            if name is not None:
                args[vid][name] = value if value is not None else ""
        # Node and backup ids in the arguments, resolved for the playbook (task_args.py).
        resolved: dict[int, dict | str] = {}
        for t in run.tasks:
            try:
                resolved[t.vid] = task_args.resolve(session, t, args[t.vid])
            except task_args.ArgumentError as exc:
                resolved[t.vid] = f"Bad task argument: {exc}."
        # Only the run's targets (and the sites their arguments name) among the sites.
        inv = build_inventory(session, limit=run_limit((t.target_name, args[t.vid]) for t in run.tasks))
    hosts = []
    for t in run.tasks:
        name = t.target_name
        if name in inv.rejected:
            fail(t, f"Refused: the {inv.rejected[name]}.")
            continue
        if not name or name not in inv.hosts:
            fail(t, f"The {t.target_type} {name or '#' + str(t.rid)} is not in the "
                          "inventory (is its server or platform deleted?).")
            continue
        resolved_args = resolved[t.vid]
        if isinstance(resolved_args, str):
            fail(t, resolved_args)
            continue
        hv = inv.hosts[name]
        refusal = isolation_refusal(t.task_type, hv) if t.target_type == "site" else None
        if refusal:
            fail(t, refusal)
            continue
        hv.update(resolved_args)
        hv.update(host_vars)
        res.tasks[t.nid].facts = {k: v for k, v in hv.items() if "password" not in k}
        hv["aegir_task_args"] = args[t.vid]
        hv["aegir_task_nid"] = t.nid
        hv["aegir_task_type"] = t.task_type
        res.by_host.setdefault(name, []).append(t)
        hosts.append(name)
    if not hosts:
        return None
    if run.task_type is None:  # not reached: claims run only tasks of a known type (problem())
        raise RuntimeError(f"run {run.run_id} has no task type")
    playbook = playbooks_dir / f"{playbook_name(run.task_type)}.yml"
    res.limit = hosts
    extravars = {}
    if len(hosts) > 1 and batch_server and batch_server in inv.hosts:
        # Many sites of one server: the batch playbook on the server host, no task per site.
        playbook = playbooks_dir / f"{playbook_name(run.task_type)}_batch.yml"
        res.batch_server = batch_server
        res.limit = [batch_server]
        extravars = {"aegir_batch_sites": hosts}
    if not playbook.is_file():
        for t in run.tasks:
            if res.tasks[t.nid].status != TaskStatus.ERROR:
                fail(t, f"No playbook for task type {run.task_type!r}: "
                              f"{playbook} does not exist.")
        return None
    (tmp / "inventory").mkdir(mode=0o700)
    # The inventory script's own output (strings wrapped untrusted), served by a script
    # so that ansible's script plugin reads it exactly as from aegir_inventory.py.
    output = script_output(inv)
    output[TARGETS_GROUP] = {"hosts": list(res.limit)}
    output["all"]["children"].append(TARGETS_GROUP)
    hosts_json = shlex.quote(str(tmp / "inventory" / "hosts.json"))
    _write(tmp / "inventory" / "hosts.json", json.dumps(output))
    # Read once by ansible at start; then the passwords in it are on no disk any more.
    _write(tmp / "inventory" / "aegir.sh",
           f"#!/bin/sh\n/bin/cat {hosts_json} && exec /bin/rm -f {hosts_json}\n", 0o700)
    if len(run.tasks) == 1:
        t = run.tasks[0]
        _write(tmp / "extravars.json", json.dumps(unsafe({
            "aegir_task_args": args[t.vid], "aegir_task_nid": t.nid,
            "aegir_task_type": t.task_type})))
    else:
        _write(tmp / "extravars.json", json.dumps(unsafe(extravars)))
    (tmp / "bin").mkdir(mode=0o700)
    _write(tmp / "bin" / "ansible-playbook", process.wrapper_script(), 0o700)
    return playbook.name, hosts
