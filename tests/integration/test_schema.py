"""`aegir db init`: a full schema standalone, only our own tables on a hostmaster database."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

from aegir_ansible.cli import main
from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db.models import AEGIR_TABLES
from aegir_ansible.frontend import Frontend
from aegir_ansible.inventory import build_inventory
from tests.conftest import new_database_url

DDL = (Path(__file__).parent / "hostmaster_schema.sql").read_text()


def test_standalone_init_creates_everything(tmp_path):
    url = f"sqlite:///{tmp_path}/a.sqlite"
    result = CliRunner().invoke(main, ["db", "init", "--db", url])
    assert result.exit_code == 0, result.output
    names = set(inspect(create_engine(url)).get_table_names())
    assert set(AEGIR_TABLES) <= names
    assert {"aegir_ansible_server", "aegir_ansible_site"} <= names
    again = CliRunner().invoke(main, ["db", "init", "--db", url])
    assert again.exit_code == 0 and "existing Aegir database" in again.output


def _schema_snapshot(engine) -> dict[str, str]:
    with engine.connect() as c:
        return {name: c.execute(text(f"SHOW CREATE TABLE `{name}`")).one()[1]
                for name in inspect(engine).get_table_names() if not name.startswith("aegir_ansible_")}


def test_existing_hostmaster_database_works_unchanged(mysql_server_url, tmp_path):
    url, drop = new_database_url("mysql", tmp_path, mysql_server_url)
    try:
        engine = create_engine(url)
        with engine.begin() as c:
            for statement in DDL.split(";\n"):
                if statement.strip():
                    c.exec_driver_sql(statement)
        before = _schema_snapshot(engine)
        result = CliRunner().invoke(main, ["db", "init", "--db", url])
        assert result.exit_code == 0, result.output
        assert "existing Aegir database" in result.output
        assert _schema_snapshot(engine) == before  # Aegir's tables untouched
        created = {t for t in inspect(engine).get_table_names() if t.startswith("aegir_ansible_")}
        assert {"aegir_ansible_server", "aegir_ansible_site"} <= created

        # The existing rows are read, and new rows are written into the existing tables.
        eng = make_engine(url)
        with make_sessionmaker(eng)() as s, s.begin():
            fe = Frontend(s)
            fe.add_platform("D10", "/var/aegir/platforms/d10", "server_master", queue_verify=False)
            fe.add_site("new.example.net", "platform_D10", queue_install=False)
            inv = build_inventory(s)
            assert inv.effective_vars("new.example.net")["aegir_site_db_server"] == "server_master"
            assert inv.hosts["hostmaster"]["aegir_site_db_name"] == "aegirexamplenet"
            assert inv.effective_vars("hostmaster")["aegir_http_test_cmd"] == ["nginx", "-t"]
            assert inv.hosts["server_master"]["aegir_db_admin_user"] == "aegir_root"
            fe.add_task("verify", "hostmaster")
        eng.dispose()
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM hosting_task WHERE rid = 4")).scalar() == 1
            assert c.execute(text("SELECT value FROM variable")).scalar() == b"i:0;"
        engine.dispose()
    finally:
        drop()
