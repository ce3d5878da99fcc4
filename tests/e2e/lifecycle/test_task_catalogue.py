"""hosting_tasks_extra's and hosting_sync's tasks through the queue runner and the real
playbooks on the harness servers: each task's effect on the site (its database, its files, its
web server), its own outcome and log, and the batching of many tasks of one type into one
playbook run. One pair of installed sites on the nginx server serves every check (tests run
in order, module-scoped)."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from aegir_ansible.db import models as m

pytestmark = pytest.mark.e2e

TOK = secrets.token_hex(2)
A = f"ca{TOK}.cat.test"
B = f"cb{TOK}.cat.test"


@pytest.fixture(scope="module")
def fe(lc_frontend):
    fe = lc_frontend
    platform = fe.platforms["nginx"]
    for uri in (A, B):
        fe.write(lambda f, uri=uri: f.add_site(uri, platform, db_server="server_nginx"))
    fe.run_queue()
    for uri in (A, B):
        node, site, _ = fe.site(uri)
        installs = fe.query(select(m.HostingTask.nid).where(m.HostingTask.rid == node.nid))
        fe.assert_ok(installs[0][0])
        fe.servers["nginx"].wait_for_http(uri, contains=f"Welcome to {uri}")
    return fe


def _db(fe, uri):
    return fe.site(uri)[1].db_name


def _count(fe, uri, table):
    return fe.db.query(f"SELECT COUNT(*) FROM {table}", database=_db(fe, uri))[0][0]


def _run(fe, task_type, uri, args=None):
    nid = fe.task(task_type, uri, args)
    fe.run_queue()
    return nid


def test_flush_cache_empties_the_cache_bins(fe):
    fe.servers["nginx"].wait_for_http(A, contains="Welcome")  # a page view fills cache_render
    assert _count(fe, A, "cache_render") > 0 and _count(fe, A, "cache_default") > 0
    task = _run(fe, "flush_cache", A)
    fe.assert_ok(task)
    assert _count(fe, A, "cache_render") == 0 and _count(fe, A, "cache_default") == 0
    assert "Cache rebuild complete" in fe.log_text(task)


def _site_dir(fe, uri) -> Path:
    return Path(fe.roots["nginx"]) / "sites" / uri


def _backups(fe, uri):
    nid = fe.site(uri)[0].nid
    return [r for (r,) in fe.query(select(m.HostingSiteBackup).where(m.HostingSiteBackup.site == nid)
                                   .order_by(m.HostingSiteBackup.bid))]


def _changed(fe, task, host) -> int:
    """changed= of the task's own summary line."""
    line = [x for x in fe.log_text(task).splitlines() if f"Summary for {host}:" in x][-1]
    return int(line.split("changed=")[1].split()[0])


def test_a_batch_runs_once_and_each_task_has_its_own_outcome(fe):
    """Two sites' features_revert_all tasks queued together: one playbook run on the server
    (the batch playbook), A's task succeeds and reverts A's feature, B's task (a bad feature
    name in its arguments) fails alone, each with its own log."""
    fe.db.query("UPDATE aegir_test_features SET state='overridden', value='local change'", database=_db(fe, A))
    ok = fe.task("features_revert_all", A)
    bad = fe.task("features_revert_all", B, {"features": "aegir_test_feature; rm -rf /"})
    fe.run_queue()
    fe.assert_ok(ok)
    assert fe.status(bad) == m.TASK_ERROR
    for nid in (ok, bad):
        assert "Running playbook features_revert_all_batch.yml" in fe.log_text(nid)
        assert "together with 1 other task(s)" in fe.log_text(nid)
    assert "Reverted: aegir_test_feature" in fe.log_text(ok)
    assert "not a feature (module) name" in fe.log_text(bad)
    assert "not a feature (module) name" not in fe.log_text(ok)
    assert fe.db.query("SELECT state, value FROM aegir_test_features", database=_db(fe, A)) == \
        [("default", "default value")]


