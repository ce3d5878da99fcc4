"""Schema migrations of the backend's own tables (Alembic), behind `aegir db upgrade`.

Only the `aegir_ansible_*` tables are migrated: the frontend's hostmaster tables belong to
hostmaster (its own update hooks change them) and are never touched here. The revision
applied is recorded in `aegir_ansible_alembic_version` (not Alembic's default
`alembic_version`, so that it stays in the backend's namespace of a shared hostmaster
database). How to add a revision: README.md beside this file.

A database is in one of three states (`state()`):

- `fresh`: none of the backend's tables: they are created from the models and stamped at
  the head revision (the models are the head's schema: tests/integration/test_migrations.py
  checks that they agree);
- `legacy`: backend tables created by `aegir db init` before migrations existed (no version
  table): the baseline revision adopts them (it creates what they lack of today's baseline
  schema, touches nothing else) and later revisions are applied;
- `versioned`: the revisions after the recorded one are applied.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect

HERE = Path(__file__).resolve().parent
VERSIONS = HERE / "versions"
VERSION_TABLE = "aegir_ansible_alembic_version"
TABLE_PREFIX = "aegir_ansible_"


def is_backend_table(name: str | None) -> bool:
    return bool(name) and str(name).startswith(TABLE_PREFIX) and name != VERSION_TABLE


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Autogenerate and comparisons see only the backend's tables (never hostmaster's)."""
    if type_ == "table":
        return is_backend_table(name)
    table = getattr(obj, "table", None)
    return table is None or is_backend_table(table.name)


def config(connection: Connection | None = None, extra_locations: Iterable[str | os.PathLike] = ()):
    """An Alembic configuration for this package's migrations (no alembic.ini needed).

    extra_locations: more version directories (tests use one holding a revision after the
    shipped head)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations",
                        os.pathsep.join([str(VERSIONS), *(str(p) for p in extra_locations)]))
    # New revision files: v<number>_<slug>.py (valid module names, in order).
    cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


def script(extra_locations: Iterable[str | os.PathLike] = ()):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config(None, extra_locations))


def heads(extra_locations: Iterable[str | os.PathLike] = ()) -> tuple[str, ...]:
    return tuple(script(extra_locations).get_heads())


def current(engine: Engine) -> tuple[str, ...]:
    """The revision(s) the database is at (empty: not versioned)."""
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return tuple(ctx.get_current_heads())


def state(engine: Engine) -> str:
    names = set(inspect(engine).get_table_names())
    if VERSION_TABLE in names:
        return "versioned"
    return "legacy" if any(is_backend_table(n) for n in names) else "fresh"


def run(engine: Engine, fn, extra_locations=()) -> None:
    # Alembic's recipe for an engine of the application's own: one connection, one
    # transaction (DDL is transactional on SQLite; MariaDB commits each DDL statement).
    with engine.begin() as conn:
        fn(config(conn, extra_locations))


def stamp(engine: Engine, revision: str = "head", extra_locations=()) -> None:
    from alembic import command

    run(engine, lambda cfg: command.stamp(cfg, revision), extra_locations)


def upgrade(engine: Engine, revision: str = "head", extra_locations=()) -> dict:
    """Bring the backend's tables to `revision`. Returns {state, before, after, created}."""
    from alembic import command

    from ..schema import backend_metadatas

    st = state(engine)
    before_tables = set(inspect(engine).get_table_names())
    before = current(engine)
    if st == "fresh" and revision == "head" and not tuple(extra_locations):
        for md in backend_metadatas():
            md.create_all(engine)
        stamp(engine, "head")
    else:
        run(engine, lambda cfg: command.upgrade(cfg, revision), extra_locations)
    after_tables = set(inspect(engine).get_table_names())
    return {"state": st, "before": before, "after": current(engine),
            "created": sorted(n for n in after_tables - before_tables if is_backend_table(n))}


def pending(engine: Engine) -> list[str]:
    """Revisions not applied yet, oldest first (all of them when not versioned)."""
    scr = script()
    at = current(engine)
    revs = list(scr.iterate_revisions("heads", at[0] if len(at) == 1 else "base"))
    if len(at) > 1:
        return []  # several heads recorded: leave it to `aegir db upgrade`
    return [r.revision for r in reversed(revs) if r.revision not in at]
