"""Private run directories: one per playbook run, removed when the run ends, and removed
by the next runner started on the machine when their runner was killed (SIGKILL, power
loss) before it could remove them.

A run directory holds the run's inventory (with the database admin passwords) and task
arguments. It lives under one base directory per user (`<tmp>/aegir-runs-<uid>`, 0700,
refused if it is a symlink or someone else's), and is held for its whole life by an
exclusive flock on the directory itself: the kernel drops the lock when its process dies,
however it dies, so a directory whose lock can be taken belongs to no live runner. A
shared lock on the base's `.lock` covers creating a directory and locking it, so a sweep
(exclusive lock on `.lock`) never sees a directory between the two.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("aegir.queue")

PREFIX = "aegir-run-"


def base_dir() -> Path:
    """The user's base directory of run directories, made safe to use (or RuntimeError)."""
    base = Path(os.environ.get("AEGIR_RUN_DIR") or tempfile.gettempdir()) / f"aegir-runs-{os.getuid()}"
    try:
        base.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RuntimeError(f"{base} is not a directory of user {os.getuid()}: not using it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(base, 0o700)
    return base


@contextmanager
def _base_lock(base: Path, mode: int):
    fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


class RunDir:
    """A fresh private directory (0700) held by this process until `remove()`."""

    def __init__(self) -> None:
        base = base_dir()
        with _base_lock(base, fcntl.LOCK_SH):
            self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
            # O_CLOEXEC: ansible-playbook and its workers must not inherit (and so hold) it.
            self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.chmod(self.path, stat.S_IRWXU)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sweep() -> list[Path]:
    """Remove the run directories no live process holds; returns them."""
    try:
        base = base_dir()
    except (OSError, RuntimeError) as exc:
        log.warning("run directories not swept: %s", exc)
        return []
    removed: list[Path] = []
    try:
        _sweep(base, removed)
    except OSError as exc:  # a sweep never stops a runner from starting
        log.warning("sweeping run directories in %s failed: %s", base, exc)
    if removed:
        log.info("removed %d run director%s left by runners that were killed: %s", len(removed),
                 "y" if len(removed) == 1 else "ies", ", ".join(p.name for p in removed))
    return removed


def _sweep(base: Path, removed: list[Path]) -> None:
    with _base_lock(base, fcntl.LOCK_EX):
        for entry in os.scandir(base):
            if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its runner is alive
            else:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
            finally:
                os.close(fd)
