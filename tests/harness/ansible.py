"""Run ansible-playbook against the harness servers and read its recap.

`run_playbook` uses the ansible-playbook next to the running Python (so any venv works), the
repository's ansible.cfg, and a static YAML inventory written from a dict. Inventories and extra
vars can hold the db admin password, so both go through 0600 temp files (`-e @file`), never the
command line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_CFG = REPO_ROOT / "ansible.cfg"
BIN_DIR = Path(sys.executable).parent

_RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")


@dataclass
class HostStats:
    """One host's PLAY RECAP counters."""

    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class PlaybookResult:
    """rc, output and per-host recap of one ansible-playbook run."""

    rc: int
    stdout: str
    stderr: str
    cmd: list[str]
    stats: dict[str, HostStats] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Total changed tasks over all hosts."""
        return sum(s.changed for s in self.stats.values())

    @property
    def failed(self) -> int:
        """Total failed + unreachable over all hosts."""
        return sum(s.failed + s.unreachable for s in self.stats.values())

    def __str__(self) -> str:
        return f"ansible-playbook rc={self.rc}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def assert_ok(self) -> PlaybookResult:
        """Fail the test with the whole output unless rc is 0 and no host failed."""
        assert self.rc == 0 and self.failed == 0, str(self)
        return self

    def assert_idempotent(self) -> PlaybookResult:
        """Fail unless the run succeeded with changed=0 on every host."""
        self.assert_ok()
        assert self.changed == 0, "expected changed=0 everywhere\n" + str(self)
        return self


def parse_recap(stdout: str) -> dict[str, HostStats]:
    """Per-host counters from the PLAY RECAP section of the default callback's output."""
    stats: dict[str, HostStats] = {}
    in_recap = False
    for line in stdout.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if not in_recap:
            continue
        m = _RECAP_LINE.match(line.strip())
        if not m:
            continue
        counters = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        stats[m.group(1)] = HostStats(**{k: v for k, v in counters.items() if k in HostStats.__dataclass_fields__})
    return stats


def write_inventory(inventory: dict, path: Path) -> Path:
    """Write a static YAML inventory.

    `inventory` is either a full YAML inventory (a dict with an "all" key: hosts, vars,
    children) or a plain {host: vars} mapping, which becomes all.hosts.
    """
    data = inventory if "all" in inventory else {"all": {"hosts": inventory}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(json.loads(json.dumps(data)), fh, default_flow_style=False, sort_keys=False)
    return path


def run_playbook(
    playbook: str | os.PathLike,
    inventory: dict | str | os.PathLike,
    limit: str | None = None,
    extra_vars: dict | None = None,
    check: bool = False,
    diff: bool = False,
    tags: str | None = None,
    verbosity: int = 0,
    env: dict | None = None,
    timeout: float = 900,
) -> PlaybookResult:
    """Run one playbook (path absolute or relative to the repository) and return its result.

    Runs from the repository root with ANSIBLE_CONFIG=<repo>/ansible.cfg. Does not raise on a
    failed play: check `result.rc` / call `result.assert_ok()`.
    """
    playbook = Path(playbook)
    if not playbook.is_absolute():
        playbook = REPO_ROOT / playbook
    with tempfile.TemporaryDirectory(prefix="aegir-playbook-") as tmp:
        tmp = Path(tmp)
        if isinstance(inventory, dict):
            inventory_path = write_inventory(inventory, tmp / "inventory.yml")
        else:
            inventory_path = Path(inventory)
        cmd = [str(BIN_DIR / "ansible-playbook"), "-i", str(inventory_path), str(playbook)]
        if limit:
            cmd += ["--limit", limit]
        if extra_vars:
            vars_file = tmp / "extra_vars.json"
            fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(extra_vars, fh)
            cmd += ["-e", f"@{vars_file}"]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if tags:
            cmd += ["--tags", tags]
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        run_env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=run_env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    return PlaybookResult(proc.returncode, proc.stdout, proc.stderr, cmd, parse_recap(proc.stdout))
