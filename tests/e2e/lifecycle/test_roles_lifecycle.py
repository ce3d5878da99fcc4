"""backup, restore, migrate, clone, login-reset and backup-delete with a static inventory, on
the harness' real servers (nginx and Apache over SSH, MariaDB). The tests of this module run in
order and share the servers' state (module-scoped `lc_env`)."""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

import pytest

from .conftest import archive_bytes, archive_members, settings_secret

pytestmark = pytest.mark.e2e

# A token per run in the uris: the databases a migrate or clone creates are named after them.
TOK = secrets.token_hex(2)
N1 = f"one{TOK}.nginx.lc.test"      # nginx site: backup, restore, then migrated to Apache
A1 = f"one{TOK}.apache.lc.test"     # Apache site: restore without settings.php, clone
CLONE = f"copy{TOK}.apache.lc.test"


@pytest.fixture(scope="module")
def env(lc_env):
    lc_env.add_site("nginx", N1, "n1", aegir_site_aliases=[f"www.{N1}"])
    lc_env.add_site("apache", A1, "a1")
    lc_env.run("install.yml", limit="aegir_sites").assert_ok()
    lc_env.servers["nginx"].wait_for_http(N1, contains=f"Welcome to {N1}")
    lc_env.servers["apache"].wait_for_http(A1, contains=f"Welcome to {A1}")
    return lc_env


def _backup(env, uri, key):
    before = set(env.backups(key).glob(f"{uri}-*.tar.gz"))
    result = env.run("backup.yml", limit=uri).assert_ok()
    new = set(env.backups(key).glob(f"{uri}-*.tar.gz")) - before
    assert len(new) == 1, (new, result.stdout)
    return new.pop(), result


def test_backup_archive(env):
    site = env.site_dir("nginx", N1)
    (site / "files" / "hello.txt").write_text("hello from the backup\n")
    password = settings_secret((site / "settings.php").read_text(), "db_password")
    archive, result = _backup(env, N1, "nginx")
    assert re.fullmatch(re.escape(N1) + r"-\d{8}\.\d{6}\.tar\.gz", archive.name)
    st = os.stat(archive)
    assert stat.S_IMODE(st.st_mode) == 0o600
    members = archive_members(archive)
    assert b"CREATE TABLE `aegir_test_page`" in members["database.sql"]
    assert members["files/hello.txt"] == b"hello from the backup\n"
    assert "private/.aegir-installed" in members
    settings = members["settings.php"].decode()
    assert "'password' => ''" in settings and "aegir:secret hash_salt" in settings
    # No readable database password anywhere: not in the archive, not in the play output.
    assert password and password.encode() not in archive_bytes(archive)
    assert password not in result.stdout + result.stderr
    # Nothing left behind in the backups directory but the archive and its manifest.
    assert sorted(p.name for p in env.backups("nginx").iterdir()) == [archive.name, f"{archive.name}.manifest.json"]
    env.last_archive = archive


def test_restore_after_damage(env):
    server = env.servers["nginx"]
    site = env.site_dir("nginx", N1)
    password = settings_secret((site / "settings.php").read_text(), "db_password")
    (site / "files" / "hello.txt").unlink()
    (site / "files" / "after-backup.txt").write_text("not in the backup\n")
    env.db.query("DROP TABLE aegir_test_page", database=env.inv.sites[N1]["aegir_site_db_name"])
    server.wait_for_http(N1, status=500)
    result = env.run("restore.yml", limit=N1,
                     extra_vars={"aegir_site_backup_file": str(env.last_archive)}).assert_ok()
    server.wait_for_http(N1, contains=f"Welcome to {N1}")
    assert (site / "files" / "hello.txt").read_text() == "hello from the backup\n"
    assert not (site / "files" / "after-backup.txt").exists()
    # The live settings.php (password, hash salt) was kept.
    assert settings_secret((site / "settings.php").read_text(), "db_password") == password
    assert stat.S_IMODE(os.stat(site / "settings.php").st_mode) == 0o440
    assert password not in result.stdout
    assert not list(site.parent.glob(".aegir-*")), "staging or previous directories left"
    assert sorted(p.name for p in env.backups("nginx").iterdir()) == [
        env.last_archive.name, f"{env.last_archive.name}.manifest.json"]


