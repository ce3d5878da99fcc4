"""Process control of a run: every process started for a run carries the marker variable
`AEGIR_QUEUE_RUN=<run id>` in its environment, so that what ansible's workers leave (they call
setsid(), escaping the process group) can still be found and killed; and `bin/ansible-playbook`
of the run directory is a wrapper that asks the kernel to SIGTERM ansible-playbook if the
runner dies (PR_SET_PDEATHSIG), then execs the real one: a runner killed with SIGKILL takes its
playbooks down with it instead of leaving them running unsupervised."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

MARKER = "AEGIR_QUEUE_RUN"


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def parent_pid(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
        return int(data[data.rfind(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
        return data[data.rfind(")") + 2:].split()[0] in ("Z", "X")
    except OSError:
        return True


def marked_processes(run_id: str) -> list[int]:
    """Live processes started for this run (they inherit the marker variable)."""
    marker = f"{MARKER}={run_id}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and _environ_has(int(entry), marker):
            if not _zombie(int(entry)):
                found.append(int(entry))
    return found


def kill_marked(run_id: str, grace: float = 1.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process of the run still alive; returns their pids."""
    pids = marked_processes(run_id)
    if not pids:
        return []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline and any(not _zombie(p) for p in pids):
        time.sleep(0.05)
    for pid in marked_processes(run_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


WRAPPER = """#!{python} -IS
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != {parent}:
    sys.exit("aegir queue runner is gone")
os.execv({real!r}, [{real!r}] + sys.argv[1:])
"""


def find_ansible_playbook() -> str:
    here = Path(sys.executable).parent / "ansible-playbook"
    if here.exists():
        return str(here)
    found = shutil.which("ansible-playbook")
    if not found:
        raise RuntimeError("ansible-playbook not found beside the Python running the queue nor on PATH")
    return found


def wrapper_script() -> str:
    """The text of the run's bin/ansible-playbook (the runner is its parent)."""
    return WRAPPER.format(python=sys.executable, parent=os.getpid(), real=find_ansible_playbook())


def main_pid(run_id: str) -> int | None:
    """The run's ansible-playbook: the marked process whose parent is this runner."""
    me = os.getpid()
    for pid in marked_processes(run_id):
        if parent_pid(pid) == me:
            return pid
    return None
