"""The `aegir` command (entry point `aegir = aegir_ansible.cli:main`): on top of the package;
nothing in the package imports it.

- base.py: the `aegir` group, `--db`, the per-invocation context, error reporting, output;
- hosting.py: `db` (grants.py: `db grants`), `server`, `platform`, `site`, `task` (add, list, show, retry), `inventory`,
  `drush-aliases`;
- queue.py: `queue run|status|settings` and `task cancel|log|defer`;
- db.py: `db upgrade|current|history` (Alembic).

Once every module has attached its commands, each option gets its AEGIR_* variable.
"""

from . import db, hosting, queue  # noqa: F401 — they attach their commands to `main`
from .base import apply_envvars, main

apply_envvars(main)

__all__ = ["main"]
