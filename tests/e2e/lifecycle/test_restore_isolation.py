"""Tenant isolation of backup, restore and backup-delete (issue 12, points 1, 2 and the dump
files of 10), through the queue runner and the real playbooks on the harness servers.

A frontend row names which archive a restore or backup-delete acts on; the backend must only
take an archive that it made for this very site (in its server's backups directory, with the
manifest written at backup time), import it as the site's own database user with the client's
commands disabled, and clean the temporary files a killed backup left behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import signal
import tarfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aegir_ansible.db import models as m
from aegir_ansible.queue.manager import JobManager
from aegir_ansible.queue.reap import reap
from tests.integration.queue.conftest import spawn_runner, wait_for

from .conftest import REAL_PLAYBOOKS

pytestmark = pytest.mark.e2e

TOK = secrets.token_hex(2)
K = f"k{TOK}.iso.test"   # the attacker's site
N = f"n{TOK}.iso.test"   # the victim
EVIL_USER = f"evil{TOK}"
PWNED = Path(f"/tmp/aegir-pwned-{TOK}")

SHELL_AND_SUPERUSER = (
    f"\\! touch {PWNED}\n"
    f"CREATE USER '{EVIL_USER}'@'%' IDENTIFIED BY 'x';\n"
    f"GRANT ALL PRIVILEGES ON *.* TO '{EVIL_USER}'@'%' WITH GRANT OPTION;\n"
)
SUPERUSER_ONLY = (
    "CREATE TABLE `planted` (`id` int);\n"
    f"CREATE USER '{EVIL_USER}'@'%' IDENTIFIED BY 'x';\n"
    f"GRANT ALL PRIVILEGES ON *.* TO '{EVIL_USER}'@'%' WITH GRANT OPTION;\n"
)


@pytest.fixture(scope="module")
def fe(lc_frontend, test_db_server):
    nids = [lc_frontend.write(lambda f, uri=uri: f.add_site(uri, lc_frontend.platforms["nginx"],
                                                              db_server="server_nginx"))
            for uri in (K, N)]
    lc_frontend.run_queue()
    for nid in nids:
        for (task,) in lc_frontend.query(select(m.HostingTask.nid).where(m.HostingTask.rid == nid)):
            lc_frontend.assert_ok(task)
    for uri in (K, N):
        lc_frontend.servers["nginx"].wait_for_http(uri, contains=f"Welcome to {uri}")
    yield lc_frontend
    PWNED.unlink(missing_ok=True)
    for host in test_db_server.user_hosts(EVIL_USER):
        test_db_server.drop_user(EVIL_USER, host)


def _backups_dir(fe) -> Path:
    return Path(fe.servers["nginx"].aegir_root) / "backups"


def _site_dir(fe, uri) -> Path:
    return Path(fe.roots["nginx"]) / "sites" / uri


def _add_backup_row(fe, uri, filename) -> int:
    """A hosting_site_backups row as a (compromised) frontend would write it."""
    node, _, _ = fe.site(uri)
    with fe.Session() as s, s.begin():
        row = m.HostingSiteBackup(site=node.nid, web_server=fe.nid("server_nginx"),
                                  description="planted", filename=str(filename), size=1,
                                  timestamp=int(time.time()))
        s.add(row)
        s.flush()
        return row.bid


def _bad_archive(path: Path, dump: str) -> None:
    """A provision-shaped archive: a settings.php, a planted file, and database.sql."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("files/planted.txt", b"planted\n"), ("database.sql", dump.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _assert_untouched(fe, uri):
    fe.servers["nginx"].wait_for_http(uri, contains=f"Welcome to {uri}")
    assert not (_site_dir(fe, uri) / "files" / "planted.txt").exists()
    assert not PWNED.exists(), "a shell command from the dump ran on the web server"
    assert fe.db.user_hosts(EVIL_USER) == [], "the dump created a database account"


def test_restore_refuses_archives_this_backend_did_not_make_for_the_site(fe):
    """An archive uploaded into the site's own files/, a symlink to it in the backups
    directory, and an archive in the backups directory without a manifest: each restore
    fails with a clear error before anything is changed."""
    files = _site_dir(fe, K) / "files"
    uploaded = files / "upload.tar.gz"
    _bad_archive(uploaded, SHELL_AND_SUPERUSER)
    backups = _backups_dir(fe)
    link = backups / f"{K}-20990101.000000.tar.gz"
    link.symlink_to(uploaded)
    unmanifested = backups / f"{K}-20990102.000000.tar.gz"
    _bad_archive(unmanifested, SHELL_AND_SUPERUSER)
    try:
        tasks = [fe.task_with_raw_args("restore", K, {"bid": str(_add_backup_row(fe, K, path))})
                 for path in (uploaded, link, unmanifested)]
        fe.run_queue()
        for task in tasks:
            assert fe.status(task) == m.TASK_ERROR, fe.log_text(task)
            assert "Refusing to restore" in fe.log_text(task), fe.log_text(task)
        _assert_untouched(fe, K)
        assert uploaded.exists() and unmanifested.exists()
    finally:
        link.unlink(missing_ok=True)
        unmanifested.unlink(missing_ok=True)
        uploaded.unlink(missing_ok=True)