def test_features_update_writes_the_overrides_to_code(fe):
    fe.db.query("UPDATE aegir_test_features SET state='overridden', value='kept change'", database=_db(fe, A))
    task = _run(fe, "features_update_all", A)
    fe.assert_ok(task)
    code = _site_dir(fe, A) / "modules" / "aegir_test_feature" / "aegir_test_feature.features.txt"
    assert code.read_text() == "kept change\n"
    assert fe.db.query("SELECT state FROM aegir_test_features", database=_db(fe, A)) == [("default",)]
    again = _run(fe, "features_revert_all", A, {"features": "aegir_test_feature"})
    fe.assert_ok(again)
    assert "Current state already matches defaults" in fe.log_text(again)
    assert _changed(fe, again, A) == 0


def test_update_applies_the_pending_hook_after_a_backup(fe):
    assert fe.db.query("SELECT version FROM aegir_test_schema", database=_db(fe, A)) == [(10000,)]
    before = len(_backups(fe, A))
    task = _run(fe, "update", A)
    fe.assert_ok(task)
    assert fe.db.query("SELECT version FROM aegir_test_schema", database=_db(fe, A)) == [(10001,)]
    cols = [r[0] for r in fe.db.query("SHOW COLUMNS FROM aegir_test_page", database=_db(fe, A))]
    assert "tagline" in cols
    backups = _backups(fe, A)
    assert len(backups) == before + 1 and backups[-1].description == "Before database updates"
    assert Path(backups[-1].filename).is_file()
    assert "aegir_test_update_10001" in fe.log_text(task)
    # Nothing pending, no backup asked for: no change, no new backup.
    again = _run(fe, "update", A, {"backup": "0"})
    fe.assert_ok(again)
    assert "No pending updates" in fe.log_text(again)
    assert len(_backups(fe, A)) == before + 1


def test_a_failing_update_restores_the_backup(fe):
    """B's update hook fails (the column it adds is already there): the backup taken first is
    restored, the task fails saying so, the site still serves, the backup is recorded."""
    fe.db.query("ALTER TABLE aegir_test_page ADD COLUMN tagline VARCHAR(10)", database=_db(fe, B))
    fe.db.query("UPDATE aegir_test_page SET site_name='before the update'", database=_db(fe, B))
    task = _run(fe, "update", B)
    assert fe.status(task) == m.TASK_ERROR
    log = fe.log_text(task)
    assert "Duplicate column name 'tagline'" in log and "The site was restored from" in log
    assert fe.db.query("SELECT version FROM aegir_test_schema", database=_db(fe, B)) == [(10000,)]
    fe.servers["nginx"].wait_for_http(B, contains="before the update")
    assert [b.description for b in _backups(fe, B)] == ["Before database updates"]


def test_registry_cron_and_translations(fe):
    """rebuild_registry, run_cron and update_translations of one site, each its own task."""
    fe.db.query("DELETE FROM aegir_test_registry", database=_db(fe, A))
    crons = fe.db.query("SELECT COUNT(*) FROM aegir_test_cron WHERE via='drush'", database=_db(fe, A))[0][0]
    tasks = [fe.task(t, A) for t in ("rebuild_registry", "run_cron", "update_translations")]
    fe.run_queue()
    for t in tasks:
        fe.assert_ok(t)
    assert _count(fe, A, "aegir_test_registry") == 3
    assert fe.db.query("SELECT COUNT(*) FROM aegir_test_cron WHERE via='drush'", database=_db(fe, A))[0][0] == crons + 1
    po = _site_dir(fe, A) / "files" / "translations" / "drupal.en.po"
    assert po.is_file()
    assert fe.db.query("SELECT project, langcode FROM locale_file", database=_db(fe, A)) == [("drupal", "en")]


def test_a_platform_without_drush_fails_the_task_clearly(fe):
    drush = Path(fe.roots["nginx"]) / "vendor" / "bin" / "drush"
    drush.chmod(0o644)
    try:
        task = _run(fe, "flush_cache", A)
    finally:
        drush.chmod(0o755)
    assert fe.status(task) == m.TASK_ERROR
    assert f"has no drush at {drush}" in fe.log_text(task)


