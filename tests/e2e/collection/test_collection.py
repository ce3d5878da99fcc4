"""The roles and plugins as the aegir.hosting collection: it builds, installs, documents
itself, and its roles run from a plain static inventory (examples/static-inventory)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from .helpers import BIN, REPO, run

EXAMPLE = REPO / "examples" / "static-inventory"


def clean_env(collections_path, cfg=None) -> dict:
    """Ansible seeing only the installed collection (not this repo's roles/ and plugins/)."""
    return {"ANSIBLE_COLLECTIONS_PATH": str(collections_path),
            "ANSIBLE_CONFIG": str(cfg or EXAMPLE / "ansible.cfg")}


@pytest.mark.parametrize("plugin_type,name,expect", [
    ("module", "aegir.hosting.aegir_crontab", "lock_file"),
    ("module", "aegir.hosting.aegir_site_files", "check_mode"),
    ("inventory", "aegir.hosting.aegir", "db_url"),
])
def test_ansible_doc_renders(collection, tmp_path, plugin_type, name, expect):
    proc = run(BIN / "ansible-doc", "-t", plugin_type, name, cwd=tmp_path,
               env=clean_env(collection))
    assert expect in proc.stdout


MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("aegir_*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_every_module_documents_itself_with_check_mode_and_diff(name):
    """From the checkout (the collection in place, through ansible.cfg's collections_path),
    ansible-doc renders each module by FQCN; each declares check mode and diff support."""
    fqcn = f"aegir.hosting.{name}"
    doc = json.loads(run(BIN / "ansible-doc", "--json", fqcn).stdout)[fqcn]["doc"]
    assert doc["short_description"] and doc["options"] and doc["author"]
    assert doc["filename"].startswith(str(REPO / "collections" / "ansible_collections")), doc["filename"]
    attributes = doc.get("attributes", {})
    assert attributes.get("check_mode", {}).get("support") in ("full", "partial"), attributes
    assert attributes.get("diff_mode", {}).get("support") in ("full", "partial"), attributes
    assert all(a.get("description") for a in attributes.values()), attributes
    assert fqcn in run(BIN / "ansible-doc", fqcn).stdout


def test_inventory_plugin_is_listed_from_the_installed_collection(collection, tmp_path):
    proc = run(BIN / "ansible-doc", "-t", "inventory", "-l", "aegir.hosting", cwd=tmp_path,
               env=clean_env(collection))
    assert proc.stdout.split()[0] == "aegir.hosting.aegir", proc.stdout


def test_installed_collection_holds_real_files(collection_root):
    links = [str(p) for p in collection_root.rglob("*") if p.is_symlink()]
    assert not links
    assert (collection_root / "LICENSE").read_text().startswith(" " * 20 + "GNU GENERAL PUBLIC LICENSE")
    assert "Version 3" in (collection_root / "LICENSE").read_text()[:200]


def test_playbooks_run_by_fqcn_from_the_installed_collection(collection, collection_root, tmp_path):
    """Every playbook has a name a FQCN can call, and ansible-playbook finds it by FQCN."""
    names = sorted(p.stem for p in (collection_root / "playbooks").glob("*.yml"))
    assert "backup_delete" in names and "verify_batch" in names
    assert all(n.isidentifier() for n in names), names
    for name in ("verify", "backup_delete", "login_reset", "flush_cache_batch"):
        proc = run(BIN / "ansible-playbook", "--syntax-check", "-i", "localhost,",
                   f"aegir.hosting.{name}", cwd=tmp_path, env=clean_env(collection))
        assert f"playbook: {collection_root / 'playbooks' / name}.yml" in proc.stdout, proc.stdout


@pytest.mark.e2e
def test_example_static_inventory(collection, test_servers, test_db_server, make_platform, tmp_path):
    """examples/static-inventory/site.yml, from the installed collection, on a real server:
    database, vhost and cron job of example.com; the page is served; a second run changes
    nothing."""
    server = test_servers["nginx"]
    server.reset()
    root = make_platform(server, "example")
    inv = yaml.safe_load((EXAMPLE / "inventory.yml").read_text())
    host = inv["all"]["children"]["web"]["hosts"]["example.com"]
    uri, db_name = "example-collection.test", "excollection"
    host.update(server.inventory_vars("server_web1"))
    host.update({
        "aegir_platform_root": root, "aegir_site_uri": uri, "aegir_site_aliases": [f"www.{uri}"],
        "aegir_site_db_name": db_name, "aegir_site_db_host": test_db_server.host,
        "aegir_site_db_port": test_db_server.port,
        "example_db_admin_user": test_db_server.admin_user,
        "example_db_admin_password": test_db_server.admin_password,
        "example_db_password": "Ex4mple-site-pw",
    })
    inv["all"]["children"]["web"]["hosts"] = {uri: host}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(inv))
    inventory.chmod(0o600)
    try:
        proc = run(BIN / "ansible-playbook", "-i", inventory, EXAMPLE / "site.yml", cwd=EXAMPLE,
                   env=clean_env(collection))
        assert "failed=0" in proc.stdout
        assert "Ex4mple-site-pw" not in proc.stdout + proc.stderr
        assert test_db_server.can_login(db_name, "Ex4mple-site-pw", db_name)
        # the vhost routes the uri to the platform: the fixture platform answers (no site
        # settings were written by this example, so its "No site" page, not nginx's 404 page)
        status, body = server.curl(uri)
        assert status == 404 and "No site" in body, (status, body)
        assert f"--uri={uri}" in server.crontab()
        again = run(BIN / "ansible-playbook", "-i", inventory, EXAMPLE / "site.yml", cwd=EXAMPLE,
                    env=clean_env(collection))
        assert "changed=0" in again.stdout and "failed=0" in again.stdout, again.stdout[-3000:]
    finally:
        test_db_server.query(f"DROP DATABASE IF EXISTS `{db_name}`")
        test_db_server.query("DROP USER IF EXISTS %s@%s", db_name, server.db_grant_host)
        server.reset()
        shutil.rmtree(root, ignore_errors=True)
