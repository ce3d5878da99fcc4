"""Where the playbooks, roles and plugins are: the aegir.hosting collection root. In a
checkout that is the repository top (the repository is the collection in place); in an
installed wheel it is site-packages/ansible_collections/aegir/hosting, where Ansible finds
the collection on sys.path."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_CANDIDATES = (_PKG.parent, _PKG.parent / "ansible_collections" / "aegir" / "hosting")


def project_root() -> Path:
    """The aegir.hosting collection root, holding playbooks/, roles/ and ansible.cfg."""
    for candidate in _CANDIDATES:
        if (candidate / "playbooks").is_dir() and (candidate / "roles").is_dir():
            return candidate
    raise RuntimeError(f"playbooks/ and roles/ not found in {' or '.join(map(str, _CANDIDATES))}")


def playbooks_dir() -> Path:
    return project_root() / "playbooks"


def ansible_cfg() -> Path:
    return project_root() / "ansible.cfg"


def inventory_script() -> Path:
    return playbooks_dir() / "aegir_inventory.py"
