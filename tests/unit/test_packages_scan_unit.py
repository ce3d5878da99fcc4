"""The package scanner of the aegir_packages module on fixture codebases (Drupal 10 and 7, see
tests/fixtures/provision/codebase), and the module itself run by ansible-playbook."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODEBASE = REPO / "tests" / "fixtures" / "provision" / "codebase"
_spec = importlib.util.spec_from_file_location("aegir_packages_utils", REPO / "plugins/module_utils/aegir_packages.py")
pk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pk)


@pytest.fixture(scope="module")
def d10():
    return pk.scan_platform(str(CODEBASE / "d10"))


def test_d10_platform(d10):
    root = str((CODEBASE / "d10").resolve())
    assert d10["version"] == "10.2.5" and d10["major"] == 10
    assert d10["profiles"] == ["custom_profile", "minimal", "standard"]  # 'testing' is hidden
    assert d10["sites"] == ["example.com", "other.example.com"]  # not default
    base = d10["packages"]["base"]
    assert sorted(base["modules"]) == ["node", "token", "vbo", "vbo_extra"]
    assert sorted(base["themes"]) == ["gin", "olivero"]
    node = base["modules"]["node"]
    assert node["version"] == "10.2.5"  # VERSION means the core version
    assert node["schema_version"] == 10202  # highest node_update_N, other_update_ ignored
    assert node["filename"] == f"{root}/core/modules/node/node.info.yml"
    assert node["info"] == {"name": "Node", "description": "Allows content to be submitted to the site and displayed on pages."}
    assert base["modules"]["vbo"]["version"] == "8.x-4.2"
    assert base["modules"]["vbo"]["schema_version"] == 10000  # at least major * 1000
    assert base["modules"]["token"]["schema_version"] == 10000
    assert "schema_version" not in base["themes"]["gin"]
    assert base["themes"]["gin"]["version"] == "8.x-3.0-rc8"
    assert base["platforms"]["drupal"] == {"short_name": "drupal", "version": "10.2.5",
                                           "description": "This platform is running Drupal 10.2.5"}
    profiles = base["profiles"]
    assert profiles["standard"]["info"]["name"] == "Standard"
    assert profiles["standard"]["info"]["languages"] == ["en"]
    assert profiles["custom_profile"]["version"] == "10.2.5"  # provision: the core version
    assert sorted(profiles["custom_profile"]["info"]["languages"]) == ["de", "en", "fr"]
    assert d10["packages"]["sites-all"] == {"modules": {"token": base["modules"]["token"]},
                                            "themes": {"gin": base["themes"]["gin"]}}
    own = d10["packages"]["profiles"]
    assert sorted(own) == ["custom_profile", "minimal", "standard"]
    assert sorted(own["custom_profile"]["modules"]) == ["cp_helper"]
    assert own["standard"] == {"modules": {}, "themes": {}}


def test_d10_site(d10):
    site = pk.scan_site(str(CODEBASE / "d10"), "example.com", "standard",
                        ["node", "token", "site_only", "olivero"], d10)
    assert site["profiles"]["standard"]["status"] == 1
    assert sorted(site["modules"]) == ["node", "site_only", "token", "vbo", "vbo_extra"]
    assert {n: p["status"] for n, p in site["modules"].items()} == {
        "node": 1, "token": 1, "site_only": 1, "vbo": 0, "vbo_extra": 0}
    assert site["modules"]["site_only"]["platform"] == -1
    assert "platform" not in site["modules"]["node"]
    assert site["themes"]["olivero"]["status"] == 1 and site["themes"]["gin"]["status"] == 0
    other = pk.scan_site(str(CODEBASE / "d10"), "other.example.com", "custom_profile", None, d10)
    assert "cp_helper" in other["modules"] and "site_only" not in other["modules"]
    assert all(p["status"] == 0 for p in other["modules"].values())
    assert other["profiles"]["custom_profile"]["status"] == 1
    with pytest.raises(pk.PackageError):
        pk.scan_site(str(CODEBASE / "d10"), "../d7", "standard")


def test_d7_platform():
    scan = pk.scan_platform(str(CODEBASE / "d7"))
    assert scan["version"] == "7.98" and scan["major"] == 7
    base = scan["packages"]["base"]
    assert sorted(base["modules"]) == ["node", "views"]
    assert base["modules"]["node"]["schema_version"] == 7016
    assert base["modules"]["node"]["version"] == "7.98"
    assert base["modules"]["views"]["version"] == "7.x-3.29"
    assert base["modules"]["views"]["schema_version"] == 0
    assert base["modules"]["views"]["info"]["description"] == "Create customized lists and queries from your database."
    assert sorted(base["themes"]) == ["bartik"]
    assert scan["profiles"] == ["standard"]
    assert scan["sites"] == []


def test_yaml_fallback_reads_the_same_top_level_keys(monkeypatch):
    path = str(CODEBASE / "d10" / "core" / "profiles" / "standard" / "standard.info.yml")
    with_yaml = pk.parse_info_yml(path)
    monkeypatch.setattr(pk, "yaml", None)
    without = pk.parse_info_yml(path)
    assert {k: with_yaml[k] for k in ("name", "type", "description", "version")} == without
    hidden = pk.parse_info_yml(str(CODEBASE / "d10" / "core" / "profiles" / "testing" / "testing.info.yml"))
    assert hidden["hidden"] is True


def test_not_a_drupal_root(tmp_path):
    with pytest.raises(pk.PackageError, match="not a Drupal root"):
        pk.scan_platform(str(tmp_path))


def test_module_returns_the_scan(tmp_path, run_playbook):
    """One module call reports the platform and two sites; read-only (changed=0, --check works)."""
    root = tmp_path / "platform"
    shutil.copytree(CODEBASE / "d10", root)
    out = tmp_path / "result.json"
    playbook = tmp_path / "packages.yml"
    playbook.write_text(json.dumps([{
        "hosts": "all", "gather_facts": False,
        "tasks": [
            {"name": "scan", "aegir.hosting.aegir_packages": {"root": str(root), "sites": [
                {"uri": "example.com", "profile": "standard", "enabled": ["node"]},
                {"uri": "other.example.com", "profile": "minimal"}]}, "register": "scan"},
            {"name": "save", "delegate_to": "localhost", "check_mode": False, "changed_when": False,
             "copy": {"content": "{{ scan | to_json }}", "dest": str(out)}},
        ]}]))
    inventory = {"localhost": {"ansible_connection": "local",
                               "ansible_python_interpreter": "/usr/bin/python3"}}
    result = run_playbook(playbook, inventory).assert_idempotent()
    data = json.loads(out.read_text())
    assert data["changed"] is False
    assert data["profiles"] == ["custom_profile", "minimal", "standard"]
    assert data["sites_found"] == ["example.com", "other.example.com"]
    assert data["packages"] == json.loads(json.dumps(pk.scan_platform(str(root))["packages"]))
    assert data["site_packages"]["example.com"]["modules"]["node"]["status"] == 1
    assert data["site_packages"]["other.example.com"]["profiles"]["minimal"]["status"] == 1
    assert result.rc == 0
    run_playbook(playbook, inventory, check=True).assert_ok()


def test_module_finds_only_the_platforms_own_site_dirs_and_reads_sites(tmp_path, run_playbook):
    """sites_found: real directories inside the platform's sites/ with a regular settings.php
    (no symlinked dir or settings.php, not all/default); read_site: db name and profile from
    drush status (else drushrc.php), language from drushrc.php, aliases from sites.php;
    enabled extensions from drush pm:list; a site whose drush fails is only reported."""
    root = tmp_path / "platform"
    shutil.copytree(CODEBASE / "d10", root)
    outside = tmp_path / "outside"
    (outside / "evil.example.com").mkdir(parents=True)
    (outside / "evil.example.com" / "settings.php").write_text("<?php\n")
    (root / "sites" / "evil.example.com").symlink_to(outside / "evil.example.com")
    (root / "sites" / "linked.example.com").mkdir()
    (root / "sites" / "linked.example.com" / "settings.php").symlink_to(outside / "evil.example.com" / "settings.php")
    (root / "sites" / "all" / "settings.php").write_text("<?php\n")
    (root / "sites" / "sites.php").write_text(
        "<?php\n$sites['www.example.com'] = 'example.com';\n$sites[\"alt.example.com\"] = \"example.com\";\n"
        "$sites['x.other.example.com'] = 'other.example.com';\n$sites['up'] = '../etc';\n")
    (root / "sites" / "other.example.com" / "drushrc.php").write_text(
        "<?php\n$options['db_name'] = 'otherdb';\n$options['profile'] = 'minimal';\n$options['language'] = 'fr';\n")
    drush = tmp_path / "drush"
    drush.write_text("""#!/bin/sh
