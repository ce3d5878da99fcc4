"""Packages, profiles and import through the queue runner and the real playbooks on the
harness servers (issue 13, points 3-5): platform verify records the platform's install
profiles, modules and themes as hosting_package_sync() does (hostmaster offers profiles for new
sites only from these rows); install and verify record the site's enabled packages; install
gives a site without a cron key one (in settings.php and the frontend) and verify keeps it;
run_cron records last_cron; a site directory found on disk that the frontend does not know
becomes a site node with an import task, and the import takes it over (its own database,
password and profile, aliases from sites.php) and fills its rows; a directory linked in from
outside the platform is never imported. Tests run in order (module-scoped frontend)."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select, update

from aegir_ansible import packages as pkg
from aegir_ansible.db import models as m

pytestmark = pytest.mark.e2e

TOK = secrets.token_hex(2)
S = f"pk{TOK}.lc.test"
IMP = f"im{TOK}.lc.test"
EVIL = f"ev{TOK}.lc.test"


@pytest.fixture(scope="module")
def fe(lc_frontend):
    return lc_frontend


def _profiles(fe, platform):
    with fe.Session() as s:
        return pkg.platform_profiles(s, fe.nid(platform))


def _instances(fe, rid) -> dict[str, tuple[str, int]]:
    rows = fe.query(select(m.HostingPackage.short_name, m.HostingPackage.package_type,
                           m.HostingPackageInstance.status)
                    .join(m.HostingPackageInstance, m.HostingPackageInstance.package_id == m.HostingPackage.nid)
                    .where(m.HostingPackageInstance.rid == rid))
    return {name: (ptype, status) for name, ptype, status in rows}


def _write(path: Path, text: str, user: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chown(path.parent, pw.pw_uid, pw.pw_gid)
    path.chmod(0o644)
    path.parent.chmod(0o755)


def test_platform_verify_records_the_profiles(fe):
    for key, platform in fe.platforms.items():
        assert _profiles(fe, platform) == ["minimal", "standard"], key
        found = _instances(fe, fe.nid(platform))
        assert found["drupal"] == ("platform", 0) and found["standard"] == ("profile", 0)


def test_a_new_profile_and_module_are_offered_after_verify(fe):
    root = Path(fe.roots["nginx"])
    user = fe.servers["nginx"].script_user
    _write(root / "profiles" / "aegir_pk" / "aegir_pk.info.yml",
           "name: Aegir packages test\ntype: profile\ncore_version_requirement: ^10\n"
           "install:\n  - aegir_pk_mod\n", user)
    _write(root / "sites" / "all" / "modules" / "aegir_pk_mod" / "aegir_pk_mod.info.yml",
           "name: Aegir packages module\ntype: module\ndescription: Enabled by the aegir_pk profile.\n", user)
    _write(root / "sites" / "all" / "modules" / "aegir_pk_other" / "aegir_pk_other.info.yml",
           "name: Aegir packages other\ntype: module\n", user)
    task = fe.task("verify", fe.platforms["nginx"])
    fe.run_queue()
    fe.assert_ok(task)
    assert _profiles(fe, fe.platforms["nginx"]) == ["aegir_pk", "minimal", "standard"]
    assert _profiles(fe, fe.platforms["apache"]) == ["minimal", "standard"]
    found = _instances(fe, fe.nid(fe.platforms["nginx"]))
    assert found["aegir_pk_mod"] == ("module", 0) and found["aegir_pk_other"] == ("module", 0)
    title = fe.query(select(m.Node.title).join(m.HostingPackage, m.HostingPackage.vid == m.Node.vid)
                     .where(m.HostingPackage.short_name == "aegir_pk_mod"))[0][0]
    assert title == "Aegir packages module"


def test_install_records_enabled_packages_and_a_new_cron_key(fe):
    def add(f):
        nid = f.add_site(S, fe.platforms["nginx"], db_server="server_nginx", profile="aegir_pk")
        vid = f.session.get(m.Node, nid).vid
        f.session.execute(update(m.HostingSite).where(m.HostingSite.vid == vid).values(cron_key=""))
        return nid

    nid = fe.write(add)
    fe.run_queue()
    install = fe.query(select(m.HostingTask.nid).where(m.HostingTask.rid == nid,
                                                        m.HostingTask.task_type == "install"))[0][0]
    fe.assert_ok(install)
    fe.servers["nginx"].wait_for_http(S, contains=f"Welcome to {S}")
    found = _instances(fe, nid)
    assert found["aegir_pk"] == ("profile", 1)
    assert found["aegir_pk_mod"] == ("module", 1) and found["aegir_pk_other"] == ("module", 0)
    key = fe.site(S)[1].cron_key
    assert key and re.fullmatch(r"[A-Za-z0-9]{43}", key)
    settings = Path(fe.roots["nginx"], "sites", S, "settings.php").read_text()
    assert f"$settings['cron_key'] = '{key}';" in settings
    assert key not in fe.log_text(install)
    # verify keeps it (settings.php and the frontend)
    verify = fe.task("verify", S)
    fe.run_queue()
    fe.assert_ok(verify)
    assert fe.site(S)[1].cron_key == key
    assert f"$settings['cron_key'] = '{key}';" in Path(fe.roots["nginx"], "sites", S, "settings.php").read_text()
    assert _instances(fe, nid)["aegir_pk_mod"] == ("module", 1)


def test_run_cron_records_last_cron(fe):
    assert not fe.site(S)[1].last_cron
    task = fe.task("run_cron", S)
    fe.run_queue()
    fe.assert_ok(task)
    assert fe.site(S)[1].last_cron > 0


def test_a_cron_run_from_the_crontab_is_recorded_by_the_next_verify(fe):
    """The site's crontab line, run as cron runs it (sh -c, as the script user), touches its
    stamp; the next verify writes that time to hosting_site.last_cron, never an older one."""
    server = fe.servers["nginx"]
    lines = server.crontab().splitlines()
    line = lines[lines.index(f"# aegir-cron: {S}") + 1]
    command = line.split(None, 5)[5].replace("\\%", "%")
    words = shlex.split(command)
    assert words[-4:-1] == ["&&", "/usr/bin/touch", "--"], words
    stamp = Path(words[-1])
    user = pwd.getpwnam(server.script_user)
    proc = subprocess.run(["sh", "-c", command], user=user.pw_uid, group=user.pw_gid, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and stamp.is_file(), proc
    before = fe.site(S)[1].last_cron
    ran = before + 7
    os.utime(stamp, (ran, ran))
    task = fe.task("verify", S)
    fe.run_queue()
    fe.assert_ok(task)
    assert fe.site(S)[1].last_cron == ran
    # An older stamp (a run recorded before a run_cron task) does not move it back.
    os.utime(stamp, (ran - 100, ran - 100))
    task = fe.task("verify", S)
    fe.run_queue()
    fe.assert_ok(task)
    assert fe.site(S)[1].last_cron == ran


def _site_on_disk(fe, uri: str, db: str, password: str) -> Path:
    """A site the frontend does not know: its directory and settings.php (this backend's
    format), its database installed by the platform's drush, an alias in sites.php."""
    server = fe.servers["nginx"]
    root = Path(fe.roots["nginx"])
    fe.db.create_database(db, db, password, grant_host=server.db_grant_host)
    site = root / "sites" / uri
    _write(site / "settings.php", f"""<?php
$databases['default']['default'] = [
  'driver' => 'mysql',
  'database' => '{db}',
  'username' => '{db}',
  'password' => '{password}', // aegir:secret db_password
  'host' => '{fe.db.host}',
  'port' => '{fe.db.port}',
  'prefix' => '',
];
$settings['hash_salt'] = '{secrets.token_hex(20)}'; // aegir:secret hash_salt
""", server.script_user)
    sites_php = root / "sites" / "sites.php"
    text = sites_php.read_text() if sites_php.exists() else "<?php\n"
    _write(sites_php, text + f"$sites['www.{uri}'] = '{uri}';\n", server.script_user)
    user = pwd.getpwnam(server.script_user)
    subprocess.run(["php", str(root / "vendor" / "bin" / "drush"), f"--root={root}", f"--uri={uri}",
                    "site-install", "--yes", "aegir_pk"], check=True, capture_output=True, text=True,
                   user=user.pw_uid, group=user.pw_gid, env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir})
    return site


