# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: list the https sites of one server from their inventory variables and check
(or remove) all their certificates with one aegir_certificates module call.

Used by roles/aegir_https (tasks/check.yml) like aegir_site_files: run_once, looped over the
servers of the play, delegated to each. The result is kept small for the per-host tasks that
read it: `ready` (host -> {ready, serial}) for the vhost call, `due` (only the sites whose
certificate must be issued or renewed, with what the issuing tasks need), `failed_sites` and
`changed_sites` in the shape aegir_site's result task reads.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_https as https
from ansible_collections.aegir.hosting.plugins.plugin_utils import aegir_sites as sites

common = sites.common
plain = sites.plain


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("server", "hosts", "state", "renew_days", "acme_directory", "acme_email"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        hostvars = task_vars["hostvars"]
        server = args.get("server")
        if not server:
            raise AnsibleActionFail("aegir_certificates needs 'server'")
        state = args.get("state", "present")
        if state not in ("present", "absent"):
            raise AnsibleActionFail("state must be present or absent")
        hosts = [plain(h) for h in (args.get("hosts") or [])]
        mine = sites.by_server(hostvars, hosts, server)
        result.update(changed=False, ready={}, due={}, accounts=[], failed_sites={}, changed_sites={},
                      server=server)
        if not mine:
            result["skipped"] = True
            return result
        try:  # the same values and validation as the vhosts
            srv = sites.server_values(sites.Vars(hostvars, mine[0]))
        except common.AegirValueError as exc:
            raise AnsibleActionFail("%s: %s" % (mine[0], exc)) from exc
        entries = {}
        for host in mine:
            v = sites.Vars(hostvars, host)
            try:
                site = sites.site_values(host, v)
                h = https.https_values(common, v.get, site, srv)
            except sites.SITE_ERRORS as exc:
                if state == "present" and (v.get("aegir_site_https", "disabled") or "disabled") != "disabled":
                    result["failed_sites"][host] = "%s: %s" % (host, exc)
                continue
            if state == "present" and not h["on"]:
                continue
            if state == "absent" and h["source"] == "provided":
                continue  # an operator's certificate is never removed
            entries[host] = dict(h, host=host, uri=site["uri"], names=site["names"], server=server,
                                 directory=v.get("aegir_https_acme_directory", args.get("acme_directory", "")),
                                 email=v.get("aegir_https_acme_email", args.get("acme_email", "")) or "")
        if not entries:
            return result
        mod = self._execute_module(
            module_name="aegir_certificates",
            module_args=dict(
                state=state,
                renew_days=int(args.get("renew_days", 30)),
                sites=[{k: e[k] for k in ("host", "uri", "names", "source", "dir", "key_file",
                                          "cert_file", "challenge_dir")} for e in entries.values()],
            ),
            task_vars=task_vars)
        if mod.get("failed"):
            msg = mod.get("msg", "aegir_certificates failed")
            result.update(failed=True, msg=msg, failed_sites={h: msg for h in entries})
            return result
        result["changed"] = bool(mod.get("changed"))
        for host, res in (mod.get("sites") or {}).items():
            e = entries[host]
            result["ready"][host] = {"ready": bool(res.get("ready")), "serial": res.get("serial", "")}
            action = res.get("action")
            if action in ("missing", "failed"):
                result["failed_sites"][host] = "%s: %s" % (host, res.get("msg", action))
            elif action in ("issue", "renew"):
                result["due"][host] = {k: e[k] for k in (
                    "uri", "names", "source", "key_file", "cert_file", "chain_file", "challenge_dir",
                    "account_key", "server", "directory")}
                result["due"][host].update(action=action, reason=res.get("msg", ""))
                if e["source"] == "letsencrypt":
                    # One ACME account (key) per server and directory.
                    account = {k: e[k] for k in ("server", "account_key", "directory", "email")}
                    account["id"] = "%s %s" % (server, e["directory"])
                    result["due"][host]["account"] = account["id"]
                    if account["id"] not in [a["id"] for a in result["accounts"]]:
                        result["accounts"].append(account)
            elif action == "removed":
                result["changed_sites"][host] = ["certificate removed"]
        return result
