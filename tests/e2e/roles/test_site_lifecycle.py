"""End to end over SSH on nginx AND Apache at the same time: server and platform verify, site
install, verify (idempotent, --check --diff), disable, enable, delete.

The tests of this module run in order and share the servers' state (module-scoped `env`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .helpers import settings_secret

pytestmark = pytest.mark.e2e

KEYS = ("nginx", "apache")


def uri(key: str, n: int) -> str:
    return f"site{n}.{key}.example.test"


@pytest.fixture(scope="module")
def sites(env):
    """Two sites per server: one plain, one with aliases redirecting to the main uri."""
    for key in KEYS:
        env.add_site(key, uri(key, 1), f"{key[:2]}1")
        env.add_site(key, uri(key, 2), f"{key[:2]}2",
                     aegir_site_aliases=[f"www.site2.{key}.example.test", f"alt.site2.{key}.example.test"],
                     aegir_site_redirection=uri(key, 2))
    return env


def test_server_verify_layout(env):
    for key, server in env.servers.items():
        root = Path(server.aegir_root)
        own = root / "config" / f"server_{key}"
        svc = own / server.http_service
        for d in ("pre.d", "post.d", "platform.d", "vhost.d"):
            assert (svc / d).is_dir(), svc / d
        assert stat.S_IMODE(os.stat(root / "config").st_mode) == 0o711
        assert stat.S_IMODE(os.stat(root / "backups").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(root / "clients").st_mode) == 0o711
        include = root / "config" / f"{server.http_service}.conf"
        assert include.exists() and "vhost.d" in include.read_text()
        assert server.running_config_ok(), server.config_test_output()
    # Apache gets the platform's <Directory> block.
    apache = env.servers["apache"]
    conf = Path(apache.aegir_root) / "config/server_apache/apache/platform.d/platform_d10_apache.conf"
    assert env.platform_roots["apache"] in conf.read_text()


def test_server_platform_verify_idempotent(env):
    env.run("verify.yml", limit="aegir_servers:aegir_platforms").assert_idempotent()


def test_install(sites):
    env = sites
    result = env.run("install.yml", limit="aegir_sites").assert_ok()
    for key, server in env.servers.items():
        for n in (1, 2):
            u = uri(key, n)
            resp = server.wait_for_http(u, contains=f"Welcome to {u}")
            db_name = env.inv.sites[u]["aegir_site_db_name"]
            assert f"Database: {db_name}" in resp.body
            settings = env.site_dir(key, u) / "settings.php"
            st = os.stat(settings)
            assert stat.S_IMODE(st.st_mode) == 0o440
            assert st.st_gid == os.stat(env.site_dir(key, u) / "files").st_gid
            password = settings_secret(settings.read_text(), "db_password")
            assert password and len(password) >= 20
            assert password not in result.stdout and password not in result.stderr
            assert env.db.can_login(db_name, password, db_name)
            assert f"aegir-cron: {u}" in server.crontab()
            for d in ("files", "private/files", "private/temp"):
                assert (env.site_dir(key, u) / d).is_dir()
        # Aliases: in sites.php, and each one 301s to the main uri.
        sites_php = (Path(env.platform_roots[key]) / "sites" / "sites.php").read_text()
        assert f"$sites['www.site2.{key}.example.test'] = '{uri(key, 2)}';" in sites_php
        resp = server.request(f"alt.site2.{key}.example.test", "/some/path?x=1")
        assert resp.status == 301, resp
        assert resp.headers["location"].startswith(f"http://{uri(key, 2)}/some/path"), resp.headers
        # Private files and settings.php are never served.
        assert server.request(uri(key, 1), f"/sites/{uri(key, 1)}/settings.php").status in (403, 404)
        assert server.request(uri(key, 1), f"/sites/{uri(key, 1)}/private/.aegir-installed").status in (403, 404)


def test_install_again_does_not_reinstall(sites):
    env = sites
    before = {u: settings_secret((env.site_dir(k, u) / "settings.php").read_text(), "db_password")
              for k in KEYS for u in (uri(k, 1), uri(k, 2))}
    env.run("install.yml", limit=uri("nginx", 1)).assert_ok()
    after = settings_secret((env.site_dir("nginx", uri("nginx", 1)) / "settings.php").read_text(), "db_password")
    assert after == before[uri("nginx", 1)]


def test_verify_idempotent(sites):
    env = sites
    passwords = {u: settings_secret((env.site_dir(k, u) / "settings.php").read_text(), "db_password")
                 for k in KEYS for u in (uri(k, 1), uri(k, 2))}
    env.run("verify.yml", limit="aegir_sites").assert_ok()
    env.run("verify.yml", limit="aegir_sites").assert_idempotent()
    for k in KEYS:
        for u in (uri(k, 1), uri(k, 2)):
            assert settings_secret((env.site_dir(k, u) / "settings.php").read_text(), "db_password") == passwords[u]
            env.servers[k].wait_for_http(u, contains=f"Welcome to {u}")


def test_check_diff_changes_nothing(sites):
    env = sites
    u = uri("nginx", 1)
    vhost = env.vhost("nginx", u)
    vhost.write_text(vhost.read_text() + "# tampered\n")
    settings = env.site_dir("nginx", u) / "settings.php"
    os.chmod(settings, 0o644)
    tampered = vhost.read_text()
    password = settings_secret(settings.read_text(), "db_password")
    result = env.run("verify.yml", limit="aegir_sites", check=True, diff=True).assert_ok()
    assert "-# tampered" in result.stdout
    assert password not in result.stdout
    assert vhost.read_text() == tampered
    assert stat.S_IMODE(os.stat(settings).st_mode) == 0o644
    assert result.stats[u].changed >= 1
    env.run("verify.yml", limit="aegir_sites").assert_ok()
    assert "# tampered" not in vhost.read_text()
    assert stat.S_IMODE(os.stat(settings).st_mode) == 0o440


def test_disable_enable(sites):
    env = sites
    u = uri("apache", 1)
    server = env.servers["apache"]
    env.run("disable.yml", limit=u).assert_ok()
    resp = server.wait_for_http(u, status=503)
    assert "Welcome" not in resp.body
    assert f"aegir-cron: {u}" not in server.crontab()
    assert f"aegir-cron: {uri('apache', 2)}" in server.crontab()
    server.wait_for_http(uri("apache", 2), contains="Welcome")
    env.run("disable.yml", limit=u).assert_idempotent()
    env.run("enable.yml", limit=u).assert_ok()
    server.wait_for_http(u, contains=f"Welcome to {u}")
    assert f"aegir-cron: {u}" in server.crontab()
    # Same on nginx.
    u = uri("nginx", 2)
    server = env.servers["nginx"]
    env.run("disable.yml", limit=u).assert_ok()
    server.wait_for_http(u, status=503)
    assert f"aegir-cron: {u}" not in server.crontab()
    env.run("enable.yml", limit=u).assert_ok()
    server.wait_for_http(u, contains=f"Welcome to {u}")
    assert f"aegir-cron: {u}" in server.crontab()


def test_platform_delete_refused_with_sites(sites):
    env = sites
    result = env.run("delete.yml", limit="platform_d10_nginx")
    assert result.rc != 0
    assert "still has" in result.stdout
    assert Path(env.platform_roots["nginx"]).is_dir()


def test_delete(sites):
    env = sites
    for key in KEYS:
        u = uri(key, 2)
        server = env.servers[key]
        db_name = env.inv.sites[u]["aegir_site_db_name"]
        env.run("delete.yml", limit=u).assert_ok()
        assert not env.db.database_exists(db_name)
        assert env.db.user_hosts(db_name) == []
        assert not env.site_dir(key, u).exists()
        assert not env.vhost(key, u).exists()
        assert f"aegir-cron: {u}" not in server.crontab()
        sites_php = (Path(env.platform_roots[key]) / "sites" / "sites.php").read_text()
        assert u not in sites_php
        server.wait_for_http(u, status=404)
        # The other site of the server still works.
        server.wait_for_http(uri(key, 1), contains="Welcome")
        del env.inv.sites[u]


def test_platform_delete_after_its_sites(sites):
    env = sites
    u = uri("apache", 1)
    env.run("delete.yml", limit=u).assert_ok()
    del env.inv.sites[u]
    server = env.servers["apache"]
    conf = Path(server.aegir_root) / "config/server_apache/apache/platform.d/platform_d10_apache.conf"
    assert conf.exists()
    env.run("delete.yml", limit="platform_d10_apache").assert_ok()
    assert not Path(env.platform_roots["apache"]).exists()
    assert not conf.exists()
    assert server.running_config_ok(), server.config_test_output()
    # The nginx server and its remaining site are untouched.
    env.servers["nginx"].wait_for_http(uri("nginx", 1), contains="Welcome")


def test_lock_unlock(sites):
    env = sites
    env.run("lock.yml", limit="platform_d10_nginx").assert_idempotent()
    env.run("unlock.yml", limit="platform_d10_nginx").assert_idempotent()
