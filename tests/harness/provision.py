"""An Aegir 3 installation as provision leaves it, built on the harness' real servers.

`ProvisionInstall(server, db, ...)` writes, on one TestServer, what `provision-verify` /
`provision-install` of Aegir 3 (provision 7.x-3.x) leave on disk, in provision's formats
(restated from its templates, see ../shared/aegir-reference.md §4): the server's
`~/config/<server>/<nginx|apache>/{pre.d,platform.d,vhost.d,post.d,subdir.d}` and server
config (symlinked as `~/config/<nginx|apache>.conf`), `~/config/includes/global.inc` (and,
for nginx, `nginx_vhost_common.conf`), `~/.drush/<context>.alias.drushrc.php` for the
server, the db server, every platform and site; per platform `sites/all/drush/drushrc.php`,
`sites/sites.php` and (Apache) `platform.d/<platform>.conf`; per site a cloaked
`settings.php` (credentials only from `$_SERVER['db_*']`), `drushrc.php` with
`$options['db_*']`, a blank `local.settings.php`, provision's directories, a vhost with the
`fastcgi_param` / `SetEnv` db_* lines (or the disabled vhost), `~/clients/<client>/<uri>`.
Each site gets its own database and user (name, user and password made as provision makes
them) and is installed with the fixture platform's drush, so its page shows real data.

`write_frontend(session)` then writes the hostmaster rows of the same installation, as
hostmaster holds them after those tasks succeeded (hostmaster's tables only: an existing
installation has no `aegir_ansible_*` table).

One deliberate difference from provision: vhosts listen on the server's own address
(`<VirtualHost 127.0.n.2:80>`, `listen 127.0.n.2:80`) instead of `*:80`, because the harness'
two web servers share port 80 on different loopback addresses (see tests/harness/README.md).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

from aegir_ansible.db import models as m

# provision_password(): letters and digits without the look-alikes 0 O 1 l I.
PASSWORD_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 10
PROVISION_VERSION = "7.x-3.190"
PROVISION_API = 2
NGINX_SUBDIRS = ("pre.d", "platform.d", "vhost.d", "post.d", "subdir.d")
# _provision_drupal_create_directories(): created 02775, group = web group.
SITE_DIRS = ("modules", "themes", "libraries", "files", "files/tmp", "files/images",
             "files/pictures", "files/css", "files/js", "files/styles", "private",
             "private/files", "private/temp", "private/config", "private/config/sync")


# -- PHP var_export() ---------------------------------------------------------------------------

def _php_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def php_export(value, indent: str = "") -> str:
    """`value` as PHP's var_export() prints it (arrays as `array (` blocks, nested arrays on
    their own line after `=> `)."""
    if value is None:
        return "NULL"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _php_string(value)
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if isinstance(value, dict):
        inner = indent + "  "
        lines = ["array ("]
        for key, item in value.items():
            k = str(key) if isinstance(key, int) else _php_string(str(key))
            if isinstance(item, (dict, list, tuple)):
                lines.append(f"{inner}{k} => ")
                lines.append(f"{inner}{php_export(item, inner)},")
            else:
                lines.append(f"{inner}{k} => {php_export(item, inner)},")
        lines.append(f"{indent})")
        return "\n".join(lines)
    raise TypeError(f"cannot export {type(value).__name__} to PHP")


def drushrc_text(options: dict) -> str:
    """provision_drushrc.tpl.php: one `$options['key'] = <var_export>;` line per option."""
    out = "<?php \n\n"
    for key, value in options.items():
        out += f"\n$options['{key}'] = {php_export(value)};"
    return out + "\n"


def alias_text(name: str, options: dict) -> str:
    """provision_drushrc_alias.tpl.php."""
    return f"<?php \n$aliases['{name}'] = {php_export(options)};\n"


# -- provision's naming -------------------------------------------------------------------------

def provision_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def suggest_db_name(uri: str, taken) -> str:
    """Provision's suggest_db_name(): uri without a leading www., dots and dashes removed,
    16 characters; if taken, the first 15-len(i) characters + '_' + i (i < 100)."""
    base = re.sub(r"^www\.", "", uri).replace(".", "").replace("-", "")
    name = base[:16]
    if not taken(name):
        return name
    for i in range(100):
        cand = f"{base[:15 - len(str(i))]}_{i}"
        if not taken(cand):
            return cand
    raise RuntimeError(f"no free database name for {uri}")


def platform_context(name: str) -> str:
    """hosting_platform's context name: 'platform_' + the title without non-word chars."""
    return "platform_" + re.sub(r"[^a-zA-Z0-9_]", "", name)


# -- the installation ---------------------------------------------------------------------------

@dataclass
class PSite:
    uri: str
    platform: PPlatform
    aliases: list[str]
    redirection: str | None
    enabled: bool
    profile: str
    client: str | None
    language: str
    db_name: str
    db_user: str
    db_passwd: str
    db_host: str
    db_port: int
    cron_key: str
    site_name: str

    @property
    def site_path(self) -> str:
        return f"{self.platform.root}/sites/{self.uri}"

    def db_env(self) -> dict[str, str]:
        """The db_* variables the vhost hands to PHP (what cloaked settings.php reads)."""
        return {"db_type": "mysql", "db_name": self.db_name, "db_user": self.db_user,
                "db_passwd": self.db_passwd, "db_host": self.db_host, "db_port": str(self.db_port)}


@dataclass
class PPlatform:
    title: str
    context: str
    root: str
    sites: list[PSite] = field(default_factory=list)


