# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: render the site or vhost templates of many sites on the controller, write
them with one aegir_site_files module call per server.

Used by the aegir_site and aegir_vhost roles like this (see their tasks/):

  - aegir_site_files: {server: "{{ item }}", part: site, ...}
    run_once: true
    loop: "{{ aegir_site_hosts | aegir_site_servers(hostvars) }}"
    delegate_to: "{{ item }}"

part: site writes each site's directories, settings.php and sites.php entries; part: vhost its
vhost (then the web server's config test, rollback of broken vhosts, one reload). Which
servers hold the sites, the cron jobs and each site's part of the results are data shaping,
done by the aegir_sites filters (plugins/filter/aegir_sites.py).

Per-site and per-server values are read from each site host's inventory variables
(plugins/plugin_utils/aegir_sites.py). Templates are the role's own files, rendered with a
plain Jinja2 SandboxedEnvironment; inventory values only ever appear as context variables,
never as template source, so a uri such as "{{ lookup('pipe','id') }}" stays inert text (and
is refused by the validators anyway).
"""

from __future__ import annotations

import os
import re
import secrets
import string

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_https as https
from ansible_collections.aegir.hosting.plugins.plugin_utils import aegir_sites as sites

common = sites.common
plain = sites.plain
Vars = sites.Vars

PASSWORD_ALPHABET = string.ascii_letters + string.digits
PARTS = ("site", "vhost")


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
    return re.escape(str(value))


class _Templates:
    """The role template files, compiled once per process (sandboxed, no autoescape)."""

    def __init__(self):
        self.env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined,
                                        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["php_string"] = common.php_string
        self.env.filters["nginx_string"] = nginx_string
        self.env.filters["apache_string"] = apache_string
        self.env.filters["regex_escape"] = regex_escape
        self.compiled = {}

    def get(self, path):
        tpl = self.compiled.get(path)
        if tpl is None:
            with open(path, "r", encoding="utf-8") as handle:
                tpl = self.env.from_string(handle.read())
            self.compiled[path] = tpl
        return tpl


_TEMPLATES = _Templates()


def template(path):
    return _TEMPLATES.get(path)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset((
        "server", "hosts", "part", "state", "templates", "site_dirs", "settings_mode",
        "allow_new_secrets", "refuse_existing_site", "return_secrets", "vhost_options", "lock_timeout", "sites_php",
        "certificates",
    ))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        result = self._run(result, task_vars)
        # Keep the registered result small: per-host tasks read it once per site host, and the
        # cost of each read grows with its size. Only failed sites (host -> message) and changed
        # sites (host -> list of changes) are returned; both are usually small.
        site_results = result.pop("sites", None) or {}
        result["failed_sites"] = {h: r.get("msg", "") for h, r in site_results.items() if r.get("failed")}
        result["changed_sites"] = {h: r.get("changes", []) for h, r in site_results.items()
                                   if r.get("changed") and not r.get("failed")}
        found = {h: r["secrets"] for h, r in site_results.items() if r.get("secrets") and not r.get("failed")}
        if found:
            result["secrets"] = found
        result.pop("failed_hosts", None)
        return result

    def _run(self, result, task_vars):
        args = self._task.args
        hostvars = task_vars["hostvars"]
        hosts = args.get("hosts")
        if hosts is None:
            hosts = task_vars.get("ansible_play_batch") or []

        server = args.get("server")
        if not server:
            raise AnsibleActionFail("aegir_site_files needs 'server' (the inventory host to write on)")
        part = args.get("part", "site")
        if part not in PARTS:
            raise AnsibleActionFail("part must be 'site' or 'vhost'")
        mine = sites.by_server(hostvars, hosts, server)
        if not mine:
            result.update(changed=False, sites={}, server=server, failed_hosts=[], skipped=True)
            return result

        try:
            srv = sites.server_values(Vars(hostvars, mine[0]))
        except common.AegirValueError as exc:
            raise AnsibleActionFail("%s: %s" % (mine[0], exc)) from exc
        result.update(server=server, script_user=srv["script_user"], aegir_root=srv["aegir_root"])
        entries = []
        for host in mine:
            v = Vars(hostvars, host)
            try:
                if part == "site":
                    entries.append(self._site_entry(host, v, srv, args))
                else:
                    entries.append(self._vhost_entry(host, v, srv, args))
            except sites.SITE_ERRORS as exc:
                entries.append({"host": host, "uri": host, "error": "%s: %s" % (host, exc)})
            # A template error fails only its own site.
            except Exception as exc:  # pylint: disable=broad-exception-caught
                entries.append({"host": host, "uri": host, "error": "%s: %s: %s" % (host, type(exc).__name__, exc)})

        module_args = {
            "sites": entries,
            "owner": srv["script_user"],
            "group": srv["web_group"],
            "allow_new_secrets": bool(args.get("allow_new_secrets", False)),
            "refuse_existing_site": bool(args.get("refuse_existing_site", False)),
            "return_secrets": bool(args.get("return_secrets", False)),
            "lock_file": os.path.join(srv["server_config_path"], ".aegir-site-files.lock"),
            "lock_timeout": int(args.get("lock_timeout", 300)),
        }
        if part == "vhost":
            module_args.update(vhost_dir=srv["vhost_dir"], test_cmd=srv["test_cmd"], reload_cmd=srv["reload_cmd"])
        mod = self._execute_module(module_name="aegir_site_files", module_args=module_args,
                                   task_vars=task_vars)
        if mod.get("failed"):
            result.update(failed=True, msg=mod.get("msg", "aegir_site_files failed"), server=server,
                          sites={h: {"failed": True, "changed": False, "msg": mod.get("msg", "")} for h in mine})
            return result
        result.update(
            changed=bool(mod.get("changed")),
            sites=mod.get("sites", {}),
            server=server,
            reloaded=mod.get("reloaded", False),
            failed_hosts=mod.get("failed_hosts", []),
        )
        if "diff" in mod:
            result["diff"] = mod["diff"]
        return result

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _site_entry(host, v, srv, args):
        site = sites.site_values(host, v)
        state = args.get("state", "present")
        if state not in ("present", "absent"):
            raise AnsibleActionFail("state must be present or absent for part=site")
        entry = {
            "host": host, "uri": site["uri"], "site_path": site["site_path"],
            "platform_root": site["platform_root"], "aliases": site["aliases"], "state": state,
            "manage_sites_php": bool(args.get("sites_php", True)),
        }
        # ~/clients/<client>/<uri> -> the site directory (provision's client symlink).
        clients = common.check_path(v.get("aegir_clients_path", srv["aegir_root"] + "/clients"), "aegir_clients_path")
        client = v.get("aegir_site_client", "") or ""
        if client and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$", client):
            raise common.AegirValueError("client name %r is not usable as a directory name" % client[:80])
        entry["clients"] = {"path": clients, "client": client}
        if state == "absent":
            return entry
        db_name = common.check_db_ident(v.get(["aegir_site_db_name"], ""), "database name")
        db_user = common.check_db_ident(v.get(["aegir_site_db_user"], db_name), "database user")
        db_host = v.get(["aegir_site_db_host"], "127.0.0.1")
        if db_host != "localhost" and not sites.is_ip(db_host):
            common.check_hostname(db_host.lower(), "database host")
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
        # A site provision made keeps its credentials in drushrc.php and its vhost (file
        # vhost.d/<uri>): the module reads them there when settings.php has none of ours.
        entry["provision"] = {"db_name": db_name, "db_user": db_user,
                              "vhost": "%s/%s" % (srv["vhost_dir"], site["uri"])}
        entry["secrets"] = {
            "db_password": {"token": tokens["db_password"], "candidate": _password(24)},
            "hash_salt": {"token": tokens["hash_salt"], "candidate": _password(55)},
        }
        return entry

    @staticmethod
    def _vhost_entry(host, v, srv, args):
        site = sites.site_values(host, v)
        state = args.get("state", "auto")
        if state == "auto":
            state = "enabled" if site["enabled"] else "disabled"
        if state not in ("enabled", "disabled", "absent"):
            raise AnsibleActionFail("state must be auto, enabled, disabled or absent for part=vhost")
        entry = {"host": host, "uri": site["uri"], "site_path": site["site_path"],
                 "platform_root": site["platform_root"], "aliases": site["aliases"],
                 "state": "present", "manage_sites_php": False}
        path = "%s/%s.conf" % (srv["vhost_dir"], site["uri"])
        # provision's vhost of the site, replaced (removed when it names the site).
        legacy = "%s/%s" % (srv["vhost_dir"], site["uri"])
        if state == "absent":
            entry["vhost"] = {"path": path, "state": "absent", "legacy_path": legacy}
            return entry
        templates = (args.get("templates") or {}).get(srv["service"]) or {}
        tpl = templates.get(state)
        if not tpl:
            raise AnsibleActionFail("templates.%s.%s is required" % (srv["service"], state))
        opts = dict(args.get("vhost_options") or {})
        # HTTPS: the https blocks are written once the certificate check found the site's key
        # and certificate (aegir_vhost sites.yml passes its result as `certificates`).
        site["https"] = https.https_values(common, v.get, site, srv)
        cert = plain((args.get("certificates") or {}).get(host) or {})
        site["https"].update(ready=bool(cert.get("ready")), serial=str(cert.get("serial", "")))
        context = {"site": site, "server": srv, "options": opts, "state": state}
        entry["vhost"] = {"path": path, "state": "present", "content": template(tpl).render(context),
                          "legacy_path": legacy}
        return entry


def _password(length):
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _i in range(length))
