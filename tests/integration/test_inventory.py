"""The inventory built from the database, through Python, the script and the plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select

from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend
from aegir_ansible.inventory import build_inventory, script_output

from .realistic import populate

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def realistic(db_url):
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as s, s.begin():
        info = populate(Frontend(s))
    engine.dispose()
    return db_url, info


def inventory_of(db_url):
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as s:
        inv = build_inventory(s)
    engine.dispose()
    return inv


def test_hosts_groups_and_variables(realistic):
    db_url, info = realistic
    inv = inventory_of(db_url)
    groups = inv.groups
    assert sorted(groups["aegir_servers"]["hosts"]) == [
        "server_db1examplenet", "server_master", "server_web1examplenet"]
    assert len(groups["aegir_platforms"]["hosts"]) == 4
    assert len(groups["aegir_sites"]["hosts"]) == 47  # 50 minus 3 deleted
    for uri in info["deleted_uris"]:
        assert uri not in inv.hosts
    assert len(groups["aegir_status_site_disabled"]["hosts"]) == 5
    # a server group holds every context living on it; a platform group holds its sites
    web1 = groups["aegir_server_server_web1examplenet"]["hosts"]
    assert "platform_Drupal7" in web1 and "site002.example.org" in web1
    assert "site002.example.org" in groups["aegir_platform_platform_Drupal7"]["hosts"]

    site = inv.effective_vars("site000.example.org")  # platform D10 A on the local master
    assert site["ansible_connection"] == "local"
    assert site["aegir_site_aliases"] == ["alt000.example.com", "www.site000.example.org"]
    assert site["aegir_site_redirection"] == "site000.example.org"
    assert site["aegir_site_db_server"] == "server_db1examplenet"
    assert site["aegir_site_db_host"] == "10.0.0.21"
    assert site["aegir_site_profile"] == "minimal"
    assert site["aegir_site_client"] == "acme"
    assert site["aegir_site_path"] == "/var/aegir/platforms/d10a/sites/site000.example.org"
    assert site["aegir_site_cron_interval"] == 900 and site["aegir_site_cron_key"]
    assert site["aegir_site_db_name"] == "site000exampleor"

    remote = inv.effective_vars("site002.example.org")  # platform D7 on web1, over SSH
    assert (remote["ansible_connection"], remote["ansible_host"], remote["ansible_port"],
            remote["ansible_user"]) == ("ssh", "10.0.0.11", 2222, "aegir")
    assert remote["aegir_http_service"] == "apache"
    assert remote["aegir_http_test_cmd"] == ["apache2ctl", "-t"]

    # shared values live once on the server's and platform's groups
    assert "ansible_host" not in inv.hosts["site002.example.org"]
    assert inv.groups["aegir_server_server_web1examplenet"]["vars"]["ansible_port"] == 2222
    assert inv.groups["aegir_platform_platform_Drupal7"]["vars"]["aegir_platform_root"] == "/var/aegir/platforms/d7"
    db1 = inv.hosts["server_db1examplenet"]
    assert db1["aegir_db_admin_password"] == "s3cret-db1" and "aegir_http_service" in db1
    # every value is a plain JSON type (Decimal/ORM objects break inventory plugins)
    json.dumps(inv.to_dict())


def test_statement_count_is_constant(db_url):
    """No query per site: the same number of SELECTs for 8 sites and for 80."""
    counts = []
    for n in (8, 80):
        engine = make_engine(db_url)
        with make_sessionmaker(engine)() as s, s.begin():
            fe = Frontend(s)
            if n == 8:
                populate(fe, n_sites=8)
            else:
                for i in range(72):
                    fe.add_site(f"more{i}.example.org", "platform_Drupal7", queue_install=False,
                                aliases=[f"www.more{i}.example.org"])
        statements = []
        event.listen(engine, "before_cursor_execute",
                     lambda *a: statements.append(a[2]))
        with make_sessionmaker(engine)() as s:
            inv = build_inventory(s)
        counts.append(len(statements))
        engine.dispose()
    assert len(inv.groups["aegir_sites"]["hosts"]) == 8 + 72
    assert counts[0] == counts[1], counts
    assert counts[0] <= 10


def test_script_strings_are_unsafe(realistic):
    out = script_output(inventory_of(realistic[0]))
    hv = out["_meta"]["hostvars"]["site000.example.org"]
    assert hv["aegir_site_uri"] == {"__ansible_unsafe": "site000.example.org"}
    assert hv["aegir_site_aliases"][0] == {"__ansible_unsafe": "alt000.example.com"}
    assert hv["aegir_site_cron_interval"] == 900
    group_vars = out["aegir_server_server_web1examplenet"]["vars"]
    assert group_vars["aegir_http_test_cmd"][0] == {"__ansible_unsafe": "apache2ctl"}


def ansible(cmd: str, *args, env=None, cwd=REPO, check=True):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run([str(BIN / cmd), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def plugin_config(tmp_path, db_url) -> Path:
    cfg = tmp_path / "aegir.yml"
    cfg.write_text(f"plugin: aegir\ndb_url: '{db_url}'\n")
    return cfg


def _normalise(listing: dict) -> dict:
    """ansible-inventory output minus ordering differences."""
    for key, group in listing.items():
        if key != "_meta":
            for field in ("hosts", "children"):
                if field in group:
                    group[field] = sorted(group[field])
    return listing


def test_script_and_plugin_agree(realistic, tmp_path):
    db_url, _ = realistic
    script = ansible("ansible-inventory", "-i", "playbooks/aegir_inventory.py", "--list",
                     env={"AEGIR_DB_URL": db_url})
    plugin = ansible("ansible-inventory", "-i", str(plugin_config(tmp_path, db_url)), "--list")
    a, b = _normalise(json.loads(script.stdout)), _normalise(json.loads(plugin.stdout))
    assert a == b
    assert len(a["aegir_sites"]["hosts"]) == 47
    # untrusted on both paths: ansible-inventory marks them unsafe
    assert a["_meta"]["hostvars"]["site000.example.org"]["aegir_site_uri"] == {
        "__ansible_unsafe": "site000.example.org"}


def test_inventory_from_the_playbooks_folder(realistic):
    """`cd playbooks && ansible-inventory -i aegir_inventory.py` finds everything too."""
    db_url, _ = realistic
    proc = ansible("ansible-inventory", "-i", "aegir_inventory.py", "--host", "site002.example.org",
                   env={"AEGIR_DB_URL": db_url}, cwd=REPO / "playbooks")
    assert json.loads(proc.stdout)["aegir_platform"] == "platform_Drupal7"


INJECT_PLAYBOOK = """
- hosts: aegir_sites
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "ALIASES={{ aegir_site_aliases | join(',') }}"
    - ansible.builtin.copy:
        content: "{{ aegir_site_aliases | join('\\n') }}\\n"
        dest: "{{ out_file }}"
        mode: "0600"
      delegate_to: localhost