def test_restore_without_settings_php(env):
    """settings.php deleted and a table dropped: restore brings the page back with a new
    password set on the database user (the archive has none)."""
    server = env.servers["apache"]
    site = env.site_dir("apache", A1)
    archive, _ = _backup(env, A1, "apache")
    old = settings_secret((site / "settings.php").read_text(), "db_password")
    (site / "settings.php").unlink()
    env.db.query("DROP TABLE aegir_test_page", database=env.inv.sites[A1]["aegir_site_db_name"])
    server.wait_for_http(A1, status=404)
    env.run("restore.yml", limit=A1, extra_vars={"aegir_site_backup_file": str(archive)}).assert_ok()
    server.wait_for_http(A1, contains=f"Welcome to {A1}")
    new = settings_secret((site / "settings.php").read_text(), "db_password")
    assert new and new != old
    db_name = env.inv.sites[A1]["aegir_site_db_name"]
    assert env.db.can_login(db_name, new, db_name)
    assert not env.db.can_login(db_name, old, db_name)


def _chattr(path, flag) -> bool:
    import subprocess

    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_backup_into_unwritable_directory_fails_clearly(env):
    backups = env.backups("nginx")
    before = sorted(p.name for p in backups.iterdir())
    if not _chattr(backups, "+i"):
        pytest.skip("chattr +i is not supported here")
    try:
        result = env.run("backup.yml", limit=N1)
    finally:
        _chattr(backups, "-i")
    assert result.rc != 0
    assert f"The backup of {N1} into {backups} failed" in result.stdout
    assert "Nothing was changed" in result.stdout
    assert sorted(p.name for p in backups.iterdir()) == before
    env.servers["nginx"].wait_for_http(N1, contains=f"Welcome to {N1}")


def test_migrate_to_missing_platform_changes_nothing(env):
    result = env.run("migrate.yml", limit=N1, extra_vars={"aegir_site_target_platform": "platform_gone"})
    assert result.rc != 0
    assert "The target platform platform_gone is not in the inventory" in result.stdout
    env.servers["nginx"].wait_for_http(N1, contains=f"Welcome to {N1}")
    # A platform in the inventory whose directory is not on its server.
    env.inv.add_platform(env.servers["apache"], "platform_nodir", "/nonexistent/platform")
    result = env.run("migrate.yml", limit=N1, extra_vars={"aegir_site_target_platform": "platform_nodir"})
    assert result.rc != 0
    assert "/nonexistent/platform/sites does not exist on its server" in result.stdout
    del env.inv.platforms["platform_nodir"]
    env.servers["nginx"].wait_for_http(N1, contains=f"Welcome to {N1}")


def test_migrate_into_unwritable_platform_rolls_back(env):
    sites = Path(env.platform_roots["apache"]) / "sites"
    if not _chattr(sites, "+i"):
        pytest.skip("chattr +i is not supported here")
    try:
        result = env.run("migrate.yml", limit=N1, extra_vars={"aegir_site_target_platform": "platform_apache"})
    finally:
        _chattr(sites, "-i")
    assert result.rc != 0
    assert f"Migrate to {N1} on platform_apache failed" in result.stdout
    assert "the site is still served where it was" in result.stdout
    env.servers["nginx"].wait_for_http(N1, contains=f"Welcome to {N1}")
    assert not (sites / N1).exists()
    assert f"aegir-cron: {N1}" in env.servers["nginx"].crontab()


