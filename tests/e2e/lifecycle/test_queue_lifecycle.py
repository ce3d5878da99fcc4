"""The life cycle tasks through the queue runner and the real playbooks, against a SQLite
frontend whose servers are the harness servers: the frontend rows hostmaster's post-task hooks
write (hosting_site_backups, migrate's platform/db/uri rows, clone's new site rows, the login
link) and the sites' behaviour on the servers. Tests run in order (module-scoped frontend)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from aegir_ansible.db import models as m

from .conftest import archive_bytes, settings_secret

pytestmark = pytest.mark.e2e

TOK = secrets.token_hex(2)  # per run: the databases are named after the uris
S = f"q1{TOK}.lc.test"
S2 = f"q2{TOK}.lc.test"
S3 = f"q3{TOK}.lc.test"


@pytest.fixture(scope="module")
def fe(lc_frontend):
    nid = lc_frontend.write(lambda f: f.add_site(S, lc_frontend.platforms["nginx"], db_server="server_nginx"))
    lc_frontend.run_queue()
    install = lc_frontend.query(select(m.HostingTask.nid).where(m.HostingTask.rid == nid))[0][0]
    lc_frontend.assert_ok(install)
    lc_frontend.servers["nginx"].wait_for_http(S, contains=f"Welcome to {S}")
    return lc_frontend


def _backups(fe, site_nid):
    return fe.query(select(m.HostingSiteBackup).where(m.HostingSiteBackup.site == site_nid)
                    .order_by(m.HostingSiteBackup.bid))


def test_backup_records_a_row(fe):
    node, site, _ = fe.site(S)
    task = fe.task("backup", S, {"description": "Before the damage"})
    fe.run_queue()
    fe.assert_ok(task)
    rows = _backups(fe, node.nid)
    assert len(rows) == 1
    b = rows[0][0]
    assert b.description == "Before the damage"
    assert b.web_server == fe.nid("server_nginx")
    path = Path(b.filename)
    assert path.parent == Path(fe.servers["nginx"].aegir_root) / "backups"
    assert path.name.startswith(f"{S}-") and b.size == path.stat().st_size > 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    settings = (Path(fe.roots["nginx"]) / "sites" / S / "settings.php").read_text()
    password = settings_secret(settings, "db_password")
    assert password.encode() not in archive_bytes(path)
    assert password not in fe.log_text(task)


def test_restore_by_bid_after_damage(fe):
    node, site, _ = fe.site(S)
    bid = _backups(fe, node.nid)[0][0].bid
    fe.db.query("DROP TABLE aegir_test_page", database=site.db_name)
    fe.servers["nginx"].wait_for_http(S, status=500)
    bad = fe.task("restore", S, {"bid": "999999"})
    fe.run_queue()
    assert fe.status(bad) == m.TASK_ERROR
    assert "backup 999999 is not a backup of this site" in fe.log_text(bad)
    task = fe.task("restore", S, {"bid": str(bid)})
    fe.run_queue()
    fe.assert_ok(task)
    fe.servers["nginx"].wait_for_http(S, contains=f"Welcome to {S}")
    assert fe.site(S)[1].verified > 0


def test_login_reset_logs_the_link(fe):
    task = fe.task("login-reset", S)
    fe.run_queue()
    fe.assert_ok(task)
    assert f"[message] One-time login link: http://{S}/user/reset/1/" in fe.log_text(task)


def test_migrate_with_missing_platform_fails_and_keeps_the_site(fe):
    task = fe.task("migrate", S, {"target_platform": "99999", "new_uri": "", "new_db_server": "0"})
    fe.run_queue()
    assert fe.status(task) == m.TASK_ERROR
    assert "Bad task argument: target platform 99999" in fe.log_text(task)
    fe.servers["nginx"].wait_for_http(S, contains=f"Welcome to {S}")
    node, site, name = fe.site(S)
    assert name == S and site.platform == fe.nid(fe.platforms["nginx"])


def test_migrate_to_another_server_with_a_new_uri(fe):
    node, site, _ = fe.site(S)
    old_db = site.db_name
    target = fe.nid(fe.platforms["apache"])
    task = fe.task("migrate", S, {"target_platform": str(target), "new_uri": S2,
                                  "new_db_server": str(fe.nid("server_apache"))})
    fe.run_queue()
    fe.assert_ok(task)
    node2, site2, name2 = fe.site(node.nid)
    assert (node2.title, name2) == (S2, S2)
    rev = fe.query(select(m.NodeRevision.title).where(m.NodeRevision.vid == node2.vid))[0][0]
    assert rev == S2
    assert site2.platform == target and site2.db_server == fe.nid("server_apache")
    assert site2.db_name and site2.db_name != old_db
    apache, nginx = fe.servers["apache"], fe.servers["nginx"]
    resp = apache.wait_for_http(S2, contains=f"Welcome to {S}")  # the content moved with it
    assert f"Database: {site2.db_name}" in resp.body
    nginx.wait_for_http(S, status=404)
    apache.wait_for_http(S, status=404)
    assert f"aegir-cron: {S2}" in apache.crontab() and S not in nginx.crontab()
    assert not fe.db.database_exists(old_db)
    assert not (Path(fe.roots["nginx"]) / "sites" / S).exists()
    # The backup made before the move is recorded (on nginx, where it was made).
    rows = _backups(fe, node.nid)
    assert len(rows) == 2 and rows[-1][0].web_server == fe.nid("server_nginx")
    # The inventory follows: a verify of the renamed site works where it now lives.
    verify = fe.task("verify", S2)
    fe.run_queue()
    fe.assert_ok(verify)


def test_clone(fe):
    node, site, _ = fe.site(S2)
    task = fe.task("clone", S2, {"new_uri": S3, "target_platform": "", "new_db_server": "",
                                 "aliases": f"www.{S3}", "redirection": ""})
    fe.run_queue()
    fe.assert_ok(task)
    cnode, csite, cname = fe.site(S3)
    assert cname == S3 and cnode.type == "site"
    assert csite.status == m.SITE_ENABLED and csite.verified > 0
    assert csite.platform == site.platform and csite.db_server == site.db_server
    assert csite.db_name and csite.db_name != site.db_name
    aliases = fe.query(select(m.HostingSiteAlias.alias).where(m.HostingSiteAlias.vid == cnode.vid))
    assert [a for (a,) in aliases] == [f"www.{S3}"]
    assert fe.query(select(m.NodeRevision.title).where(m.NodeRevision.vid == cnode.vid))[0][0] == S3
    apache = fe.servers["apache"]
    apache.wait_for_http(S3, contains=f"Database: {csite.db_name}")
    apache.wait_for_http(f"www.{S3}", contains=f"Database: {csite.db_name}")
    apache.wait_for_http(S2, contains=f"Database: {site.db_name}")
    # Its cron key is its own and matches what the server has.
    settings = (Path(fe.roots["apache"]) / "sites" / S3 / "settings.php").read_text()
    assert f"'{csite.cron_key}'" in settings and csite.cron_key != site.cron_key
    verify = fe.task("verify", S3)
    fe.run_queue()
    fe.assert_ok(verify)


def test_backup_delete(fe):
    node, _, _ = fe.site(S2)
    rows = [r for (r,) in _backups(fe, node.nid)]
    # The first backup, the pre-migration one (both on nginx), the pre-clone one (on Apache).
    assert [r.web_server for r in rows] == [fe.nid("server_nginx")] * 2 + [fe.nid("server_apache")]
    args = {str(rows[0].bid): rows[0].filename, str(rows[1].bid): "0", str(rows[2].bid): rows[2].filename}
    task = fe.task_with_raw_args("backup-delete", S2, args)
    fe.run_queue()
    fe.assert_ok(task)
    left = [r for (r,) in _backups(fe, node.nid)]
    assert [r.bid for r in left] == [rows[1].bid]
    assert not Path(rows[0].filename).exists()   # removed on nginx, where it was made
    assert not Path(rows[2].filename).exists()   # removed on Apache
    assert Path(rows[1].filename).exists()
    # Nothing selected: a clear error, nothing removed.
    none = fe.task_with_raw_args("backup-delete", S2, {str(rows[1].bid): "0"})
    fe.run_queue()
    assert fe.status(none) == m.TASK_ERROR
    assert "no backup was selected" in fe.log_text(none)
    assert Path(rows[1].filename).exists()


def test_backup_delete_removes_what_it_can(fe):
    """One archive that cannot be removed fails the task, naming it; the archives that were
    removed lose their rows all the same (the frontend lists no backup that is gone)."""
    import subprocess

    node, _, _ = fe.site(S2)
    backup = fe.task("backup", S2, {"description": "another"})
    fe.run_queue()
    fe.assert_ok(backup)
    rows = [r for (r,) in _backups(fe, node.nid)]
    stuck, removable = rows[0], rows[-1]
    assert stuck.bid != removable.bid
    if subprocess.run(["chattr", "+i", stuck.filename], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported here")
    try:
        task = fe.task_with_raw_args("backup-delete", S2, {str(stuck.bid): stuck.filename,
                                                            str(removable.bid): removable.filename})
        fe.run_queue()
    finally:
        subprocess.run(["chattr", "-i", stuck.filename], capture_output=True)
    assert fe.status(task) == m.TASK_ERROR
    assert f"Could not remove {stuck.filename}" in fe.log_text(task)
    assert Path(stuck.filename).exists() and not Path(removable.filename).exists()
    assert [r.bid for (r,) in _backups(fe, node.nid)] == [r.bid for r in rows if r.bid != removable.bid]