def test_platform_verify_imports_a_site_found_on_disk(fe, tmp_path_factory):
    password = secrets.token_urlsafe(18)
    db = f"im{TOK}db"
    _site_on_disk(fe, IMP, db, password)
    # A site directory linked in from outside the platform is not the platform's.
    outside = tmp_path_factory.mktemp("outside") / EVIL
    outside.mkdir()
    (outside / "settings.php").write_text("<?php\n")
    (Path(fe.roots["nginx"]) / "sites" / EVIL).symlink_to(outside)
    verify = fe.task("verify", fe.platforms["nginx"])
    fe.run_queue()  # the platform verify, then the import it queued
    fe.run_queue()
    fe.assert_ok(verify)
    assert f"Imported existing site(s), an import task queued for each: {IMP}." in fe.log_text(verify)
    assert not fe.query(select(m.Node.nid).where(m.Node.title == EVIL))
    node, site, name = fe.site(IMP)
    imports = fe.query(select(m.HostingTask.nid).where(m.HostingTask.rid == node.nid,
                                                        m.HostingTask.task_type == "import"))
    assert len(imports) == 1
    fe.assert_ok(imports[0][0])
    assert (site.status, site.db_name, site.platform) == (m.SITE_ENABLED, db, fe.nid(fe.platforms["nginx"]))
    assert site.verified > 0 and site.cron_key
    profile = fe.query(select(m.HostingPackage.short_name).where(m.HostingPackage.nid == site.profile))[0][0]
    assert profile == "aegir_pk"
    aliases = [a for (a,) in fe.query(select(m.HostingSiteAlias.alias).where(m.HostingSiteAlias.vid == node.vid))]
    assert aliases == [f"www.{IMP}"]
    assert _instances(fe, node.nid)["aegir_pk_mod"] == ("module", 1)
    # Taken over: served by its own vhost, with its own data and the password it had.
    nginx = fe.servers["nginx"]
    nginx.wait_for_http(IMP, contains=f"Welcome to {IMP}")
    nginx.wait_for_http(f"www.{IMP}", contains=f"Welcome to {IMP}")
    settings = (Path(fe.roots["nginx"]) / "sites" / IMP / "settings.php").read_text()
    assert f"'password' => '{password}'" in settings and "aegir-ansible" in settings
    assert f"$settings['cron_key'] = '{site.cron_key}';" in settings
    assert password not in fe.log_text(imports[0][0])
    # A second platform verify imports nothing more; a verify of the site is fine.
    again = fe.task("verify", fe.platforms["nginx"])
    fe.run_queue()
    fe.assert_ok(again)
    assert "Imported existing site" not in fe.log_text(again)
    v = fe.task("verify", IMP)
    fe.run_queue()
    fe.assert_ok(v)
    (Path(fe.roots["nginx"]) / "sites" / EVIL).unlink()


def test_a_batch_of_site_verifies_records_each_sites_packages(fe):
    """Two site verifies of one server run as one batch (verify_batch.yml): one aegir_packages
    call for both, each site's packages recorded from its own result."""
    nids = [fe.nid(S), fe.nid(IMP)]
    with fe.Session() as s, s.begin():
        s.execute(m.HostingPackageInstance.__table__.delete().where(m.HostingPackageInstance.rid.in_(nids)))
    tasks = [fe.task("verify", S), fe.task("verify", IMP)]
    fe.run_queue()
    for task in tasks:
        fe.assert_ok(task)
        assert "Running playbook verify_batch.yml" in fe.log_text(task)
    for nid in nids:
        found = _instances(fe, nid)
        assert found["aegir_pk"] == ("profile", 1) and found["aegir_pk_mod"] == ("module", 1)
        assert found["aegir_pk_other"] == ("module", 0)
