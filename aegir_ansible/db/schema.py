"""Creating the schema: everything for a standalone install, only our tables otherwise.

The backend's tables are versioned by Alembic (migrations/): `init_schema` creates a fresh
database's tables from the models and stamps the head revision, and brings an existing
one up to the head (`aegir db upgrade` does the latter only)."""

from __future__ import annotations

from sqlalchemy import Column, Engine, MetaData, PrimaryKeyConstraint, String, Table, inspect

from . import queue_tables  # noqa: F401 — its tables are in BackendBase.metadata
from .backend import BackendBase
from .migrations import VERSION_TABLE
from .models import AegirBase

# Alembic's version table, as Alembic creates it: listed with the backend's tables so that
# `aegir db grants` grants it and a fresh database gets it with the others (migrations
# leave it to Alembic: include_object skips it).
VERSION_METADATA = MetaData()
Table(VERSION_TABLE, VERSION_METADATA, Column("version_num", String(32), nullable=False),
      PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))


def backend_metadatas():
    """Every metadata of backend-owned tables (backend.py's and queue_tables.py's, and
    the migrations' version table)."""
    return [BackendBase.metadata, VERSION_METADATA]


def has_aegir_schema(engine: Engine) -> bool:
    names = set(inspect(engine).get_table_names())
    return {"node", "hosting_context", "hosting_task"} <= names


def init_schema(engine: Engine) -> dict:
    """Create missing tables. On a database that already holds Aegir's tables (an existing
    hostmaster), only the backend's own `aegir_ansible_*` tables are created; the backend's
    tables are then at the head migration (an older install's are upgraded).

    Returns {existing_aegir, created, migration: migrations.upgrade()'s result}."""
    from . import migrations

    existing = has_aegir_schema(engine)
    before = set(inspect(engine).get_table_names())
    if not existing:
        AegirBase.metadata.create_all(engine)
    migrated = migrations.upgrade(engine)
    after = set(inspect(engine).get_table_names())
    return {"existing_aegir": existing, "created": sorted(after - before), "migration": migrated}
