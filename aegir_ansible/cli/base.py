"""What every `aegir` command shares: the `aegir` group, the per-invocation context (the
database URL, a lazily made engine), `--db`, the one-line error report, output tables.

Bad input is reported as one line on stderr with exit status 2, and the database is left
unchanged (every command writes in one transaction that a refusal rolls back).
"""

from __future__ import annotations

import functools
import json
import sys
import typing

import click
from sqlalchemy.exc import SQLAlchemyError

from aegir_ansible import __version__
from aegir_ansible.db import make_engine, make_sessionmaker, resolve_url, safe_url
from aegir_ansible.db.schema import has_aegir_schema
from aegir_ansible.frontend import Frontend
from aegir_ansible.validation import InputError


class Ctx:
    """Per-invocation state: the database URL and a lazily made engine."""

    def __init__(self):
        self.url: str | None = None
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def session(self):
        return make_sessionmaker(self.engine)()

    def require_schema(self):
        if not has_aegir_schema(self.engine):
            raise InputError(
                f"the database {safe_url(resolve_url(self.url))} has no Aegir tables: "
                "run 'aegir db init' first"
            )


def fail(message: str) -> None:
    click.echo(f"aegir: error: {message}", err=True)
    sys.exit(2)


def db_option(f):
    """`--db URL` on every command (else AEGIR_DB_URL, else the embedded SQLite file)."""

    @click.option("--db", "db_url", metavar="URL", default=None, expose_value=True,
                  help="SQLAlchemy URL of the Aegir database (default: $AEGIR_DB_URL, "
                       "else the embedded SQLite file).")
    @click.pass_context
    @functools.wraps(f)
    def wrapper(ctx, db_url, *args, **kwargs):
        obj = ctx.ensure_object(Ctx)
        if db_url:
            obj.url = db_url
        try:
            return ctx.invoke(f, *args, **kwargs)
        except InputError as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            msg = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            fail(f"database error on {safe_url(resolve_url(obj.url))}: {msg}")

    return wrapper


def obj() -> Ctx:
    # main() ensures the object before any subcommand runs.
    return typing.cast(Ctx, click.get_current_context().find_object(Ctx))


def write(fn):
    """Run fn(frontend) in one transaction; InputError rolls everything back."""
    c = obj()
    c.require_schema()
    with c.session() as session:
        with session.begin():
            return fn(Frontend(session))


def read(fn):
    c = obj()
    c.require_schema()
    with c.session() as session:
        return fn(session)


def print_rows(rows: list[dict], as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
        return
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def print_record(record: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    width = max(len(k) for k in record)
    for k, v in record.items():
        if isinstance(v, (list, dict)):
            v = json.dumps(v)
        click.echo(f"{k.ljust(width)}  {v}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="aegir", message="%(prog)s %(version)s")
@click.option("--db", "db_url", metavar="URL", default=None,
              help="SQLAlchemy URL of the Aegir database (default: $AEGIR_DB_URL, else the "
                   "embedded SQLite file).")
@click.pass_context
def main(ctx, db_url):
    """aegir-ansible: an Ansible backend for the Aegir hosting system."""
    ctx.ensure_object(Ctx).url = db_url