class ProvisionInstall:
    """Provision's on-disk layout for one harness server (its web service) with MariaDB as
    the db server `server_localhost`."""

    def __init__(self, server, db, *, master_url: str = "http://aegir.provision.test",
                 server_context: str = "server_master", db_context: str = "server_localhost",
                 http_restart_cmd: str | None = None):
        self.server = server
        self.db = db
        self.master_url = master_url.rstrip("/")
        self.server_context = server_context
        self.db_context = db_context
        self.http = server.http_service
        self.root = Path(server.aegir_root)
        self.config = self.root / "config"
        self.own_config = self.config / server_context
        self.app_dir = self.own_config / self.http
        self.includes = self.config / "includes"
        self.drush_dir = self.root / ".drush"
        self.http_restart_cmd = http_restart_cmd or (
            "sudo /etc/init.d/nginx reload" if self.http == "nginx" else "sudo /usr/sbin/apache2ctl graceful")
        self.user = pwd.getpwnam(server.script_user)
        self.web_gid = grp.getgrnam(server.web_group).gr_gid
        self.platforms: list[PPlatform] = []
        self.created_dbs: list[tuple[str, str]] = []
        self._server_written = False

    # ------------------------------------------------------------------ file helpers

    def _own(self, path: Path, group: int | None = None) -> None:
        os.chown(path, self.user.pw_uid, self.user.pw_gid if group is None else group,
                 follow_symlinks=False)

    def _dir(self, path: Path, mode: int = 0o755, group: int | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._own(path, group)
        os.chmod(path, mode)

    def _write(self, path: Path, text: str, mode: int = 0o644, group: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.chmod(path, 0o600)
        path.write_text(text)
        self._own(path, group)
        os.chmod(path, mode)

    def _symlink(self, link: Path, target: Path) -> None:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
        self._own(link)

    # ------------------------------------------------------------------ server

    @property
    def web_disable_url(self) -> str:
        return f"{self.master_url}/hosting/disabled"

    def _path(self, sub: str) -> str:
        return str(self.app_dir / sub)

    def server_alias(self) -> dict:
        r = str(self.root)
        opts = {
            "context_type": "server",
            "server": "@server_master",
            "remote_host": "localhost" if self.server_context == "server_master" else self.server.address,
            "aegir_root": r,
            "script_user": self.server.script_user,
            "ip_addresses": [self.server.address],
            "backup_path": f"{r}/backups",
            "config_path": str(self.config),
            "include_path": str(self.includes),
            "clients_path": f"{r}/clients",
            "master_url": self.master_url,
            "admin_email": "admin@localhost",
            "http_service_type": self.http,
            "http_port": str(self.server.http_port),
            "http_restart_cmd": self.http_restart_cmd,
            "http_pred_path": self._path("pre.d"),
            "http_postd_path": self._path("post.d"),
            "http_platformd_path": self._path("platform.d"),
            "http_vhostd_path": self._path("vhost.d"),
            "http_subdird_path": self._path("subdir.d"),
            "http_platforms_path": f"{r}/platforms",
            "web_group": self.server.web_group,
            "web_disable_url": self.web_disable_url,
        }
        if self.http == "nginx":
            opts.update({"nginx_config_mode": "normal", "nginx_is_modern": True,
                         "nginx_has_etag": False, "nginx_has_http2": True,
                         "nginx_has_gzip": False, "phpfpm_mode": "socket",
                         "phpfpm_socket_path": self.server.php_fastcgi.removeprefix("unix:")})
        return opts

    def db_server_alias(self) -> dict:
        # The db server's admin credentials live in its alias as master_db (provision does so).
        master_db = (f"mysql://{quote_plus(self.db.admin_user)}:{quote_plus(self.db.admin_password)}"
                     f"@{self.db.host}:{self.db.port}")
        return {"context_type": "server", "server": "@server_master", "remote_host": self.db.host,
                "aegir_root": str(self.root), "script_user": self.server.script_user,
                "ip_addresses": [], "backup_path": f"{self.root}/backups",
                "config_path": str(self.config), "include_path": str(self.includes),
                "clients_path": f"{self.root}/clients", "db_service_type": "mysql",
                "master_db": master_db, "db_port": str(self.db.port),
                "utf8mb4_is_supported": True, "db_grant_all_hosts": False}

    def write_server(self) -> None:
        """What server verify writes: dirs, server config and its symlink, includes, aliases."""
        self._dir(self.root / "backups", 0o700)
        self._dir(self.root / "clients", 0o711)
        self._dir(self.config, 0o711)
        self._dir(self.own_config, 0o711)
        self._dir(self.app_dir, 0o711)
        for sub in NGINX_SUBDIRS:
            self._dir(self.app_dir / sub, 0o700 if self.http == "nginx" else 0o711)
        self._dir(self.includes, 0o711)
        self._write(self.includes / "global.inc", "<?php # global settings.php\n", 0o644)
        if self.http == "nginx":
            # nginx reads the config as root; PHP-FPM only sees fastcgi params.
            self._write(self.own_config / "nginx.conf", self._nginx_server_conf(), 0o400)
            self._write(self.includes / "nginx_vhost_common.conf", self._nginx_common(), 0o644)
            self._symlink(self.config / "nginx.conf", self.own_config / "nginx.conf")
        else:
            self._write(self.own_config / "apache.conf", self._apache_server_conf(), 0o400)
            # Stands in for the system's php-fpm handler (Debian's conf-enabled/php*-fpm.conf):
            # provision's Apache vhosts carry no PHP handler of their own.
            self._write(self.app_dir / "pre.d" / "php-fpm.conf",
                        "# PHP through PHP-FPM (the system's conf-enabled/php-fpm.conf)\n"
                        "<FilesMatch \".+\\.php$\">\n"
                        f"    SetHandler \"proxy:{self.server.php_fastcgi}|fcgi://localhost\"\n"
                        "</FilesMatch>\n", 0o400)
            self._symlink(self.config / "apache.conf", self.own_config / "apache.conf")
        self._dir(self.drush_dir, 0o755)
        self._write(self.drush_dir / f"{self.server_context}.alias.drushrc.php",
                    alias_text(self.server_context, self.server_alias()), 0o440)
        self._write(self.drush_dir / f"{self.db_context}.alias.drushrc.php",
                    alias_text(self.db_context, self.db_server_alias()), 0o440)
        self._server_written = True

    def _listen(self) -> str:
        return f"{self.server.address}:{self.server.http_port}"

    def _nginx_server_conf(self) -> str:
        port = self.server.http_port
        return (
            "# Aegir web server main configuration file\n\n"
            "#######################################################\n"
            "###  nginx.conf main\n"
            "#######################################################\n\n"
            "  limit_conn_zone $binary_remote_addr zone=limreq:10m;\n\n"
            " ## Default index files\n"
            "  index         index.php index.html;\n\n"
            "#######################################################\n"
            "###  nginx default server\n"
            "#######################################################\n\n"
            "server {\n"
            f"  listen       {self._listen()};\n"
            f"  #listen       [::]:{port};\n"
            "  server_name  _;\n"
            "  location / {\n"
            "    return 404;\n"
            "  }\n"
            "}\n\n"
            "#######################################################\n"
            "###  nginx virtual domains\n"
            "#######################################################\n\n"
            "# virtual hosts\n"
            f"include {self._path('pre.d')}/*;\n"
            f"include {self._path('platform.d')}/*;\n"
            f"include {self._path('vhost.d')}/*;\n"
            f"include {self._path('post.d')}/*;\n"
        )

    def _nginx_common(self) -> str:
        sock = self.server.php_fastcgi
        return (
            "#######################################################\n"
            "###  nginx_vhost_common.conf: included by every site vhost\n"
            "#######################################################\n\n"
            "###\n### Deny access to hidden files and to the private files of any site.\n###\n"
            "location ~ (^|/)\\. {\n  return 403;\n}\n"
            "location ~* ^/sites/.*/private/ {\n  access_log off;\n  return 404;\n}\n\n"
            "###\n### Deny direct access to code and settings.\n###\n"
            "location ~* \\.(?:inc|info|install|module|profile|po|sh|.*sql|theme|tpl(\\.php)?|yml)$ {\n"
            "  return 404;\n}\n\n"
            "###\n### Serve public files directly.\n###\n"
            "location ~* ^/sites/.*/files/ {\n  access_log off;\n  expires 30d;\n"
            "  try_files $uri =404;\n}\n\n"
            "###\n### Send everything else to Drupal's front controller.\n###\n"
            "location / {\n  try_files $uri @drupal;\n}\n"
            "location @drupal {\n  rewrite ^/(.*)$ /index.php?q=$1 last;\n}\n\n"
            "###\n### The PHP entry points; the site's fastcgi_param db_* come from its server{}.\n###\n"
            "location ~* ^/(?:index|cron|update|authorize|xmlrpc)\\.php$ {\n"
            "  access_log   off;\n"
            "  try_files    $uri =404; ### check for existence of php file first\n"
            f"  fastcgi_pass {sock};\n"
            "}\n\n"
            "###\n### Deny any other php file.\n###\n"
            "location ~* ^.+\\.php$ {\n  return 404;\n}\n"
        )

    def _apache_server_conf(self) -> str:
        port = self.server.http_port
        return (
            "# Aegir web server configuration file\n\n"
            f"NameVirtualHost {self._listen()}\n\n\n"
            f"<VirtualHost {self._listen()}>\n"
            "  ServerName default\n\n"
            "  <IfModule mod_rewrite.c>\n"
            "    RewriteEngine on\n"
            "    RewriteRule ^(?!(/\\.well-known/acme-challenge/.+)) - [R=404,L,NC]\n"
            "  </IfModule>\n"
            "</VirtualHost>\n\n\n"
            "<IfModule !env_module>\n  LoadModule env_module modules/mod_env.so\n</IfModule>\n\n"
            "<IfModule !rewrite_module>\n  LoadModule rewrite_module modules/mod_rewrite.so\n</IfModule>\n\n"
            "# Mitigation for https://www.drupal.org/SA-CORE-2018-002\n"
            "<IfModule mod_rewrite.c>\n"
            "    RewriteEngine On\n"
            "    RewriteCond %{QUERY_STRING} (.*)(23value|23default_value|element_parents=%23)(.*) [NC]\n"
            "    RewriteCond %{REQUEST_METHOD} POST [NC]\n"
            "    RewriteRule ^.*$  - [R=403,L]\n"
            "</IfModule>\n\n"
            "# other configuration, not touched by aegir\n"
            "# this allows you to override aegir configuration, as it is included before\n"
            f"Include {self._path('pre.d')}\n\n"
            "# virtual hosts\n"
            f"Include {self._path('vhost.d')}\n\n"
            "# platforms\n"
            f"Include {self._path('platform.d')}\n\n"
            "# other configuration, not touched by aegir\n"
            "# this allows to have default (for example during migrations) that are eventually overridden by aegir\n"
            f"Include {self._path('post.d')}\n\n"
            f"# http port {port}\n"
        )

    # ------------------------------------------------------------------ platform

    def add_platform(self, title: str, root: str) -> PPlatform:
        """A platform at `root` (already a copy of the fixture platform, e.g. make_platform)."""
        if not self._server_written:
            self.write_server()
        plat = PPlatform(title=title, context=platform_context(title), root=root)
        self.platforms.append(plat)
        self.write_platform(plat)
        return plat

    def platform_alias(self, plat: PPlatform) -> dict:
        return {"context_type": "platform", "server": "@server_master",
                "web_server": f"@{self.server_context}", "root": plat.root,
                "makefile": "", "make_working_copy": False}

    def write_platform(self, plat: PPlatform) -> None:
        """Platform verify: drushrc.php, sites.php, platform.d (Apache), alias."""
        root = Path(plat.root)
        drush = root / "sites" / "all" / "drush"
        self._dir(drush, 0o755)
        self._write(drush / "drushrc.php", drushrc_text(self.platform_options(plat)), 0o444)
        self.write_sites_php(plat)
        if self.http == "apache":
            self._write(self.app_dir / "platform.d" / f"{plat.context}.conf",
                        self._apache_platform(plat), 0o400)
        self._write(self.drush_dir / f"{plat.context}.alias.drushrc.php",
                    alias_text(plat.context, self.platform_alias(plat)), 0o440)

    def platform_options(self, plat: PPlatform) -> dict:
        root = Path(plat.root)
        profiles = sorted(p.name for d in ("core/profiles", "profiles") if (root / d).is_dir()
                          for p in (root / d).iterdir() if (p / f"{p.name}.info.yml").is_file())
        return {
            "profiles": profiles,
            "sites": [s.uri for s in plat.sites],
            "packages": {
                "base": {"modules": [], "themes": [],
                         "platforms": {"drupal": {"short_name": "drupal", "version": self.drupal_version(plat),
                                                  "description": f"This platform is running Drupal {self.drupal_version(plat)}"}}},
                "sites-all": {"modules": [], "themes": []},
            },
        }

    @staticmethod
    def drupal_version(plat: PPlatform) -> str:
        text = (Path(plat.root) / "core" / "lib" / "Drupal.php").read_text()
        return re.search(r"const VERSION = '([^']+)'", text).group(1)

    def write_sites_php(self, plat: PPlatform) -> None:
        records = {}
        for site in plat.sites:
            for alias in site.aliases:
                records[alias.replace("/", ".")] = site.uri
        text = ("<?php \n/**\n * @file\n * Configuration file for Drupal's multi-site directory "
                "aliasing feature.\n *\n * Written by Aegir: every site alias maps to the site's "
                "directory.\n */\n\n$sites = " + php_export(records) + ";\n")
        self._write(Path(plat.root) / "sites" / "sites.php", text, 0o644)

    def _apache_platform(self, plat: PPlatform) -> str:
        extra = ""
        if (Path(plat.root) / ".htaccess").is_file():
            extra = f"\n# Include the platform's htaccess file\nInclude {plat.root}/.htaccess\n"
        return (f"\n<Directory {plat.root}>\n    Order allow,deny\n    Allow from all\n"
                "    Satisfy All\n    Require all granted\n\n"
                f"{extra}\n  # Do not read any .htaccess in the platform\n  AllowOverride none\n\n"
                "</Directory>\n\n")

    # ------------------------------------------------------------------ site

    def add_site(self, plat: PPlatform, uri: str, *, aliases=(), redirection: str | None = None,
                 enabled: bool = True, profile: str = "standard", client: str | None = None,
                 language: str = "en") -> PSite:
        """Install a site as provision-install does, then (if not enabled) disable it."""
        if profile not in self.platform_options(plat)["profiles"]:
            raise ValueError(f"no install profile {profile!r} on {plat.root}")
        db_name = suggest_db_name(uri, self._db_taken)
        site = PSite(uri=uri, platform=plat, aliases=list(aliases), redirection=redirection,
                     enabled=True, profile=profile, client=client, language=language,
                     db_name=db_name, db_user=db_name, db_passwd=provision_password(),
                     db_host=self.db.host, db_port=self.db.port,
                     cron_key=secrets.token_urlsafe(32), site_name=f"Site {uri}")
        self.db.create_database(site.db_name, site.db_user, site.db_passwd, self.server.db_grant_host)
        self.created_dbs.append((site.db_name, self.server.db_grant_host))
        plat.sites.append(site)
        self._site_dirs(site)
        self.write_site_files(site)
        self._drush_install(site)
        self.write_platform(plat)  # sites.php aliases, the platform's sites list
        if client:
            cdir = self.root / "clients" / client
            self._dir(cdir, 0o750)
            self._symlink(cdir / uri, Path(site.site_path))
        if not enabled:
            self.disable(site)
        return site

    def _db_taken(self, name: str) -> bool:
        return self.db.database_exists(name) or bool(self.db.user_hosts(name))

    def _site_dirs(self, site: PSite) -> None:
        path = Path(site.site_path)
        self._dir(path, 0o755)
        for sub in SITE_DIRS:
            self._dir(path / sub, 0o2775, self.web_gid)

    def site_alias(self, site: PSite) -> dict:
        return {
            "context_type": "site",
            "platform": f"@{site.platform.context}",
            "server": "@server_master",
            "db_server": f"@{self.db_context}",
            "uri": site.uri,
            "root": site.platform.root,
            "site_path": site.site_path,
            "site_enabled": site.enabled,
            "language": site.language,
            "client_name": site.client or "admin",
            "aliases": list(site.aliases),
            "redirection": site.redirection or False,
            "cron_key": site.cron_key,
            "drush_aliases": [],
            "profile": site.profile,
            "install_method": "profile",
        }

    def site_options(self, site: PSite) -> dict:
        """The 'site' drush context provision saves to sites/<uri>/drushrc.php."""
        return {
            "db_type": "mysql",
            "db_host": site.db_host,
            "db_port": str(site.db_port),
            "db_passwd": site.db_passwd,
            "db_name": site.db_name,
            "db_user": site.db_user,
            "installed": True,
            "packages": {
                "platforms": {"drupal": {"short_name": "drupal",
                                         "version": self.drupal_version(site.platform)}},
                "profiles": {site.profile: {"name": site.profile, "status": 1,
                                            "version": self.drupal_version(site.platform)}},
                "modules": [],
                "themes": [],
            },
            "cron_key": site.cron_key,
        }

    def write_site_files(self, site: PSite) -> None:
        path = Path(site.site_path)
        self._write(path / "settings.php", self.settings_php(site), 0o440, self.web_gid)
        if not (path / "local.settings.php").exists():
            self._write(path / "local.settings.php", "<?php # local settings.php \n", 0o440, self.web_gid)
        self._write(path / "drushrc.php", self.site_drushrc(site), 0o440)
        self._write(self.drush_dir / f"{site.uri}.alias.drushrc.php",
                    alias_text(site.uri, self.site_alias(site)), 0o440)
        name = site.uri  # provision: vhost.d/<uri> (no suffix unless provision_apache_conf_suffix)
        text = self.vhost(site) if site.enabled else self.vhost_disabled(site)
        self._write(self.app_dir / "vhost.d" / name, text, 0o400)

    def site_drushrc(self, site: PSite) -> str:
        text = drushrc_text(self.site_options(site))
        text += "\n# Aegir additions.\n"
        for key in ("db_type", "db_port", "db_host", "db_user", "db_passwd", "db_name"):
            text += f"$_SERVER['{key}'] = $options['{key}'];\n"
        return text

    def settings_php(self, site: PSite) -> str:
        """provision_drupal_settings_9/10.tpl.php, cloaked (credentials from $_SERVER)."""
        uri, root = site.uri, site.platform.root
        keys = ("db_type", "db_user", "db_passwd", "db_host", "db_port", "db_name")
        unset_env = "".join(f"    apache_setenv('{k}', '');\n" for k in keys)
        unset_env += "    // no idea why they are also in REDIRECT_foo, but they are\n"
        unset_env += "".join(f"    apache_setenv('REDIRECT_{k}', '');\n" for k in keys)
        unsets = "".join(f"  unset($_SERVER['{k}']);\n" for k in keys)
        unsets += "".join(f"  unset($_SERVER['REDIRECT_{k}']);\n" for k in keys)
        trusted = [uri] + [a.split("/")[0] for a in site.aliases]
        trusted_lines = "".join("    '^" + h.replace(".", "\\.") + "$',\n" for h in trusted)
        maintenance = "" if site.enabled else (
            "  /**\n   * Useless currently, because it is ignored in Drupal 8+ anyway.\n   */\n"
            "  $settings['maintenance_mode'] = 1;\n\n")
        return f"""<?php
/**
 * @file Drupal's 10 settings.php file
 *
 * This file was automatically generated by Aegir {PROVISION_VERSION}
 * on {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}.
 *
 * If it is still managed by Aegir, changes to this file may be
 * lost. If it is not managed by aegir, you should remove this header
 * to avoid further confusion.
 */

if (isset($_SERVER['db_name'])) {{
  /**
   * The database credentials are stored in the Apache or Nginx vhost config
   * of the associated site with SetEnv (fastcgi_param in Nginx) parameters.
   * They are called here with $_SERVER environment variables.
   */
  $databases['default']['default'] = array(
    'driver' => $_SERVER['db_type'],
    'database' => $_SERVER['db_name'],
    'username' => $_SERVER['db_user'],
    'password' => $_SERVER['db_passwd'],
    'host' => $_SERVER['db_host'],
    'port' => (string) $_SERVER['db_port'],
    'charset' => 'utf8mb4',
    'collation' => 'utf8mb4_unicode_ci',
  );
  $db_url['default'] = $_SERVER['db_type'] . '://' . $_SERVER['db_user'] . ':' . $_SERVER['db_passwd'] . '@' . $_SERVER['db_host'] . ':' . $_SERVER['db_port'] . '/' . $_SERVER['db_name'];
}}

  /**
   * Now that we used the credentials from the apache environment, we
   * don't need them anymore. Clear them from apache and the _SERVER
   * array.
   */
  if (function_exists('apache_setenv')) {{
{unset_env}  }}
{unsets}
  ini_set('session.gc_probability', 1);
  ini_set('session.gc_divisor', 100);
  ini_set('session.gc_maxlifetime', 200000);
  ini_set('session.cookie_lifetime', 2000000);

  /**
  * Set the umask so that new directories created by Drupal have the correct permissions
  */
  umask(0002);

  $settings['file_public_path'] = 'sites/{uri}/files';
  $settings['file_private_path'] = 'sites/{uri}/private/files';
  $config['system.file']['path']['private'] = 'sites/{uri}/private/files';
  $settings['file_temp_path'] = 'sites/{uri}/private/temp';
  $config['system.file']['path']['temporary'] = 'sites/{uri}/private/temp';
  $settings['config_sync_directory'] = 'sites/{uri}/private/config/sync';
  $settings['hash_salt'] = '{secrets.token_urlsafe(55)}';
  $settings['aegir_api'] = {PROVISION_API};
  $settings['allow_authorize_operations'] = FALSE;
  $settings['clean_url'] = 1;

{maintenance}  /**
   * Load services definition file.
   */
  $settings['container_yamls'][] = __DIR__ . '/services.yml';

  /**
   * Trusted Host Settings support.
   */
  $settings['trusted_host_patterns'] = array(
{trusted_lines}    '^localhost$',
    '^localhost\\.*',
    '\\.local$',
  );

  $config['syslog.settings']['identity'] = '{uri}';

  # Extra configuration from modules:

  # Additional host wide configuration settings. Useful for safely specifying configuration settings.
  if (is_readable('{self.includes}/global.inc')) {{
    include('{self.includes}/global.inc');
  }}

  # Additional platform wide configuration settings.
  if (is_readable('{root}/sites/all/platform.settings.php')) {{
    include_once('{root}/sites/all/platform.settings.php');
  }}

  # Additional platform wide configuration settings.
  if (is_readable('{root}/sites/all/settings.php')) {{
    include_once('{root}/sites/all/settings.php');
  }}

  # Additional site configuration settings.
  if (is_readable('{site.site_path}/local.settings.php')) {{
    include_once('{site.site_path}/local.settings.php');
  }}
"""

    def vhost(self, site: PSite) -> str:
        return self._nginx_vhost(site) if self.http == "nginx" else self._apache_vhost(site)

    def vhost_disabled(self, site: PSite) -> str:
        target = f"{self.web_disable_url}/{site.uri}"
        port = self.server.http_port
        if self.http == "nginx":
            names = " ".join([site.uri] + [a.replace("/", ".") for a in site.aliases])
            return (f"\nserver {{\n  listen       {self._listen()};\n  #listen       [::]:{port};\n"
                    f"  server_name  {names};\n  return 302 {target};\n}}\n")
        aliases = "".join(f"  ServerAlias {a}\n" for a in site.aliases)
        return (f"\n<VirtualHost {self._listen()}>\n    DocumentRoot {site.platform.root}\n\n"
                f"    ServerName {site.uri}\n\n    {aliases}\n    RewriteEngine on\n\n"
                "    # Redirect ALL visitors to a configured url.\n"
                "    # Except for /.well-known/acme-challenge/ to prevent potential problems with Let's Encrypt\n"
                "    RewriteCond %{REQUEST_URI} '!/.well-known/acme-challenge/'\n\n"
                "    # the ? at the end is to remove any query string in the original url\n"
                f"    RewriteRule ^(.*)$ {target}?\n\n</VirtualHost>\n")

    @staticmethod
    def _enc(value: str) -> str:
        return quote_plus(value)

    def _nginx_vhost(self, site: PSite) -> str:
        port = self.server.http_port
        env = site.db_env()
        out = ""
        if site.redirection:
            for alias in site.aliases:
                if re.search(r"\.(?:nodns|dev|devel)\.", alias):
                    continue
                name = site.uri if alias == site.redirection else alias.replace("/", ".")
                out += ("\n# alias redirection virtual host\nserver {\n"
                        f"  listen       {self._listen()};\n  #listen       [::]:{port};\n"
                        f"  server_name  {name};\n  access_log   off;\n"
                        f"  return 301 $scheme://{site.redirection}$request_uri;\n}}\n")
        if site.redirection:
            names = [site.redirection.replace("/", ".")]
        else:
            names = [site.uri] + [a.replace("/", ".") for a in site.aliases if a.strip()]
        user = "@".join(self._enc(p) for p in env["db_user"].split("@"))
        out += (
            "\nserver {\n"
            "  include       fastcgi_params;\n"
            "  # Block https://httpoxy.org/ attacks.\n"
            "  fastcgi_param HTTP_PROXY \"\";\n"
            f"  fastcgi_param MAIN_SITE_NAME {site.uri};\n"
            f"  set $main_site_name \"{site.uri}\";\n"
            "  fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n"
            f"  fastcgi_param db_type   {self._enc(env['db_type'])};\n"
            f"  fastcgi_param db_name   {self._enc(env['db_name'])};\n"
            f"  fastcgi_param db_user   {user};\n"
            f"  fastcgi_param db_passwd {self._enc(env['db_passwd'])};\n"
            f"  fastcgi_param db_host   {self._enc(env['db_host'])};\n"
            f"  fastcgi_param db_port   {self._enc(env['db_port'])};\n"
            f"  listen        {self._listen()};\n"
            f"  #listen        [::]:{port};\n"
            f"  server_name   {' '.join(names)};\n"
            f"  root          {site.platform.root};\n"
            "  # Extra configuration from modules:\n"
            f"  include       {self.includes}/nginx_vhost_common.conf;\n"
            "}\n"
        )
        return out

    def _apache_vhost(self, site: PSite) -> str:
        env = site.db_env()
        user = "@".join(self._enc(p) for p in env["db_user"].split("@"))
        aliases = "".join(f"  ServerAlias {a}\n" for a in site.aliases)
        redirect = ""
        if site.redirection:
            redirect = (" # Redirect all aliases to the selected alias.\n"
                        f" RewriteCond %{{HTTP_HOST}} !^{site.redirection}$ [NC]\n"
                        f" RewriteRule ^/*(.*)$ http://{site.redirection}/$1 [NE,L,R=301]\n")
        security = ""
        for pattern, deny in (("files", False), ("private", True)):
            security += (f"    <Directory ~ \"sites/.*/{pattern}\">\n      <Files *>\n"
                         "        SetHandler This_is_a_Drupal_security_line_do_not_remove\n"
                         "      </Files>\n" + ("      Deny from all\n" if deny else "") +
                         "      Options None\n      Options +FollowSymLinks\n\n"
                         "      # If we know how to do it safely, disable the PHP engine entirely.\n"
                         "      <IfModule mod_php5.c>\n        php_flag engine off\n      </IfModule>\n"
                         "    </Directory>\n\n")
        return (
            f"\n<VirtualHost {self._listen()}>\n\n"
            "<IfModule mod_http2.c>\n  Protocols h2 http/1.1\n</IfModule>\n\n"
            f"  DocumentRoot {site.platform.root}\n\n"
            f"  ServerName {site.uri}\n\n"
            f"  SetEnv db_type  {self._enc(env['db_type'])}\n\n"
            f"  SetEnv db_name  {self._enc(env['db_name'])}\n\n"
            f"  SetEnv db_user  {user}\n\n"
            f"  SetEnv db_passwd  {self._enc(env['db_passwd'])}\n\n"
            f"  SetEnv db_host  {self._enc(env['db_host'])}\n\n"
            f"  SetEnv db_port  {self._enc(env['db_port'])}\n\n\n"
            f"{aliases}\n"
            "<IfModule mod_rewrite.c>\n  RewriteEngine on\n\n"
            "  # Mitigation for https://www.drupal.org/SA-CORE-2018-002\n"
            "  RewriteCond %{QUERY_STRING} (.*)(23value|23default_value|element_parents=%23)(.*) [NC]\n"
            "  RewriteCond %{REQUEST_METHOD} POST [NC]\n"
            "  RewriteRule ^.*$  - [R=403,L]\n\n"
            f"{redirect}"
            f"  RewriteRule ^/files/(.*)$ /sites/{site.uri}/files/$1 [L]\n"
            f"  RewriteCond {site.site_path}/files/robots.txt -f\n"
            f"  RewriteRule ^/robots.txt /sites/{site.uri}/files/robots.txt [L]\n"
            "</IfModule>\n\n"
            "# Extra configuration from modules:\n\n"
            "    # Error handler for Drupal > 4.6.7\n"
            f"{security}\n"
            "</VirtualHost>\n"
        )

    def as_script_user(self) -> dict:
        """subprocess.run() arguments that run a command as the script user (with www-data)."""
        return {"user": self.user.pw_uid, "group": self.user.pw_gid,
                "extra_groups": [self.web_gid]}

    def _drush_install(self, site: PSite) -> None:
        """The Drupal install provision-install-backend runs: the fixture drush, as the script
        user, with the credentials in its environment (drush reads them from drushrc.php's
        $_SERVER lines; PHP CLI's $_SERVER holds the environment)."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.root), **site.db_env()}
        drush = Path(site.platform.root) / "vendor" / "bin" / "drush"
        proc = subprocess.run(
            ["php", str(drush),
             f"--root={site.platform.root}", f"--uri={site.uri}", "site-install", site.profile,
             "--yes", f"--site-name={site.site_name}"],
            env=env, capture_output=True, text=True, check=False, timeout=120, cwd="/",
            **self.as_script_user())
        if proc.returncode != 0:
            raise RuntimeError(f"fixture site-install of {site.uri} failed: {proc.stderr.strip()}")

    def disable(self, site: PSite) -> None:
        """provision-disable: site_enabled false in the alias, disabled vhost, settings."""
        site.enabled = False
        self.write_site_files(site)

    def reload(self) -> None:
        self.server.reload()

    def cleanup(self) -> None:
        for name, host in self.created_dbs:
            self.db.drop_database(name)
            self.db.drop_user(name, host)
        self.created_dbs.clear()

    # ------------------------------------------------------------------ hostmaster rows

    def write_frontend(self, session, *, now: int | None = None) -> dict[str, int]:
        """hostmaster's rows for this installation after its tasks succeeded; returns
        {context name: nid}. Uses only hostmaster's tables. Servers first, then platforms,
        install profiles (package nodes + platform instances), clients, sites."""
        now = now or int(time.time())
        nids: dict[str, int] = {}

        def node(type_: str, title: str) -> tuple[int, int]:
            n = m.Node(type=type_, title=title, uid=1, status=1, created=now, changed=now)
            session.add(n)
            session.flush()
            rev = m.NodeRevision(nid=n.nid, uid=1, title=title, log="", timestamp=now, status=1)
            session.add(rev)
            session.flush()
            n.vid = rev.vid
            session.flush()
            return n.nid, rev.vid

        def context(nid: int, name: str) -> None:
            session.add(m.HostingContext(nid=nid, name=name))
            nids[name] = nid

        existing = {c.name: c.nid for c in session.query(m.HostingContext)}
        if self.server_context in existing:
            nids[self.server_context] = existing[self.server_context]
        else:
            nid, vid = node("server", f"{self.server.name}.provision.test")
            context(nid, self.server_context)
            session.add(m.HostingServer(vid=vid, nid=nid, human_name="", verified=now, status=1))
            session.add(m.HostingService(vid=vid, nid=nid, service="http", type=self.http,
                                         restart_cmd=self.http_restart_cmd,
                                         port=self.server.http_port, available=1))
            session.add(m.HostingIpAddress(nid=nid, ip_address=self.server.address))
        if self.db_context in existing:
            nids[self.db_context] = existing[self.db_context]
        else:
            nid, vid = node("server", "localhost")
            context(nid, self.db_context)
            session.add(m.HostingServer(vid=vid, nid=nid, human_name="", verified=now, status=1))
            session.add(m.HostingService(vid=vid, nid=nid, service="db", type="mysql",
                                         restart_cmd=None, port=self.db.port, available=1))
            session.add(m.HostingDbServer(vid=vid, nid=nid, db_user=self.db.admin_user,
                                          db_passwd=self.db.admin_password))
        session.flush()
        profiles: dict[str, int] = {
            p.short_name: p.nid for p in session.query(m.HostingPackage).filter_by(package_type="profile")}
        clients: dict[str, int] = {c.uname: c.nid for c in session.query(m.HostingClient)}
        for plat in self.platforms:
            pnid, pvid = node("platform", plat.title)
            context(pnid, plat.context)
            session.add(m.HostingPlatform(vid=pvid, nid=pnid, publish_path=plat.root, makefile="",
                                          web_server=nids[self.server_context], verified=now,
                                          status=m.PLATFORM_ENABLED, make_working_copy=0))
            version = self.drupal_version(plat)
            for short in self.platform_options(plat)["profiles"]:
                if short not in profiles:
                    knid, kvid = node("package", short.capitalize())
                    session.add(m.HostingPackage(vid=kvid, nid=knid, package_type="profile",
                                                 short_name=short, old_short_name="", description=""))
                    profiles[short] = knid
                session.add(m.HostingPackageInstance(
                    rid=pnid, package_id=profiles[short],
                    filename=f"{plat.root}/core/profiles/{short}/{short}.info.yml",
                    schema_version=0, version=version, version_code=0, status=0, platform=pnid))
            session.flush()
            for site in plat.sites:
                client_nid = 0
                if site.client:
                    if site.client not in clients:
                        cnid, cvid = node("client", site.client)
                        session.add(m.HostingClient(vid=cvid, nid=cnid, uname=site.client))
                        clients[site.client] = cnid
                    client_nid = clients[site.client]
                snid, svid = node("site", site.uri)
                context(snid, site.uri)
                session.add(m.HostingSite(
                    vid=svid, nid=snid, client=client_nid, db_server=nids[self.db_context],
                    db_name=site.db_name, platform=pnid, profile=profiles[site.profile],
                    language=site.language, last_cron=None, cron_key=site.cron_key,
                    verified=now, status=m.SITE_ENABLED if site.enabled else m.SITE_DISABLED))
                for alias in site.aliases:
                    session.add(m.HostingSiteAlias(vid=svid, nid=snid, alias=alias, automatic=0,
                                                   redirection=site.redirection or ""))
                # The profile is enabled on the site (hosting_package_instance_sync of install).
                session.add(m.HostingPackageInstance(
                    rid=snid, package_id=profiles[site.profile],
                    filename=f"{plat.root}/core/profiles/{site.profile}/{site.profile}.info.yml",
                    schema_version=0, version=version, version_code=0, status=1, platform=pnid))
        session.flush()
        return nids


    def write_backend_settings(self, session, nids: dict[str, int]) -> None:
        """Step 5 of docs/migrating.md for this server: the aegir_ansible_server rows that
        tell the backend how to reach the harness server (ssh as root with the session key)
        and its db server (a local connection to MariaDB)."""
        import json

        from aegir_ansible.db.backend import ServerSettings

        s = self.server
        session.merge(ServerSettings(
            nid=nids[self.server_context], connection="ssh", address=s.address, ssh_user=s.ssh_user,
            ssh_port=s.ssh_port, ssh_private_key_file=str(s.ssh_private_key),
            python_interpreter="/usr/bin/python3", aegir_root=s.aegir_root, script_user=s.script_user,
            web_group=s.web_group, http_listen_address=s.address,
            http_test_cmd=json.dumps(list(s.http_test_cmd)), http_reload_cmd=json.dumps(list(s.http_reload_cmd)),
            php_fastcgi=s.php_fastcgi, db_grant_host=s.db_grant_host, db_host=self.db.host))
        session.merge(ServerSettings(
            nid=nids[self.db_context], connection="local", address=self.db.host,
            python_interpreter="/usr/bin/python3", aegir_root=s.aegir_root, script_user=s.script_user,
            db_host=self.db.host, db_grant_host=s.db_grant_host))
        session.flush()


def write_hostmaster_site(session, master_url: str, platform_nid: int, db_server_nid: int,
                          *, now: int | None = None) -> int:
    """hostmaster's own site (context `hostmaster`, its node titled with the master's uri), as
    hostmaster's install leaves it; the backend derives the master URL (disabled sites'
    redirect) from it. Returns its nid. Nothing of it is written on disk."""
    now = now or int(time.time())
    title = master_url.split("://", 1)[-1].strip("/")
    n = m.Node(type="site", title=title, uid=1, status=1, created=now, changed=now)
    session.add(n)
    session.flush()
    rev = m.NodeRevision(nid=n.nid, uid=1, title=title, log="", timestamp=now, status=1)
    session.add(rev)
    session.flush()
    n.vid = rev.vid
    session.add(m.HostingContext(nid=n.nid, name="hostmaster"))
    session.add(m.HostingSite(vid=rev.vid, nid=n.nid, client=0, db_server=db_server_nid,
                              db_name="hostmaster", platform=platform_nid, profile=0,
                              language="en", last_cron=None, cron_key="", verified=now,
                              status=m.SITE_ENABLED))
    session.flush()
    return n.nid
