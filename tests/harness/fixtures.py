"""pytest plugin: real test servers (sshd + nginx/Apache + PHP-FPM), MariaDB, playbook runner.

Enable with `pytest_plugins = ["tests.harness.fixtures"]` in the top conftest.py.

Fixtures:
  test_servers     (session) {"nginx": TestServer@127.0.0.2, "apache": TestServer@127.0.0.3}
  fresh_servers    (module)  the same servers after reset(): empty aegir_root, no crontab
  test_db_server   (session) TestDbServer: MariaDB 127.0.0.1:3306 + a session admin user
  make_platform    (session) factory make_platform(server, name) -> platform path
  run_playbook     (session) the tests.harness.ansible.run_playbook function
  acme_server      (session) AcmeServer: Pebble (ACME test CA) + a DNS server for its validation

Servers start once per session (well under a second) and stop at its end. Each session takes
an exclusive slot (see servers.py), so parallel pytest runs or pytest-xdist workers get
different addresses (127.0.<slot>.2/3): tests must use server.address, never a literal.
Needs root and the packages of scripts/install-system-deps.sh.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from . import ansible as _ansible
from .acme import PEBBLE, AcmeServer
from .db import TestDbServer
from .db import require as require_mariadb
from .platform import make_platform as _make_platform
from .servers import APACHE, NGINX, SSHD, ServerSet, Slot, php_fpm_binary

REQUIRED_BINARIES = (SSHD, NGINX, APACHE, "/usr/bin/ssh-keygen", "/usr/bin/crontab", "/usr/bin/ss")


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end test against the harness' real servers")


def _check_prerequisites() -> None:
    """Fail early with the fix when the machine cannot run the harness."""
    if os.geteuid() != 0:
        pytest.skip("the test servers need root (users, port 22/80, sshd)")
    missing = [b for b in REQUIRED_BINARIES if not os.path.exists(b)]
    try:
        php_fpm_binary()
    except RuntimeError:
        missing.append("php-fpm")
    if missing or not shutil.which("php"):
        pytest.fail(f"missing {missing or ['php']}: run scripts/install-system-deps.sh", pytrace=False)


@pytest.fixture(scope="session")
def test_servers():
    """The session's two servers, keyed "nginx" and "apache"; stopped at session end."""
    _check_prerequisites()
    slot = Slot.acquire()
    try:
        server_set = ServerSet.start(slot)
        try:
            yield server_set.servers
        finally:
            server_set.stop()
    finally:
        slot.release()


@pytest.fixture(scope="module")
def fresh_servers(test_servers):
    """test_servers reset at the start of the module (nothing left by earlier modules)."""
    for server in test_servers.values():
        server.reset()
    return test_servers


@pytest.fixture(scope="session")
def test_db_server():
    """MariaDB with a session admin user (random password, dropped at session end)."""
    require_mariadb()
    db = TestDbServer()
    db.start()
    try:
        yield db
    finally:
        db.stop()


@pytest.fixture(scope="session")
def make_platform(test_servers):
    """Factory: make_platform(server, name) copies the fixture platform; returns its path."""
    return _make_platform


@pytest.fixture(scope="session")
def run_playbook():
    """The playbook runner (see tests.harness.ansible.run_playbook)."""
    return _ansible.run_playbook


@pytest.fixture(scope="session")
def acme_server(test_servers):
    """Pebble on loopback validating HTTP-01 on the servers' http port; its DNS server knows
    only the names a test adds to `acme_server.dns.names` (name -> server address)."""
    if not os.path.exists(PEBBLE):
        pytest.fail("pebble is not installed: run scripts/install-system-deps.sh", pytrace=False)
    any_server = next(iter(test_servers.values()))
    acme = AcmeServer(Path(any_server.dir).parent, http_port=any_server.http_port)
    try:
        yield acme.start()
    finally:
        acme.stop()
