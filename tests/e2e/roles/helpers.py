"""Static YAML inventories for the aegir_server/platform/site/vhost role tests.

Inventories are built from the harness' `server.inventory_vars()` and
`test_db_server.inventory_vars()` plus site variables, like docs/inventory-variables.md
describes. Values wrapped in `Unsafe` are written with YAML's `!unsafe` tag, the way the Aegir
inventory marks database strings untrusted, so tests can feed hostile uris.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import yaml


class Unsafe(str):
    """A string written as `!unsafe` (never templated by Ansible)."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


_Dumper.add_representer(Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v), style="'"))


def write_inventory(inventory: dict, path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.dump(inventory, fh, Dumper=_Dumper, default_flow_style=False, sort_keys=False)
    return path


def group_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class Inventory:
    """Servers, platforms and sites of one test, written as a static YAML inventory."""

    def __init__(self, db):
        self.db = db
        self.servers: dict[str, dict] = {}
        self.platforms: dict[str, dict] = {}
        self.sites: dict[str, dict] = {}
        self.extra_groups: dict[str, list[str]] = {}

    @staticmethod
    def server_name(server) -> str:
        return f"server_{server.name}"

    def add_server(self, server) -> str:
        name = self.server_name(server)
        self.servers[name] = {**server.inventory_vars(name), **self.db.inventory_vars()}
        return name

    def add_platform(self, server, name: str, root: str, **extra) -> str:
        self.platforms[name] = {
            **server.inventory_vars(self.server_name(server)),
            "aegir_context_type": "platform",
            "aegir_platform": name,
            "aegir_platform_root": root,
            "aegir_platform_drush": f"{root}/vendor/bin/drush",
            **extra,
        }
        return name

    def add_site(self, server, platform: str, uri: str, db_name: str, host: str | None = None, **extra) -> str:
        host = host or uri
        root = self.platforms[platform]["aegir_platform_root"]
        self.sites[host] = {
            **self.platforms[platform],
            "aegir_context_type": "site",
            "aegir_site_uri": uri,
            "aegir_site_path": f"{root}/sites/{uri}",
            "aegir_site_aliases": [],
            "aegir_site_redirection": "",
            "aegir_site_profile": "standard",
            "aegir_site_language": "en",
            "aegir_site_status": "enabled",
            "aegir_site_enabled": True,
            "aegir_site_cron_interval": 3600,
            "aegir_site_cron_key": f"cronkey-{db_name}",
            "aegir_site_db_server": self.server_name(server),
            "aegir_site_db_host": self.db.host,
            "aegir_site_db_port": self.db.port,
            "aegir_site_db_name": db_name,
            **extra,
        }
        return host

    def as_dict(self) -> dict:
        children = {
            "aegir_servers": {"hosts": self.servers},
            "aegir_platforms": {"hosts": self.platforms},
            "aegir_sites": {"hosts": self.sites},
        }
        for name in self.platforms:
            members = [h for h, v in self.sites.items() if v.get("aegir_platform") == name]
            if members:
                children[f"aegir_platform_{group_name(name)}"] = {"hosts": {h: {} for h in members}}
        for group, hosts in self.extra_groups.items():
            children[group] = {"hosts": {h: {} for h in hosts}}
        return {"all": {"children": children}}

    def write(self, path: Path) -> Path:
        return write_inventory(self.as_dict(), path)


def settings_secret(settings_text: str, name: str) -> str | None:
    """The value on a `// aegir:secret <name>` line of a generated settings.php."""
    for line in settings_text.splitlines():
        if line.rstrip().endswith("// aegir:secret " + name):
            literals = re.findall(r"'((?:[^'\\]|\\.)*)'", line.rsplit("//", 1)[0])
            if literals:
                return literals[-1].replace("\\'", "'").replace("\\\\", "\\")
    return None


class Env:
    """One test module's servers, a platform on each, and the static inventory of them;
    `run(playbook, limit)` runs a playbook. The role tests and the life-cycle tests differ
    only in names: the platforms' (`platform_name`, a format of the server key) and the
    prefix and length of the database names."""

    def __init__(self, servers, db, make_platform, run_playbook, tmp: Path, *,
                 platform_label: str = "d10", platform_name: str = "platform_d10_{key}",
                 db_prefix: str = "t", db_name_max: int = 60):
        self.servers = servers
        self.db = db
        self.run_playbook = run_playbook
        self.tmp = tmp
        self.token = secrets.token_hex(3)
        self.db_prefix = f"{db_prefix}{self.token}"
        self.db_name_max = db_name_max
        self.platform_name = platform_name
        self.inv = Inventory(db)
        self.platform_roots: dict[str, str] = {}  # by server key
        for key, server in servers.items():
            self.inv.add_server(server)
            root = make_platform(server, platform_label)
            self.platform_roots[key] = root
            self.inv.add_platform(server, platform_name.format(key=key), root)
        self.created_dbs: list[str] = []

    def db_name(self, label: str) -> str:
        name = f"{self.db_prefix}_{label}"[:self.db_name_max]
        self.created_dbs.append(name)
        return name

    def add_site(self, key: str, uri: str, label: str, **extra) -> str:
        return self.inv.add_site(self.servers[key], self.platform_name.format(key=key), uri,
                                 self.db_name(label), **extra)

    def inventory_path(self) -> Path:
        return self.inv.write(self.tmp / "inventory.yml")

    def run(self, playbook: str, limit: str | None = None, **kwargs):
        return self.run_playbook(f"playbooks/{playbook}", self.inventory_path(), limit=limit, **kwargs)

    def site_dir(self, key: str, uri: str) -> Path:
        return Path(self.platform_roots[key]) / "sites" / uri

    def vhost(self, key: str, uri: str) -> Path:
        server = self.servers[key]
        return Path(server.aegir_root) / "config" / f"server_{key}" / server.http_service / "vhost.d" / f"{uri}.conf"

    def backups(self, key: str) -> Path:
        return Path(self.servers[key].aegir_root) / "backups"

    def cleanup(self):
        """Drop the databases and users of this module: those it named, and those the
        playbooks created under its prefix (a migrate or clone names its own)."""
        like = self.db_prefix + "%"
        for name in set(self.created_dbs) | {n for n, in self.db.query(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s", like)}:
            try:
                self.db.drop_database(name)
            except Exception:  # noqa: BLE001
                pass
        for user, host in self.db.query("SELECT User, Host FROM mysql.user WHERE User LIKE %s", like):
            try:
                self.db.drop_user(user, host)
            except Exception:  # noqa: BLE001
                pass
