"""Process helpers for the harness: start daemons, find and stop the ones it started.

Every daemon the harness starts gets a config file under its slot directory, so a leftover from
a killed test session can be recognised by its command line (or its pid file) and ended by pid,
never by name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path


def _ppid_map() -> dict[int, int]:
    """Map pid -> parent pid for every process (read from /proc/<pid>/stat)."""
    result = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        result[int(entry)] = int(fields[1])
    return result


def cmdline(pid: int) -> str:
    """The process' command line with NULs as spaces ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def exe(pid: int) -> str:
    """The process' executable path ('' if unknown)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2 :].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """All processes below pid (children first level first)."""
    ppids = _ppid_map()
    children: dict[int, list[int]] = {}
    for child, parent in ppids.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, timeout: float = 5.0) -> None:
    """Stop a daemon and everything it spawned (workers, sshd sessions): TERM, then KILL.

    The whole tree is collected before signalling, because sshd's session processes outlive the
    listener and would keep serving an old ControlPersist connection.
    """
    pids = [pid, *descendants(pid)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def read_pidfile(path: Path) -> int | None:
    """The pid stored in a pid file, or None."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pids_mentioning(text: str) -> list[int]:
    """Pids whose command line contains text (used to find leftovers of a slot directory)."""
    me = os.getpid()
    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and int(entry) != me and text in cmdline(int(entry))
    ]


def listeners(address: str, port: int) -> list[int]:
    """Pids of the processes listening on address:port (TCP), from `ss`."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"src {address}:{port}"], capture_output=True, text=True, check=False
    ).stdout
    return sorted({int(m) for m in re.findall(r"pid=(\d+)", out)})


def port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to address:port succeeds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll predicate() until true; raise TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_checked(argv: list[str], what: str, log: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its output (and the tail of a log file) to explain why.

    Output goes to a temporary file rather than a pipe: daemons that fork keep inherited pipes
    open, which would make a pipe-reading caller wait forever.
    """
    import tempfile

    with tempfile.TemporaryFile() as out:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs
        )
        out.seek(0)
        output = out.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = ""
        if log is not None and log.exists():
            tail = "\n--- " + str(log) + " ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{what} failed (rc={proc.returncode}): {' '.join(argv)}\n{output}{tail}")
    proc.stdout = output
    return proc
