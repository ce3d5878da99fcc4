# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Thin adapter from aegir_ansible.inventory to Ansible's inventory plugin API."""

from __future__ import annotations

DOCUMENTATION = r"""
name: aegir
short_description: Aegir servers, platforms and sites from the Aegir frontend database
description:
  - Builds one host per live Aegir server, platform and site, named by its context name,
    straight from the hostmaster database (MySQL/MariaDB) or the embedded SQLite database.
    No drush alias files are read or written.
  - Groups are C(aegir_servers), C(aegir_platforms), C(aegir_sites), one
    C(aegir_server_<server>) group per server holding every context on it, one
    C(aegir_platform_<platform>) group per platform holding its sites, and
    C(aegir_status_<type>_<status>) groups.
  - Variables are listed in docs/inventory-variables.md. Values from the database are never
    trusted as templates.
  - The configuration file name must end with C(aegir.yml) or C(aegir.yaml).
requirements:
  - The Python package C(aegir-ansible) where Ansible runs (the collection's C(requirements.txt);
    its execution environment has it).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin, C(aegir) (or C(aegir.hosting.aegir) from the collection).
    required: true
    choices: ['aegir', 'aegir.hosting.aegir']
    type: str
  db_url:
    description:
      - SQLAlchemy URL of the Aegir database, for example
        C(mysql+pymysql://aegir_ro:secret@db.example.com/hostmaster) or C(sqlite:////var/aegir/aegir.sqlite).
      - When not set, C(AEGIR_DB_URL) from the environment, else the embedded SQLite default.
    type: str
    env:
      - name: AEGIR_DB_URL
"""

EXAMPLES = r"""
# aegir.yml
plugin: aegir.hosting.aegir
db_url: mysql+pymysql://aegir_ro@127.0.0.1/hostmaster
# Extra groups from the Aegir variables (Constructable):
keyed_groups:
  - key: aegir_http_service
    prefix: http
compose:
  site_url: "'http://' ~ aegir_site_uri"
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

try:
    from aegir_ansible.inventory_cli import load_inventory
except ImportError as exc:  # the collection without its Python requirement
    load_inventory = None
    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Strings set here stay untrusted: trusted_by_default is left False on purpose."""

    NAME = "aegir.hosting.aegir"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("aegir.yml", "aegir.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        data = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                data = None
        if data is None:
            data = self._load()
            if self.get_option("cache"):
                self._cache[cache_key] = data
        self._populate(data)

    def _load(self) -> dict:
        if load_inventory is None:
            raise AnsibleParserError(
                "aegir inventory: the Python package aegir-ansible is not installed where Ansible "
                "runs (%s): pip install aegir-ansible, or the collection's requirements.txt, "
                "or use its execution environment" % IMPORT_ERROR)
        url = self.get_option("db_url") or os.environ.get("AEGIR_DB_URL") or None
        try:
            return load_inventory(url).to_dict()
        except Exception as exc:  # a broken source must name its cause
            raise AnsibleParserError(f"aegir inventory: cannot read the Aegir database: {exc}") from exc

    def _populate(self, data: dict) -> None:
        strict = self.get_option("strict")
        for why in data.get("rejected", {}).values():
            self.display.warning(f"aegir inventory: {why}")
        for gname in data["groups"]:
            self.inventory.add_group(gname)
        for host, hostvars in data["hosts"].items():
            self.inventory.add_host(host)
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, value)
        for gname, group in data["groups"].items():
            for host in group["hosts"]:
                self.inventory.add_child(gname, host)
            for child in group.get("children", []):
                self.inventory.add_child(gname, child)
            for key, value in group.get("vars", {}).items():
                self.inventory.set_variable(gname, key, value)
        groups, inherits = data["groups"], data.get("inherits", {})
        for host, own in data["hosts"].items():
            # compose/groups/keyed_groups see the host's group-inherited variables too
            hostvars = {}
            for gname in inherits.get(host, ()):
                hostvars.update(groups[gname].get("vars", {}))
            hostvars.update(own)
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host, strict=strict)
