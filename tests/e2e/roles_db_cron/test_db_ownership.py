"""A site uses only a database and user it owns (issue 12, points 4-5): the aegir_db role
against the real MariaDB, and the names and conflicts the inventory gives the roles."""

from __future__ import annotations

import secrets

import pymysql
import pytest
from sqlalchemy import update

from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.db.backend import SiteDatabase
from aegir_ansible.frontend import Frontend
from aegir_ansible.inventory import build_inventory
from aegir_ansible.queries import isolation_refusal

from .conftest import DB_HOST, DB_PORT
from .helpers import run_role
from .test_aegir_db import db_exists, site_vars, user_hosts

# As Aegir's inventory gives a site the backend has recorded no database for.
NOT_RECORDED = {"aegir_site_db_record": {}}


def _can_login(user, password, database=None) -> bool:
    try:
        pymysql.connect(host=DB_HOST, port=DB_PORT, user=user, password=password, database=database).close()
        return True
    except pymysql.err.OperationalError:
        return False


@pytest.mark.e2e
def test_an_existing_database_and_user_that_are_not_the_sites_are_refused(tmp_path, mysql_root, db_login, site_db):
    name = site_db
    with mysql_root.cursor() as cur:  # another application's database and account
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY 'prior-password'", (name,))
        cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY 'prior-password'", (name,))
        cur.execute(f"GRANT ALL ON `{name}`.* TO %s@'%%'", (name,))
    r = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, "new-" + secrets.token_hex(4),
                                                          ["127.0.0.1"], **NOT_RECORDED))
    assert r.rc != 0 and "is not this site's" in r.output, r
    assert user_hosts(mysql_root, name) == ["%", "localhost"]
    assert _can_login(name, "prior-password", name)
    gone = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, "", ["127.0.0.1", "%"],
                                                             aegir_db_state="absent", **NOT_RECORDED))
    assert gone.rc != 0 and "is not this site's" in gone.output, gone
    assert db_exists(mysql_root, name) and user_hosts(mysql_root, name) == ["%", "localhost"]


@pytest.mark.e2e
def test_the_sites_own_password_takes_over_and_others_accounts_stay(tmp_path, mysql_root, db_login, site_db):
    """A database provision made: the site's password logs in, so the role may use it; an
    account of the same name at a host the backend did not create is neither altered nor
    dropped, even by absent."""
    name, password = site_db, "Site-" + secrets.token_hex(5)
    with mysql_root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (name, password))
        cur.execute(f"GRANT ALL ON `{name}`.* TO %s@'127.0.0.1'", (name,))
        cur.execute("CREATE USER %s@'10.9.9.9' IDENTIFIED BY 'someone-else'", (name,))
    r = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, password, ["127.0.0.1"],
                                                          **NOT_RECORDED))
    assert r.rc == 0, r
    assert user_hosts(mysql_root, name) == ["10.9.9.9", "127.0.0.1"]
    gone = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, "", ["127.0.0.1"],
                                                             aegir_db_state="absent",
                                                             aegir_db_owned_hosts=["127.0.0.1"]))
    assert gone.rc == 0 and gone.changed > 0, gone
    assert not db_exists(mysql_root, name)
    assert user_hosts(mysql_root, name) == ["10.9.9.9"]


@pytest.mark.e2e
def test_reserved_names_are_refused_before_anything_is_done(tmp_path, mysql_root, db_login):
    name = "performance_schema"  # the server's own schema; no account of that name exists
    assert user_hosts(mysql_root, name) == []
    try:
        r = run_role(tmp_path, "aegir_db", extra=site_vars(db_login, name, "pw-" + secrets.token_hex(4),
                                                              ["127.0.0.1"]))
        assert r.rc != 0 and "the database server itself uses" in r.output, r
        assert user_hosts(mysql_root, name) == []
    finally:
        with mysql_root.cursor() as cur:
            for host in user_hosts(mysql_root, name):
                cur.execute("DROP USER %s@%s", (name, host))


