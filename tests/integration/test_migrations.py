"""The backend's schema migrations (Alembic, `aegir db upgrade`): the models equal the head,
`aegir db init` stamps a fresh database at the head, an older `create_all` database is
adopted and upgraded, a later revision's column arrives; on SQLite and MariaDB."""

from __future__ import annotations

import json
import textwrap

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, inspect, select

from aegir_ansible.cli import main
from aegir_ansible.db import make_engine, migrations
from aegir_ansible.db.models import AegirBase
from aegir_ansible.db.schema import backend_metadatas, init_schema
from tests.conftest import new_database_url


@pytest.fixture(params=["sqlite", "mysql"])
def empty_url(request, tmp_path):
    server = request.getfixturevalue("mysql_server_url") if request.param == "mysql" else None
    url, drop = new_database_url(request.param, tmp_path, server)
    yield url
    drop()


@pytest.fixture
def empty_engine(empty_url):
    eng = make_engine(empty_url)
    yield eng
    eng.dispose()


def backend_tables(engine) -> set[str]:
    return {n for n in inspect(engine).get_table_names() if migrations.is_backend_table(n)}


def columns(engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def diff_with_models(engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": migrations.include_object,
                                                     "compare_type": True})
        return compare_metadata(ctx, backend_metadatas())


def test_models_match_head(empty_engine):
    """The revisions, applied one by one from nothing, give the models' schema: a model
    change without its revision fails here (see aegir_ansible/db/migrations/README.md)."""
    migrations.run(empty_engine, lambda cfg: __import__("alembic.command").command.upgrade(cfg, "head"))
    assert migrations.current(empty_engine) == migrations.heads()
    assert diff_with_models(empty_engine) == []
    assert backend_tables(empty_engine) | {migrations.VERSION_TABLE} == {
        t.name for md in backend_metadatas() for t in md.tables.values()}


def test_init_stamps_head_and_upgrade_is_a_no_op(empty_url, empty_engine):
    runner = CliRunner()
    res = runner.invoke(main, ["--db", empty_url, "db", "init"])
    assert res.exit_code == 0, res.output
    assert migrations.state(empty_engine) == "versioned"
    res = runner.invoke(main, ["--db", empty_url, "db", "current", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["current"] == list(migrations.heads()) == data["head"]
    assert data["pending"] == []
    assert diff_with_models(empty_engine) == []
    res = runner.invoke(main, ["--db", empty_url, "db", "upgrade"])
    assert res.exit_code == 0, res.output
    assert "already at" in res.output
    res = runner.invoke(main, ["--db", empty_url, "db", "history"])
    assert res.exit_code == 0 and "0001" in res.output and "Baseline" in res.output, res.output
    # a hostmaster database (frontend tables present) keeps its tables; only ours are made
    assert {"node", "hosting_task"} <= set(inspect(empty_engine).get_table_names())


def _old_schema(engine) -> None:
    """What an older release's `aegir db init` left: the frontend tables and create_all of
    its backend models, which had no aegir_ansible_server.db_host, no server health table
    and no index on the log batches; with a row that must survive."""
    from aegir_ansible.db.migrations.versions import v0001_baseline

    AegirBase.metadata.create_all(engine)
    old = MetaData()
    for md in backend_metadatas():
        for table in md.sorted_tables:
            if table.name in ("aegir_ansible_server_health", migrations.VERSION_TABLE) \
                    or table.name not in v0001_baseline._md.tables:  # added by later revisions
                continue
            cols = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable,
                           autoincrement=False, server_default=c.server_default)
                    for c in table.columns if (table.name, c.name) != ("aegir_ansible_server", "db_host")]
            Table(table.name, old, *cols)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(old.tables["aegir_ansible_server"]).values(
            nid=7, connection="ssh", address="web1", ssh_user="aegir", ssh_port=22,
            python_interpreter="/usr/bin/python3", aegir_root="/var/aegir", script_user="aegir",
            web_group="www-data", http_listen_address="*", php_fastcgi="unix:/run/php.sock"))


LATER_REVISION = '''
"""Test only: a revision after the shipped head, adding a column."""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("aegir_ansible_runner") as batch:
        batch.add_column(sa.Column("version", sa.String(32), nullable=False, server_default=""))


def downgrade():
    with op.batch_alter_table("aegir_ansible_runner") as batch:
        batch.drop_column("version")
'''


