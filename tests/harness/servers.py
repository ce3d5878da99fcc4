"""Real test servers on loopback addresses: sshd + nginx or Apache + PHP-FPM per address.

Each `TestServer` is a pretend remote host: its own sshd on <address>:22 (root by key), its own
web server on <address>:80 that includes the Aegir-managed config from its aegir_root, its own
PHP-FPM pool on a unix socket, and its own unix script user whose home is the aegir_root. All of
them live under one *slot directory* (`/tmp/aegir-harness/slot-<n>` by default, or
$AEGIR_HARNESS_DIR/slot-<n>). A slot is taken with an exclusive flock for the whole test session,
so two sessions (two pytest runs, or pytest-xdist workers) never share addresses: slot 0 uses
127.0.0.2 (nginx) and 127.0.0.3 (Apache), slot n uses 127.0.n.2 and 127.0.n.3. Holding the lock
also makes it safe to end whatever a killed earlier session of the same slot left running.
"""

from __future__ import annotations

import fcntl
import glob
import grp
import http.client
import os
import pwd
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procs

BASE_DIR = Path(os.environ.get("AEGIR_HARNESS_DIR", "/tmp/aegir-harness"))
MAX_SLOTS = 8
WEB_GROUP = "www-data"
SSHD = "/usr/sbin/sshd"
NGINX = "/usr/sbin/nginx"
APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
SSH_KEYGEN = "/usr/bin/ssh-keygen"

# Apache modules loaded by the harness' own apache2.conf (mod_log_config and mod_unixd are
# compiled into Debian's binary and must not be loaded again).
APACHE_LOAD_MODULES = [
    "mpm_event", "authn_core", "authz_core", "authz_host", "authz_user", "access_compat",
    "alias", "dir", "env", "mime", "rewrite", "proxy", "proxy_fcgi", "setenvif", "headers",
    "expires", "filter", "deflate", "negotiation", "autoindex",
]


def php_fpm_binary() -> str:
    """Debian's versioned php-fpm binary (e.g. /usr/sbin/php-fpm8.2)."""
    found = sorted(glob.glob("/usr/sbin/php-fpm*"))
    if not found:
        raise RuntimeError("php-fpm is not installed: run scripts/install-system-deps.sh")
    return found[-1]


@dataclass
class HttpResponse:
    """One HTTP response: status, headers (lower-cased names) and body text."""

    status: int
    headers: dict[str, str]
    body: str


class Slot:
    """An exclusive slot: a lock file held for the session, a directory, and two addresses."""

    def __init__(self, number: int, lock_file):
        self.number = number
        self._lock_file = lock_file
        self.dir = BASE_DIR / f"slot-{number}"

    @classmethod
    def acquire(cls, timeout: float = 900.0) -> Slot:
        """Take the first free slot, waiting (up to timeout) while all are in use."""
        BASE_DIR.mkdir(parents=True, exist_ok=True)
        os.chmod(BASE_DIR, 0o755)
        deadline = time.monotonic() + timeout
        while True:
            for number in range(MAX_SLOTS):
                handle = open(BASE_DIR / f"slot-{number}.lock", "a+")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                return cls(number, handle)
            if time.monotonic() > deadline:
                raise TimeoutError(f"all {MAX_SLOTS} harness slots in {BASE_DIR} stayed busy")
            time.sleep(1)

    def address(self, last_octet: int) -> str:
        return f"127.0.{self.number}.{last_octet}"

    def release(self) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()


