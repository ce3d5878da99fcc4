"""The roles and plugins as the aegir.hosting collection: it builds, installs, documents
itself, and its roles run from a plain static inventory (examples/static-inventory)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = REPO / "examples" / "static-inventory"


def run(*cmd, cwd=REPO, env=None, check=True):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The collection built from this checkout and installed into a fresh collections path."""
    tmp = tmp_path_factory.mktemp("collection")
    run(BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp, REPO)
    tarball = next(tmp.glob("aegir-hosting-*.tar.gz"))
    path = tmp / "collections"
    run(BIN / "ansible-galaxy", "collection", "install", "--no-deps", "-p", path, tarball)
    root = path / "ansible_collections" / "aegir" / "hosting"
    assert (root / "roles" / "aegir_vhost" / "tasks" / "main.yml").is_file()
    assert not (root / "aegir_ansible").exists() and not (root / "tests").exists()
    return path


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
    """ansible-doc renders each custom module, which declares check mode and diff support."""
    import json

    doc = json.loads(run(BIN / "ansible-doc", "--json", name).stdout)[name]["doc"]
    assert doc["short_description"] and doc["options"]
    attributes = doc.get("attributes", {})
    assert attributes.get("check_mode", {}).get("support") in ("full", "partial"), attributes
    assert attributes.get("diff_mode", {}).get("support") in ("full", "partial"), attributes
    assert name in run(BIN / "ansible-doc", name).stdout


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
