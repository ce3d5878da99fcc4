"""Creating the schema: everything for a standalone install, only our tables otherwise."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from . import queue_tables  # noqa: F401 — its tables are in BackendBase.metadata
from .backend import BackendBase
from .models import AegirBase


def backend_metadatas():
    """Every metadata of backend-owned tables (backend.py's and queue_tables.py's)."""
    return [BackendBase.metadata]


def has_aegir_schema(engine: Engine) -> bool:
    names = set(inspect(engine).get_table_names())
    return {"node", "hosting_context", "hosting_task"} <= names


def init_schema(engine: Engine) -> dict:
    """Create missing tables. On a database that already holds Aegir's tables (an existing
    hostmaster), only the backend's own `aegir_ansible_*` tables are created."""
    existing = has_aegir_schema(engine)
    before = set(inspect(engine).get_table_names())
    if not existing:
        AegirBase.metadata.create_all(engine)
    for md in backend_metadatas():
        md.create_all(engine)
    after = set(inspect(engine).get_table_names())
    return {"existing_aegir": existing, "created": sorted(after - before)}
