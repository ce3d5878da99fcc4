"""Tenant isolation of host names and databases (issue 12, points 3-5), through the queue
runner and the real playbooks on the harness servers: a frontend row that names another site's
domain or database fails its own task, and the other site keeps serving with its database and
password untouched. Tests run in order (module-scoped frontend)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import select, update

from aegir_ansible.db import models as m
from aegir_ansible.db.backend import SiteDatabase

pytestmark = pytest.mark.e2e

TOK = secrets.token_hex(2)  # per run: the databases are named after the uris
A = f"ia{TOK}.iso.test"  # the victim: installed first, must keep serving
B = f"ib{TOK}.iso.test"
C = f"ic{TOK}.iso.test"
D = f"id{TOK}.iso.test"
E = f"ie{TOK}.iso.test"
F = f"if{TOK}.iso.test"
PRE = f"ip{TOK}.iso.test"  # its derived database name exists before the site


@pytest.fixture(scope="module")
def fe(lc_frontend):
    fe = lc_frontend
    for uri in (A, C):
        fe.write(lambda f, uri=uri: f.add_site(uri, fe.platforms["nginx"], db_server="server_nginx",
                                               aliases=[f"www.{uri}"]))
    fe.run_queue()
    for uri in (A, C):
        install = fe.query(select(m.HostingTask.nid).where(m.HostingTask.rid == fe.nid(uri)))[0][0]
        fe.assert_ok(install)
        fe.servers["nginx"].wait_for_http(uri, contains=f"Welcome to {uri}")
    return fe


def _raw_alias(fe, uri, alias):
    """A hosting_site_alias row as a frontend (or an attacker) could write it, unchecked."""
    node, _site, _ = fe.site(uri)
    with fe.Session() as s, s.begin():
        s.add(m.HostingSiteAlias(vid=node.vid, nid=node.nid, alias=alias, automatic=0, redirection=""))


def _set_db_name(fe, uri, db_name):
    node, _site, _ = fe.site(uri)
    with fe.Session() as s, s.begin():
        s.execute(update(m.HostingSite).where(m.HostingSite.vid == node.vid).values(db_name=db_name))


def _install_task(fe, uri):
    return fe.query(select(m.HostingTask.nid).where(m.HostingTask.rid == fe.nid(uri),
                                                    m.HostingTask.task_type == "install"))[0][0]


def _serves(fe, uri, alias=None):
    """The victim's page, through the real web server, from its own database."""
    _node, site, _ = fe.site(uri)
    nginx = fe.servers["nginx"]
    for host in (uri, alias or f"www.{uri}"):
        nginx.wait_for_http(host, contains=f"Welcome to {uri}")
        status, body = nginx.curl(host)
        assert status == 200 and f"Database: {site.db_name}" in body, body


# -- point 3: host names ----------------------------------------------------------------------

def test_alias_equal_to_another_sites_uri_fails_the_install(fe):
    fe.write(lambda f: f.add_site(B, fe.platforms["nginx"], db_server="server_nginx"))
    _raw_alias(fe, B, A)
    _raw_alias(fe, B, f"www.{A}")
    fe.run_queue()
    install = _install_task(fe, B)
    assert fe.status(install) == m.TASK_ERROR, fe.log_text(install)
    log = fe.log_text(install)
    assert f"{A!r}" in log and "already" in log, log
    _serves(fe, A)
    sites_php = Path(fe.roots["nginx"], "sites", "sites.php")
    text = sites_php.read_text() if sites_php.exists() else ""
    assert f"$sites['{A}'] = '{B}';" not in text and f"$sites['www.{A}'] = '{B}';" not in text, text


def test_verify_batch_fails_the_colliding_site_alone(fe):
    _raw_alias(fe, C, f"www.{A}")  # an alias of another live site
    tasks = [fe.task("verify", uri) for uri in (A, C)]
    fe.run_queue()
    assert fe.status(tasks[1]) == m.TASK_ERROR, fe.log_text(tasks[1])
    assert f"www.{A}" in fe.log_text(tasks[1])
    fe.assert_ok(tasks[0])
    _serves(fe, A)
    fe.servers["nginx"].wait_for_http(C, contains=f"Welcome to {C}")
    # The contested alias is served by nobody new: www.A still answers with A's page.
    with fe.Session() as s, s.begin():
        node = s.get(m.Node, fe.nid(C))
        s.execute(m.HostingSiteAlias.__table__.delete().where(
            m.HostingSiteAlias.vid == node.vid, m.HostingSiteAlias.alias == f"www.{A}"))


def test_clone_with_an_alias_of_another_site_fails(fe):
    task = fe.task("clone", C, {"new_uri": D, "target_platform": "", "new_db_server": "",
                                "aliases": f"www.{A}", "redirection": ""})
    fe.run_queue()
    assert fe.status(task) == m.TASK_ERROR, fe.log_text(task)
    assert f"www.{A}" in fe.log_text(task)
    _serves(fe, A)
    assert not fe.query(select(m.HostingContext).where(m.HostingContext.name == D))


