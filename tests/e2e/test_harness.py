"""Tests of the harness itself: the servers are real, reachable and isolated from each other.

They run against the session's real sshd, nginx, Apache, PHP-FPM and MariaDB (marker e2e).
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import re
import secrets
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.harness.ansible import REPO_ROOT, parse_recap
from tests.harness.procs import exe, listeners, port_open

pytestmark = pytest.mark.e2e

SERVER_NAMES = ["nginx", "apache"]


def _documented_server_vars() -> tuple[set[str], set[str]]:
    """Variable names of the server-level tables of docs/inventory-variables.md: (all servers,
    db servers only). The table of https servers' variables is neither (test_inventory_https)."""
    text = (REPO_ROOT / "docs" / "inventory-variables.md").read_text()
    section = text.split("## Server-level variables", 1)[1].split("\n## ", 1)[0]
    common, db_only = section.split("Only on server hosts that run a db service", 1)
    common = common.split("Only on servers whose http service serves https", 1)[0]

    def names(table: str) -> set[str]:
        # Rows described "only when ..." are set in that case only (aegir_http_restart_cmd_error).
        first_cells = re.findall(r"^\|([^|]*)\|(?!\s*only when)", table, re.M)
        return {n for cell in first_cells for n in re.findall(r"`(aegir_[a-z_]+)`", cell)}

    return names(common), names(db_only)


def _inventory(test_servers, test_db_server=None) -> dict:
    hosts = {}
    for server in test_servers.values():
        hosts[f"server_{server.name}"] = server.inventory_vars()
        if test_db_server is not None:
            hosts[f"server_{server.name}"].update(test_db_server.inventory_vars())
    return hosts


