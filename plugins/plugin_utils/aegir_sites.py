# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side reading of the site hosts' inventory variables, shared by the
aegir_site_files and aegir_drush action plugins and the aegir_sites filters.

Every per-site and per-server value is read from a site host's inventory variables (the
contract of docs/inventory-variables.md, or the role's own variable of the same meaning set in
the inventory) and validated with the module's own validators (module_utils/aegir_site_common),
so the controller and the module refuse the same values. Nothing here renders templates or
calls modules.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_site_common as common

# The one place the roles take the web servers' default commands from (argv lists): the
# aegir_site_files action (vhosts), and the aegir_server and aegir_platform role defaults
# through the aegir_http_commands filter. The inventory's aegir_http_test_cmd /
# aegir_http_reload_cmd override them.
HTTP_COMMANDS = {
    "nginx": {"test": ["nginx", "-t"], "reload": ["nginx", "-s", "reload"]},
    "apache": {"test": ["apache2ctl", "-t"], "reload": ["apache2ctl", "graceful"]},
}

# Validation errors that fail one site, not the whole call.
SITE_ERRORS = (common.AegirValueError, KeyError, TypeError, ValueError)


def plain(value):
    """Copy a value into plain Python types (drop Ansible's tagged str subclasses)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value) if type(value) is not str else value  # pylint: disable=unidiomatic-typecheck
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    return str(value)


class Vars:
    """Read one host's inventory variables: first defined name wins, else the default."""

    def __init__(self, hostvars, host):
        self.host = host
        self.hv = hostvars[host]

    def get(self, names, default=None):
        if isinstance(names, str):
            names = [names]
        for name in names:
            if name in self.hv:
                value = self.hv[name]
                if value is not None and value != "":
                    return plain(value)
        return default


def server_key(hostvars, host):
    """The inventory host to delegate a site's work to: its server host, else the site itself."""
    hv = hostvars[host]
    srv = hv["aegir_server"] if "aegir_server" in hv else None
    if srv and plain(srv) in hostvars:
        return plain(srv)
    return host


def servers(hostvars, hosts):
    """The servers (server_key) that hold the sites `hosts`, in the order first met."""
    found = []
    for host in hosts:
        key = server_key(hostvars, plain(host))
        if key not in found:
            found.append(key)
    return found


def by_server(hostvars, hosts, server):
    """The sites of `hosts` that live on `server`."""
    return [h for h in (plain(x) for x in hosts) if server_key(hostvars, h) == server]


def http_commands(service):
    """{'test': argv, 'reload': argv} of a web server (nginx or apache)."""
    if service not in HTTP_COMMANDS:
        raise common.AegirValueError("aegir_http_service %r is not nginx or apache" % (service,))
    return {k: list(v) for k, v in HTTP_COMMANDS[service].items()}


def check_url(url):
    if url and not re.match(r"^https?://[A-Za-z0-9.:/_-]+$", url):
        raise common.AegirValueError("aegir_vhost_disabled_url %r is not a plain http(s) URL" % url)
    return url.rstrip("/")


