"""Alembic's environment for the backend's tables: run with the connection that
`aegir_ansible.db.migrations.config()` carries (`aegir db upgrade`)."""

from __future__ import annotations

from alembic import context

from aegir_ansible.db.migrations import VERSION_TABLE, include_object
from aegir_ansible.db.schema import backend_metadatas

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("aegir-ansible migrations run through `aegir db upgrade` "
                       "(aegir_ansible.db.migrations.upgrade), with a connection")

context.configure(
    connection=connection,
    target_metadata=backend_metadatas(),
    version_table=VERSION_TABLE,
    include_object=include_object,
    # SQLite alters a table by copying it (ALTER TABLE does little there).
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
