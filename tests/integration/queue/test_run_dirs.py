"""Private run directories (issue 12, point 10): a runner killed with SIGKILL leaves its run
directory behind; the next runner started on the machine removes it, never the directory of
a runner still alive; the inventory with the database admin password is on disk only until
ansible has read it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from aegir_ansible.db import models as m
from aegir_ansible.queue import rundirs

from .conftest import procs_with, run_once, spawn_runner, wait_for
from .test_faults import unique_sleep

ADMIN_PASSWORD = "s3cret-admin-pw"  # World.server's db admin password


def _run_dirs(base: Path) -> list[Path]:
    return sorted(p for p in base.glob(f"aegir-runs-*/{rundirs.PREFIX}*") if p.is_dir())


def _files_holding(paths: list[Path], secret: str) -> list[Path]:
    found = []
    for top in paths:
        for f in top.rglob("*"):
            if f.is_file() and secret.encode() in f.read_bytes():
                found.append(f)
    return found


def test_killed_runner_run_dir_is_swept_at_the_next_start(world, tmp_path, monkeypatch):
    w = world
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    base = tmp_path / "runs"
    base.mkdir()
    monkeypatch.setenv("AEGIR_RUN_DIR", str(base))
    secs = unique_sleep()
    task = w.task("install", "a.test", sleep=secs)
    proc = spawn_runner(w.url, env={"AEGIR_RUN_DIR": str(base)}, log_path=tmp_path / "runner.log")
    try:
        wait_for(lambda: procs_with(f"sleep {secs}"), 60, "the playbook's sleep")
        left = _run_dirs(base)
        assert len(left) == 1
        # Ansible has read the inventory: the admin password is in no file any more.
        assert not _files_holding(left, ADMIN_PASSWORD)
        # A sweep while its runner is alive leaves it alone.
        assert rundirs.sweep() == []
        assert _run_dirs(base) == left
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not procs_with(f"sleep {secs}"), 10, "the orphaned playbook to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _run_dirs(base) == left  # nobody removed it: the runner was killed
    assert w.status(task) == m.TASK_PROCESSING
    run_once(w.url)  # the next runner's start
    assert _run_dirs(base) == []


def test_run_dir_is_removed_when_the_run_ends(world, tmp_path, monkeypatch):
    w = world
    w.server("web.local")
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    base = tmp_path / "runs"
    base.mkdir()
    monkeypatch.setenv("AEGIR_RUN_DIR", str(base))
    task = w.task("verify", "a.test")
    run_once(w.url)
    assert w.status(task) == m.TASK_SUCCESS, w.log_text(task)
    assert _run_dirs(base) == []
    assert [p.name for p in base.iterdir()] == [f"aegir-runs-{os.getuid()}"]