def test_another_sites_archive_is_refused_by_restore_and_backup_delete(fe):
    node_n, _, _ = fe.site(N)
    backup = fe.task("backup", N, {"description": "the victim's"})
    fe.run_queue()
    fe.assert_ok(backup)
    (row,) = [r for (r,) in fe.query(select(m.HostingSiteBackup).where(
        m.HostingSiteBackup.site == node_n.nid))]
    victim = Path(row.filename)
    assert victim.is_file()
    bid = _add_backup_row(fe, K, victim)
    restore = fe.task_with_raw_args("restore", K, {"bid": str(bid)})
    delete = fe.task_with_raw_args("backup-delete", K, {str(bid): str(victim)})
    fe.run_queue()
    for task in (restore, delete):
        assert fe.status(task) == m.TASK_ERROR, fe.log_text(task)
        assert "not made for this site" in fe.log_text(task), fe.log_text(task)
    # Nothing changed: K still has its own content, N's archive and both rows are there.
    resp = fe.servers["nginx"].wait_for_http(K, contains=f"Welcome to {K}")
    assert f"Welcome to {N}" not in resp.body
    assert victim.is_file()
    bids = {r.bid for (r,) in fe.query(select(m.HostingSiteBackup))}
    assert {row.bid, bid} <= bids
    # N itself restores and removes its archive.
    own_restore = fe.task("restore", N, {"bid": str(row.bid)})
    fe.run_queue()
    fe.assert_ok(own_restore)
    own_delete = fe.task_with_raw_args("backup-delete", N, {str(row.bid): str(victim)})
    fe.run_queue()
    fe.assert_ok(own_delete)
    assert not victim.exists()
    assert not [p for p in _backups_dir(fe).iterdir() if p.name.startswith(victim.name)]


def _forge_manifest(fe, archive: Path, uri: str) -> None:
    """What only the backend writes: the manifest naming the site (as if an archive with a
    hostile dump had passed every check), to test the import's own limits."""
    node, _, _ = fe.site(uri)
    data = archive.read_bytes()
    Path(f"{archive}.manifest.json").write_text(json.dumps({
        "format": "aegir-ansible-backup/1", "archive": archive.name, "site_uri": uri,
        "site_nid": node.nid, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
        "created": int(time.time())}))


@pytest.mark.parametrize("dump", [SHELL_AND_SUPERUSER, SUPERUSER_ONLY], ids=["shell", "grant"])
def test_import_runs_as_the_site_user_without_client_commands(fe, dump):
    """Even a dump that reached the import cannot run a shell command (client commands are
    disabled) nor create an account (it runs as the site's own user): the restore fails and
    the site is put back as it was."""
    archive = _backups_dir(fe) / f"{K}-20990103.000000.tar.gz"
    _bad_archive(archive, dump)
    _forge_manifest(fe, archive, K)
    try:
        task = fe.task_with_raw_args("restore", K, {"bid": str(_add_backup_row(fe, K, archive))})
        fe.run_queue()
        assert fe.status(task) == m.TASK_ERROR, fe.log_text(task)
        assert "put back as it was" in fe.log_text(task)
        _assert_untouched(fe, K)
        _, site, _ = fe.site(K)
        assert fe.db.query("SHOW TABLES LIKE 'planted'", database=site.db_name) == []
    finally:
        archive.unlink(missing_ok=True)
        Path(f"{archive}.manifest.json").unlink(missing_ok=True)


def _entries(directory: Path) -> set[str]:
    return set(os.listdir(directory))


def test_temporary_files_of_a_killed_backup_are_removed_by_the_next_one(fe, tmp_path):
    """A runner SIGKILLed in the middle of a backup leaves its dump (and option file) in the
    backups directory; the next backup of the site removes them once they are old enough."""
    backups = _backups_dir(fe)
    before = _entries(backups)

    def temporary():
        return {e for e in _entries(backups) - before
                if not (e.startswith(f"{K}-") and (e.endswith(".tar.gz") or e.endswith(".manifest.json")))}

    task = fe.task("backup", K)
    proc = spawn_runner(fe.url, log_path=tmp_path / "runner.log", playbooks=REAL_PLAYBOOKS)
    try:
        wait_for(temporary, 120, "the backup's temporary files")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(2)  # the remote end of the killed run stops
    left = temporary()
    assert left, "the kill came too late"
    # The killed run's task is failed by a reaper (to whom every runner looks lost).
    jm = JobManager(fe.engine)
    settings = jm.settings().replace(runner_lost_after=-1.0)
    reaped: list[int] = []
    wait_for(lambda: reaped.extend(reap(jm, settings)) or reaped, 10, "the reaping")
    assert task in reaped
    # The leftovers age past the safe age (two days back).
    old = time.time() - 2 * 86400
    for name in left:
        for dirpath, dirnames, filenames in os.walk(backups / name):
            for entry in dirnames + filenames:
                os.utime(os.path.join(dirpath, entry), (old, old), follow_symlinks=False)
        os.utime(backups / name, (old, old), follow_symlinks=False)
    fresh = backups / f".aegir-tmp-{K}_fresh"  # a run of the site going on now: kept
    fresh.mkdir(mode=0o700)
    try:
        again = fe.task("backup", K)
        fe.run_queue()
        fe.assert_ok(again)
        assert not [name for name in left if os.path.lexists(backups / name)]
        assert fresh.is_dir()
    finally:
        fresh.rmdir()
    # Nothing that outlives a run holds the database admin password.
    password = fe.db.admin_password.encode()
    for dirpath, _dirnames, filenames in os.walk(backups):
        for name in filenames:
            data = Path(dirpath, name).read_bytes()
            if name.endswith(".gz"):
                data = gzip.decompress(data)
            assert password not in data, name
