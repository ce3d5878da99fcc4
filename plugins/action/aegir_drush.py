# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: the drush commands of many sites' tasks, run with one aegir_drush module
call on the host the task runs on (a batch's server, or the site itself).

  - aegir_drush:
      hosts: "{{ aegir_site_hosts }}"      # site inventory hosts
      commands: "{{ aegir_site_drush_commands }}"   # task type -> [argv, ...]
      unchanged: "{{ aegir_site_drush_unchanged }}" # task type -> regex

Each site's task type and arguments are its own inventory variables (aegir_task_type,
aegir_task_args: the queue runner sets them per site host); its platform's drush, root and
uri are the inventory contract (aegir_site_drush, aegir_platform_drush, aegir_platform_root,
aegir_site_uri). Values from the task arguments only become drush arguments after
validation (feature names), never shell.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_FEATURE = re.compile(r"^[a-z][a-z0-9_]{0,127}$")
_TRUE = ("1", "true", "yes", "on")

from ansible_collections.aegir.hosting.plugins.plugin_utils import aegir_sites as _sites

Vars = _sites.Vars
plain = _sites.plain


def flag(args, name, default=False):
    """A checkbox argument as hostmaster stores it ("1"/"0"), absent = default."""
    value = args.get(name)
    if value is None or value == "":
        return default
    return str(value).strip().lower() in _TRUE


def feature_commands(task_type, args):
    """hosting_tasks_extra's features tasks: the named features (space or comma separated) or
    all of them; force_revert adds --force; features_update_all's revert reverts afterwards."""
    names = [n for n in re.split(r"[\s,]+", str(args.get("features") or "")) if n]
    bad = [n for n in names if not _FEATURE.match(n)]
    if bad:
        raise ValueError("not a feature (module) name: %s" % ", ".join(bad)[:200])
    if task_type == "features_revert_all":
        cmd = (["features-revert"] + names) if names else ["features-revert-all"]
        return [cmd + ["--yes"] + (["--force"] if flag(args, "force_revert") else [])]
    cmds = [((["features-update"] + names) if names else ["features-update-all"]) + ["--yes"]]
    if flag(args, "revert"):
        cmds.append(((["features-revert"] + names) if names else ["features-revert-all"]) + ["--yes", "--force"])
    return cmds


def sync_commands(args):
    """hosting_sync's steps after the copy, in provision-sync's order (each a form checkbox,
    all on by default there): registry-rebuild, updatedb, features-revert-all, cache-clear."""
    cmds = []
    if flag(args, "registry-rebuild"):
        cmds.append(["registry-rebuild"])
    if flag(args, "updatedb"):
        cmds.append(["updatedb", "--yes"])
    if flag(args, "features-revert-all") or flag(args, "features_revert_all"):
        cmds.append(["features-revert-all", "--yes"])
    if flag(args, "cache-clear"):
        cmds.append(["cache-rebuild"])
    return cmds


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("hosts", "commands", "unchanged", "task_type", "timeout"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        hostvars = task_vars["hostvars"]
        commands = plain(args.get("commands") or {})
        unchanged = plain(args.get("unchanged") or {})
        sites = []
        for host in [plain(h) for h in args.get("hosts") or []]:
            if host not in hostvars:
                raise AnsibleActionFail("aegir_drush: %s is not in the inventory" % host)
            v = Vars(hostvars, host)
            task_type = v.get("aegir_task_type", plain(args.get("task_type") or ""))
            root = v.get("aegir_platform_root", "")
            platform = v.get("aegir_context_type", "site") == "platform"
            entry = {"key": host, "root": root,
                     "uri": "default" if platform else v.get("aegir_site_uri", host),
                     "drush": v.get(["aegir_site_drush", "aegir_platform_drush"],
                                    root + "/vendor/bin/drush"),
                     "unchanged": unchanged.get(task_type, "")}
            try:
                if task_type in ("features_revert_all", "features_update_all"):
                    entry["commands"] = feature_commands(task_type, v.get("aegir_task_args", {}) or {})
                elif task_type == "sync":
                    entry["commands"] = sync_commands(v.get("aegir_task_args", {}) or {})
                elif task_type in commands:
                    entry["commands"] = commands[task_type]
                    if task_type == "update" and flag(v.get("aegir_task_args", {}) or {}, "entity_updates"):
                        entry["commands"] = [c + ["--entity-updates"] for c in entry["commands"]]
                else:
                    raise ValueError("no drush command is defined for the task type %r" % task_type)
            except ValueError as exc:
                entry["error"] = "Bad task: %s" % exc
            sites.append(entry)
        mod = self._execute_module(module_name="aegir_drush",
                                   module_args={"sites": sites, "timeout": int(args.get("timeout", 3600))},
                                   task_vars=task_vars)
        result.update(mod)
        return result