def clean_leftovers(slot_dir: Path, addresses: list[str]) -> None:
    """End what a killed earlier session of this slot left behind, then wipe its directory.

    Only called while holding the slot lock, so nothing found here belongs to a live session:
    processes started with a config under slot_dir (and their children), processes named in pid
    files under slot_dir, and sshd/nginx/apache processes still listening on the slot's addresses.
    """
    pids: set[int] = set()
    if slot_dir.exists():
        for pidfile in slot_dir.rglob("*.pid"):
            pid = procs.read_pidfile(pidfile)
            if pid and procs.alive(pid) and str(slot_dir) in procs.cmdline(pid):
                pids.add(pid)
        pids.update(procs.pids_mentioning(str(slot_dir) + "/"))
    ours = {SSHD, NGINX, APACHE}
    for address in addresses:
        for port in (22, 80):
            for pid in procs.listeners(address, port):
                binary = procs.exe(pid)
                if binary in ours or str(slot_dir) in procs.cmdline(pid):
                    pids.add(pid)
                else:
                    raise RuntimeError(
                        f"{address}:{port} is held by pid {pid} ({procs.cmdline(pid)!r}), which the "
                        "harness did not start; stop it or use another AEGIR_HARNESS_DIR slot"
                    )
    for pid in pids:
        procs.kill_tree(pid)
    if slot_dir.exists():
        shutil.rmtree(slot_dir)