def _write(path: Path, text: str, owner: str | None = None, group: str | None = None, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _drush(server, platform: str, uri: str, *args: str) -> subprocess.CompletedProcess:
    """Run the platform's drush as the script user, like Aegir does."""
    return subprocess.run(
        ["runuser", "-u", server.script_user, "--", f"{platform}/vendor/bin/drush",
         f"--root={platform}", f"--uri={uri}", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )


def _vhost(server, platform: str, names: list[str]) -> tuple[Path, str]:
    """A hand-written vhost for the fixture platform, in the file the main config includes."""
    config = Path(server.aegir_root) / "config"
    if server.http_service == "nginx":
        return config / "nginx.conf", textwrap.dedent(f"""\
            server {{
                listen {server.address}:{server.http_port};
                server_name {' '.join(names)};
                root {platform};
                index index.php;
                location / {{
                    try_files $uri /index.php?$query_string;
                }}
                location ~ \\.php$ {{
                    include fastcgi_params;
                    fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
                    fastcgi_pass {server.php_fastcgi};
                }}
            }}
            """)
    return config / "apache.conf", textwrap.dedent(f"""\
        <VirtualHost {server.address}:{server.http_port}>
            ServerName {names[0]}
            ServerAlias {' '.join(names[1:])}
            DocumentRoot {platform}
            <Directory {platform}>
                AllowOverride None
                Require all granted
                FallbackResource /index.php
            </Directory>
            <FilesMatch "\\.php$">
                SetHandler "proxy:{server.php_fastcgi}|fcgi://localhost"
            </FilesMatch>
        </VirtualHost>
        """)


def test_inventory_vars_cover_the_documented_server_variables(test_servers, test_db_server):
    documented, documented_db = _documented_server_vars()
    documented -= {"aegir_context_type", "aegir_nid"}
    assert len(documented) > 15, "could not read the server-level table of docs/inventory-variables.md"
    for server in test_servers.values():
        variables = server.inventory_vars("server_x")
        assert documented <= set(variables), documented - set(variables)
        assert variables["aegir_server_config_path"] == f"{server.aegir_root}/config/server_x"
        assert variables["aegir_http_listen_address"] == server.address
    assert set(test_db_server.inventory_vars()) == documented_db == {
        "aegir_db_service", "aegir_db_host", "aegir_db_port", "aegir_db_admin_user", "aegir_db_admin_password"}
    assert repr(test_db_server).count(test_db_server.admin_password) == 0


def test_ansible_reaches_both_servers_over_ssh(test_servers, run_playbook, tmp_path):
    playbook = tmp_path / "ping.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Reach the harness servers
          hosts: all
          gather_facts: false
          tasks:
            - name: Ping
              ansible.builtin.ping:
            - name: Who am I
              ansible.builtin.command: id -un
              register: whoami
              changed_when: false
            - name: Look at aegir_root
              ansible.builtin.stat:
                path: "{{ aegir_root }}"
              register: root_dir
            - name: Connected as root; aegir_root belongs to the script user
              ansible.builtin.assert:
                that:
                  - whoami.stdout == 'root'
                  - root_dir.stat.isdir
                  - root_dir.stat.pw_name == aegir_script_user
            - name: Write a file as the script user (become + file transfer)
              ansible.builtin.copy:
                content: "written by {{ aegir_script_user }}\\n"
                dest: "{{ aegir_config_path }}/harness-become.txt"
                mode: "0640"
              become: true
              become_user: "{{ aegir_script_user }}"
        """))
    try:
        result = run_playbook(playbook, _inventory(test_servers)).assert_ok()
        assert set(result.stats) == {"server_nginx", "server_apache"}
        for stats in result.stats.values():
            assert (stats.ok, stats.changed, stats.unreachable) == (5, 1, 0)
        for server in test_servers.values():
            written = Path(server.aegir_config_path, "harness-become.txt")
            assert written.read_text() == f"written by {server.script_user}\n"
            assert written.stat().st_uid == pwd.getpwnam(server.script_user).pw_uid
        # Second run: nothing to change.
        run_playbook(playbook, _inventory(test_servers)).assert_idempotent()
    finally:
        for server in test_servers.values():
            Path(server.aegir_config_path, "harness-become.txt").unlink(missing_ok=True)
    for server in test_servers.values():
        # The connection went through this server's own sshd, with the session key.
        log = (server.log_dir / "sshd.log").read_text()
        assert "Accepted publickey for root" in log


def test_ssh_refuses_other_keys_and_users(test_servers, tmp_path):
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    server = test_servers["nginx"]
    base = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-p", str(server.ssh_port)]
    ok = subprocess.run(base + ["-i", server.ssh_private_key, f"root@{server.address}", "true"],
                        capture_output=True, check=False)
    assert ok.returncode == 0, ok.stderr
    wrong_key = subprocess.run(base + ["-o", "IdentitiesOnly=yes", "-i", str(other_key), f"root@{server.address}", "true"],
                               capture_output=True, check=False)
    assert wrong_key.returncode == 255
    wrong_user = subprocess.run(base + ["-i", server.ssh_private_key, f"{server.script_user}@{server.address}", "true"],
                                capture_output=True, check=False)
    assert wrong_user.returncode == 255


def test_each_web_server_answers_on_its_own_address_only(test_servers):
    nginx, apache = test_servers["nginx"], test_servers["apache"]
    status, body = nginx.curl("unknown.example")
    assert status == 404 and f"nginx {nginx.address}" in body
    assert nginx.request("unknown.example").headers["server"].startswith("nginx")
    status, body = apache.curl("unknown.example")
    assert status == 404 and f"apache {apache.address}" in body
    assert apache.request("unknown.example").headers["server"].startswith("Apache")
    for server, binary in ((nginx, "/usr/sbin/nginx"), (apache, "/usr/sbin/apache2")):
        assert {exe(pid) for pid in listeners(server.address, 80)} == {binary}
        assert {exe(pid) for pid in listeners(server.address, 22)} == {"/usr/sbin/sshd"}
    # Neither binds the wildcard address: a neighbouring loopback address has no web server.
    spare = nginx.address.rsplit(".", 1)[0] + ".4"
    assert not port_open(spare, 80)
    assert not port_open(spare, 22)


def test_script_users(test_servers):
    for server in test_servers.values():
        user = pwd.getpwnam(server.script_user)
        assert user.pw_dir == server.aegir_root
        assert server.script_user in grp.getgrnam(server.web_group).gr_mem
        for sub in ("config", "platforms", "backups", "clients"):
            assert Path(server.aegir_root, sub).stat().st_uid == user.pw_uid
    assert len({s.script_user for s in test_servers.values()}) == 2


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_fixture_site_served_through_php_fpm(name, fresh_servers, test_db_server, make_platform):
    server = fresh_servers[name]
    token = secrets.token_hex(3)
    uri, alias, nosite = f"site-{token}.example.com", f"alias-{token}.example.com", f"nosite-{token}.example.com"
    platform = make_platform(server, f"platform_{token}")
    assert Path(platform, "vendor/bin/drush").stat().st_mode & 0o111
    assert Path(platform, "sites").stat().st_uid == pwd.getpwnam(server.script_user).pw_uid

    db_name = db_user = f"harness_{name}_{token}"
    password = "pw'\"$" + secrets.token_urlsafe(12)
    test_db_server.create_database(db_name, db_user, password, grant_host=server.db_grant_host)
    settings = textwrap.dedent(f"""\
        <?php
        $databases['default']['default'] = [
          'driver' => 'mysql',
          'database' => {db_name!r},
          'username' => {db_user!r},
          'password' => base64_decode({base64.b64encode(password.encode()).decode()!r}),
          'host' => {test_db_server.host!r},
          'port' => {test_db_server.port},
        ];
        """)
    _write(Path(platform, "sites", uri, "settings.php"), settings, server.script_user, server.web_group, 0o440)
    _write(Path(platform, "sites", "sites.php"), f"<?php\n$sites[{alias!r}] = {uri!r};\n", server.script_user,
           server.web_group, 0o440)
    vhost_path, vhost = _vhost(server, platform, [uri, alias, nosite])
    _write(vhost_path, vhost, server.script_user)
    assert server.running_config_ok(), server.config_test_output()
    server.reload()

    # Before site-install: PHP runs, reaches the database, finds no table.
    resp = server.wait_for_http(uri, status=500, contains="Site not installed")
    assert password not in resp.body
    assert server.curl(nosite)[0] == 404 and "No site" in server.curl(nosite)[1]

    install = _drush(server, platform, uri, "site-install", "minimal", "--yes")
    assert install.returncode == 0, install.stderr
    status, body = server.curl(uri)
    assert status == 200, body
    assert f"<h1>Welcome to {uri}</h1>" in body and "Install profile: minimal" in body
    assert password not in body
    status, body = server.curl(alias.upper())  # sites.php alias, case-insensitive like Drupal
    assert status == 200 and f"Welcome to {uri}" in body and f"Requested host: {alias}" in body

    cron = _drush(server, platform, uri, "cron")
    assert cron.returncode == 0, cron.stderr
    assert "Cron runs: 1" in server.curl(uri)[1]
    assert test_db_server.query(f"SELECT via FROM `{db_name}`.aegir_test_cron") == [("drush",)]
    uli = _drush(server, platform, uri, "user-login")
    assert re.fullmatch(rf"http://{re.escape(uri)}/user/reset/1/\d+/[\w-]+/login\n", uli.stdout)

    # A wrong password gives a clear 500 that does not leak the configured one.
    test_db_server.query("ALTER USER %s@%s IDENTIFIED BY %s", db_user, server.db_grant_host, "changed-" + token)
    status, body = server.curl(uri)
    assert status == 500 and "Database connection failed" in body and password not in body


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_config_test_cmd_fails_on_broken_config(name, test_servers):
    server = test_servers[name]
    broken = Path(server.aegir_root) / "config" / f"{server.http_service}-broken.conf"
    try:
        _write(broken, "this is not a valid directive;\n")
        assert not server.running_config_ok()
        with pytest.raises(RuntimeError, match="config test failed"):
            server.reload()
        assert server.is_serving()  # the running server was never told to load it
    finally:
        broken.unlink(missing_ok=True)
    assert server.running_config_ok(), server.config_test_output()


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_reset_forgets_everything_aegir_wrote(name, test_servers, make_platform):
    server = test_servers[name]
    platform = make_platform(server, "platform_reset")
    _write(Path(server.aegir_root, "config", "server_x", "vhost.d", "a.example"), "# vhost\n")
    _write(Path(server.aegir_root, ".drush", "drushrc.php"), "<?php\n")
    subprocess.run(["crontab", "-u", server.script_user, "-"], input="* * * * * true\n", text=True, check=True)
    assert "true" in server.crontab()
    server.reset()
    assert not Path(platform).exists()
    assert sorted(p.name for p in Path(server.aegir_root).iterdir()) == ["backups", "clients", "config", "platforms"]
    assert not any(Path(server.aegir_root, "config").iterdir())
    assert server.crontab() == ""
    assert server.is_serving() and server.running_config_ok()


def test_parse_recap():
    out = textwrap.dedent("""\
        PLAY RECAP *********************************************************************
        server_nginx               : ok=3    changed=1    unreachable=0    failed=0    skipped=2    rescued=0    ignored=0
        example.com                : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
        """)
    stats = parse_recap(out)
    assert stats["server_nginx"].changed == 1 and stats["server_nginx"].skipped == 2
    assert stats["example.com"].unreachable == 1
