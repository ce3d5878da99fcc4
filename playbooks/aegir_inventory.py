#!/usr/bin/env python3
"""Ansible inventory script: hosts, groups and variables straight from the Aegir database.

    ansible-playbook -i aegir_inventory.py verify.yml --limit example.com

The database is AEGIR_DB_URL, else the embedded SQLite default. Every string is emitted
as {"__ansible_unsafe": ...}: values from the database are data, never templates.
"""

import os
import shutil
import sys
from pathlib import Path


def _find_package() -> None:
    """Import aegir_ansible from this checkout or installed copy, whatever python runs us.

    Ansible runs this file through its shebang, so `python3` may be a system Python that
    lacks our dependencies: then re-run with the interpreter of the ansible process that
    called us (our parent), which has them.
    """
    here = Path(__file__).resolve().parent
    for root in (here.parent, here.parent.parent):
        if (root / "aegir_ansible" / "__init__.py").is_file():
            sys.path.insert(0, str(root))
            break
    try:
        import aegir_ansible.inventory_cli  # noqa: F401
    except ImportError as exc:
        python = None if os.environ.get("_AEGIR_INVENTORY_REEXEC") else _callers_python()
        if python is None:
            sys.exit(f"aegir_inventory.py: cannot import aegir_ansible ({exc}); run it with "
                     "the Python where aegir-ansible is installed")
        os.environ["_AEGIR_INVENTORY_REEXEC"] = "1"
        os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])


def _callers_python():
    """The interpreter that runs the calling ansible command (its argv[0], which keeps a
    virtualenv's path), else the active virtualenv's python."""
    candidates = []
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode()
        if "python" in os.path.basename(argv0):
            candidates.append(argv0 if os.sep in argv0 else shutil.which(argv0))
    except OSError:
        pass
    if os.environ.get("VIRTUAL_ENV"):
        candidates.append(os.path.join(os.environ["VIRTUAL_ENV"], "bin", "python3"))
    for python in candidates:
        if python and os.path.exists(python) and os.path.abspath(python) != sys.executable:
            return python
    return None


if __name__ == "__main__":
    _find_package()
    from aegir_ansible.inventory_cli import script_main

    sys.exit(script_main(sys.argv[1:]))
