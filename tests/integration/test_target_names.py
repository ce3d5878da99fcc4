"""Context names and server addresses from the database (issue 12, points 7 and 8): one rule
each in aegir_ansible/validation.py, applied by the inventory, which leaves out what breaks
it (with the reason) and keeps the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.db.backend import ServerSettings
from aegir_ansible.frontend import Frontend
from aegir_ansible.inventory import build_inventory
from aegir_ansible.validation import InputError, check_context_name, check_host_address

PATTERNS = ["L,aegir_sites", "a:b", "a&b", "!a", "~a.*", "a*", "a?", "a[0]", "a b", "all",
            "ungrouped", "localhost", "aegir_sites", "aegir_server_x", "-a", ""]


@pytest.mark.parametrize("name", PATTERNS)
def test_context_names_ansible_reads_as_patterns_or_groups_are_refused(name):
    with pytest.raises(InputError):
        check_context_name(name)


@pytest.mark.parametrize("name", ["example.com", "server_master", "platform_D10-a", "site_1"])
def test_plain_context_names_pass(name):
    assert check_context_name(name) == name


@pytest.mark.parametrize("value", ["-oProxyCommand=touch /tmp/x", "127.0.0.1 -oX", "a b",
                                   "user@host", "host:22", "", " 127.0.0.1", "-host", "h\nx",
                                   "é.example", "a..b", "[::1]"])
def test_bad_host_addresses_are_refused(value):
    with pytest.raises(InputError):
        check_host_address(value)


@pytest.mark.parametrize("value", ["127.0.0.2", "::1", "2001:db8::1", "web1.example.com", "localhost"])
def test_host_names_and_ips_pass(value):
    assert check_host_address(value)


def test_the_inventory_leaves_out_bad_names_and_addresses(db_url):
    engine = make_engine(db_url)
    Session = make_sessionmaker(engine)
    with Session() as s, s.begin():
        fe = Frontend(s)
        for host, name in (("good.example.com", "server_good"), ("bad.example.com", "server_bad")):
            fe.add_server(host, name=name, http="nginx", address="127.0.0.5", queue_verify=False,
                          db="mysql", db_user="root", db_password="pw")
        fe.add_platform("G", "/var/aegir/platforms/g", "server_good", name="platform_g", queue_verify=False)
        fe.add_platform("B", "/var/aegir/platforms/b", "server_bad", name="platform_b", queue_verify=False)
        for uri, platform in (("a.test", "platform_g"), ("p.test", "platform_g"), ("b.test", "platform_b")):
            fe.add_site(uri, platform, queue_install=False)
        bad_nid = fe.find("server_bad").nid
        pattern_nid = fe.find("p.test").nid
    with Session() as s, s.begin():
        s.execute(update(ServerSettings).where(ServerSettings.nid == bad_nid)
                  .values(address="-oProxyCommand=touch /tmp/x"))
        s.execute(update(m.HostingContext).where(m.HostingContext.nid == pattern_nid)
                  .values(name="L,aegir_sites"))
    with Session() as s:
        inv = build_inventory(s)
    engine.dispose()
    assert set(inv.hosts) == {"server_good", "platform_g", "a.test"}
    assert "is not a host name or IP address" in inv.rejected["server_bad"]
    assert inv.rejected["platform_b"].startswith("platform platform_b is left out of the inventory: "
                                                 "server server_bad is left out")
    assert "server server_bad is left out" in inv.rejected["b.test"]
    assert "'L,aegir_sites' is not valid" in inv.rejected["L,aegir_sites"]
    for group in inv.groups.values():
        assert not {"server_bad", "platform_b", "b.test", "L,aegir_sites"} & set(group["hosts"])
    # The inventory script says what it left out (ansible shows its stderr), the hosts stay out.
    script = Path(__file__).resolve().parents[2] / "playbooks" / "aegir_inventory.py"
    proc = subprocess.run([sys.executable, str(script), "--list"], capture_output=True, text=True,
                          env={**os.environ, "AEGIR_DB_URL": db_url}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warning: server server_bad is left out of the inventory" in proc.stderr
    assert "server_bad" not in json.loads(proc.stdout)["_meta"]["hostvars"]
