"""What a frontend row names is checked before the backend acts on it (issue 12, points 6-8),
through the queue runner and the real playbooks on the harness servers:

- a context name that Ansible would read as a host pattern or a group never reaches more
  than its own host (the task fails; the other sites are untouched);
- a server address that is not a host name or IP address never reaches ssh;
- platform delete removes only a Drupal codebase under the server's platforms root that no
  live site or other platform uses.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select, update

from aegir_ansible.db import models as m
from aegir_ansible.db.backend import ServerSettings
from tests.harness.platform import FIXTURE_PLATFORM

pytestmark = pytest.mark.e2e

TOK = secrets.token_hex(2)
A = f"ia{TOK}.lc.test"
B = f"ib{TOK}.lc.test"


@pytest.fixture(scope="module")
def fe(lc_frontend):
    for uri in (A, B):
        lc_frontend.write(lambda f, uri=uri: f.add_site(uri, lc_frontend.platforms["nginx"],
                                                        db_server="server_nginx"))
    lc_frontend.run_queue()
    for uri in (A, B):
        nid = lc_frontend.nid(uri)
        install = lc_frontend.query(select(m.HostingTask.nid).where(m.HostingTask.rid == nid))[0][0]
        lc_frontend.assert_ok(install)
        lc_frontend.servers["nginx"].wait_for_http(uri, contains=f"Welcome to {uri}")
    return lc_frontend


def _rename(fe, nid: int, name: str) -> None:
    with fe.Session() as s, s.begin():
        s.execute(update(m.HostingContext).where(m.HostingContext.nid == nid).values(name=name))


def _both_serving(fe):
    nginx = fe.servers["nginx"]
    for uri in (A, B):
        nginx.wait_for_http(uri, contains=f"Welcome to {uri}")
        assert (Path(fe.roots["nginx"]) / "sites" / uri / "settings.php").is_file()


@pytest.mark.parametrize("name", ["L,aegir_sites", "aegir_sites", "all", "x:aegir_sites",
                                  "ia.lc.test[0]", "~.*", "!nothing"])
def test_a_name_that_is_a_host_pattern_hits_no_other_site(fe, name):
    """Disable and delete of a site whose context name is a pattern (`L,aegir_sites` would
    match every site as a --limit) fail, and no other site is touched."""
    nid = fe.nid(A)
    _rename(fe, nid, name)
    try:
        tasks = [fe.task_with_raw_args(t, name, {}) for t in ("disable", "delete")]
        fe.run_queue()
        for task in tasks:
            assert fe.status(task) == m.TASK_ERROR, fe.log_text(task)
            assert f"site {name} is left out of the inventory" in fe.log_text(task)
            assert "Running playbook" not in fe.log_text(task)
    finally:
        _rename(fe, nid, A)
    _both_serving(fe)
    assert fe.site(A)[1].status == fe.site(B)[1].status == m.SITE_ENABLED


def test_a_server_address_that_is_an_ssh_option_never_reaches_ssh(fe, tmp_path):
    """ansible_host from the database is a host name or an IP address, or the server (and
    what lives on it) is left out with the reason; the other servers keep working."""
    marker = tmp_path / "proxycommand-ran"
    fe.write(lambda f: f.add_server("bad.lc.example.test", name="server_bad", http="nginx",
                                    address="127.0.0.9", ssh_user="root", queue_verify=False))
    nid = fe.nid("server_bad")
    with fe.Session() as s, s.begin():
        s.execute(update(ServerSettings).where(ServerSettings.nid == nid)
                  .values(address=f"-oProxyCommand=touch {marker}"))
    bad = fe.task("verify", "server_bad")
    good = fe.task("verify", B)
    fe.run_queue()
    assert fe.status(bad) == m.TASK_ERROR
    log = fe.log_text(bad)
    assert "server server_bad is left out of the inventory" in log
    assert "is not a host name or IP address" in log
    assert not marker.exists()
    fe.assert_ok(good)
    _both_serving(fe)


# -- platform delete ----------------------------------------------------------------------

def _platform(fe, name: str, root: str) -> int:
    return fe.write(lambda f: f.add_platform(name, root, "server_nginx", name=name,
                                             queue_verify=False))


def _delete_refused(fe, name: str, root: str, why: str) -> str:
    _platform(fe, name, root)
    task = fe.task("delete", name)
    fe.run_queue()
    log = fe.log_text(task)
    assert fe.status(task) == m.TASK_ERROR, log
    assert why in log
    assert "nothing was deleted" in log or "still holds site directories" in log
    # The platform stays in the frontend, as the task failed; the test then drops its row
    # (a live platform whose root holds others would stop their deletes, rightly).
    nid = fe.nid(name)
    with fe.Session() as s, s.begin():
        s.execute(update(m.HostingPlatform).where(m.HostingPlatform.nid == nid)
                  .values(status=m.PLATFORM_DELETED))
    return log


def test_platform_delete_refuses_a_root_outside_the_platforms_root(fe, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(FIXTURE_PLATFORM, outside)
    _delete_refused(fe, f"platform_out{TOK}", str(outside), "not a directory strictly under")
    assert (outside / "index.php").is_file()


def test_platform_delete_refuses_the_backups_directory(fe):
    backups = Path(fe.servers["nginx"].aegir_root) / "backups"
    keep = backups / f"keep-{TOK}.tar.gz"
    keep.write_bytes(b"precious")
    try:
        _delete_refused(fe, f"platform_bk{TOK}", str(backups), "not a directory strictly under")
        assert keep.read_bytes() == b"precious"
    finally:
        keep.unlink(missing_ok=True)


def test_platform_delete_refuses_the_platforms_root_itself(fe):
    root = Path(fe.servers["nginx"].aegir_root) / "platforms"
    _delete_refused(fe, f"platform_root{TOK}", str(root), "not a directory strictly under")
    assert Path(fe.roots["nginx"]).is_dir()


def test_platform_delete_refuses_a_symlink_out_of_the_platforms_root(fe, tmp_path):
    target = tmp_path / "elsewhere"
    shutil.copytree(FIXTURE_PLATFORM, target)
    link = Path(fe.servers["nginx"].aegir_root) / "platforms" / f"link{TOK}"
    link.symlink_to(target)
    try:
        _delete_refused(fe, f"platform_ln{TOK}", str(link), "symbolic link")
        assert (target / "index.php").is_file() and link.is_symlink()
        # A path through a symlinked directory below the root is refused the same way.
        _delete_refused(fe, f"platform_ln2{TOK}", f"{link}/core", "symbolic link")
        assert (target / "core").is_dir()
    finally:
        link.unlink()


def test_platform_delete_refuses_what_is_not_a_platform(fe):
    junk = Path(fe.servers["nginx"].aegir_root) / "platforms" / f"junk{TOK}"
    junk.mkdir()
    (junk / "data.txt").write_text("not code")
    _delete_refused(fe, f"platform_junk{TOK}", str(junk), "does not look like a Drupal platform")
    assert (junk / "data.txt").read_text() == "not code"


def test_platform_delete_refuses_a_root_shared_with_a_live_platform(fe):
    """A second platform row naming the codebase of the platform that serves A and B."""
    log = _delete_refused(fe, f"platform_dup{TOK}", fe.roots["nginx"], "root of live platform(s)")
    assert fe.platforms["nginx"] in log
    _both_serving(fe)


def test_platform_delete_refuses_site_directories_on_disk(fe, make_platform):
    root = Path(make_platform(fe.servers["nginx"], f"disk{TOK}"))
    (root / "sites" / "stray.test").mkdir()
    (root / "sites" / "stray.test" / "settings.php").write_text("<?php\n")
    _delete_refused(fe, f"platform_disk{TOK}", str(root), "still holds site directories")
    assert (root / "sites" / "stray.test" / "settings.php").is_file()


def test_platform_delete_removes_an_unused_platform(fe, make_platform):
    root = Path(make_platform(fe.servers["nginx"], f"gone{TOK}"))
    name = f"platform_gone{TOK}"
    nid = _platform(fe, name, str(root))
    task = fe.task("delete", name)
    fe.run_queue()
    fe.assert_ok(task)
    assert not root.exists()
    with fe.Session() as s:
        assert s.get(m.HostingPlatform, s.get(m.Node, nid).vid).status == m.PLATFORM_DELETED
    _both_serving(fe)


def test_platform_delete_in_check_mode_refuses_etc(fe, run_playbook):
    """With a static inventory too: /etc is refused (before, check mode showed it changed)."""
    server = fe.servers["nginx"]
    host = {**server.inventory_vars(), "aegir_platform": "platform_etc", "aegir_platform_root": "/etc"}
    inventory = {"all": {"children": {"aegir_platforms": {"hosts": {"platform_etc": host}}}}}
    result = run_playbook("playbooks/delete.yml", inventory, check=True, diff=True)
    assert result.rc != 0
    assert "not a directory strictly under" in result.stdout
    assert result.stats["platform_etc"].changed == 0
    assert Path("/etc/passwd").is_file()


# -- a clone that cannot be recorded -------------------------------------------------------

def _clone(fe, uri: str) -> int:
    return fe.task("clone", A, {"new_uri": uri, "target_platform": "", "new_db_server": "",
                                "aliases": f"www.{uri}", "redirection": ""})


def _no_clone_left(fe, uri: str, db_name: str | None = None) -> None:
    nginx = fe.servers["nginx"]
    assert not (Path(fe.roots["nginx"]) / "sites" / uri).exists()
    sites_php = Path(fe.roots["nginx"]) / "sites" / "sites.php"
    assert uri not in (sites_php.read_text() if sites_php.exists() else "")
    nginx.wait_for_http(uri, status=404)
    nginx.wait_for_http(f"www.{uri}", status=404)
    assert uri not in nginx.crontab()
    if db_name:
        assert not fe.db.database_exists(db_name)
        assert not fe.db.user_hosts(db_name)
    _both_serving(fe)


def test_a_clone_whose_site_rows_the_database_refuses_is_rolled_back(fe):
    """The clone is made on the server, then the new site's rows fail to be written (a DB
    error): the task fails and what the clone created is removed, nothing else."""
    import re

    uri = f"ic{TOK}.lc.test"
    with fe.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TRIGGER refuse_clone BEFORE INSERT ON hosting_context "
            f"WHEN NEW.name = '{uri}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    try:
        task = _clone(fe, uri)
        fe.run_queue()
    finally:
        with fe.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_clone")
    log = fe.log_text(task)
    assert fe.status(task) == m.TASK_ERROR, log
    assert f"The clone {uri} was made on the server, but its site could not be recorded" in log
    found = re.search(rf"The clone {re.escape(uri)} was rolled back: .* database (\S+) were removed", log)
    assert found, log
    assert not fe.query(select(m.HostingContext.nid).where(m.HostingContext.name == uri))
    _no_clone_left(fe, uri, found.group(1))


def test_a_clone_whose_uri_was_taken_meanwhile_fails_and_leaves_nothing(fe):
    """Another site got the new uri in the frontend (here before the run, which today's
    clone does not check): the clone task fails, no clone is left, the other site's row is
    unchanged."""
    uri = f"id{TOK}.lc.test"
    other = fe.write(lambda f: f.add_site(uri, fe.platforms["apache"], db_server="server_apache",
                                          queue_install=False))
    task = _clone(fe, uri)
    fe.run_queue()
    log = fe.log_text(task)
    assert fe.status(task) == m.TASK_ERROR, log
    assert fe.nid(uri) == other
    _no_clone_left(fe, uri)
