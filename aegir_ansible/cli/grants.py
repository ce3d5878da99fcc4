"""`aegir db grants`: print the least-privilege grants of the backend's database user.

A self-contained click command (aegir_ansible.cli registers it in its `db` group). With a
MySQL/MariaDB URL (`--db`, the group's `--db`, or AEGIR_DB_URL) it reads the database name
and which tables exist from that database; `--database NAME --offline` prints them without
connecting.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from aegir_ansible.db.engine import ENV_VAR, make_engine
from aegir_ansible.db.grants import grants_script


def _fail(message: str) -> NoReturn:
    click.echo(f"aegir: error: {message}", err=True)
    sys.exit(2)


@click.command("grants")
@click.option("--user", required=True, help="MySQL user name of the backend.")
@click.option("--host", required=True, help="Host part of the account (where the runner connects from).")
@click.option("--database", help="Hostmaster database name (default: the one of the database URL).")
@click.option("--db", "db_url", metavar="URL", default=None,
              help="SQLAlchemy URL of the hostmaster database, used to read its name and tables "
                   "(default: the group's --db, else $AEGIR_DB_URL).")
@click.option("--offline", is_flag=True, help="Do not connect: grant on every table the backend uses.")
@click.option("--create-user", is_flag=True, help="Start with a CREATE USER statement (password placeholder).")
@click.pass_context
def grants_command(ctx, user, host, database, db_url, offline, create_user):
    """Print the GRANT statements of the backend's MySQL/MariaDB user (one per table)."""
    url = db_url or getattr(ctx.obj, "url", None) or os.environ.get(ENV_VAR)
    existing = None
    if not offline:
        if not url:
            _fail("give --db URL (or AEGIR_DB_URL), or --database NAME --offline")
        try:
            parsed = make_url(url)
        except ArgumentError:
            _fail("the database URL is not valid")
        if not parsed.get_backend_name().startswith(("mysql", "mariadb")):
            _fail("grants are for a MySQL/MariaDB hostmaster database")
        database = database or parsed.database
        engine = make_engine(url)
        try:
            existing = inspect(engine).get_table_names(schema=database)
        except SQLAlchemyError as exc:
            msg = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            _fail(f"cannot read the tables of {database!r}: {msg} (or use --offline)")
        finally:
            engine.dispose()
    if not database:
        _fail("no database name: give --database")
    try:
        click.echo(grants_script(user, host, database, existing_tables=existing, create_user=create_user), nl=False)
    except ValueError as exc:
        _fail(str(exc))