def is_ip(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def server_values(v):
    """Per-server values, read from the first site host of the server (a Vars)."""
    server_name = v.get("aegir_server", v.host)
    aegir_root = common.check_path(v.get("aegir_root", "/var/aegir"), "aegir_root")
    config_path = common.check_path(v.get("aegir_config_path", aegir_root + "/config"), "aegir_config_path")
    server_config_path = common.check_path(
        v.get("aegir_server_config_path", "%s/%s" % (config_path, server_name)), "aegir_server_config_path")
    service = v.get(["aegir_vhost_service", "aegir_http_service"], "nginx")
    if service not in HTTP_COMMANDS:
        raise common.AegirValueError("aegir_http_service %r of %s is not nginx or apache" % (service, v.host))
    defaults = HTTP_COMMANDS[service]
    listen_address = common.check_listen_address(
        str(v.get(["aegir_vhost_listen_address", "aegir_http_listen_address"], "*")))
    listen_port = common.check_port(v.get(["aegir_vhost_listen_port", "aegir_http_port"], 80), "http port")
    return {
        "name": server_name,
        "aegir_root": aegir_root,
        "config_path": config_path,
        "server_config_path": server_config_path,
        "includes_path": config_path + "/includes",
        "service": service,
        "vhost_dir": common.check_path(
            v.get("aegir_vhost_dir", "%s/%s/vhost.d" % (server_config_path, service)), "aegir_vhost_dir"),
        "listen_address": listen_address,
        "listen_port": listen_port,
        "php_fastcgi": common.check_fastcgi(
            v.get(["aegir_vhost_php_fastcgi", "aegir_php_fastcgi"], "unix:/run/php/php-fpm.sock")),
        "test_cmd": [str(x) for x in v.get(["aegir_vhost_test_cmd", "aegir_http_test_cmd"], defaults["test"])],
        "reload_cmd": [str(x) for x in v.get(["aegir_vhost_reload_cmd", "aegir_http_reload_cmd"], defaults["reload"])],
        "script_user": v.get(["aegir_site_owner", "aegir_script_user"], "aegir"),
        "web_group": v.get(["aegir_site_group", "aegir_web_group"], "www-data"),
        # Where a disabled site redirects: aegir_vhost_disabled_url, else hostmaster's own
        # page for it, <aegir_hostmaster_url>/hosting/disabled (as provision's disabled vhost).
        "disabled_url": check_url(v.get("aegir_vhost_disabled_url", "") or (
            v.get("aegir_hostmaster_url", "").rstrip("/") + "/hosting/disabled"
            if v.get("aegir_hostmaster_url", "") else "")),
    }


def site_values(host, v):
    """The validated per-site values (a Vars of the site host)."""
    uri = common.check_hostname(v.get("aegir_site_uri", host), "site uri")
    aliases = v.get("aegir_site_aliases", []) or []
    if isinstance(aliases, str):
        aliases = [a for a in aliases.replace(",", " ").split() if a]
    aliases = [common.check_hostname(a, "alias") for a in aliases]
    aliases = [a for a in dict.fromkeys(aliases) if a != uri]
    redirection = v.get("aegir_site_redirection", "") or ""
    if redirection:
        common.check_hostname(redirection, "redirection target")
        if redirection != uri and redirection not in aliases:
            raise common.AegirValueError(
                "redirection target %s is neither the uri nor one of the aliases" % redirection)
    root = v.get("aegir_platform_root")
    if not root:
        raise common.AegirValueError("aegir_platform_root is not set")
    root = common.check_path(root, "platform root")
    site_path = common.check_path(v.get("aegir_site_path", root + "/sites/" + uri), "site path")
    if site_path != root + "/sites/" + uri:
        raise common.AegirValueError("site path %s is not <platform root>/sites/<uri>" % site_path)
    return {
        "host": host,
        "uri": uri,
        "aliases": aliases,
        "names": [uri] + aliases,
        "redirection": redirection,
        "platform": v.get("aegir_platform", ""),
        "platform_root": root,
        "site_path": site_path,
        "site_dir": "sites/" + uri,
        "enabled": bool(v.get("aegir_site_enabled", True)),
    }


def cron_job(host, v, cron_state="auto"):
    """The aegir_cron job of one site (state from cron_state, or 'auto': from the site's status)."""
    site = site_values(host, v)
    drush = common.check_path(v.get(["aegir_site_drush", "aegir_platform_drush"],
                                    site["platform_root"] + "/vendor/bin/drush"), "drush path")
    interval = int(v.get("aegir_site_cron_interval", 3600) or 0)
    if cron_state == "auto":
        cron_state = "present" if site["enabled"] else "absent"
    if interval <= 0:
        cron_state = "absent"
    return {
        "key": site["uri"],
        "interval": interval if cron_state == "present" else 0,
        "command": [drush, "--root=" + site["platform_root"], "--uri=" + site["uri"], "cron"],
        "state": cron_state,
    }