@pytest.mark.e2e
def test_choose_name_skips_an_existing_name(tmp_path, mysql_root, db_login, site_db):
    name = site_db
    with mysql_root.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY 'x'", (name,))  # only an account
    try:
        r = run_role(tmp_path, "aegir_db", entry=[("choose_name", {}), ("main", {})],
                     extra=site_vars(db_login, name, "pw-" + secrets.token_hex(4), ["127.0.0.1"],
                                     aegir_db_name_candidates=["test", name + "_1", name + "_2"],
                                     **NOT_RECORDED))
        # choose_name only chooses: the main entry point still refuses the taken name.
        assert r.rc != 0 and "is not this site's" in r.output, r
        assert not db_exists(mysql_root, name + "_1")
    finally:
        with mysql_root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}_1`")
            cur.execute("DROP USER IF EXISTS %s@'127.0.0.1'", (name + "_1",))


# -- the inventory -----------------------------------------------------------------------------

@pytest.fixture
def frontend(tmp_path):
    from aegir_ansible.db import init_schema

    engine = make_engine(f"sqlite:///{tmp_path / 'aegir.sqlite'}")
    init_schema(engine)
    Session = make_sessionmaker(engine)
    with Session() as s, s.begin():
        fe = Frontend(s)
        fe.add_server("web.example.net", http="nginx", db="mysql", db_user="admin", db_password="pw",
                      queue_verify=False)
        fe.add_platform("P", "/var/aegir/platforms/p", "server_webexamplenet", queue_verify=False)
    yield Session
    engine.dispose()


def _inventory(Session):
    with Session() as s:
        return build_inventory(s)


def test_derived_names_avoid_the_servers_own_names(frontend):
    with frontend() as s, s.begin():
        for uri in ("ro.ot", "my.sql", "information.schema", "te.st"):
            Frontend(s).add_site(uri, "platform_P", queue_install=False)
    inv = _inventory(frontend)
    names = {uri: inv.hosts[uri]["aegir_site_db_name"] for uri in ("ro.ot", "my.sql", "te.st")}
    assert names == {"ro.ot": "root_1", "my.sql": "mysql_1", "te.st": "test_1"}
    assert inv.hosts["information.schema"]["aegir_site_db_name"] == "informationschem"
    assert inv.hosts["ro.ot"]["aegir_site_db_name_candidates"][:2] == ["root_2", "root_3"]


def test_a_reserved_or_shared_db_name_is_a_conflict(frontend):
    with frontend() as s, s.begin():
        fe = Frontend(s)
        a, b, c, d = (fe.add_site(u, "platform_P", queue_install=False)
                      for u in ("a.example.org", "b.example.org", "c.example.org", "d.example.org"))
        for nid, db_name in ((a, "a_db"), (b, "a_db"), (c, "mysql"), (d, "d_db")):
            s.execute(update(m.HostingSite).where(m.HostingSite.nid == nid).values(db_name=db_name))
        server = fe.find("server_webexamplenet").nid
        s.add(SiteDatabase(nid=a, db_server=server, db_name="a_db", db_user="a_db",
                           hosts='["127.0.0.1"]', created=1))
        s.add(SiteDatabase(nid=99999, db_server=server, db_name="d_db", db_user="d_db",
                           hosts='["127.0.0.1"]', created=1))
    inv = _inventory(frontend)
    assert inv.hosts["a.example.org"]["aegir_site_db_conflicts"] == []
    assert inv.hosts["a.example.org"]["aegir_site_db_record"]["hosts"] == ["127.0.0.1"]
    assert "belongs to site 'a.example.org'" in inv.hosts["b.example.org"]["aegir_site_db_conflicts"][0]
    assert "reserved" in inv.hosts["c.example.org"]["aegir_site_db_conflicts"][0]
    assert "belongs to site #99999" in inv.hosts["d.example.org"]["aegir_site_db_conflicts"][0]
    assert isolation_refusal("delete", inv.hosts["b.example.org"])
    assert isolation_refusal("login-reset", inv.hosts["b.example.org"]) is None


def test_shared_host_names_are_conflicts_and_served_by_no_one_new(frontend):
    with frontend() as s, s.begin():
        fe = Frontend(s)
        a = fe.add_site("a.example.org", "platform_P", aliases=["www.a.example.org"], queue_install=False)
        b = fe.add_site("b.example.org", "platform_P", queue_install=False)
        c = fe.add_site("c.example.org", "platform_P", queue_install=False)
        vids = {nid: s.get(m.Node, nid).vid for nid in (a, b, c)}
        for nid, alias in ((b, "a.example.org"), (b, "shared.example.org"), (c, "shared.example.org")):
            s.add(m.HostingSiteAlias(vid=vids[nid], nid=nid, alias=alias, automatic=0, redirection=""))
    inv = _inventory(frontend)
    a_vars, b_vars, c_vars = (inv.hosts[f"{x}.example.org"] for x in "abc")
    assert a_vars["aegir_site_conflicts"] == [] and a_vars["aegir_site_aliases"] == ["www.a.example.org"]
    assert any("'a.example.org'" in c for c in b_vars["aegir_site_conflicts"])
    assert any("shared.example.org" in c for c in c_vars["aegir_site_conflicts"])
    assert b_vars["aegir_site_aliases"] == [] and c_vars["aegir_site_aliases"] == []
    assert isolation_refusal("verify", b_vars) and isolation_refusal("delete", b_vars) is None
