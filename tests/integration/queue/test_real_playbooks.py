"""The shipped playbooks (playbooks/lock.yml, unlock.yml) through the runner."""

from __future__ import annotations

import pytest

from aegir_ansible import paths
from aegir_ansible.db import models as m

from .conftest import configure, run_once

REAL = paths.playbooks_dir()


@pytest.mark.skipif(not (REAL / "lock.yml").is_file() or not (REAL / "unlock.yml").is_file(),
                    reason="playbooks/lock.yml and unlock.yml are not there yet")
def test_lock_and_unlock_a_platform_with_the_real_playbooks(world, tmp_path):
    w = world
    configure(w.url, retry_max_attempts=1)
    root = tmp_path / "platform"
    root.mkdir()
    w.server("web.local")
    p = w.write(lambda fe: fe.add_platform("Real", str(root), "server_weblocal", queue_verify=False))
    gone = w.write(lambda fe: fe.add_platform("Gone", str(tmp_path / "missing"), "server_weblocal",
                                              queue_verify=False))
    lock = w.task("lock", "platform_Real")
    lock_gone = w.task("lock", "platform_Gone")
    run_once(w.url, playbooks_dir=REAL)
    assert w.status(lock) == m.TASK_SUCCESS, w.log_text(lock)
    assert w.row(m.HostingPlatform, p).status == m.PLATFORM_LOCKED
    assert "Check the platform root" in w.log_text(lock) or "Look at the platform root" in w.log_text(lock)
    assert w.status(lock_gone) == m.TASK_ERROR
    assert "does not exist" in w.log_text(lock_gone)
    assert w.row(m.HostingPlatform, gone).status == m.PLATFORM_ENABLED
    unlock = w.task("unlock", "platform_Real")
    run_once(w.url, playbooks_dir=REAL)
    assert w.status(unlock) == m.TASK_SUCCESS, w.log_text(unlock)
    assert w.row(m.HostingPlatform, p).status == m.PLATFORM_ENABLED
