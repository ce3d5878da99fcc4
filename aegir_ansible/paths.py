"""Where the playbooks, roles and plugins are: beside the package in a checkout, inside
it in an installed wheel (the wheel maps playbooks/, roles/, plugins/ and
inventory_plugins/ into the package)."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def project_root() -> Path:
    """The folder holding playbooks/ and roles/ (repository top, or the installed package)."""
    for candidate in (_PKG.parent, _PKG):
        if (candidate / "playbooks").is_dir() and (candidate / "roles").is_dir():
            return candidate
    raise RuntimeError(f"playbooks/ and roles/ not found beside or inside {_PKG}")


def playbooks_dir() -> Path:
    return project_root() / "playbooks"


def ansible_cfg() -> Path:
    return project_root() / "ansible.cfg"


def inventory_script() -> Path:
    return playbooks_dir() / "aegir_inventory.py"
