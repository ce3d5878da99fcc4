"""docs/production.md's host key checking, against a real sshd: the shipped ansible.cfg
connects without checking (its documented default), and the two queue.env lines the guide
gives turn checking on: an unknown host key is refused, a recorded one is accepted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def documented_env(known_hosts: Path) -> dict[str, str]:
    """The ANSIBLE_* lines of docs/production.md's queue.env, known_hosts file replaced."""
    doc = (ROOT / "docs" / "production.md").read_text()
    env = {}
    for name in ("ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_SSH_ARGS"):
        m = re.search(rf"^{name}=(.*)$", doc, re.M)
        assert m, f"{name} is not in docs/production.md"
        env[name] = m.group(1).strip().strip('"').replace("/etc/aegir/known_hosts", str(known_hosts))
    return env


@pytest.fixture
def socket_root():
    """A short directory for ssh control sockets: pytest's tmp paths exceed the 108 bytes
    a unix socket path may have."""
    path = Path(tempfile.mkdtemp(prefix="hk", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ping(server, tmp_path, socket_root, extra_env) -> subprocess.CompletedProcess:
    # Each call its own control socket directory: a persistent ssh master of an earlier
    # call would carry the connection without a new host key check (ANSIBLE_HOME does not
    # move it: the unit sets ANSIBLE_SSH_CONTROL_PATH_DIR as well).
    calls = len(list(tmp_path.glob("ansible*")))
    home = tmp_path / f"ansible{calls}"
    sockets = Path(tempfile.mkdtemp(prefix=f"{calls}-", dir=socket_root))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_HOME": str(home), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(sockets), **extra_env}
    env.pop("ANSIBLE_SSH_COMMON_ARGS", None)
    return subprocess.run(
        [str(BIN / "ansible"), "all", "-i", f"{server.address},", "-m", "ansible.builtin.ping",
         "-e", f"ansible_port={server.ssh_port}", "-e", f"ansible_user={server.ssh_user}",
         "-e", f"ansible_ssh_private_key_file={server.ssh_private_key}",
         "-e", "ansible_python_interpreter=/usr/bin/python3"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_host_key_checking_as_documented(test_servers, tmp_path, socket_root):
    server = test_servers["nginx"]
    # The shipped default: no checking (an unknown server is trusted).
    res = ping(server, tmp_path, socket_root, {})
    assert res.returncode == 0 and "pong" in res.stdout, res.stdout + res.stderr

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    env = documented_env(known_hosts)
    assert "StrictHostKeyChecking=yes" in env["ANSIBLE_SSH_ARGS"]
    res = ping(server, tmp_path, socket_root, env)
    assert res.returncode != 0 and "UNREACHABLE" in res.stdout, res.stdout + res.stderr
    assert "Host key verification failed" in res.stdout + res.stderr

    # ssh-keyscan as the guide shows (with the harness' port), then it connects.
    scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(server.ssh_port), server.address],
                          capture_output=True, text=True, timeout=60)
    assert scan.returncode == 0 and scan.stdout.strip(), scan.stderr
    known_hosts.write_text(scan.stdout)
    res = ping(server, tmp_path, socket_root, env)
    assert res.returncode == 0 and "pong" in res.stdout, res.stdout + res.stderr

    # A key that changed (another one recorded for the address) is refused again.
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                           capture_output=True, timeout=60)
    assert other.returncode == 0
    host = server.address if server.ssh_port == 22 else f"[{server.address}]:{server.ssh_port}"
    known_hosts.write_text(f"{host} {(tmp_path / 'k.pub').read_text().split(' ')[0]} "
                           f"{(tmp_path / 'k.pub').read_text().split(' ')[1]}\n")
    res = ping(server, tmp_path, socket_root, env)
    assert res.returncode != 0 and "UNREACHABLE" in res.stdout, res.stdout + res.stderr
