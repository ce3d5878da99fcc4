"""Run the aegir_db / aegir_cron roles with ansible-playbook against localhost (connection local).

Extra vars (which carry passwords) go through a 0600 file (`-e @file`), never the command line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
BIN_DIR = Path(sys.executable).parent
MODULE_PATH = REPO_ROOT / "plugins" / "modules" / "aegir_crontab.py"
TARGET_PYTHON = "/usr/bin/python3"

_RECAP = re.compile(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Run:
    rc: int
    output: str
    changed: int
    failed: int

    def __str__(self) -> str:  # shown by pytest on assertion failures
        return f"rc={self.rc} changed={self.changed} failed={self.failed}\n{self.output[-6000:]}"


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=tempfile.gettempdir(),
        PATH=f"{BIN_DIR}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    return env


def write_inventory(directory: Path) -> Path:
    inv = directory / "inventory.ini"
    if not inv.exists():
        inv.write_text(f"localhost ansible_connection=local ansible_python_interpreter={TARGET_PYTHON}\n")
    return inv


def role_playbook(directory: Path, role: str, entry: str | list = "main") -> Path:
    """A playbook that includes the role once per entry; entry is a name or a list of
    (name, task vars) pairs (task vars must be plain data: they are templated)."""
    entries = [(entry, {})] if isinstance(entry, str) else entry
    fd, path = tempfile.mkstemp(prefix=f"pb-{role}-", suffix=".yml", dir=directory)
    text = "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
    for name, task_vars in entries:
        text += (f"    - name: Run {role} {name}\n"
                 "      ansible.builtin.include_role:\n"
                 f"        name: aegir.hosting.{role}\n"
                 f"        tasks_from: {name}\n"
                 f"      vars: {json.dumps(task_vars)}\n")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(path)


def run_role(directory: Path, role: str, entry: str | list = "main", extra: dict | None = None,
             check: bool = False, diff: bool = False, verbosity: int = 0, timeout: int = 120) -> Run:
    directory.mkdir(parents=True, exist_ok=True)
    inv = write_inventory(directory)
    pb = role_playbook(directory, role, entry)
    fd, vars_path = tempfile.mkstemp(prefix="vars-", suffix=".json", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(extra or {}, f)
    os.chmod(vars_path, 0o600)
    cmd = [str(BIN_DIR / "ansible-playbook"), "-i", str(inv), "-e", f"@{vars_path}", str(pb)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout)
    os.unlink(vars_path)
    os.unlink(pb)
    out = proc.stdout + proc.stderr
    m = _RECAP.search(out)
    changed, failed = (int(m.group(2)), int(m.group(4))) if m else (-1, -1)
    return Run(proc.returncode, out, changed, failed)


def module_args_file(directory: Path, args: dict, check: bool = False, diff: bool = False) -> Path:
    payload = dict(args)
    payload["_ansible_check_mode"] = check
    payload["_ansible_diff"] = diff
    fd, path = tempfile.mkstemp(prefix="args-", suffix=".json", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, f)
    return Path(path)


def start_module(directory: Path, args: dict, check: bool = False, diff: bool = False) -> subprocess.Popen:
    """Start the aegir_crontab module directly (as Ansible would run it), without a playbook."""
    path = module_args_file(directory, args, check, diff)
    return subprocess.Popen([sys.executable, str(MODULE_PATH), str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=directory)


def run_module(directory: Path, args: dict, check: bool = False, diff: bool = False) -> dict:
    proc = start_module(directory, args, check, diff)
    out, err = proc.communicate(timeout=60)
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"module printed no JSON: rc={proc.returncode}\n{out}\n{err}") from None
