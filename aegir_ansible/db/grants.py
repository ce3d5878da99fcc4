"""The least-privilege MySQL/MariaDB grants of the backend's database user on a hostmaster
database (`aegir db grants`).

A table-level GRANT names one table: `GRANT ... ON db.\\`aegir\\_ansible\\_%\\`` grants on a
table literally called `aegir\\_ansible\\_%` (only database names take wildcards), so
`aegir db init` as that user fails with "CREATE command denied". The statements here name
every table: the backend's own tables from the SQLAlchemy metadata (with CREATE, so `aegir db
init` can create them and later versions can add columns and indexes), and hostmaster's
tables with exactly the privileges the backend uses on them:

- SELECT on every frontend table the backend models (aegir_ansible.db.models), nothing on
  the rest of the Drupal site (users, sessions, cache, ...);
- INSERT/UPDATE/DELETE on the tables the queue's outcome hooks and the `aegir server|platform|
  site add`, `aegir task add` commands write, as hosting's own code would (FRONTEND_WRITES).

MySQL refuses a table-level grant on a table that does not exist unless it includes CREATE,
so tables `existing_tables` says the database lacks are left out (the optional
hosting_https / hosting_ssl tables; the script names any other as missing). A new backend version may add tables: run
`aegir db grants` again after an upgrade (it only ever adds grants).
"""

from __future__ import annotations

import re

from .backend import BackendBase
from .models import AegirBase

# What the backend writes in hostmaster's tables, and why.
FRONTEND_WRITES: dict[str, tuple[str, ...]] = {
    # task nodes (aegir task add, follow-up verifies queued by outcomes, clone's new site),
    # task state and revisions, renames (migrate/clone with a new uri)
    "node": ("INSERT", "UPDATE"),
    "node_revision": ("INSERT", "UPDATE"),
    "hosting_context": ("INSERT", "UPDATE", "DELETE"),
    "hosting_task": ("INSERT", "UPDATE"),
    "hosting_task_arguments": ("INSERT",),
    "hosting_task_log": ("INSERT",),
    # entity state after tasks (status, verified, db_name, platform, db_server, profile)
    "hosting_site": ("INSERT", "UPDATE"),
    "hosting_site_alias": ("INSERT", "UPDATE", "DELETE"),
    "hosting_site_backups": ("INSERT", "DELETE"),
    "hosting_platform": ("INSERT", "UPDATE"),
    "hosting_server": ("INSERT", "UPDATE"),
    # aegir server add
    "hosting_service": ("INSERT",),
    "hosting_ip_addresses": ("INSERT",),
    "hosting_db_server": ("INSERT",),
    # site add / clone: client and profile nodes when missing
    "hosting_client": ("INSERT",),
    # packages and profiles reported by verify (aegir_ansible.packages), cleared on delete
    "hosting_package": ("INSERT", "UPDATE"),
    "hosting_package_instance": ("INSERT", "UPDATE", "DELETE"),
    "hosting_package_languages": ("INSERT", "DELETE"),
}

# Hostmaster tables that exist only with an optional module enabled.
OPTIONAL_TABLES = frozenset({"hosting_https_server", "hosting_https_site", "hosting_ssl_server",
                             "hosting_ssl_site", "hosting_ssl_cert", "hosting_ssl_cert_ips"})

# On the backend's own tables: everything a schema of our own needs, not DROP or GRANT.
BACKEND_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "INDEX", "REFERENCES")

_IDENT = re.compile(r"^[A-Za-z0-9_$]{1,64}$")
_ACCOUNT_PART = re.compile(r"^[^'\\\x00-\x1f]{1,255}$")


def backend_tables() -> list[str]:
    """Every table the backend owns (queue tables included), sorted."""
    from .schema import backend_metadatas

    names = set(BackendBase.metadata.tables)
    for md in backend_metadatas():
        names.update(md.tables)
    return sorted(names)


def frontend_tables() -> list[str]:
    return sorted(AegirBase.metadata.tables)


def _quote_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f"`{name}`"


def _account(user: str, host: str) -> str:
    for part, what in ((user, "user"), (host, "host")):
        if not _ACCOUNT_PART.match(part):
            raise ValueError(f"unusable MySQL {what} name {part!r}")
    return f"'{user}'@'{host}'"


def grant_statements(user: str, host: str, database: str, *, existing_tables=None,
                     writes: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """The GRANT statements for user@host on `database`, one per table. `existing_tables`
    (names present in the database) drops the frontend tables that are missing."""
    account = _account(user, host)
    db = _quote_ident(database)
    writes = FRONTEND_WRITES if writes is None else writes
    unknown = set(writes) - set(frontend_tables())
    if unknown:
        raise ValueError(f"writes name tables the backend does not model: {sorted(unknown)}")
    present = None if existing_tables is None else set(existing_tables)
    out = []
    for table in frontend_tables():
        if present is not None and table not in present:
            continue  # a GRANT without CREATE on a missing table fails; grants_script says so
        privileges = ("SELECT",) + tuple(writes.get(table, ()))
        out.append(f"GRANT {', '.join(privileges)} ON {db}.{_quote_ident(table)} TO {account};")
    for table in backend_tables():
        out.append(f"GRANT {', '.join(BACKEND_PRIVILEGES)} ON {db}.{_quote_ident(table)} TO {account};")
    return out


def grants_script(user: str, host: str, database: str, *, existing_tables=None,
                  create_user: bool = False) -> str:
    """The statements as an SQL script with comments (what `aegir db grants` prints)."""
    lines = [f"-- aegir-ansible: grants of {_account(user, host)} on {_quote_ident(database)}",
             "-- (SELECT on the hostmaster tables the backend reads; INSERT/UPDATE/DELETE where",
             "-- its task outcomes and commands write; its own aegir_ansible_* tables in full)"]
    if create_user:
        lines.append(f"CREATE USER IF NOT EXISTS {_account(user, host)} IDENTIFIED BY '<password>';")
    if existing_tables is not None:
        absent = set(frontend_tables()) - set(existing_tables)
        optional, required = sorted(absent & OPTIONAL_TABLES), sorted(absent - OPTIONAL_TABLES)
        if optional:
            lines.append(f"-- not in this database (optional modules), skipped: {', '.join(optional)}")
        if required:
            lines.append(f"-- MISSING hostmaster tables (is this a hostmaster database?): {', '.join(required)}")
    lines += grant_statements(user, host, database, existing_tables=existing_tables)
    return "\n".join(lines) + "\n"