class TestServer:
    """One pretend remote server: sshd, a web server (nginx or Apache) and PHP-FPM on an address.

    Attributes are what roles need to reach and manage it; `inventory_vars()` turns them into the
    variables of docs/inventory-variables.md.
    """

    __test__ = False  # not a pytest test class

    ssh_port = 22
    ssh_user = "root"
    http_port = 80
    web_group = WEB_GROUP
    db_grant_host = "127.0.0.1"

    def __init__(self, name: str, http_service: str, address: str, slot_dir: Path,
                 script_user: str, ssh_private_key: Path, authorized_keys: Path):
        if http_service not in ("nginx", "apache"):
            raise ValueError(f"unknown http_service {http_service!r}")
        self.name = name
        self.http_service = http_service
        self.address = address
        self.script_user = script_user
        self.ssh_private_key = str(ssh_private_key)
        self._authorized_keys = authorized_keys
        self.dir = slot_dir / address
        self.aegir_root = str(self.dir / "aegir")
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "logs"
        self.ssh_dir = self.dir / "ssh"
        self.web_dir = self.dir / http_service
        self.php_dir = self.dir / "php-fpm"
        self.php_socket = self.run_dir / "php-fpm.sock"
        self.php_fastcgi = f"unix:{self.php_socket}"
        if http_service == "nginx":
            self.web_conf = self.web_dir / "nginx.conf"
            self.web_pidfile = self.run_dir / "nginx.pid"
            self.http_test_cmd = [NGINX, "-c", str(self.web_conf), "-t"]
            self._signal_reload_cmd = [NGINX, "-c", str(self.web_conf), "-s", "reload"]
            self._web_start_cmd = [NGINX, "-c", str(self.web_conf)]
        else:
            self.web_conf = self.web_dir / "apache2.conf"
            self.web_pidfile = self.run_dir / "apache2.pid"
            self.http_test_cmd = [APACHE, "-f", str(self.web_conf), "-t"]
            self._signal_reload_cmd = [APACHE, "-f", str(self.web_conf), "-k", "graceful"]
            self._web_start_cmd = [APACHE, "-f", str(self.web_conf), "-k", "start"]
        # The reload command is a small wrapper around the signal command above that returns only
        # once the old worker processes are gone: a test may then request a page right away
        # without an old worker answering from the previous config.
        self.http_reload_script = self.dir / "bin" / f"reload-{http_service}"
        self.http_reload_cmd = [str(self.http_reload_script)]
        self.sshd_pidfile = self.run_dir / "sshd.pid"
        self.php_pidfile = self.run_dir / "php-fpm.pid"

    def __repr__(self) -> str:
        return f"<TestServer {self.name} {self.http_service}@{self.address}>"

    # ----------------------------------------------------------------- inventory

    @property
    def aegir_config_path(self) -> str:
        return f"{self.aegir_root}/config"

    def inventory_vars(self, aegir_server: str | None = None) -> dict:
        """Connection variables plus every server-level variable of docs/inventory-variables.md.

        aegir_server is the server's context name (default `server_<name>`); it names the
        server's config directory `<aegir_root>/config/<aegir_server>`.
        """
        aegir_server = aegir_server or f"server_{self.name}"
        return {
            "ansible_connection": "ssh",
            "ansible_host": self.address,
            "ansible_port": self.ssh_port,
            "ansible_user": self.ssh_user,
            "ansible_ssh_private_key_file": self.ssh_private_key,
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "aegir_server": aegir_server,
            "aegir_server_hostname": self.address,
            "aegir_root": self.aegir_root,
            "aegir_script_user": self.script_user,
            "aegir_web_group": self.web_group,
            "aegir_config_path": self.aegir_config_path,
            "aegir_server_config_path": f"{self.aegir_config_path}/{aegir_server}",
            "aegir_backups_path": f"{self.aegir_root}/backups",
            "aegir_clients_path": f"{self.aegir_root}/clients",
            "aegir_http_service": self.http_service,
            "aegir_http_port": self.http_port,
            "aegir_http_listen_address": self.address,
            "aegir_http_test_cmd": list(self.http_test_cmd),
            "aegir_http_reload_cmd": list(self.http_reload_cmd),
            "aegir_php_fastcgi": self.php_fastcgi,
            "aegir_db_grant_host": self.db_grant_host,
            "aegir_ip_addresses": [self.address],
            "aegir_hostmaster_url": "",
        }

    # ----------------------------------------------------------------- checks used by tests

    def request(self, host: str, path: str = "/", method: str = "GET", timeout: float = 10.0) -> HttpResponse:
        """Send one HTTP request to this server's address with the given Host header.

        Redirects are not followed, so a redirect test sees the 30x and its Location header.
        """
        conn = http.client.HTTPConnection(self.address, self.http_port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Host": host, "User-Agent": "aegir-harness"})
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", errors="replace")
            return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
        finally:
            conn.close()

    def curl(self, host: str, path: str = "/") -> tuple[int, str]:
        """(status, body) of GET path with Host: host on this server's address."""
        resp = self.request(host, path)
        return resp.status, resp.body

    def wait_for_http(self, host: str, path: str = "/", status: int | None = 200,
                      contains: str | None = None, timeout: float = 10.0) -> HttpResponse:
        """Poll until the response has the status (and text); web server reloads are asynchronous.

        Raises AssertionError with the last response when it never matches.
        """
        deadline = time.monotonic() + timeout
        last: HttpResponse | Exception | None = None
        while True:
            try:
                last = self.request(host, path)
                if (status is None or last.status == status) and (contains is None or contains in last.body):
                    return last
            except OSError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: GET http://{host}{path} via {self.address} never gave "
                    f"status={status} containing {contains!r}; last: {last!r}"
                )
            time.sleep(0.1)

    def is_serving(self) -> bool:
        """True if the web server accepts connections and answers HTTP."""
        try:
            self.request("harness-probe.invalid", "/", timeout=2)
            return True
        except OSError:
            return False

    def running_config_ok(self) -> bool:
        """True if the web server's whole config (including Aegir's files) passes its test cmd."""
        return subprocess.run(self.http_test_cmd, capture_output=True, check=False).returncode == 0

    def config_test_output(self) -> str:
        """The output of the config test command (to explain a failing config)."""
        proc = subprocess.run(self.http_test_cmd, capture_output=True, text=True, check=False)
        return proc.stdout + proc.stderr

    def crontab(self) -> str:
        """The script user's crontab text ('' when it has none)."""
        proc = subprocess.run(["crontab", "-l", "-u", self.script_user], capture_output=True, text=True, check=False)
        return proc.stdout if proc.returncode == 0 else ""

    def reload(self) -> None:
        """Reload the web server (after checking its config)."""
        procs.run_checked(self.http_test_cmd, f"{self.name} config test")
        procs.run_checked(self.http_reload_cmd, f"{self.name} reload")

    def reset(self) -> None:
        """Forget everything Aegir wrote: empty aegir_root (back to its base tree), drop the
        script user's crontab, reload the web server. For isolation between test modules."""
        root = Path(self.aegir_root)
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self._make_aegir_tree()
        subprocess.run(["crontab", "-r", "-u", self.script_user], capture_output=True, check=False)
        self.reload()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create the user, directories and configs, then start sshd, PHP-FPM and the web server."""
        for d in (self.dir, self.run_dir, self.log_dir, self.web_dir, self.php_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        self.ssh_dir.mkdir(mode=0o700, exist_ok=True)
        self._ensure_script_user()
        Path(self.aegir_root).mkdir(mode=0o755, exist_ok=True)
        self._make_aegir_tree()
        self._start_sshd()
        self._start_php_fpm()
        self._write_reload_script()
        if self.http_service == "nginx":
            self._write_nginx_conf()
        else:
            self._write_apache_conf()
        procs.run_checked(self.http_test_cmd, f"{self.name} config test")
        procs.run_checked(self._web_start_cmd, f"{self.name} start", log=self.log_dir / "error.log")

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until sshd and the web server accept connections and PHP-FPM's socket exists."""
        procs.wait_until(lambda: procs.port_open(self.address, self.ssh_port), timeout, f"sshd on {self.address}:22")
        procs.wait_until(lambda: self.php_socket.exists(), timeout, f"PHP-FPM socket {self.php_socket}")
        procs.wait_until(lambda: procs.port_open(self.address, self.http_port), timeout,
                         f"{self.http_service} on {self.address}:80")

    def stop(self) -> None:
        """Stop the daemons (with all their children) and remove the script user."""
        for pidfile in (self.web_pidfile, self.php_pidfile, self.sshd_pidfile):
            pid = procs.read_pidfile(pidfile)
            if pid and procs.alive(pid):
                procs.kill_tree(pid)
        subprocess.run(["crontab", "-r", "-u", self.script_user], capture_output=True, check=False)
        subprocess.run(["userdel", self.script_user], capture_output=True, check=False)
        try:
            grp.getgrnam(self.script_user)
            subprocess.run(["groupdel", self.script_user], capture_output=True, check=False)
        except KeyError:
            pass

    # ----------------------------------------------------------------- internals

    def _ensure_script_user(self) -> None:
        """Create (or re-point) the script user: home = aegir_root, member of www-data."""
        try:
            pwd.getpwnam(self.script_user)
            subprocess.run(["usermod", "--home", self.aegir_root, "--append", "--groups", WEB_GROUP,
                            "--shell", "/bin/bash", self.script_user], check=True, capture_output=True)
        except KeyError:
            subprocess.run(["useradd", "--home-dir", self.aegir_root, "--no-create-home", "--user-group",
                            "--groups", WEB_GROUP, "--shell", "/bin/bash", self.script_user],
                           check=True, capture_output=True)

    def _make_aegir_tree(self) -> None:
        """aegir_root and its base directories, owned by the script user."""
        user = pwd.getpwnam(self.script_user)
        root = Path(self.aegir_root)
        for d in (root, root / "config", root / "platforms", root / "backups", root / "clients"):
            d.mkdir(mode=0o755, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)

    def _start_sshd(self) -> None:
        hostkey = self.ssh_dir / "ssh_host_ed25519_key"
        if not hostkey.exists():
            procs.run_checked([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"harness-host-{self.address}",
                               "-f", str(hostkey)], "ssh host key generation")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        conf = self.ssh_dir / "sshd_config"
        conf.write_text(
            f"""# sshd of the aegir test harness server {self.name} (generated)
ListenAddress {self.address}:{self.ssh_port}
HostKey {hostkey}
PidFile {self.sshd_pidfile}
AuthorizedKeysFile {self._authorized_keys}
PermitRootLogin prohibit-password
AllowUsers root
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
AcceptEnv LANG LC_*
# Bash sources ~/.bashrc for commands run over ssh, unless SHLVL says it is not the first
# shell. The harness logs in as this machine's root, whose .bashrc runs `pyenv init`
# (0.15 s added to every module call); a real server's aegir user has no such dotfiles.
SetEnv SHLVL=1
Subsystem sftp internal-sftp
"""
        )
        procs.run_checked([SSHD, "-t", "-f", str(conf)], f"{self.name} sshd -t")
        procs.run_checked([SSHD, "-f", str(conf), "-E", str(self.log_dir / "sshd.log")], f"{self.name} sshd start",
                          log=self.log_dir / "sshd.log")

    def _start_php_fpm(self) -> None:
        conf = self.php_dir / "php-fpm.conf"
        conf.write_text(
            f"""; PHP-FPM of the aegir test harness server {self.name} (generated)
[global]
pid = {self.php_pidfile}
error_log = {self.log_dir}/php-fpm.log
daemonize = yes

[aegir]
user = {WEB_GROUP}
group = {WEB_GROUP}
listen = {self.php_socket}
listen.owner = {WEB_GROUP}
listen.group = {WEB_GROUP}
listen.mode = 0660
pm = dynamic
pm.max_children = 6
pm.start_servers = 1
pm.min_spare_servers = 1
pm.max_spare_servers = 3
catch_workers_output = yes
php_admin_flag[log_errors] = on
php_admin_value[error_log] = {self.log_dir}/php-error.log
; Roles rewrite settings.php and tests read the page right away: no stale opcode cache.
php_admin_flag[opcache.enable] = off
"""
        )
        binary = php_fpm_binary()
        procs.run_checked([binary, "-t", "-y", str(conf)], f"{self.name} php-fpm -t")
        procs.run_checked([binary, "-y", str(conf)], f"{self.name} php-fpm start", log=self.log_dir / "php-fpm.log")

    def _write_reload_script(self) -> None:
        script = self.http_reload_script
        script.parent.mkdir(mode=0o755, exist_ok=True)
        signal_cmd = " ".join(shlex.quote(a) for a in self._signal_reload_cmd)
        script.write_text(
            f"""#!/bin/bash
# Reload {self.http_service} of the aegir test harness server {self.name} (generated), then wait
# until the workers of the previous config have exited, so the next request sees the new config.
set -euo pipefail
master=$(cat {shlex.quote(str(self.web_pidfile))})
old_workers=$(ps -o pid= --ppid "$master" || true)
{signal_cmd}
for _ in $(seq 1 200); do
    running=0
    for pid in $old_workers; do
        if [ -r "/proc/$pid/stat" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
            running=1
        fi
    done
    [ "$running" = 0 ] && exit 0
    sleep 0.05
done
echo "{self.http_service}: old workers still running 10s after the reload" >&2
"""
        )
        os.chmod(script, 0o755)

    def _write_nginx_conf(self) -> None:
        # Relative includes in Aegir's vhosts (fastcgi_params, mime.types, snippets/...) resolve
        # against this config's folder: link Debian's files there.
        for name in ("fastcgi_params", "fastcgi.conf", "mime.types", "scgi_params", "uwsgi_params",
                     "proxy_params", "snippets"):
            link = self.web_dir / name
            if not link.exists() and Path("/etc/nginx", name).exists():
                link.symlink_to(Path("/etc/nginx", name))
        tmp = self.web_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        self.web_conf.write_text(
            f"""# nginx of the aegir test harness server {self.name} (generated)
user {WEB_GROUP};
worker_processes 1;
pid {self.web_pidfile};
error_log {self.log_dir}/error.log warn;

events {{
    worker_connections 256;
}}

http {{
    include {self.web_dir}/mime.types;
    default_type application/octet-stream;
    sendfile on;
    server_names_hash_bucket_size 128;
    access_log {self.log_dir}/access.log;
    client_body_temp_path {tmp}/client_body;
    fastcgi_temp_path {tmp}/fastcgi;
    proxy_temp_path {tmp}/proxy;
    scgi_temp_path {tmp}/scgi;
    uwsgi_temp_path {tmp}/uwsgi;

    # Catch-all for unknown hosts. First server on the address, so the default without needing
    # default_server (which an Aegir server config may set itself).
    server {{
        listen {self.address}:{self.http_port};
        server_name harness-default.invalid;
        location / {{
            return 404 "aegir-harness: no vhost for this host (nginx {self.address})\\n";
        }}
    }}

    # Aegir-managed config (absent until a role writes it).
    include {self.aegir_config_path}/nginx*.conf;
}}
"""
        )

    def _write_apache_conf(self) -> None:
        docroot = self.web_dir / "default"
        docroot.mkdir(exist_ok=True)
        runtime = self.web_dir / "runtime"
        runtime.mkdir(exist_ok=True)
        modules = "\n".join(
            f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in APACHE_LOAD_MODULES
        )
        self.web_conf.write_text(
            f"""# Apache of the aegir test harness server {self.name} (generated, self-contained)
ServerRoot "{self.web_dir}"
ServerName {self.address}
Listen {self.address}:{self.http_port}
PidFile {self.web_pidfile}
DefaultRuntimeDir {runtime}
Mutex file:{runtime} default
User {WEB_GROUP}
Group {WEB_GROUP}
ErrorLog {self.log_dir}/error.log
LogLevel warn
Timeout 60
KeepAlive On

{modules}

<IfModule mpm_event_module>
    StartServers 1
    ServerLimit 2
    ThreadsPerChild 8
    MaxRequestWorkers 16
    MinSpareThreads 4
    MaxSpareThreads 16
</IfModule>

TypesConfig /etc/mime.types
DirectoryIndex index.php index.html
AccessFileName .htaccess
HostnameLookups Off
LogFormat "%v:%p %h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" vhost_combined
CustomLog {self.log_dir}/access.log vhost_combined

<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
<FilesMatch "^\\.ht">
    Require all denied
</FilesMatch>

# Catch-all for unknown hosts: the first vhost on the address is the default one.
<VirtualHost {self.address}:{self.http_port}>
    ServerName harness-default.invalid
    DocumentRoot {docroot}
    <Directory {docroot}>
        Require all granted
    </Directory>
    ErrorDocument 404 "aegir-harness: no vhost for this host (apache {self.address})"
    Redirect 404 /
</VirtualHost>

# Aegir-managed config (absent until a role writes it).
IncludeOptional {self.aegir_config_path}/apache*.conf
"""
        )


