# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: render the site/vhost templates of many sites on the controller, write them
with one aegir_site_files module call per server.

Used by the aegir_site and aegir_vhost roles like this (see their tasks/):

  - aegir_site_files: {plan: true}          # run_once: which servers hold the play's sites
    run_once: true
    register: _plan
  - aegir_site_files: {server: "{{ item }}", part: site, ...}
    run_once: true
    loop: "{{ _plan.servers }}"
    delegate_to: "{{ item }}"

Per-site and per-server values are read from each site host's inventory variables (the
contract of docs/inventory-variables.md, or the role's own variable of the same meaning set in
the inventory). Templates are the role's own files, rendered with a plain Jinja2
SandboxedEnvironment; inventory values only ever appear as context variables, never as
template source, so a uri such as "{{ lookup('pipe','id') }}" stays inert text (and is refused
by the validators anyway).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import string

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment


def _load_common(name="aegir_site_common"):
    """Load plugins/module_utils/<name>.py (shared with the module) by path."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "module_utils", name + ".py")
    spec = importlib.util.spec_from_file_location("_%s_controller" % name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


common = _load_common()
https = _load_common("aegir_https")

PASSWORD_ALPHABET = string.ascii_letters + string.digits


def plain(value):
    """Copy a value into plain Python types (drop Ansible's tagged str subclasses)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value) if type(value) is not str else value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    return str(value)


def nginx_string(value):
    """A double-quoted nginx string. Only validated values reach templates; this is belt and braces."""
    text = str(value)
    if any(c in text for c in '"\\$\n\r{};'):
        raise common.AegirValueError("refusing %r in an nginx config" % text)
    return '"%s"' % text


def apache_string(value):
    text = str(value)
    if any(c in text for c in '"\\\n\r<>$%'):
        raise common.AegirValueError("refusing %r in an Apache config" % text)
    return '"%s"' % text


def regex_escape(value):
    import re

    return re.escape(str(value))


_ENV = None
_TEMPLATES = {}


def template(path):
    """Compile a role template file once per process (sandboxed, no autoescape)."""
    global _ENV
    if _ENV is None:
        _ENV = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined,
                                    keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
        _ENV.filters["php_string"] = common.php_string
        _ENV.filters["nginx_string"] = nginx_string
        _ENV.filters["apache_string"] = apache_string
        _ENV.filters["regex_escape"] = regex_escape
    tpl = _TEMPLATES.get(path)
    if tpl is None:
        with open(path, "r", encoding="utf-8") as handle:
            tpl = _ENV.from_string(handle.read())
        _TEMPLATES[path] = tpl
    return tpl


class Vars(object):
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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset((
        "plan", "server", "hosts", "part", "state", "templates", "site_dirs", "settings_mode",
        "allow_new_secrets", "return_secrets", "cron", "cron_state", "vhost_options", "lock_timeout",
        "sites_php", "report", "results", "cron_result", "certificates",
    ))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        result = self._run(result, task_vars)
        # Keep the registered result small: per-host tasks read it once per site host, and the
        # cost of each read grows with its size. Only failed sites (host -> message) and changed
        # sites (host -> list of changes) are returned; both are usually small.
        sites = result.pop("sites", None) or {}
        result["failed_sites"] = {h: r.get("msg", "") for h, r in sites.items() if r.get("failed")}
        result["changed_sites"] = {h: r.get("changes", []) for h, r in sites.items()
                                   if r.get("changed") and not r.get("failed")}
        secrets_ = {h: r["secrets"] for h, r in sites.items() if r.get("secrets") and not r.get("failed")}
        if secrets_:
            result["secrets"] = secrets_
        result.pop("failed_hosts", None)
        return result

    def _run(self, result, task_vars):
        args = self._task.args
        hostvars = task_vars["hostvars"]
        hosts = args.get("hosts")
        if hosts is None:
            hosts = task_vars.get("ansible_play_batch") or []
        hosts = [plain(h) for h in hosts]

        if args.get("report"):
            # Each host's result from the bulk calls' results: {host: {failed: msg}} or
            # {host: {changed: [...]}} (batched verify reports these through set_stats).
            report = {}
            cron_jobs = (args.get("cron_result") or {}).get("jobs") or {}
            for host in hosts:
                failures, changes = [], []
                for res in args.get("results") or []:
                    if not isinstance(res, dict):
                        continue
                    failed = res.get("failed_sites") or {}
                    if host in failed:
                        failures.append(plain(failed[host]))
                    changed = res.get("changed_sites") or {}
                    if host in changed:
                        changes.extend(plain(changed[host]) or [])
                if cron_jobs:
                    try:
                        key = self._site_values(host, Vars(hostvars, host))["uri"]
                    except Exception:  # noqa: BLE001 — a broken site has no cron job anyway
                        key = host
                    status = plain(cron_jobs.get(key))
                    if status in ("added", "updated", "removed", "purged"):
                        changes.append("cron job %s" % status)
                report[host] = {"failed": "; ".join(failures)} if failures else {"changed": changes}
            result.update(changed=False, report=report)
            return result

        if args.get("plan"):
            servers = []
            for host in hosts:
                key = server_key(hostvars, host)
                if key not in servers:
                    servers.append(key)
            result.update(changed=False, servers=servers)
            return result

        server = args.get("server")
        if not server:
            raise AnsibleActionFail("aegir_site_files needs 'server' (or plan: true)")
        part = args.get("part", "site")
        if part not in ("site", "vhost", "cron"):
            raise AnsibleActionFail("part must be 'site', 'vhost' or 'cron'")
        mine = [h for h in hosts if server_key(hostvars, h) == server]
        if not mine:
            result.update(changed=False, sites={}, server=server, cron_jobs=[], failed_hosts=[],
                          skipped=True)
            return result

        first = Vars(hostvars, mine[0])
        srv = self._server_values(first)
        result.update(server=server, script_user=srv["script_user"], aegir_root=srv["aegir_root"])
        if part == "cron":
            jobs, errors = [], {}
            for host in mine:
                try:
                    jobs.append(self._cron_job(host, Vars(hostvars, host), args))
                except (common.AegirValueError, KeyError, TypeError, ValueError) as exc:
                    errors[host] = {"failed": True, "changed": False, "msg": "%s: %s" % (host, exc)}
            result.update(changed=False, cron_jobs=jobs, sites=errors, failed_hosts=sorted(errors))
            return result
        sites = []
        for host in mine:
            v = Vars(hostvars, host)
            try:
                if part == "site":
                    sites.append(self._site_entry(host, v, srv, args))
                else:
                    sites.append(self._vhost_entry(host, v, srv, args))
            except (common.AegirValueError, KeyError, TypeError, ValueError) as exc:
                sites.append({"host": host, "uri": host, "error": "%s: %s" % (host, exc)})
            except Exception as exc:  # a template error must fail only its own site
                sites.append({"host": host, "uri": host, "error": "%s: %s: %s" % (host, type(exc).__name__, exc)})

        module_args = dict(
            sites=sites,
            owner=srv["script_user"],
            group=srv["web_group"],
            allow_new_secrets=bool(args.get("allow_new_secrets", False)),
            return_secrets=bool(args.get("return_secrets", False)),
            lock_file=os.path.join(srv["server_config_path"], ".aegir-site-files.lock"),
            lock_timeout=int(args.get("lock_timeout", 300)),
        )
        if part == "vhost":
            module_args.update(vhost_dir=srv["vhost_dir"], test_cmd=srv["test_cmd"], reload_cmd=srv["reload_cmd"])
        mod = self._execute_module(module_name="aegir_site_files", module_args=module_args,
                                   task_vars=task_vars)
        if mod.get("failed"):
            result.update(failed=True, msg=mod.get("msg", "aegir_site_files failed"), server=server,
                          sites={h: {"failed": True, "changed": False, "msg": mod.get("msg", "")} for h in mine})
            return result
        site_results = mod.get("sites", {})
        result.update(
            changed=bool(mod.get("changed")),
            sites=site_results,
            server=server,
            reloaded=mod.get("reloaded", False),
            failed_hosts=mod.get("failed_hosts", []),
        )
        if "diff" in mod:
            result["diff"] = mod["diff"]
        return result

    # ------------------------------------------------------------------------------------------
    def _server_values(self, v):
        """Per-server values, read from the first site host of the server."""
        server_name = v.get("aegir_server", v.host)
        aegir_root = common.check_path(v.get("aegir_root", "/var/aegir"), "aegir_root")
        config_path = common.check_path(v.get("aegir_config_path", aegir_root + "/config"), "aegir_config_path")
        server_config_path = common.check_path(
            v.get("aegir_server_config_path", "%s/%s" % (config_path, server_name)), "aegir_server_config_path")
        service = v.get(["aegir_vhost_service", "aegir_http_service"], "nginx")
        if service not in ("nginx", "apache"):
            raise AnsibleActionFail("aegir_http_service %r of %s is not nginx or apache" % (service, v.host))
        defaults = {
            "nginx": (["nginx", "-t"], ["nginx", "-s", "reload"]),
            "apache": (["apache2ctl", "-t"], ["apache2ctl", "graceful"]),
        }[service]
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
            "test_cmd": [str(x) for x in v.get(["aegir_vhost_test_cmd", "aegir_http_test_cmd"], defaults[0])],
            "reload_cmd": [str(x) for x in v.get(["aegir_vhost_reload_cmd", "aegir_http_reload_cmd"], defaults[1])],
            "script_user": v.get(["aegir_site_owner", "aegir_script_user"], "aegir"),
            "web_group": v.get(["aegir_site_group", "aegir_web_group"], "www-data"),
            "disabled_url": _check_url(v.get("aegir_vhost_disabled_url", "")),
        }

    def _site_values(self, host, v):
        """The validated per-site values used by both parts."""
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

    def _site_entry(self, host, v, srv, args):
        site = self._site_values(host, v)
        state = args.get("state", "present")
        if state not in ("present", "absent"):
            raise AnsibleActionFail("state must be present or absent for part=site")
        entry = {
            "host": host, "uri": site["uri"], "site_path": site["site_path"],
            "platform_root": site["platform_root"], "aliases": site["aliases"], "state": state,
            "manage_sites_php": bool(args.get("sites_php", True)),
        }
        if state == "absent":
            return entry
        db_name = common.check_db_ident(v.get(["aegir_site_db_name"], ""), "database name")
        db_user = common.check_db_ident(v.get(["aegir_site_db_user"], db_name), "database user")
        db_host = v.get(["aegir_site_db_host"], "127.0.0.1")
        if db_host != "localhost":
            common.check_hostname(db_host.lower(), "database host") if not _is_ip(db_host) else None
        db_port = common.check_port(v.get(["aegir_site_db_port"], 3306), "database port")
        profile = common.check_profile(v.get("aegir_site_profile", "standard"))
        language = common.check_language(v.get("aegir_site_language", "en"))
        cron_key = v.get("aegir_site_cron_key", "") or ""
        tokens = {
            "db_password": "AEGIRSECRETdbpassword" + secrets.token_hex(16),
            "hash_salt": "AEGIRSECREThashsalt" + secrets.token_hex(16),
        }
        context = {
            "site": dict(site, profile=profile, language=language, cron_key=cron_key,
                         client=v.get("aegir_site_client", "")),
            "db": {"name": db_name, "user": db_user, "host": db_host, "port": db_port,
                   "password": tokens["db_password"]},
            "hash_salt": tokens["hash_salt"],
            "server": srv,
        }
        templates = args.get("templates") or {}
        settings_tpl = templates.get("settings")
        if not settings_tpl:
            raise AnsibleActionFail("templates.settings is required for part=site")
        entry["dirs"] = [{"path": d["path"], "mode": str(d.get("mode", "02775")),
                          "group": d.get("group") or None} for d in (args.get("site_dirs") or [])]
        entry["files"] = [{
            "path": "settings.php",
            "content": template(settings_tpl).render(context),
            "mode": str(args.get("settings_mode", "0440")),
            "secret": True,
        }]
        entry["secrets"] = {
            "db_password": {"token": tokens["db_password"], "candidate": _password(24)},
            "hash_salt": {"token": tokens["hash_salt"], "candidate": _password(55)},
        }
        return entry

    def _cron_job(self, host, v, args, site=None, state="present"):
        """The aegir_cron job of one site (state from cron_state, or from the site's status)."""
        site = site or self._site_values(host, v)
        drush = common.check_path(v.get(["aegir_site_drush", "aegir_platform_drush"],
                                        site["platform_root"] + "/vendor/bin/drush"), "drush path")
        interval = int(v.get("aegir_site_cron_interval", 3600) or 0)
        cron_state = args.get("cron_state", "auto")
        if cron_state == "auto":
            cron_state = "present" if (state == "present" and site["enabled"]) else "absent"
        if interval <= 0:
            cron_state = "absent"
        return {
            "key": site["uri"],
            "interval": interval if cron_state == "present" else 0,
            "command": [drush, "--root=" + site["platform_root"], "--uri=" + site["uri"], "cron"],
            "state": cron_state,
        }

    def _vhost_entry(self, host, v, srv, args):
        site = self._site_values(host, v)
        state = args.get("state", "auto")
        if state == "auto":
            state = "enabled" if site["enabled"] else "disabled"
        if state not in ("enabled", "disabled", "absent"):
            raise AnsibleActionFail("state must be auto, enabled, disabled or absent for part=vhost")
        entry = {"host": host, "uri": site["uri"], "site_path": site["site_path"],
                 "platform_root": site["platform_root"], "aliases": site["aliases"],
                 "state": "present", "manage_sites_php": False}
        path = "%s/%s.conf" % (srv["vhost_dir"], site["uri"])
        if state == "absent":
            entry["vhost"] = {"path": path, "state": "absent"}
            return entry
        templates = (args.get("templates") or {}).get(srv["service"]) or {}
        tpl = templates.get(state)
        if not tpl:
            raise AnsibleActionFail("templates.%s.%s is required" % (srv["service"], state))
        opts = dict(args.get("vhost_options") or {})
        # HTTPS: the https blocks are written once the certificate check found the site's key
        # and certificate (aegir_vhost _bulk.yml passes its result as `certificates`).
        site["https"] = https.https_values(common, v.get, site, srv)
        cert = plain((args.get("certificates") or {}).get(host) or {})
        site["https"].update(ready=bool(cert.get("ready")), serial=str(cert.get("serial", "")))
        context = {"site": site, "server": srv, "options": opts, "state": state}
        entry["vhost"] = {"path": path, "state": "present", "content": template(tpl).render(context)}
        return entry


def _check_url(url):
    import re

    if url and not re.match(r"^https?://[A-Za-z0-9.:/_-]+$", url):
        raise common.AegirValueError("aegir_vhost_disabled_url %r is not a plain http(s) URL" % url)
    return url.rstrip("/")


def _is_ip(text):
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _password(length):
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))
