"""aegir_db role against the real MariaDB on 127.0.0.1:3306 (ansible-playbook, connection local)."""

from __future__ import annotations

import gzip
import os
import secrets
import stat

import pymysql
import pytest

from .conftest import DB_HOST, DB_PORT
from .helpers import run_role

pytestmark = pytest.mark.e2e


def site_vars(db_login, name, password, hosts, **more):
    v = dict(db_login)
    v.update(aegir_db_name=name, aegir_db_password=password, aegir_db_grant_hosts=hosts)
    v.update(more)
    return v


def user_hosts(root, user):
    with root.cursor() as cur:
        cur.execute("SELECT Host FROM mysql.user WHERE User = %s", (user,))
        return sorted(h for (h,) in cur.fetchall())


def db_exists(root, name):
    with root.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
        return cur.fetchone()[0] == 1


def grants(root, user, host):
    with root.cursor() as cur:
        cur.execute("SHOW GRANTS FOR %s@%s", (user, host))
        return [g for (g,) in cur.fetchall()]


def test_create_grants_idempotent_and_absent(tmp_path, mysql_root, db_login, site_db):
    name = site_db
    password = "Site#" + secrets.token_hex(6) + "'$(x)"
    decoy = name.replace("_", "X")  # matches `at_...` if `_` were left a GRANT wildcard
    with mysql_root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{decoy}`")
        # A grant at a host the backend created earlier (recorded: aegir_db_owned_hosts) that is
        # no longer listed must be removed by the role.
        cur.execute("CREATE USER %s@'10.9.9.9' IDENTIFIED BY 'old'", (name,))
        cur.execute(f"GRANT ALL ON `{decoy}`.* TO %s@'10.9.9.9'", (name,))
    try:
        hosts = ["127.0.0.1", "localhost"]
        r = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, password, hosts,
                                                           aegir_db_owned_hosts=["10.9.9.9"]))
        assert r.rc == 0 and r.changed > 0, r
        assert db_exists(mysql_root, name)
        assert user_hosts(mysql_root, name) == sorted(hosts)
        escaped = name.replace("_", "\\_")
        for host in hosts:
            g = grants(mysql_root, name, host)
            assert len(g) == 2, g
            assert g[0].startswith(f"GRANT USAGE ON *.* TO `{name}`@`{host}`"), g
            assert g[1] == f"GRANT ALL PRIVILEGES ON `{escaped}`.* TO `{name}`@`{host}`", g
        with pymysql.connect(host=DB_HOST, port=DB_PORT, user=name, password=password, database=name) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT CURRENT_USER()")
                assert cur.fetchone()[0] == f"{name}@127.0.0.1"
                cur.execute("SHOW DATABASES")
                assert sorted(d for (d,) in cur.fetchall()) == sorted(["information_schema", name])
                cur.execute("CREATE TABLE t (a INT)")
        with pytest.raises(pymysql.err.OperationalError):
            pymysql.connect(host=DB_HOST, port=DB_PORT, user=name, password="wrong" + password)

        again = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, password, hosts))
        assert again.rc == 0 and again.changed == 0, again

        check = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, password, ["127.0.0.1"],
                                                               aegir_db_owned_hosts=hosts), check=True)
        assert check.rc == 0 and check.changed > 0, check
        assert user_hosts(mysql_root, name) == sorted(hosts)  # check mode changed nothing

        fewer = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, password, ["127.0.0.1"],
                                                               aegir_db_owned_hosts=hosts))
        assert fewer.rc == 0 and fewer.changed > 0, fewer
        assert user_hosts(mysql_root, name) == ["127.0.0.1"]

        gone = run_role(tmp_path, "aegir_db",
                        extra=site_vars(db_login, name, "", ["127.0.0.1"], aegir_db_state="absent",
                                        aegir_db_owned_hosts=["127.0.0.1"]))
        assert gone.rc == 0 and gone.changed > 0, gone
        assert not db_exists(mysql_root, name)
        assert user_hosts(mysql_root, name) == []
        assert db_exists(mysql_root, decoy)
        gone_again = run_role(tmp_path, "aegir_db",
                              extra=site_vars(db_login, name, "", ["127.0.0.1"], aegir_db_state="absent"))
        assert gone_again.rc == 0 and gone_again.changed == 0, gone_again
    finally:
        with mysql_root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{decoy}`")


def test_invalid_names_and_missing_password_are_refused(tmp_path, db_login, mysql_root):
    bad = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, "x`; DROP DATABASE mysql; --", "pw", ["127.0.0.1"]))
    assert bad.rc != 0 and "must be" in bad.output, bad
    name = "at_" + secrets.token_hex(5)
    nopw = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, "", ["127.0.0.1"]))
    assert nopw.rc != 0 and "aegir_db_password is required" in nopw.output, nopw
    badhost = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, "pw", ["x' OR 1"]))
    assert badhost.rc != 0 and "aegir_db_grant_hosts" in badhost.output, badhost
    assert not db_exists(mysql_root, name)


