"""The test database server: the machine's MariaDB, with a per-session admin user.

The one place that says where the tests' MariaDB is and how to reach it: SERVER_URL (the
backend's SQLAlchemy URL without a database; AEGIR_TEST_MYSQL_URL), HOST/PORT as clients and
roles reach it, and root over the unix socket (ROOT_SOCKET; AEGIR_TEST_MYSQL_SOCKET) for
inspection. `require()` skips a test without MariaDB, and fails it under CI.

Roles get admin credentials the way Aegir hands them out (hosting_db_server's user/password); the
harness creates that user with a random password and drops it at the end. Tests inspect the
server as MariaDB's root over the unix socket, independent of the credentials under test.
"""

from __future__ import annotations

import os
import re
import secrets
from urllib.parse import urlsplit

import pymysql
import pytest

SERVER_URL = os.environ.get("AEGIR_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
ROOT_SOCKET = os.environ.get("AEGIR_TEST_MYSQL_SOCKET", "/run/mysqld/mysqld.sock")
HOST = urlsplit(SERVER_URL).hostname or "127.0.0.1"
PORT = urlsplit(SERVER_URL).port or 3306
# The admin user exists for these hosts: '%' for TCP clients anywhere, 'localhost' so that an
# anonymous ''@'localhost' account (if a server has one) never shadows it.
ADMIN_HOSTS = ("%", "localhost")
_IDENT = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def root_connect(database: str | None = None) -> pymysql.connections.Connection:
    """MariaDB's root over the unix socket (autocommit): for setting up and inspecting."""
    return pymysql.connect(unix_socket=ROOT_SOCKET, user="root", password="", database=database,
                           autocommit=True, charset="utf8mb4")


def unreachable() -> str | None:
    """Why the test MariaDB cannot be used (root over the socket, the backend over TCP), or None."""
    from sqlalchemy import create_engine, text

    try:
        root_connect().close()
        engine = create_engine(SERVER_URL)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - pymysql and SQLAlchemy raise several kinds
        return f"MariaDB is not reachable (root on {ROOT_SOCKET}, {HOST}:{PORT}): {exc}"
    return None


def require() -> None:
    """Skip the test when MariaDB is not there; under CI, where it must be, fail it."""
    why = unreachable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why}: run scripts/install-system-deps.sh", pytrace=False)
        pytest.skip(why)


class TestDbServer:
    """MariaDB as the Aegir db server: host/port as clients reach it plus admin credentials."""

    __test__ = False  # not a pytest test class

    service = "mysql"

    def __init__(self, host: str = HOST, port: int = PORT, socket: str = ROOT_SOCKET):
        self.host = host
        self.port = port
        self.socket = socket
        self.admin_user = f"harness_admin_{secrets.token_hex(4)}"
        self.admin_password = secrets.token_urlsafe(24)
        self._created_dbs: set[str] = set()
        self._created_users: set[tuple[str, str]] = set()

    def __repr__(self) -> str:  # never show the password
        return f"<TestDbServer {self.host}:{self.port} admin={self.admin_user}>"

    # ----------------------------------------------------------------- root access for tests

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        """A root connection over the unix socket (autocommit)."""
        return root_connect(database)

    def query(self, sql: str, *params, database: str | None = None) -> list[tuple]:
        """Run one statement as root; returns its rows (empty list for statements without rows)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def database_exists(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", name))

    def user_hosts(self, user: str) -> list[str]:
        """The hosts an account exists for (e.g. ['127.0.0.1'])."""
        return sorted(r[0] for r in self.query("SELECT Host FROM mysql.user WHERE User = %s", user))

    def grants(self, user: str, host: str) -> list[str]:
        """SHOW GRANTS lines of user@host ([] if the account does not exist)."""
        if host not in self.user_hosts(user):
            return []
        return [r[0] for r in self.query("SHOW GRANTS FOR %s@%s", user, host)]

    def can_login(self, user: str, password: str, database: str | None = None) -> bool:
        """True if user/password can connect over TCP (as a web server's PHP would)."""
        try:
            pymysql.connect(host=self.host, port=self.port, user=user, password=password,
                            database=database, connect_timeout=5).close()
            return True
        except pymysql.err.OperationalError:
            return False

    def create_database(self, name: str, user: str, password: str, grant_host: str = "127.0.0.1") -> None:
        """Create a database and a user owning it (test setup without the roles); dropped at session end."""
        for ident in (name, user):
            if not _IDENT.match(ident):
                raise ValueError(f"unsafe identifier {ident!r}")
        self.query(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        self._created_dbs.add(name)
        self.query("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", user, grant_host, password)
        self.query("ALTER USER %s@%s IDENTIFIED BY %s", user, grant_host, password)
        self._created_users.add((user, grant_host))
        self.query(f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@%s", user, grant_host)

    def drop_database(self, name: str) -> None:
        if not _IDENT.match(name):
            raise ValueError(f"unsafe identifier {name!r}")
        self.query(f"DROP DATABASE IF EXISTS `{name}`")

    def drop_user(self, user: str, host: str) -> None:
        self.query("DROP USER IF EXISTS %s@%s", user, host)

    # ----------------------------------------------------------------- inventory

    def inventory_vars(self) -> dict:
        """The db-service variables of docs/inventory-variables.md (admin password included)."""
        return {
            "aegir_db_service": self.service,
            "aegir_db_host": self.host,
            "aegir_db_port": self.port,
            "aegir_db_admin_user": self.admin_user,
            "aegir_db_admin_password": self.admin_password,
        }

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create the admin user (ALL PRIVILEGES WITH GRANT OPTION)."""
        for host in ADMIN_HOSTS:
            self.query("CREATE USER %s@%s IDENTIFIED BY %s", self.admin_user, host, self.admin_password)
            self.query("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", self.admin_user, host)

    def stop(self) -> None:
        """Drop the admin user and what create_database() made."""
        for host in ADMIN_HOSTS:
            self.drop_user(self.admin_user, host)
        for user, host in self._created_users:
            self.drop_user(user, host)
        for name in self._created_dbs:
            self.drop_database(name)