def test_migrate_failing_on_the_database_rolls_back(env):
    """A target db server whose admin may look but not create: the files were already
    deployed when the database step fails; everything is removed and the site still serves."""
    db = env.db
    user = f"l{env.token}_ro"
    db.query(f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'ro-pass-1'")
    db.query(f"GRANT SELECT ON mysql.* TO '{user}'@'%%'")
    env.created_dbs.append(user)
    env.inv.servers["server_readonly"] = {**env.inv.servers["server_apache"],
                                          "aegir_db_admin_user": user, "aegir_db_admin_password": "ro-pass-1"}
    try:
        result = env.run("migrate.yml", limit=N1, extra_vars={
            "aegir_site_target_platform": "platform_apache", "aegir_site_new_db_server": "server_readonly"})
    finally:
        del env.inv.servers["server_readonly"]
        db.query(f"DROP USER '{user}'@'%%'")
    assert result.rc != 0
    assert "New database and user" in result.stdout
    assert "Everything it had created was removed" in result.stdout
    env.servers["nginx"].wait_for_http(N1, contains=f"Welcome to {N1}")
    sites = Path(env.platform_roots["apache"]) / "sites"
    assert not (sites / N1).exists()
    assert not list(sites.glob(".aegir-*"))
    assert N1 not in (sites / "sites.php").read_text() if (sites / "sites.php").exists() else True
    env.servers["apache"].wait_for_http(N1, status=404)


def test_migrate_to_another_server(env):
    old_db = env.inv.sites[N1]["aegir_site_db_name"]
    nginx, apache = env.servers["nginx"], env.servers["apache"]
    salt = settings_secret((env.site_dir("nginx", N1) / "settings.php").read_text(), "hash_salt")
    result = env.run("migrate.yml", limit=N1, extra_vars={"aegir_site_target_platform": "platform_apache"}).assert_ok()
    # Served by Apache (uri and alias), no longer by nginx.
    resp = apache.wait_for_http(N1, contains=f"Welcome to {N1}")
    apache.wait_for_http(f"www.{N1}", contains=f"Welcome to {N1}")
    nginx.wait_for_http(N1, status=404)
    new_site = env.site_dir("apache", N1)
    settings = (new_site / "settings.php").read_text()
    new_db = re.search(r"'database' => '([^']+)'", settings).group(1)
    assert f"Database: {new_db}" in resp.body
    assert new_db != old_db
    password = settings_secret(settings, "db_password")
    assert env.db.can_login(new_db, password, new_db)
    assert password not in result.stdout
    assert salt and settings_secret(settings, "hash_salt") == salt  # the same site: its salt kept
    # The cron job moved; nothing is left on nginx.
    assert f"aegir-cron: {N1}" in apache.crontab()
    assert f"aegir-cron: {N1}" not in nginx.crontab()
    assert not env.site_dir("nginx", N1).exists()
    vhost_dir = Path(nginx.aegir_root) / "config" / "server_nginx" / "nginx" / "vhost.d"
    assert not (vhost_dir / f"{N1}.conf").exists()
    assert not env.db.database_exists(old_db)
    assert env.db.user_hosts(old_db) == []
    assert (new_site / "files" / "hello.txt").read_text() == "hello from the backup\n"
    # The backup made before the move stays on nginx; no temporary copies anywhere.
    assert [p.name for p in env.backups("apache").glob(".aegir-*")] == []
    assert [p.name for p in env.backups("nginx").glob(".aegir-*")] == []
    # The inventory now says where the site is.
    env.created_dbs.append(new_db)
    site = env.inv.sites.pop(N1)
    env.inv.sites[N1] = {**env.inv.platforms["platform_apache"], **{
        k: v for k, v in site.items() if k.startswith("aegir_site_")},
        "aegir_site_path": str(new_site), "aegir_site_db_name": new_db,
        "aegir_site_db_server": "server_apache"}
    env.run("verify.yml", limit=N1).assert_ok()
    apache.wait_for_http(N1, contains=f"Welcome to {N1}")


def test_clone(env):
    apache = env.servers["apache"]
    result = env.run("clone.yml", limit=A1, extra_vars={"aegir_site_new_uri": CLONE}).assert_ok()
    orig = apache.wait_for_http(A1, contains=f"Welcome to {A1}")
    copy = apache.wait_for_http(CLONE, contains=f"Welcome to {A1}")  # same content, new uri
    db_a = re.search(r"Database: (\w+)", orig.body).group(1)
    db_c = re.search(r"Database: (\w+)", copy.body).group(1)
    assert db_a != db_c
    env.created_dbs.append(db_c)
    s_a = (env.site_dir("apache", A1) / "settings.php").read_text()
    s_c = (env.site_dir("apache", CLONE) / "settings.php").read_text()
    assert settings_secret(s_a, "db_password") != settings_secret(s_c, "db_password")
    # Its own hash salt: the copy must not accept the original's one-time login links.
    assert settings_secret(s_c, "hash_salt") and settings_secret(s_a, "hash_salt")
    assert settings_secret(s_a, "hash_salt") != settings_secret(s_c, "hash_salt")
    assert re.search(r"'username' => '(\w+)'", s_c).group(1) == db_c
    assert f"aegir-cron: {A1}" in apache.crontab() and f"aegir-cron: {CLONE}" in apache.crontab()
    # Separate databases: a change in the clone does not show in the original.
    env.db.query("UPDATE aegir_test_page SET site_name = 'changed in the clone'", database=db_c)
    assert "changed in the clone" in apache.wait_for_http(CLONE, contains="changed in the clone").body
    assert "changed in the clone" not in apache.curl(A1)[1]
    # A clone onto an existing site is refused.
    result = env.run("clone.yml", limit=A1, extra_vars={"aegir_site_new_uri": CLONE})
    assert result.rc != 0 and "already exists" in result.stdout


def test_login_reset(env, make_platform):
    result = env.run("login_reset.yml", limit=A1).assert_ok()
    assert "user/reset/1/" not in result.stdout  # the link goes to the queue (set_stats) only
    # A platform without drush: a clear task error.
    root = make_platform(env.servers["apache"], "nodrush")
    os.unlink(Path(root) / "vendor" / "bin" / "drush")
    env.inv.add_platform(env.servers["apache"], "platform_nodrush", root)
    env.inv.add_site(env.servers["apache"], "platform_nodrush", "nodrush.lc.test", env.db_name("nd"))
    result = env.run("login_reset.yml", limit="nodrush.lc.test")
    assert result.rc != 0
    assert f"has no drush at {root}/vendor/bin/drush" in result.stdout
    del env.inv.sites["nodrush.lc.test"]


def test_backup_delete(env):
    archives = sorted(env.backups("apache").glob(f"{A1}-*.tar.gz"))
    assert archives
    refused = env.run("backup_delete.yml", limit=A1, extra_vars={"aegir_site_backup_delete_files": [
        {"bid": 1, "file": str(archives[0])}, {"bid": 2, "file": "/etc/../etc/passwd.tar.gz"}]})
    assert refused.rc != 0 and "Refusing to remove" in refused.stdout
    assert archives[0].exists()
    env.run("backup_delete.yml", limit=A1, extra_vars={"aegir_site_backup_delete_files": [
        {"bid": i, "file": str(a)} for i, a in enumerate(archives)]}).assert_ok()
    assert not any(a.exists() for a in archives)


def test_backups_in_the_same_second_get_their_own_names(env):
    """A backup never replaces an archive of the same name (two backups of a site in the
    same second): it takes <uri>-<date>-2.tar.gz and reports that name."""
    import time

    backups = env.backups("apache")
    start = time.time()
    squatters = {}
    for second in range(-2, 120):  # every name the backup may choose in the next two minutes
        name = f"{A1}-{time.strftime('%Y%m%d.%H%M%S', time.localtime(start + second))}.tar.gz"
        squatters[backups / name] = f"an earlier backup {second}".encode()
        (backups / name).write_bytes(squatters[backups / name])
    try:
        result = env.run("backup.yml", limit=A1, env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"}).assert_ok()
        new = [p for p in backups.glob(f"{A1}-*.tar.gz") if p not in squatters]
        assert len(new) == 1, (new, result.stdout)
        archive = new[0]
        assert time.time() - start < 110, "the backup took too long for this test's names"
        assert re.fullmatch(re.escape(A1) + r"-\d{8}\.\d{6}-2\.tar\.gz", archive.name), archive
        assert archive.with_name(archive.name.replace("-2.tar.gz", ".tar.gz")) in squatters
        assert "database.sql" in archive_members(archive)
        assert f"{archive}" in result.stdout  # aegir_results reports the name taken
        for path, content in squatters.items():
            assert path.read_bytes() == content
    finally:
        for path in [*squatters, *backups.glob(f"{A1}-*-2.tar.gz")]:
            path.unlink(missing_ok=True)
