"""Shared fixtures: a fresh Aegir database per test, on SQLite and on MariaDB.

MariaDB is the one of tests/harness/db.py (the machine's server on 127.0.0.1:3306, root with an
empty password, or AEGIR_TEST_MYSQL_URL). Each test gets its own database,
dropped afterwards.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from aegir_ansible.db import init_schema, make_engine, make_sessionmaker
from aegir_ansible.frontend import Frontend
from tests.harness import db as harness_db

pytest_plugins = ["tests.harness.fixtures"]

@pytest.fixture(scope="session")
def mysql_server_url():
    """The test MariaDB's URL without a database (tests.harness.db: the one place saying where)."""
    harness_db.require()
    return harness_db.SERVER_URL


def new_database_url(kind: str, tmp_path, mysql_server_url=None) -> tuple[str, callable]:
    """A URL of a new empty database of that kind, and a function that drops it."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'aegir.sqlite'}", lambda: None
    name = f"aegir_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(mysql_server_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))

    def drop():
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()

    return f"{mysql_server_url}/{name}", drop


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request, tmp_path):
    """An initialised, empty Aegir database (SQLite file or a new MariaDB database)."""
    server = request.getfixturevalue("mysql_server_url") if request.param == "mysql" else None
    url, drop = new_database_url(request.param, tmp_path, server)
    engine = make_engine(url)
    init_schema(engine)
    engine.dispose()
    yield url
    drop()


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine):
    with make_sessionmaker(engine)() as s:
        yield s


@pytest.fixture
def frontend(session):
    return Frontend(session)