def test_fix_ownership_and_permissions(fe):
    site = _site_dir(fe, A)
    script_user = fe.servers["nginx"].script_user
    (site / "files" / "upload.txt").write_text("x")
    (site / "files" / "sub").mkdir(exist_ok=True)
    (site / "files" / "sub" / "deep.txt").write_text("y")
    (site / "modules" / "custom").mkdir(exist_ok=True)
    (site / "modules" / "custom" / "custom.module").write_text("<?php\n")
    nobody = pwd.getpwnam("nobody")
    for p in (site / "files" / "upload.txt", site / "files" / "sub", site / "modules" / "custom" / "custom.module"):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    (site / "files" / "upload.txt").chmod(0o777)
    (site / "files" / "sub").chmod(0o700)
    (site / "modules" / "custom" / "custom.module").chmod(0o666)
    own = fe.task("fix_ownership", A)
    perms = fe.task("fix_permissions", A)
    fe.run_queue()
    fe.assert_ok(own)
    fe.assert_ok(perms)
    for p in (site / "files" / "upload.txt", site / "files" / "sub" / "deep.txt", site / "modules" / "custom"):
        st = p.stat()
        assert pwd.getpwuid(st.st_uid).pw_name == script_user
        assert grp.getgrgid(st.st_gid).gr_name == fe.servers["nginx"].web_group
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(site / "files" / "upload.txt") == 0o660
    assert mode(site / "files" / "sub") == 0o770
    assert mode(site / "files" / "sub" / "deep.txt") == 0o660
    assert mode(site / "modules" / "custom") == 0o750
    assert mode(site / "modules" / "custom" / "custom.module") == 0o640
    assert mode(site / "settings.php") == 0o440  # site verify's own mode is kept
    fe.servers["nginx"].wait_for_http(A, contains=f"Welcome to {A}")
    # A second run changes nothing.
    again = _run(fe, "fix_permissions", A)
    fe.assert_ok(again)
    assert _changed(fe, again, A) == 0


def test_flush_drush_cache_of_the_server(fe):
    server = fe.servers["nginx"]
    cache = Path(server.aegir_root) / ".drush" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "commandfiles.cache").write_text("stale")
    user = pwd.getpwnam(server.script_user)
    for p in (cache.parent, cache, cache / "commandfiles.cache"):
        os.chown(p, user.pw_uid, user.pw_gid)
    task = _run(fe, "flush_drush_cache", "server_nginx")
    fe.assert_ok(task)
    assert not (cache / "commandfiles.cache").exists()
    assert "'drush' cache was cleared (1 file(s))" in fe.log_text(task)


def test_health_check_reports_each_name_and_fails_a_broken_site(fe):
    ok = fe.task("site_health_check", A)
    fe.db.query("DROP TABLE aegir_test_page", database=_db(fe, B))
    bad = fe.task("site_health_check", B)
    fe.run_queue()
    fe.assert_ok(ok)
    log = fe.log_text(ok)
    assert f"Health check of {A}:" in log and f"{A}: HTTP 200" in log
    assert "bootstrap=Successful" in log and "db-status=Connected" in log
    assert "password" not in log
    assert fe.status(bad) == m.TASK_ERROR
    assert f"{B}: HTTP 500" in fe.log_text(bad) and "HTTP error for" in fe.log_text(bad)
    # The two were one playbook run over both sites (no batch playbook for this type), each
    # task with its own report.
    for nid in (ok, bad):
        assert "Running playbook site_health_check.yml" in fe.log_text(nid)
        assert "together with 1 other task(s)" in fe.log_text(nid)
    assert f"Health check of {B}" not in log and f"Health check of {A}" not in fe.log_text(bad)


