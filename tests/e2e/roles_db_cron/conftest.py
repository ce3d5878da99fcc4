"""Fixtures of the aegir_db / aegir_cron role tests: a MariaDB admin account and a unix user.

The admin account is created as root over the unix socket with a random password (PyMySQL)
and dropped afterwards. The unix user is created with useradd and removed with its crontab.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import db as harness_db

DB_HOST = harness_db.HOST
DB_PORT = harness_db.PORT


@pytest.fixture(scope="session")
def mysql_root():
    """MariaDB's root over the unix socket (tests.harness.db: the one place saying where)."""
    harness_db.require()
    conn = harness_db.root_connect()
    yield conn
    conn.close()


def _create_account(conn, user, password, privileges, suffix=""):
    with conn.cursor() as cur:
        cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, DB_HOST, password))
        try:
            cur.execute(f"GRANT {privileges} TO %s@%s {suffix}", (user, DB_HOST))
        except Exception:
            cur.execute("DROP USER %s@%s", (user, DB_HOST))
            raise


def _drop_account(conn, user):
    with conn.cursor() as cur:
        cur.execute("DROP USER IF EXISTS %s@%s", (user, DB_HOST))


@pytest.fixture(scope="session")
def db_admin(mysql_root):
    """dict(user, password) of a fresh admin account with ALL ... WITH GRANT OPTION."""
    user = "aegir_tadm_" + secrets.token_hex(4)
    # Characters a naive shell/option-file handling would break on (but no " or \).
    password = "Adm#" + secrets.token_hex(8) + ";$'x y"
    _create_account(mysql_root, user, password, "ALL PRIVILEGES ON *.*", "WITH GRANT OPTION")
    try:
        yield {"user": user, "password": password}
    finally:
        _drop_account(mysql_root, user)


@pytest.fixture(scope="session")
def db_weak_admin(mysql_root):
    """An account that may connect and create databases but not GRANT."""
    user = "aegir_tweak_" + secrets.token_hex(4)
    password = secrets.token_hex(12)
    _create_account(mysql_root, user, password, "CREATE, DROP ON *.*")
    try:
        yield {"user": user, "password": password}
    finally:
        _drop_account(mysql_root, user)


@pytest.fixture
def db_login(db_admin):
    """Role variables for the admin connection."""
    return {
        "aegir_db_login_host": DB_HOST,
        "aegir_db_login_port": DB_PORT,
        "aegir_db_login_user": db_admin["user"],
        "aegir_db_login_password": db_admin["password"],
    }


@pytest.fixture
def site_db(mysql_root):
    """A unique site database/user name (with an underscore); dropped afterwards."""
    name = "at_" + secrets.token_hex(5)
    yield name
    with mysql_root.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute("SELECT Host FROM mysql.user WHERE User = %s", (name,))
        for (host,) in cur.fetchall():
            cur.execute("DROP USER %s@%s", (name, host))


@pytest.fixture(scope="module")
def cron_user(tmp_path_factory):
    """A throwaway unix user (no login shell) whose crontab the tests edit."""
    name = "aegtc" + secrets.token_hex(4)
    home = tmp_path_factory.mktemp("cronhome")
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/usr/sbin/nologin", name], check=True)
    pw = pwd.getpwnam(name)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    yield {"name": name, "home": Path(home)}
    subprocess.run(["crontab", "-r", "-u", name], capture_output=True)
    subprocess.run(["userdel", name], check=True)
    shutil.rmtree(home, ignore_errors=True)


def read_crontab(user: str) -> str:
    proc = subprocess.run(["crontab", "-l", "-u", user], capture_output=True, text=True)
    if proc.returncode != 0:
        assert "no crontab for" in proc.stderr, proc.stderr
        return ""
    return proc.stdout


def write_crontab(user: str, text: str) -> None:
    if text == "":
        subprocess.run(["crontab", "-r", "-u", user], capture_output=True)
        return
    subprocess.run(["crontab", "-u", user, "-"], input=text, text=True, check=True)
