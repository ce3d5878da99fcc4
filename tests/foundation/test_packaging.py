"""A wheel ships playbooks, roles and plugins, and the installed inventory script works."""

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
    return target / "aegir_ansible"


def test_wheel_ships_playbooks_roles_and_plugins(installed):
    assert (installed / "playbooks" / "aegir_inventory.py").is_file()
    assert (installed / "playbooks" / "ansible.cfg").is_file()
    assert (installed / "inventory_plugins" / "aegir.py").is_file()
    assert any((installed / "roles").glob("*/tasks/main.yml"))
    assert os.access(installed / "playbooks" / "aegir_inventory.py", os.X_OK)


def test_installed_inventory_script_runs(installed, tmp_path):
    db = f"sqlite:///{tmp_path}/a.sqlite"
    env = {**os.environ, "AEGIR_DB_URL": db, "PYTHONPATH": str(installed.parent)}
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