"""


@pytest.mark.parametrize("source", ["script", "plugin"])
def test_database_values_are_never_templates(realistic, tmp_path, source):
    """A Jinja expression stored in the database reaches a task and a file verbatim."""
    db_url, _ = realistic
    marker = Path(f"/tmp/aegir-pw-{uuid.uuid4().hex[:8]}")  # short: alias is varchar(128)
    evil = "{{ lookup('pipe', 'touch " + str(marker) + "') }}"
    engine = make_engine(db_url)
    with engine.begin() as c:  # written the way another frontend could: raw, unvalidated
        node = c.execute(select(m.Node.nid, m.Node.vid).where(m.Node.title == "site001.example.org")).one()
        c.execute(insert(m.HostingSiteAlias).values(vid=node.vid, nid=node.nid, alias=evil,
                                                    automatic=0, redirection=""))
    engine.dispose()
    playbook = tmp_path / "inject.yml"
    playbook.write_text(INJECT_PLAYBOOK)
    out_file = tmp_path / "aliases.txt"
    inventory = ("playbooks/aegir_inventory.py" if source == "script"
                 else str(plugin_config(tmp_path, db_url)))
    proc = ansible("ansible-playbook", "-i", inventory, str(playbook), "--limit",
                   "site001.example.org", "-e", f"out_file={out_file}",
                   "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}",
                   env={"AEGIR_DB_URL": db_url})
    assert evil in proc.stdout
    assert out_file.read_text() == evil + "\n"
    assert not marker.exists()


def test_host_vars_beside_the_inventory(realistic, tmp_path):
    db_url, _ = realistic
    (tmp_path / "aegir_inventory.py").symlink_to(REPO / "playbooks" / "aegir_inventory.py")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "site002.example.org.yml").write_text("php_memory_limit: 512M\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "aegir_sites.yml").write_text("site_owner_team: hosting\n")
    proc = ansible("ansible-inventory", "-i", str(tmp_path / "aegir_inventory.py"), "--host",
                   "site002.example.org", env={"AEGIR_DB_URL": db_url})
    hv = json.loads(proc.stdout)
    assert hv["php_memory_limit"] == "512M" and hv["site_owner_team"] == "hosting"


def test_plugin_documentation_renders():
    proc = ansible("ansible-doc", "-t", "inventory", "aegir")
    assert "db_url" in proc.stdout and "keyed_groups" in proc.stdout


def test_plugin_constructed_options(realistic, tmp_path):
    db_url, _ = realistic
    cfg = plugin_config(tmp_path, db_url)
    cfg.write_text(cfg.read_text() + "keyed_groups:\n  - key: aegir_http_service\n    prefix: http\n"
                   "compose:\n  site_url: \"'http://' ~ aegir_site_uri\"\n")
    proc = ansible("ansible-inventory", "-i", str(cfg), "--list")
    listing = json.loads(proc.stdout)
    assert "site002.example.org" in listing["http_apache"]["hosts"]
    # composed from an untrusted value, the result stays untrusted
    assert listing["_meta"]["hostvars"]["site002.example.org"]["site_url"] == {
        "__ansible_unsafe": "http://site002.example.org"}


def test_broken_database_fails_loudly(tmp_path):
    proc = ansible("ansible-inventory", "-i", "playbooks/aegir_inventory.py", "--list",
                   env={"AEGIR_DB_URL": f"sqlite:///{tmp_path}/nothing-here.sqlite"}, check=False)
    assert proc.returncode != 0
    assert "cannot read the Aegir database" in proc.stderr and "aegir db init" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("cwd,inventory,playbook", [
    (".", "playbooks/aegir_inventory.py", "playbooks/verify.yml"),
    ("playbooks", "aegir_inventory.py", "verify.yml"),
])
def test_playbooks_find_roles_and_inventory_from_either_folder(realistic, cwd, inventory, playbook):
    """Both `ansible-playbook -i playbooks/aegir_inventory.py playbooks/verify.yml` and, as
    Aegir users type it, `cd playbooks && ansible-playbook -i aegir_inventory.py verify.yml`."""
    db_url, _ = realistic
    proc = ansible("ansible-playbook", "-i", inventory, playbook, "--limit", "site002.example.org",
                   "--list-tasks", env={"AEGIR_DB_URL": db_url}, cwd=REPO / cwd)
    assert "site002.example.org" in proc.stdout or "aegir_sites" in proc.stdout
    assert "aegir_site" in proc.stdout  # the role's tasks were found and listed


def test_aegir_inventory_command(realistic):
    from click.testing import CliRunner

    from aegir_ansible.cli import main

    db_url, _ = realistic
    graph = CliRunner().invoke(main, ["inventory", "--graph", "--db", db_url])
    assert graph.exit_code == 0 and "@aegir_platform_platform_Drupal7:" in graph.output
    host = CliRunner().invoke(main, ["inventory", "--host", "site002.example.org", "--db", db_url])
    assert json.loads(host.output)["aegir_site_uri"] == {"__ansible_unsafe": "site002.example.org"}
    listing = CliRunner().invoke(main, ["inventory", "--list", "--db", db_url])
    assert "site002.example.org" in json.loads(listing.output)["_meta"]["hostvars"]