def test_migrate_to_another_sites_alias_fails(fe):
    task = fe.task("migrate", C, {"new_uri": f"www.{A}",
                                  "target_platform": str(fe.nid(fe.platforms["nginx"])),
                                  "new_db_server": ""})
    fe.run_queue()
    assert fe.status(task) == m.TASK_ERROR, fe.log_text(task)
    _serves(fe, A)


# -- point 4: another site's database ---------------------------------------------------------

def test_db_name_of_another_site_fails_install_backup_and_delete(fe, test_db_server):
    _node, victim, _ = fe.site(A)
    assert fe.query(select(SiteDatabase).where(SiteDatabase.nid == fe.nid(A))), \
        "the install recorded that the site owns its database"
    fe.write(lambda f: f.add_site(E, fe.platforms["nginx"], db_server="server_nginx"))
    _set_db_name(fe, E, victim.db_name)
    fe.run_queue()
    install = _install_task(fe, E)
    assert fe.status(install) == m.TASK_ERROR, fe.log_text(install)
    assert victim.db_name in fe.log_text(install)
    _serves(fe, A)  # its password still works: the page reads its database
    # An enabled site pointing at A's database (a row changed after its install).
    _set_db_name(fe, C, victim.db_name)
    backup = fe.task("backup", C)
    fe.run_queue()
    assert fe.status(backup) == m.TASK_ERROR, fe.log_text(backup)
    assert not fe.query(select(m.HostingSiteBackup).where(m.HostingSiteBackup.site == fe.nid(C)))
    delete = fe.task("delete", C)
    fe.run_queue()
    assert fe.status(delete) == m.TASK_ERROR, fe.log_text(delete)
    assert test_db_server.database_exists(victim.db_name)
    assert test_db_server.user_hosts(victim.db_name)
    _serves(fe, A)
    _set_db_name(fe, C, fe.query(select(SiteDatabase.db_name)
                                 .where(SiteDatabase.nid == fe.nid(C)))[0][0])


# -- point 5: the derived name and accounts the backend did not create --------------------------

def test_install_does_not_take_over_an_existing_database(fe, test_db_server):
    derived = PRE.replace(".", "")[:16]
    test_db_server.create_database(derived, derived, "prior-password", grant_host="%")
    test_db_server.query(f"CREATE USER '{derived}'@'localhost' IDENTIFIED BY 'prior-password'")
    try:
        fe.write(lambda f: f.add_site(PRE, fe.platforms["nginx"], db_server="server_nginx"))
        fe.run_queue()
        install = _install_task(fe, PRE)
        fe.assert_ok(install)
        _node, site, _ = fe.site(PRE)
        assert site.db_name and site.db_name != derived
        fe.servers["nginx"].wait_for_http(PRE, contains=f"Database: {site.db_name}")
        assert sorted(test_db_server.user_hosts(derived)) == ["%", "localhost"]
        assert test_db_server.can_login(derived, "prior-password", derived)
    finally:
        test_db_server.drop_database(derived)
        for host in test_db_server.user_hosts(derived):
            test_db_server.drop_user(derived, host)


def test_delete_drops_only_what_the_backend_created(fe, test_db_server):
    fe.write(lambda f: f.add_site(F, fe.platforms["nginx"], db_server="server_nginx"))
    fe.run_queue()
    fe.assert_ok(_install_task(fe, F))
    _node, site, _ = fe.site(F)
    name, nid = site.db_name, fe.nid(F)
    test_db_server.query(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'not-the-backends'")
    try:
        delete = fe.task("delete", F)
        fe.run_queue()
        fe.assert_ok(delete)
        assert not test_db_server.database_exists(name)
        assert test_db_server.user_hosts(name) == ["%"]
        assert not fe.query(select(SiteDatabase).where(SiteDatabase.nid == nid))
    finally:
        for host in test_db_server.user_hosts(name):
            test_db_server.drop_user(name, host)


def test_delete_of_a_database_not_recorded_as_the_sites_fails_before_removing_anything(fe, test_db_server):
    """A site whose database the backend has no record of (say hosting_site.db_name was pointed
    at another application's database): delete refuses it first, so the site still serves."""
    other = f"iother{TOK}"
    test_db_server.create_database(other, other, "other-password", grant_host="127.0.0.1")
    try:
        _node, site, _ = fe.site(C)
        _set_db_name(fe, C, other)
        delete = fe.task("delete", C)
        fe.run_queue()
        assert fe.status(delete) == m.TASK_ERROR, fe.log_text(delete)
        assert "is not this site's" in fe.log_text(delete)
        assert test_db_server.database_exists(other) and test_db_server.user_hosts(other) == ["127.0.0.1"]
        assert test_db_server.can_login(other, "other-password", other)
        fe.servers["nginx"].wait_for_http(C, contains=f"Welcome to {C}")
        _set_db_name(fe, C, site.db_name)
    finally:
        test_db_server.drop_database(other)
        for host in test_db_server.user_hosts(other):
            test_db_server.drop_user(other, host)
