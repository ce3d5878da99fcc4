"""Fixtures of the aegir_server / aegir_platform / aegir_site / aegir_vhost role tests.

The harness plugin (tests.harness.fixtures) is enabled by tests/conftest.py.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from .helpers import Inventory


class Env:
    """One module's servers, platforms and inventory; `run(playbook, limit)` runs a playbook."""

    def __init__(self, servers, db, make_platform, run_playbook, tmp: Path):
        self.servers = servers
        self.db = db
        self.run_playbook = run_playbook
        self.tmp = tmp
        self.token = secrets.token_hex(3)
        self.inv = Inventory(db)
        self.platform_roots = {}
        for key, server in servers.items():
            self.inv.add_server(server)
            root = make_platform(server, "d10")
            self.platform_roots[key] = root
            self.inv.add_platform(server, f"platform_d10_{key}", root)
        self.created_dbs: list[str] = []

    def db_name(self, label: str) -> str:
        name = f"t{self.token}_{label}"[:60]
        self.created_dbs.append(name)
        return name

    def add_site(self, key: str, uri: str, label: str, **extra) -> str:
        return self.inv.add_site(self.servers[key], f"platform_d10_{key}", uri, self.db_name(label), **extra)

    def inventory_path(self) -> Path:
        return self.inv.write(self.tmp / "inventory.yml")

    def run(self, playbook: str, limit: str | None = None, **kwargs):
        return self.run_playbook(f"playbooks/{playbook}", self.inventory_path(), limit=limit, **kwargs)

    def site_dir(self, key: str, uri: str) -> Path:
        return Path(self.platform_roots[key]) / "sites" / uri

    def vhost(self, key: str, uri: str) -> Path:
        server = self.servers[key]
        return Path(server.aegir_root) / "config" / f"server_{key}" / server.http_service / "vhost.d" / f"{uri}.conf"

    def cleanup(self):
        for name in self.created_dbs:
            try:
                self.db.drop_database(name)
            except Exception:  # noqa: BLE001
                pass
            for host in self.db.user_hosts(name):
                try:
                    self.db.drop_user(name, host)
                except Exception:  # noqa: BLE001
                    pass


@pytest.fixture(scope="module")
def env(fresh_servers, test_db_server, make_platform, run_playbook, tmp_path_factory):
    """Both servers reset, a platform on each, servers and platforms verified."""
    e = Env(fresh_servers, test_db_server, make_platform, run_playbook, tmp_path_factory.mktemp("roles"))
    e.run("verify.yml", limit="aegir_servers:aegir_platforms").assert_ok()
    yield e
    e.cleanup()
