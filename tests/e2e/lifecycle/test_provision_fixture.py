"""The provision fixture (tests/harness/provision.py) is a real Aegir 3 installation: the
harness' nginx and Apache load provision's server config and vhosts, every site answers with
the data of its own database, reached only with the credentials its vhost hands to PHP
(cloaked settings.php), aliases go through sites.php, redirections and disabled sites behave
as provision's vhosts make them, and the hostmaster rows describe the same installation."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from tests.e2e.roles.helpers import settings_secret
from tests.harness.provision import ProvisionInstall, write_hostmaster_site

pytestmark = pytest.mark.e2e


def _php_json(inst, path: str, expr: str):
    """Include a PHP file as the server's script user and print `expr` as JSON."""
    code = f"include {json.dumps(path)}; echo json_encode({expr});"
    proc = subprocess.run(["php", "-r", code], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin"}, cwd="/", **inst.as_script_user())
    return json.loads(proc.stdout)


def _scanner():
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "plugins" / "module_utils" / "aegir_packages.py"
    spec = importlib.util.spec_from_file_location("aegir_packages_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def installs(fresh_servers, test_db_server, make_platform):
    """On each server: platform 'D10 one' with four sites (plain with a client, aliases,
    redirection, disabled); on Apache a second platform with two more sites."""
    out = {}
    try:
        for key, server in fresh_servers.items():
            # One hostmaster: nginx is its master server, Apache a remote web server.
            context = "server_master" if key == "nginx" else f"server_web{key}provisiontest"
            inst = ProvisionInstall(server, test_db_server, server_context=context)
            out[key] = inst
            plat = inst.add_platform(f"D10 one {key}", make_platform(server, "d10one"))
            base = f"{key}.provision.test"
            inst.add_site(plat, f"plain.{base}", client="acme")
            inst.add_site(plat, f"multi.{base}", aliases=[f"www.multi.{base}", f"alt-multi.{base}"],
                          profile="minimal")
            inst.add_site(plat, f"redir.{base}", aliases=[f"www.redir.{base}", f"old-redir.{base}"],
                          redirection=f"www.redir.{base}")
            inst.add_site(plat, f"off.{base}", aliases=[f"www.off.{base}"], enabled=False)
            if key == "apache":
                plat2 = inst.add_platform(f"D10 two {key}", make_platform(server, "d10two"))
                inst.add_site(plat2, f"second.{base}", client="acme")
                inst.add_site(plat2, f"www.third.{base}")
            inst.reload()
        yield out
    finally:
        for inst in out.values():
            inst.cleanup()


@pytest.fixture(scope="module")
def frontend(installs, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('pf') / 'hostmaster.sqlite'}"
    engine = make_engine(url)
    m.AegirBase.metadata.create_all(engine)
    Session = make_sessionmaker(engine)
    with Session() as s, s.begin():
        for inst in installs.values():
            inst.write_frontend(s)
    yield Session
    engine.dispose()


def _sites(installs):
    for key, inst in installs.items():
        for plat in inst.platforms:
            for site in plat.sites:
                yield inst, site


def test_every_enabled_site_serves_its_own_database(installs):
    served = 0
    for inst, site in _sites(installs):
        if not site.enabled or site.redirection:
            continue
        status, body = inst.server.curl(site.uri)
        assert status == 200, (site.uri, body)
        assert f"<h1>Welcome to {site.uri}</h1>" in body
        assert f"Database: {site.db_name}" in body
        assert f"Install profile: {site.profile}" in body
        assert site.db_passwd not in body
        served += 1
    assert served == 6


def test_aliases_resolve_through_sites_php(installs):
    inst = installs["nginx"]
    site = next(s for s in inst.platforms[0].sites if s.uri.startswith("multi."))
    sites_php = _php_json(inst, f"{site.platform.root}/sites/sites.php", "$sites")
    for alias in site.aliases:
        assert sites_php[alias] == site.uri
    for key in ("nginx", "apache"):
        inst = installs[key]
        site = next(s for s in inst.platforms[0].sites if s.uri.startswith("multi."))
        for alias in site.aliases:
            status, body = inst.server.curl(alias)
            assert status == 200, (alias, body)
            assert f"<h1>Welcome to {site.uri}</h1>" in body
            assert f"Requested host: {alias}" in body


def test_redirection_and_disabled_sites(installs):
    for key, inst in installs.items():
        sites = {s.uri.split(".")[0]: s for s in inst.platforms[0].sites}
        redir = sites["redir"]
        for name in (redir.uri, f"old-redir.{key}.provision.test"):
            r = inst.server.request(name, "/node/1")
            assert r.status == 301, (key, name, r.status)
            assert r.headers["location"] == f"http://{redir.redirection}/node/1"
        r = inst.server.request(redir.redirection)
        assert r.status == 200 and f"Welcome to {redir.uri}" in r.body
        off = sites["off"]
        for name in (off.uri, *off.aliases):
            r = inst.server.request(name, "/")
            assert r.status == 302, (key, name, r.status)
            assert r.headers["location"].startswith(f"{inst.master_url}/hosting/disabled/{off.uri}")


def test_credentials_come_only_from_the_vhost_environment(installs):
    """settings.php holds no credential; drushrc.php and the vhost do. A vhost with a wrong
    password breaks the page, restoring it mends it: the page uses the vhost's values."""
    for key, inst in installs.items():
        site = inst.platforms[0].sites[0]
        path = Path(site.site_path)
        settings = (path / "settings.php").read_text()
        assert site.db_passwd not in settings and site.db_name not in settings
        st = os.stat(path / "settings.php")
        assert stat.S_IMODE(st.st_mode) == 0o440
        assert st.st_gid == inst.web_gid
        options = _php_json(inst, str(path / "drushrc.php"), "$options")
        assert {k: options[k] for k in ("db_name", "db_user", "db_passwd", "db_host", "db_port")} == {
            "db_name": site.db_name, "db_user": site.db_user, "db_passwd": site.db_passwd,
            "db_host": site.db_host, "db_port": str(site.db_port)}
        server_env = _php_json(inst, str(path / "drushrc.php"), "$_SERVER['db_passwd']")
        assert server_env == site.db_passwd
        vhost = inst.app_dir / "vhost.d" / site.uri
        text = vhost.read_text()
        line = (f"fastcgi_param db_passwd {site.db_passwd};" if key == "nginx"
                else f"SetEnv db_passwd  {site.db_passwd}")
        assert line in text
        try:
            vhost.write_text(text.replace(line, line.replace(site.db_passwd, "wrongpass9")))
            inst.reload()
            status, body = inst.server.curl(site.uri)
            assert status == 500 and "Database connection failed" in body, (key, status, body)
        finally:
            vhost.write_text(text)
            inst.reload()
        assert inst.server.curl(site.uri)[0] == 200


def test_alias_files_and_layout(installs):
    for key, inst in installs.items():
        drush = inst.root / ".drush"
        server = _php_json(inst, str(drush / f"{inst.server_context}.alias.drushrc.php"),
                           f"$aliases['{inst.server_context}']")
        assert server["context_type"] == "server" and server["http_service_type"] == key
        assert server["aegir_root"] == str(inst.root)
        for plat in inst.platforms:
            alias = _php_json(inst, str(drush / f"{plat.context}.alias.drushrc.php"),
                              f"$aliases['{plat.context}']")
            assert alias["root"] == plat.root and alias["web_server"] == f"@{inst.server_context}"
            rc = _php_json(inst, f"{plat.root}/sites/all/drush/drushrc.php", "$options")
            assert sorted(rc["sites"]) == sorted(s.uri for s in plat.sites)
            # What provision recorded is what the codebase holds (the aegir_packages scanner).
            scan = _scanner().scan_platform(plat.root)
            assert rc["profiles"] == scan["profiles"] == ["minimal", "standard"]
            assert sorted(scan["sites"]) == sorted(rc["sites"])
            assert stat.S_IMODE(os.stat(f"{plat.root}/sites/all/drush/drushrc.php").st_mode) == 0o444
            for site in plat.sites:
                alias = _php_json(inst, str(drush / f"{site.uri}.alias.drushrc.php"),
                                  f"$aliases['{site.uri}']")
                assert alias["platform"] == f"@{plat.context}"
                assert alias["site_enabled"] is site.enabled
                assert alias["aliases"] == site.aliases
                assert alias["redirection"] == (site.redirection or False)
                assert stat.S_IMODE(os.stat(Path(site.site_path) / "files").st_mode) == 0o2775
                assert (Path(site.site_path) / "local.settings.php").is_file()
                vhost = inst.app_dir / "vhost.d" / site.uri
                assert vhost.is_file()
                if site.client:
                    link = inst.root / "clients" / site.client / site.uri
                    assert os.readlink(link) == site.site_path
        conf = inst.config / f"{key}.conf"
        assert conf.is_symlink() and os.readlink(conf) == str(inst.own_config / f"{key}.conf")
        if key == "apache":
            assert (inst.app_dir / "platform.d" / f"{inst.platforms[0].context}.conf").is_file()


def test_frontend_rows_match_the_disk(installs, frontend):
    with frontend() as s:
        ctx = {c.name: c.nid for c in s.scalars(select(m.HostingContext))}
        for inst, site in _sites(installs):
            assert (inst.root / ".drush" / f"{site.uri}.alias.drushrc.php").is_file()
            node = s.get(m.Node, ctx[site.uri])
            row = s.get(m.HostingSite, node.vid)
            assert row.db_name == site.db_name
            assert row.cron_key == site.cron_key
            assert row.status == (m.SITE_ENABLED if site.enabled else m.SITE_DISABLED)
            assert row.platform == ctx[site.platform.context]
            profile = s.get(m.Node, row.profile)
            assert profile.type == "package"
            aliases = s.execute(select(m.HostingSiteAlias.alias, m.HostingSiteAlias.redirection)
                                .where(m.HostingSiteAlias.vid == node.vid)).all()
            assert sorted(a for a, _ in aliases) == sorted(site.aliases)
            assert {r for _, r in aliases} <= {site.redirection or ""}
            enabled = s.execute(select(m.HostingPackage.short_name)
                                .join(m.HostingPackageInstance,
                                      m.HostingPackageInstance.package_id == m.HostingPackage.nid)
                                .where(m.HostingPackageInstance.rid == node.nid,
                                       m.HostingPackageInstance.status == 1)).scalars().all()
            assert enabled == [site.profile]
        n_sites = s.query(m.HostingSite).count()
        assert n_sites == sum(1 for _ in _sites(installs)) == 10


class _Backend:
    """The hostmaster database of the installation, switched to this backend as
    docs/migrating.md says (rows, `aegir db init`, the servers' connection settings), with a
    queue runner over the real playbooks."""

    def __init__(self, installs, tmp_path):
        from aegir_ansible.db import init_schema

        self.engine = make_engine(f"sqlite:///{tmp_path / 'hostmaster.sqlite'}")
        m.AegirBase.metadata.create_all(self.engine)
        self.Session = make_sessionmaker(self.engine)
        with self.Session() as s, s.begin():
            nids = {inst: inst.write_frontend(s) for inst in installs.values()}
            nginx = installs["nginx"]
            write_hostmaster_site(s, nginx.master_url, nids[nginx][nginx.platforms[0].context],
                                  nids[nginx][nginx.db_context])
        assert init_schema(self.engine)["existing_aegir"]
        with self.Session() as s, s.begin():
            for inst, ids in nids.items():
                inst.write_backend_settings(s, ids)
        self.nids = nids

    def queue(self, task_type: str, *targets: str) -> None:
        from aegir_ansible.frontend import Frontend

        with self.Session() as s, s.begin():
            for target in targets:
                Frontend(s).add_task(task_type, target)

    def run(self) -> None:
        from aegir_ansible import paths
        from aegir_ansible.queue.worker import Worker

        Worker(self.engine, once=True, install_signals=False, playbooks_dir=paths.playbooks_dir()).run()

    def outcomes(self) -> dict[str, tuple[int, str]]:
        """'<type> <target>' -> (task status, its last error message)."""
        out = {}
        with self.Session() as s:
            for nid, task_type, target, status in s.execute(
                    select(m.HostingTask.nid, m.HostingTask.task_type, m.HostingContext.name,
                           m.HostingTask.task_status)
                    .join(m.Node, m.Node.vid == m.HostingTask.vid)
                    .join(m.HostingContext, m.HostingContext.nid == m.HostingTask.rid)
                    .order_by(m.HostingTask.nid)):
                if f"{task_type} {target}" in out:
                    continue  # the first task of that type (those queued by the test)
                errors = s.execute(select(m.HostingTaskLog.message).where(
                    m.HostingTaskLog.nid == nid, m.HostingTaskLog.type == "error")
                    .order_by(m.HostingTaskLog.lid)).scalars().all()
                out[f"{task_type} {target}"] = (status, "\n".join(errors))
        return out

    def close(self) -> None:
        self.engine.dispose()


def _snapshot(inst, site) -> dict:
    """What a failed task must leave as it was: the site's files, its vhost, the crontab."""
    path = Path(site.site_path)
    out = {name: (path / name).read_bytes() for name in ("settings.php", "drushrc.php")}
    out["vhost"] = (inst.app_dir / "vhost.d" / site.uri).read_bytes()
    out["vhost.conf"] = (inst.app_dir / "vhost.d" / f"{site.uri}.conf").exists()
    out["cron"] = f"aegir-cron: {site.uri}" in inst.server.crontab()
    out["dirs"] = sorted(p.name for p in path.iterdir())
    return out


def _tables(inst, site) -> int:
    return inst.db.query("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                         site.db_name)[0][0]


DESTRUCTIVE_ADVICE = ("run the install", "reinstall", "delete the site", "drop the database")


def test_check_diff_of_the_takeover_changes_nothing(installs, tmp_path, run_playbook):
    """`verify.yml --check --diff` on a provision site (the inventory script on the switched
    database): reports the takeover as changes, writes nothing, shows no password or salt."""
    from tests.harness.ansible import REPO_ROOT

    inst = installs["nginx"]
    site = next(s for s in inst.platforms[0].sites if s.uri.startswith("multi."))
    before = _snapshot(inst, site)
    settings = (Path(site.site_path) / "settings.php").read_text()
    salt = settings.split("$settings['hash_salt'] = '", 1)[1].split("'", 1)[0]
    backend = _Backend(installs, tmp_path)
    try:
        result = run_playbook("playbooks/verify.yml", REPO_ROOT / "playbooks" / "aegir_inventory.py",
                              limit=site.uri, check=True, diff=True,
                              env={"AEGIR_DB_URL": str(backend.engine.url)})
    finally:
        backend.close()
    result.assert_ok()
    assert result.stats[site.uri].changed >= 1
    # The diff shows provision's vhost going, its password masked.
    assert f"--- before: {inst.app_dir / 'vhost.d' / site.uri}\n" in result.stdout
    assert "fastcgi_param db_passwd ********;" in result.stdout
    assert site.db_passwd not in result.stdout + result.stderr
    assert salt not in result.stdout + result.stderr
    assert _snapshot(inst, site) == before


def test_install_of_a_provision_site_is_refused_and_drops_nothing(installs, tmp_path):
    """Install on a site provision installed: refused before anything is written (as
    provision's install validate does), its data kept, no advice to do anything destructive.
    As hostmaster does, the refusal queues an import, which takes the site over."""
    inst = installs["apache"]
    site = inst.platforms[0].sites[0]
    before = _snapshot(inst, site)
    tables = _tables(inst, site)
    assert tables > 0
    backend = _Backend(installs, tmp_path)
    try:
        backend.queue("install", site.uri)
        backend.run()
        status, message = backend.outcomes()[f"install {site.uri}"]
        imported = backend.outcomes().get(f"import {site.uri}")
        assert status == m.TASK_ERROR, message
        assert "already installed" in message and "Nothing was changed" in message, message
        assert not any(advice in message.lower() for advice in DESTRUCTIVE_ADVICE), message
        assert site.db_passwd not in message
        # Nothing written by the install; the import it queued has not run yet, or took the
        # site over (then settings.php is this backend's, with provision's password).
        assert imported is not None, backend.outcomes()
        if imported[0] == m.TASK_QUEUED:
            assert _snapshot(inst, site) == before
            backend.run()
            imported = backend.outcomes()[f"import {site.uri}"]
        assert imported[0] == m.TASK_SUCCESS, imported
    finally:
        backend.close()
    settings = (Path(site.site_path) / "settings.php").read_text()
    assert "aegir-ansible" in settings and site.db_passwd in settings
    assert _tables(inst, site) == tables
    assert inst.db.can_login(site.db_user, site.db_passwd, site.db_name)
    inst.server.wait_for_http(site.uri, contains=f"Database: {site.db_name}")


def test_a_failed_verify_changes_nothing(installs, tmp_path):
    """A provision site whose drushrc.php names another database: its verify is refused (the
    credentials are not proven to be the site's), and nothing is written: no settings.php,
    no vhost, no cron job, provision's files as they were; the message advises nothing
    destructive. Put right, the next verify takes the site over."""
    inst = installs["nginx"]
    site = next(s for s in inst.platforms[0].sites if s.uri.startswith("plain."))
    drushrc = Path(site.site_path) / "drushrc.php"
    original = drushrc.read_text()
    tampered = original.replace(f"$options['db_name'] = '{site.db_name}';", "$options['db_name'] = 'otherdb';")
    assert tampered != original
    os.chmod(drushrc, 0o640)
    drushrc.write_text(tampered)
    os.chmod(drushrc, 0o440)
    backend = _Backend(installs, tmp_path)
    try:
        before = _snapshot(inst, site)
        links = sorted(os.listdir(inst.root / "clients" / site.client))
        backend.queue("verify", site.uri)
        backend.run()
        status, message = backend.outcomes()[f"verify {site.uri}"]
        # failed (and, verify being safe to repeat, queued again for a later attempt)
        assert status in (m.TASK_ERROR, m.TASK_QUEUED), message
        assert "otherdb" in message and "Nothing was changed" in message, message
        assert not any(advice in message.lower() for advice in DESTRUCTIVE_ADVICE), message
        assert _snapshot(inst, site) == before
        assert sorted(os.listdir(inst.root / "clients" / site.client)) == links
    finally:
        os.chmod(drushrc, 0o640)
        drushrc.write_text(original)
        os.chmod(drushrc, 0o440)
        backend.close()
    assert inst.server.curl(site.uri)[0] == 200


def test_the_switch_keeps_every_site_serving(installs, tmp_path):
    """docs/migrating.md on this installation: hostmaster's rows, `aegir db init`, the servers'
    connection settings (step 5), then server, platform and site verifies run by the queue
    with the real playbooks. Every site must serve as before, with the same data and the
    credentials provision made (never regenerated), now from settings.php and vhosts in this
    backend's format (provision's vhost files gone); redirections and disabled sites behave
    as provision made them (the master's URL from hostmaster's own site); client symlinks and
    cron jobs are in place. Runs last: it rewrites the servers' Aegir config."""
    from aegir_ansible import paths
    from aegir_ansible.db import init_schema
    from aegir_ansible.frontend import Frontend
    from aegir_ansible.queue.worker import Worker

    url = f"sqlite:///{tmp_path / 'hostmaster.sqlite'}"
    engine = make_engine(url)
    m.AegirBase.metadata.create_all(engine)
    Session = make_sessionmaker(engine)
    try:
        with Session() as s, s.begin():
            nids = {}
            for inst in installs.values():
                nids[inst] = inst.write_frontend(s)
            nginx = installs["nginx"]
            write_hostmaster_site(s, nginx.master_url, nids[nginx][nginx.platforms[0].context],
                                  nids[nginx][nginx.db_context])
        assert init_schema(engine)["existing_aegir"]
        with Session() as s, s.begin():
            for inst, ids in nids.items():
                inst.write_backend_settings(s, ids)
            for inst in installs.values():
                Frontend(s).add_task("verify", inst.server_context)

        def run_queue():
            Worker(engine, once=True, install_signals=False, playbooks_dir=paths.playbooks_dir()).run()

        run_queue()  # server verifies, then the platform verifies they queue
        run_queue()
        with Session() as s, s.begin():
            for inst, site in _sites(installs):
                Frontend(s).add_task("verify", site.uri)
        run_queue()
        before = {}
        for inst, site in _sites(installs):
            if site.enabled and not site.redirection:
                status, body = inst.server.curl(site.uri)
                before[site.uri] = (status, f"Database: {site.db_name}" in body)
        with Session() as s:
            tasks = s.execute(
                select(m.HostingTask.nid, m.HostingTask.task_type, m.HostingContext.name, m.HostingTask.task_status)
                .join(m.Node, m.Node.vid == m.HostingTask.vid)
                .join(m.HostingContext, m.HostingContext.nid == m.HostingTask.rid)).all()
            errors = {}
            for nid, task_type, target, status in tasks:
                if status != m.TASK_SUCCESS:
                    last = s.execute(select(m.HostingTaskLog.message).where(
                        m.HostingTaskLog.nid == nid, m.HostingTaskLog.type == "error",
                        ~m.HostingTaskLog.message.like("Task failed after%"))
                        .order_by(m.HostingTaskLog.lid.desc())).scalars().first()
                    errors[f"{task_type} {target}"] = (last or "")[:200]
        assert before and all(v == (200, True) for v in before.values()), (before, errors)
        assert not errors, errors
        for inst, site in _sites(installs):
            path = Path(site.site_path)
            settings = (path / "settings.php").read_text()
            # This backend's settings.php, with provision's password and database.
            assert settings_secret(settings, "db_password") == site.db_passwd
            assert f"'database' => '{site.db_name}'" in settings and "$_SERVER['db_name']" not in settings
            assert stat.S_IMODE(os.stat(path / "settings.php").st_mode) == 0o440
            vhost_d = inst.app_dir / "vhost.d"
            assert not (vhost_d / site.uri).exists(), f"provision's vhost of {site.uri} is still there"
            assert (vhost_d / f"{site.uri}.conf").is_file()
            crontab = inst.server.crontab()
            assert (f"aegir-cron: {site.uri}" in crontab) is site.enabled
            if site.client:
                assert os.readlink(inst.root / "clients" / site.client / site.uri) == site.site_path
            # The data is provision's: the site's own user still logs in with its password.
            assert inst.db.can_login(site.db_user, site.db_passwd, site.db_name)
        # What hostmaster's UI shows: every site verified, with its status and database;
        # each platform's install profiles, each site's profile among its enabled packages.
        from aegir_ansible import packages as pkg

        with Session() as s:
            for inst, site in _sites(installs):
                row = s.execute(select(m.HostingSite).join(m.Node, m.Node.vid == m.HostingSite.vid)
                                .where(m.Node.nid == nids[inst][site.uri])).scalar_one()
                assert row.verified > 0, site.uri
                assert row.status == (m.SITE_ENABLED if site.enabled else m.SITE_DISABLED), site.uri
                assert row.db_name == site.db_name, site.uri
                enabled = set(s.execute(
                    select(m.HostingPackage.short_name)
                    .join(m.HostingPackageInstance, m.HostingPackageInstance.package_id == m.HostingPackage.nid)
                    .where(m.HostingPackageInstance.rid == nids[inst][site.uri],
                           m.HostingPackageInstance.status == 1)).scalars())
                assert site.profile in enabled, (site.uri, enabled)
            for inst in installs.values():
                for plat in inst.platforms:
                    offered = pkg.platform_profiles(s, nids[inst][plat.context])
                    assert {site.profile for site in plat.sites} <= set(offered), (plat.context, offered)
        for key, inst in installs.items():
            sites = {s.uri.split(".")[0]: s for s in inst.platforms[0].sites}
            redir = sites["redir"]
            r = inst.server.request(f"old-redir.{key}.provision.test", "/node/1")
            assert r.status == 301 and r.headers["location"] == f"http://{redir.redirection}/node/1", (key, r)
            off = sites["off"]
            for name in (off.uri, *off.aliases):
                r = inst.server.request(name, "/")
                assert r.status == 302, (key, name, r.status, r.body[:200])
                assert r.headers["location"].startswith(
                    f"{inst.master_url}/hosting/disabled/{off.uri}"), (key, r.headers)
    finally:
        engine.dispose()


def test_hostmaster_restart_cmd_reloads_the_web_server(installs, tmp_path):
    """hosting_service.restart_cmd (hostmaster's `sudo <command>`) is the web server's reload
    command when the backend's own settings name none: split into an argv list (sudo dropped
    when connecting as root), run by the vhost writes; a line that is not a plain command is
    refused and the server verify fails without writing anything. Runs after the switch."""
    from aegir_ansible.db.backend import ServerSettings
    from aegir_ansible.inventory import build_inventory

    inst = installs["nginx"]
    site = next(s for s in inst.platforms[0].sites if s.uri.startswith("plain."))
    mark = tmp_path / "reloaded"
    script = tmp_path / "reload.sh"
    script.write_text(f"#!/bin/sh\necho reloaded >> {mark}\nexec {inst.server.http_reload_cmd[0]}\n")
    os.chmod(script, 0o755)
    os.chmod(tmp_path, 0o755)
    backend = _Backend(installs, tmp_path)
    nid = backend.nids[inst][inst.server_context]

    def set_restart(cmd):
        with backend.Session() as s, s.begin():
            s.get(ServerSettings, nid).http_reload_cmd = None
            service = s.execute(select(m.HostingService).join(m.Node, m.Node.vid == m.HostingService.vid)
                                .where(m.HostingService.nid == nid, m.HostingService.service == "http")).scalar_one()
            service.restart_cmd = cmd
        with backend.Session() as s:
            return build_inventory(s).hosts[inst.server_context]

    try:
        hv = set_restart(f"sudo {script}")
        as_root = inst.server.ssh_user == "root"
        assert hv["aegir_http_reload_cmd"] == ([str(script)] if as_root else ["sudo", str(script)])
        assert "aegir_http_restart_cmd_error" not in hv
        vhost = inst.app_dir / "vhost.d" / f"{site.uri}.conf"
        os.chmod(vhost, 0o644)
        vhost.write_text(vhost.read_text() + "# tampered\n")
        backend.queue("verify", site.uri)
        backend.run()
        status, message = backend.outcomes()[f"verify {site.uri}"]
        assert status == m.TASK_SUCCESS, message
        assert "# tampered" not in vhost.read_text()
        assert mark.read_text().count("reloaded") == 1
        assert inst.server.curl(site.uri)[0] == 200

        hv = set_restart(f"sudo {script}; touch {tmp_path}/owned")
        assert "not a plain command" in hv["aegir_http_restart_cmd_error"]
        conf = inst.own_config / "nginx.conf"
        before = conf.read_bytes()
        backend.queue("verify", inst.server_context)
        backend.run()
        status, message = backend.outcomes()[f"verify {inst.server_context}"]
        assert status in (m.TASK_ERROR, m.TASK_QUEUED) and "not a plain command" in message, message
        assert conf.read_bytes() == before
        assert not (tmp_path / "owned").exists()
    finally:
        backend.close()


def test_client_symlinks_are_ours_only(installs, tmp_path):
    """After the switch: verify keeps `~/clients/<client>/<uri>` pointing at the site, removes
    a symlink of the site under another client (a client change: it points at the site) and
    leaves anything else of that name alone (a symlink pointing elsewhere, a plain file)."""
    inst = installs["apache"]
    site = next(s for s in inst.platforms[0].sites if s.uri.startswith("plain."))
    clients = inst.root / "clients"
    stale, foreign, plain_file = (clients / "former" / site.uri, clients / "foreign" / site.uri,
                                  clients / "papers" / site.uri)
    for link in (stale, foreign, plain_file):
        link.parent.mkdir(exist_ok=True)
    stale.symlink_to(site.site_path)
    foreign.symlink_to(tmp_path)
    plain_file.write_text("not a link\n")
    backend = _Backend(installs, tmp_path)
    try:
        backend.queue("verify", site.uri)
        backend.run()
        status, message = backend.outcomes()[f"verify {site.uri}"]
        assert status == m.TASK_SUCCESS, message
        assert os.readlink(clients / site.client / site.uri) == site.site_path
        assert not stale.is_symlink()
        assert os.readlink(foreign) == str(tmp_path)
        assert plain_file.read_text() == "not a link\n"
    finally:
        backend.close()
        for path in (foreign, plain_file):
            path.unlink(missing_ok=True)