@dataclass
class ServerSet:
    """The servers of one session slot, plus the session's SSH client key."""

    slot: Slot
    servers: dict[str, TestServer] = field(default_factory=dict)

    @classmethod
    def start(cls, slot: Slot) -> ServerSet:
        """Clean the slot, make the session key pair, start the nginx and Apache servers."""
        nginx_addr, apache_addr = slot.address(2), slot.address(3)
        clean_leftovers(slot.dir, [nginx_addr, apache_addr])
        slot.dir.mkdir(parents=True)
        os.chmod(slot.dir, 0o755)
        key_dir = slot.dir / "client-ssh"
        key_dir.mkdir(mode=0o700)
        key = key_dir / "id_ed25519"
        procs.run_checked([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "aegir-harness", "-f", str(key)],
                          "ssh client key generation")
        authorized_keys = key_dir / "authorized_keys"
        shutil.copyfile(key.with_suffix(".pub"), authorized_keys)
        os.chmod(authorized_keys, 0o600)

        def user(octet: int) -> str:
            return f"aegir{octet}" if slot.number == 0 else f"aegir{slot.number}_{octet}"

        result = cls(slot)
        try:
            for name, service, addr, octet in (("nginx", "nginx", nginx_addr, 2), ("apache", "apache", apache_addr, 3)):
                server = TestServer(name, service, addr, slot.dir, user(octet), key, authorized_keys)
                result.servers[name] = server
                server.start()
            for server in result.servers.values():
                server.wait_ready()
        except BaseException:
            result.stop()
            raise
        return result

    def stop(self) -> None:
        """Stop every server and remove the slot directory (the lock is released by the caller)."""
        for server in self.servers.values():
            try:
                server.stop()
            except Exception:  # keep tearing down the others
                pass
        clean_leftovers(self.slot.dir, [self.slot.address(2), self.slot.address(3)])
