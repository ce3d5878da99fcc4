"""`aegir queue ...` and the queue's task commands (cancel, log)."""

from __future__ import annotations


def register(main, task_group, db_option) -> None:
    """Attach the queue's commands to the `aegir` command group."""