def test_old_create_all_schema_is_adopted_and_upgraded(empty_engine, tmp_path):
    _old_schema(empty_engine)
    assert migrations.state(empty_engine) == "legacy"
    assert "db_host" not in columns(empty_engine, "aegir_ansible_server")
    later = tmp_path / "later"
    later.mkdir()
    (later / "v9001_runner_version.py").write_text(
        textwrap.dedent(LATER_REVISION).format(head=migrations.heads()[0]))

    result = migrations.upgrade(empty_engine, extra_locations=[later])
    assert result["state"] == "legacy" and result["before"] == ()
    assert result["after"] == ("9001",)
    assert "aegir_ansible_server_health" in result["created"]
    # the later revision's column, and what the baseline added to the old tables
    assert "version" in columns(empty_engine, "aegir_ansible_runner")
    assert "db_host" in columns(empty_engine, "aegir_ansible_server")
    assert "aegir_ansible_log_batch_written" in {
        ix["name"] for ix in inspect(empty_engine).get_indexes("aegir_ansible_log_batch")}
    with empty_engine.connect() as conn:
        server = Table("aegir_ansible_server", MetaData(), autoload_with=conn)
        assert conn.execute(select(server.c.address, server.c.db_host)).all() == [("web1", None)]
    # the frontend's tables are not versioned nor changed
    assert migrations.current(empty_engine) == ("9001",)
    assert diff_with_models(empty_engine) != []  # the test-only column is not in the models

    # again: nothing to do
    again = migrations.upgrade(empty_engine, extra_locations=[later])
    assert again["before"] == again["after"] == ("9001",) and again["created"] == []


def test_cli_upgrade_adopts_an_old_database(empty_url, empty_engine):
    _old_schema(empty_engine)
    res = CliRunner().invoke(main, ["--db", empty_url, "db", "upgrade"])
    assert res.exit_code == 0, res.output
    assert "adopted" in res.output and "aegir_ansible_server_health" in res.output
    assert migrations.current(empty_engine) == migrations.heads()
    assert diff_with_models(empty_engine) == []
    # init on it afterwards changes nothing
    result = init_schema(empty_engine)
    assert result["created"] == [] and result["migration"]["state"] == "versioned"


def test_upgrade_leaves_frontend_tables_alone(empty_engine):
    """A hostmaster table (not ours) with a shape the models do not know is left as it is."""
    extra = MetaData()
    Table("hosting_custom", extra, Column("id", Integer, primary_key=True), Column("x", String(8)))
    extra.create_all(empty_engine)
    migrations.upgrade(empty_engine)
    assert columns(empty_engine, "hosting_custom") == {"id", "x"}
    assert "hosting_custom" not in migrations.heads()


def test_the_wheel_ships_the_migrations(tmp_path):
    """Installed from the wheel (no source tree), `aegir db upgrade` finds its revisions."""
    import os
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(repo)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("aegir_ansible-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(repo)) for p in (repo / "aegir_ansible/db/migrations").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped and shipped <= names, sorted(shipped - names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path[1:]])}
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    code = ("import aegir_ansible, sys; from aegir_ansible.cli import main; "
            f"assert aegir_ansible.__file__.startswith({str(site)!r}), aegir_ansible.__file__; "
            "main(sys.argv[1:])")
    out = subprocess.run([sys.executable, "-c", code, "--db", url, "db", "upgrade"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"upgraded from none to {migrations.script().get_current_head()}" in out.stdout, out.stdout


def test_runner_warns_when_migrations_are_pending(empty_engine, caplog):
    from aegir_ansible.queue.worker import Worker

    _old_schema(empty_engine)  # not versioned: every revision is pending
    w = Worker(empty_engine, install_signals=False)
    with caplog.at_level("WARNING", logger="aegir.queue"):
        w._check_migrations()
    assert any("aegir db upgrade" in r.getMessage() for r in caplog.records), caplog.text
    migrations.upgrade(empty_engine)
    caplog.clear()
    with caplog.at_level("WARNING", logger="aegir.queue"):
        w._check_migrations()
    assert not caplog.records