def test_a_command_the_platform_drush_does_not_know_fails_clearly(fe):
    """B without the features module (its table): drush does not know features-update-all."""
    fe.db.query("DROP TABLE aegir_test_features", database=_db(fe, B))
    task = _run(fe, "features_update_all", B)
    assert fe.status(task) == m.TASK_ERROR
    assert 'drush features-update-all --yes failed (exit code 1): [error] Command "features-update-all" ' \
        'is not defined.' in fe.log_text(task)


def test_sync_refuses_another_destination_and_keeps_both_sites(fe):
    task = _run(fe, "sync", B, {"source": f"@{A}", "destination": f"@{A}", "database": "1", "files": "1"})
    assert fe.status(task) == m.TASK_ERROR
    assert "must be this task's site" in fe.log_text(task)
    missing = _run(fe, "sync", B, {"source": "@nowhere.cat.test", "database": "1"})
    assert fe.status(missing) == m.TASK_ERROR
    fe.servers["nginx"].wait_for_http(A, contains=f"Welcome to {A}")


def test_sync_copies_database_and_files_after_a_backup(fe):
    """B (broken by the health check test) gets A's database and files: it works again and
    shows A's content; its own settings.php (database, password) stays; a backup of B made
    first is recorded as hosting_sync records it."""
    fe.db.query("UPDATE aegir_test_page SET site_name='synced name'", database=_db(fe, A))
    (_site_dir(fe, A) / "files" / "synced.txt").write_text("from A")
    settings_before = (_site_dir(fe, B) / "settings.php").read_text()
    task = _run(fe, "sync", B, {"source": f"@{A}", "destination": f"@{B}", "database": "1", "files": "1",
                                "registry-rebuild": "1", "updatedb": "1", "cache-clear": "1", "backup": "1"})
    fe.assert_ok(task)
    assert fe.db.query("SELECT site_name FROM aegir_test_page", database=_db(fe, B)) == [("synced name",)]
    assert (_site_dir(fe, B) / "files" / "synced.txt").read_text() == "from A"
    assert (_site_dir(fe, B) / "settings.php").read_text() == settings_before
    assert _db(fe, A) != _db(fe, B)
    fe.servers["nginx"].wait_for_http(B, contains="synced name")
    backups = _backups(fe, B)
    assert backups and backups[-1].description == f"Before sync from @{A}"
    assert "Cache rebuild complete" in fe.log_text(task)


def test_platform_migrate_queues_one_migrate_per_enabled_site(fe):
    """As hostmaster's platform migrate form: a migrate task for each ENABLED site of the
    platform (B is made disabled in the frontend first, so only A moves: one real migrate)."""
    from sqlalchemy import update

    with fe.Session() as s, s.begin():
        s.execute(update(m.HostingSite).where(m.HostingSite.vid == s.get(m.Node, fe.site(B)[0].nid).vid)
                  .values(status=m.SITE_DISABLED))
    bad = _run(fe, "migrate", fe.platforms["nginx"], {"target_platform": "999999"})
    assert fe.status(bad) == m.TASK_ERROR
    assert "needs a target platform" in fe.log_text(bad)
    target = fe.nid(fe.platforms["apache"])
    task = fe.task("migrate", fe.platforms["nginx"], {"target_platform": str(target)})
    fe.run_queue()
    fe.assert_ok(task)
    assert f"Queued a migrate task for 1 site(s): {A}." in fe.log_text(task)
    migrates = {uri: [n for (n,) in fe.query(select(m.HostingTask.nid).where(
        m.HostingTask.rid == fe.site(uri)[0].nid, m.HostingTask.task_type == "migrate"))] for uri in (A, B)}
    assert len(migrates[A]) == 1 and migrates[B] == []
    args = dict(fe.query(select(m.HostingTaskArgument.name, m.HostingTaskArgument.value).where(
        m.HostingTaskArgument.nid == migrates[A][0])))
    assert args == {"target_platform": str(target), "new_uri": "", "new_db_server": str(fe.nid("server_nginx"))}
    fe.assert_ok(migrates[A][0])  # the same queue run ran it
    assert fe.site(A)[1].platform == target
    fe.servers["apache"].wait_for_http(A, contains="synced name")
