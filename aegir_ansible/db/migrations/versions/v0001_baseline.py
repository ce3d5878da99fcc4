"""Baseline: the backend's tables as `aegir db init` created them before migrations.

On a database without the backend's tables this creates them. On one whose tables an older
`aegir db init` (SQLAlchemy's create_all) made, without a version table, it adopts them: it
creates the tables, indexes and columns they lack of this schema (older releases added
`aegir_ansible_server.db_host`, the queue tables, ...) and changes nothing that exists.

Revision ID: 0001
Revises:
Created: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The schema frozen at this revision (never import the models here: they move on).
_md = sa.MetaData()
sa.Table(
    "aegir_ansible_server", _md,
    sa.Column("nid", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("connection", sa.String(length=16), nullable=False),
    sa.Column("address", sa.String(length=255), nullable=True),
    sa.Column("ssh_user", sa.String(length=64), nullable=False),
    sa.Column("ssh_port", sa.Integer(), nullable=False),
    sa.Column("ssh_private_key_file", sa.Text(), nullable=True),
    sa.Column("python_interpreter", sa.String(length=255), nullable=False),
    sa.Column("aegir_root", sa.Text(), nullable=False),
    sa.Column("script_user", sa.String(length=64), nullable=False),
    sa.Column("web_group", sa.String(length=64), nullable=False),
    sa.Column("http_listen_address", sa.String(length=255), nullable=False),
    sa.Column("http_test_cmd", sa.Text(), nullable=True),
    sa.Column("http_reload_cmd", sa.Text(), nullable=True),
    sa.Column("php_fastcgi", sa.Text(), nullable=False),
    sa.Column("db_grant_host", sa.String(length=255), nullable=True),
    sa.Column("db_host", sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint("nid"),
)
sa.Table(
    "aegir_ansible_site", _md,
    sa.Column("nid", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("cron_interval", sa.Integer(), server_default=sa.text("3600"), nullable=False),
    sa.PrimaryKeyConstraint("nid"),
)
sa.Table(
    "aegir_ansible_site_db", _md,
    sa.Column("nid", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("db_server", sa.Integer(), nullable=False),
    sa.Column("db_name", sa.String(length=64), nullable=False),
    sa.Column("db_user", sa.String(length=80), nullable=False),
    sa.Column("hosts", sa.Text(), nullable=False),
    sa.Column("created", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("nid"),
    sa.UniqueConstraint("db_server", "db_name", name="aegir_ansible_site_db_name"),
)
sa.Table(
    "aegir_ansible_site_name", _md,
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("nid", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("name"),
    sa.Index("ix_aegir_ansible_site_name_nid", "nid"),
)
sa.Table(
    "aegir_ansible_queue_setting", _md,
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("value", sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint("name"),
)
sa.Table(
    "aegir_ansible_queue_server", _md,
    sa.Column("server_nid", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("paused", sa.Integer(), server_default=sa.text("0"), nullable=False),
    sa.Column("concurrency", sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint("server_nid"),
)
sa.Table(
    "aegir_ansible_runner", _md,
    sa.Column("id", sa.String(length=100), nullable=False),
    sa.Column("hostname", sa.String(length=255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started", sa.Double(), nullable=False),
    sa.Column("heartbeat", sa.Double(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("servers", sa.Text(), nullable=False),
    sa.Column("concurrency", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "aegir_ansible_task", _md,
    sa.Column("nid", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("not_before", sa.Double(), server_default=sa.text("0"), nullable=False),
    sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    sa.Column("vid", sa.Integer(), nullable=True),
    sa.Column("runner_id", sa.String(length=100), nullable=True),
    sa.Column("claimed_at", sa.Double(), nullable=True),
    sa.Column("run_id", sa.String(length=64), nullable=True),
    sa.Column("cancel_requested", sa.Integer(), server_default=sa.text("0"), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("nid"),
    sa.Index("aegir_ansible_task_runner", "runner_id"),
)
sa.Table(
    "aegir_ansible_log_batch", _md,
    sa.Column("token", sa.String(length=64), nullable=False),
    sa.Column("written", sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint("token"),
    sa.Index("aegir_ansible_log_batch_written", "written"),
)
sa.Table(
    "aegir_ansible_server_health", _md,
    sa.Column("server_nid", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("failures", sa.Integer(), nullable=False),
    sa.Column("backoff_until", sa.Double(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("server_nid"),
)

# A NOT NULL column added to an adopted table needs a value for its existing rows: the
# models' defaults (the models write every column of the rows they insert). TEXT columns
# take no server default on MariaDB: those are added NULL-able.
_ADDED_DEFAULTS: dict[tuple[str, str], str | sa.TextClause] = {
    ("aegir_ansible_server", "connection"): "ssh",
    ("aegir_ansible_server", "ssh_user"): "aegir",
    ("aegir_ansible_server", "ssh_port"): sa.text("22"),
    ("aegir_ansible_server", "python_interpreter"): "/usr/bin/python3",
    ("aegir_ansible_server", "script_user"): "aegir",
    ("aegir_ansible_server", "web_group"): "www-data",
    ("aegir_ansible_server", "http_listen_address"): "*",
    ("aegir_ansible_site_db", "created"): sa.text("0"),
    ("aegir_ansible_queue_setting", "value"): "",
    ("aegir_ansible_runner", "hostname"): "",
    ("aegir_ansible_runner", "pid"): sa.text("0"),
    ("aegir_ansible_runner", "started"): sa.text("0"),
    ("aegir_ansible_runner", "heartbeat"): sa.text("0"),
    ("aegir_ansible_runner", "state"): "running",
    ("aegir_ansible_runner", "concurrency"): sa.text("1"),
    ("aegir_ansible_log_batch", "written"): sa.text("0"),
    ("aegir_ansible_server_health", "failures"): sa.text("0"),
    ("aegir_ansible_server_health", "backoff_until"): sa.text("0"),
}


def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    existing = set(insp.get_table_names())
    for table in _md.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        _adopt(insp, table)


def _adopt(insp, table: sa.Table) -> None:
    """An existing table: add what it lacks of this revision's columns, indexes and unique
    constraints (an older release's create_all)."""
    have = {c["name"] for c in insp.get_columns(table.name)}
    indexes = {ix["name"] for ix in insp.get_indexes(table.name)}
    uniques = {uc["name"] for uc in insp.get_unique_constraints(table.name)} | indexes
    missing_uniques = [uc for uc in table.constraints
                       if isinstance(uc, sa.UniqueConstraint) and uc.name not in uniques]
    added = [c for c in table.columns if c.name not in have]
    if not added and not missing_uniques and all(ix.name in indexes for ix in table.indexes):
        return
    with op.batch_alter_table(table.name) as batch:
        for col in added:
            nullable, server_default = col.nullable, col.server_default
            if not nullable and server_default is None:
                default = _ADDED_DEFAULTS.get((table.name, col.name))
                if default is None:
                    nullable = True
                else:
                    server_default = sa.schema.DefaultClause(default)
            batch.add_column(sa.Column(col.name, col.type, nullable=nullable,
                                       server_default=server_default))
        for uc in missing_uniques:
            batch.create_unique_constraint(str(uc.name), [c.name for c in uc.columns])
    for ix in table.indexes:
        if ix.name not in indexes:
            op.create_index(str(ix.name), table.name, [c.name for c in ix.columns])


def downgrade() -> None:
    for table in reversed(_md.sorted_tables):
        op.drop_table(table.name)