def test_server_check(tmp_path, db_login, db_admin, db_weak_admin, mysql_root):
    prefix = "aegir_chk" + secrets.token_hex(3) + "_"

    def leftovers():
        with mysql_root.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                        (prefix.replace("_", "\\_") + "%",))
            dbs = cur.fetchone()[0]
            cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User LIKE %s", (prefix.replace("_", "\\_") + "%",))
            return dbs, cur.fetchone()[0]

    extra = dict(db_login, aegir_db_check_prefix=prefix)
    ok = run_role(tmp_path, "aegir_db", "server_check", extra=extra)
    assert ok.rc == 0 and ok.failed == 0 and ok.changed == 0, ok
    assert "Create the temporary user" in ok.output and "skipping" not in ok.output.split("Create the temporary user")[1].split("\n")[1], ok
    assert leftovers() == (0, 0)

    checked = run_role(tmp_path, "aegir_db", "server_check", extra=extra, check=True)
    assert checked.rc == 0 and checked.changed == 0, checked
    assert leftovers() == (0, 0)

    bad = run_role(tmp_path, "aegir_db", "server_check", extra=dict(extra, aegir_db_login_password="nope"))
    assert bad.rc != 0, bad
    assert f"cannot connect to the database server {DB_HOST}:{DB_PORT} as {db_admin['user']}" in bad.output, bad
    assert "Access denied" in bad.output, bad

    weak = run_role(tmp_path, "aegir_db", "server_check",
                    extra=dict(extra, aegir_db_login_user=db_weak_admin["user"],
                               aegir_db_login_password=db_weak_admin["password"]))
    assert weak.rc != 0, weak
    assert f"the admin account {db_weak_admin['user']} on the database server {DB_HOST}:{DB_PORT} " \
           "cannot CREATE DATABASE and GRANT" in " ".join(weak.output.split()), weak
    assert leftovers() == (0, 0)


def test_dump_import_round_trip(tmp_path, db_login, site_db, mysql_root):
    name = site_db
    password = "Site;#" + secrets.token_hex(6) + "'$ x"
    r = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, password, ["127.0.0.1"]))
    assert r.rc == 0, r
    with mysql_root.cursor() as cur:
        cur.execute(f"CREATE TABLE `{name}`.kept (a INT, b VARCHAR(20))")
        cur.execute(f"INSERT INTO `{name}`.kept VALUES (42, 'answer'), (7, 'x')")

    dump = tmp_path / "backup" / f"{name}.sql.gz"
    dump.parent.mkdir()
    # The site's own credentials are enough for dump/import.
    site_creds = dict(db_login, aegir_db_login_user=name, aegir_db_login_password=password)
    d = run_role(tmp_path, "aegir_db", "dump", extra=dict(site_creds, aegir_db_name=name, aegir_db_dump_file=str(dump)))
    assert d.rc == 0, d
    assert stat.S_IMODE(os.stat(dump).st_mode) == 0o600
    assert b"INSERT INTO `kept`" in gzip.decompress(dump.read_bytes())
    assert not list((tmp_path).glob("aegir-db-*.cnf"))

    with mysql_root.cursor() as cur:
        cur.execute(f"DROP TABLE `{name}`.kept")
        cur.execute(f"CREATE TABLE `{name}`.extra (a INT)")
    i = run_role(tmp_path, "aegir_db", "import", extra=dict(db_login, aegir_db_name=name, aegir_db_dump_file=str(dump)))
    assert i.rc == 0, i
    with mysql_root.cursor() as cur:
        cur.execute(f"SELECT a, b FROM `{name}`.kept ORDER BY a")
        assert cur.fetchall() == ((7, "x"), (42, "answer"))
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (name,))
        assert sorted(t for (t,) in cur.fetchall()) == ["extra", "kept"]

    # A restore: drop and recreate first, so tables that are not in the dump disappear.
    i2 = run_role(tmp_path, "aegir_db", "import",
                  extra=dict(db_login, aegir_db_name=name, aegir_db_dump_file=str(dump), aegir_db_import_recreate=True))
    assert i2.rc == 0, i2
    with mysql_root.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (name,))
        assert [t for (t,) in cur.fetchall()] == ["kept"]

    missing = run_role(tmp_path, "aegir_db", "import",
                       extra=dict(db_login, aegir_db_name=name, aegir_db_dump_file=str(tmp_path / "nope.sql")))
    assert missing.rc != 0 and "does not exist" in missing.output, missing


def test_no_password_in_verbose_output(tmp_path, db_login, db_admin, site_db, mysql_root):
    name = site_db
    password = "Leak" + secrets.token_hex(10)
    extra = site_vars(db_login, name, password, ["127.0.0.1"])
    dump = tmp_path / f"{name}.sql"
    outputs = [
        # create, check, dump and import in one playbook, with -vvv and --diff.
        run_role(tmp_path, "aegir_db", [("main", {}), ("server_check", {}),
                                        ("dump", {"aegir_db_dump_file": str(dump)}),
                                        ("import", {"aegir_db_dump_file": str(dump)})],
                 extra=extra, verbosity=3, diff=True),
        run_role(tmp_path, "aegir_db", "dump", extra=dict(extra, aegir_db_dump_file=str(dump)), verbosity=3,
                 check=True, diff=True),
        # Failures must not leak either.
        run_role(tmp_path, "aegir_db", extra=dict(extra, aegir_db_name=name + "_b", aegir_db_collation="no_such_collation"),
                 verbosity=3),
        run_role(tmp_path, "aegir_db", "server_check", extra=dict(extra, aegir_db_login_user="nobody_" + name),
                 verbosity=3),
    ]
    assert [r.rc == 0 for r in outputs] == [True, True, False, False], [str(r) for r in outputs]
    assert "could not ensure database" in outputs[2].output and "Unknown collation" in outputs[2].output, outputs[2]
    for r in outputs:
        assert password not in r.output
        assert db_admin["password"] not in r.output
    assert dump.stat().st_size > 0
