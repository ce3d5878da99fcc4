"""A wheel ships the aegir.hosting collection (playbooks, roles, plugins) where Ansible finds it
on sys.path, and the installed inventory script works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project's wheel, unpacked into a target folder (dependencies from this venv)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp / "dist"), str(REPO)], check=True, timeout=300)
    wheel = next((tmp / "dist").glob("aegir_ansible-*.whl"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    return target / "ansible_collections" / "aegir" / "hosting"


def test_wheel_ships_playbooks_roles_and_plugins(installed):
    assert (installed / "playbooks" / "aegir_inventory.py").is_file()
    assert (installed / "ansible.cfg").is_file()
    assert (installed / "meta" / "runtime.yml").is_file()
    assert (installed / "plugins" / "inventory" / "aegir.py").is_file()
    assert not (installed / "plugins" / "inventory" / "aegir.py").is_symlink()
    assert any((installed / "roles").glob("*/tasks/main.yml"))
    assert os.access(installed / "playbooks" / "aegir_inventory.py", os.X_OK)


def test_ansible_finds_the_wheels_collection_on_sys_path(installed, tmp_path):
    """With the wheel on the Python path and no collections path of ours, Ansible resolves
    aegir.hosting (its modules, its inventory plugin) from site-packages."""
    env = {**os.environ, "PYTHONPATH": str(installed.parents[2]),
           "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "none"), "ANSIBLE_CONFIG": str(tmp_path / "none.cfg")}
    bin_dir = Path(sys.executable).parent
    for plugin_type, name in (("module", "aegir.hosting.aegir_site_files"), ("inventory", "aegir.hosting.aegir")):
        proc = subprocess.run([str(bin_dir / "ansible-doc"), "-t", plugin_type, "--json", name], env=env,
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)[name]["doc"]
        assert str(installed) in doc["filename"], doc["filename"]


def test_installed_inventory_script_runs(installed, tmp_path):
    db = f"sqlite:///{tmp_path}/a.sqlite"
    env = {**os.environ, "AEGIR_DB_URL": db, "PYTHONPATH": str(installed.parents[2])}
    aegir = [sys.executable, "-m", "aegir_ansible.cli"]
    subprocess.run([*aegir, "db", "init"], env=env, check=True, cwd=tmp_path)
    subprocess.run([*aegir, "server", "add", "m.example.net", "--local", "--http", "nginx",
                    "--no-verify"], env=env, check=True, cwd=tmp_path)
    script = installed / "playbooks" / "aegir_inventory.py"
    # Ansible runs it by itself, through its shebang, from the installed package
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(script),
                           "--list"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "server_mexamplenet" in json.loads(proc.stdout)["aegir_servers"]["hosts"]
    from_pkg = subprocess.run([*aegir[:1], "-c", "import aegir_ansible.paths as p; print(p.project_root())"],
                              env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert Path(from_pkg.stdout.strip()) == installed