case "$*" in
  *--uri=bad.example.com*) echo "[error] no site" >&2; exit 1;;
  *pm:list*) echo '{"node": {"status": "Enabled"}, "token": {"status": "Disabled"}, "olivero": {"status": "Enabled"}}';;
  *--uri=example.com*status*) echo '{"db-name": "exdb", "install-profile": "standard"}';;
  *status*) echo '{"error": "cannot connect"}';;
esac
""")
    drush.chmod(0o755)
    out = tmp_path / "result.json"
    playbook = tmp_path / "packages.yml"
    playbook.write_text(json.dumps([{
        "hosts": "all", "gather_facts": False,
        "tasks": [
            {"name": "scan", "aegir.hosting.aegir_packages": {"root": str(root), "sites": [
                {"uri": "example.com", "key": "ex", "drush": str(drush), "read_site": True},
                {"uri": "other.example.com", "drush": str(drush), "read_site": True},
                {"uri": "bad.example.com", "site_dir": "example.com", "drush": str(drush)},
                {"uri": "evil.example.com", "drush": str(drush), "read_site": True}]}, "register": "scan"},
            {"name": "save", "delegate_to": "localhost", "check_mode": False, "changed_when": False,
             "copy": {"content": "{{ scan | to_json }}", "dest": str(out)}},
        ]}]))
    inventory = {"localhost": {"ansible_connection": "local",
                               "ansible_python_interpreter": "/usr/bin/python3"}}
    run_playbook(playbook, inventory).assert_idempotent()
    data = json.loads(out.read_text())
    assert data["sites_found"] == ["example.com", "other.example.com"]
    assert data["site_info"]["ex"] == {"db_name": "exdb", "profile": "standard", "language": "",
                                       "aliases": ["alt.example.com", "www.example.com"]}
    assert data["site_info"]["other.example.com"] == {"db_name": "otherdb", "profile": "minimal", "language": "fr",
                                                      "aliases": ["x.other.example.com"]}
    modules = data["site_packages"]["ex"]["modules"]
    assert (modules["node"]["status"], modules["token"]["status"]) == (1, 0)
    assert data["site_packages"]["ex"]["themes"]["olivero"]["status"] == 1
    assert data["site_packages"]["ex"]["profiles"]["standard"]["status"] == 1
    assert set(data["failed_sites"]) == {"bad.example.com", "evil.example.com"}
    assert "drush pm:list failed" in data["failed_sites"]["bad.example.com"]
    assert "not a site directory" in data["failed_sites"]["evil.example.com"]
    assert "bad.example.com" not in data["site_packages"]
