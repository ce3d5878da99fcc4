#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run platform drush commands for many sites of one server in one module call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aegir_drush
short_description: Run drush commands for many Aegir sites of one server in one call
description:
  - For each site, runs its platform's own drush with C(--root) and C(--uri) and the given
    commands, one after the other (argv, never a shell), and reports each site on its own.
  - A site fails alone when its platform has no executable drush, or when a command exits
    non-zero (for example an unknown command); the other sites still run.
  - "The result C(report) is C({<key>: {failed: msg} | {changed: [...]} | {}}), each with the
    C(output) drush printed, the shape the aegir queue runner reads from C(set_stats) for each
    task of a batch."
  - In check mode nothing runs; each site reports what would run.
version_added: "0.1.0"
author:
  - aegir-ansible contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  sites:
    description:
      - The sites, each with C(key) (the inventory host, used in the report), C(drush) (the
        absolute path of the platform's drush), C(root) (the platform root), C(uri), and
        C(commands), a list of argument lists (each one drush command with its arguments);
        optionally C(unchanged), a regular expression (a site whose every command printed a
        matching line reports no change, for example C(No pending updates)), and C(error), a
        message that fails the site without running anything (a bad task argument).
    type: list
    elements: dict
    required: true
  timeout:
    description:
      - Seconds one drush command may run before it is stopped and the site fails.
    type: int
    default: 3600
attributes:
  check_mode:
    support: full
    details: Nothing runs; each site reports the commands that would run.
  diff_mode:
    support: partial
    details: The diff of a site is the list of drush commands run (or that would run), not a file change.
  platform:
    support: full
    platforms: posix
requirements:
  - C(timeout) from coreutils on the managed node (it bounds each drush command).
notes:
  - Values are data, never code; each command is an argv, never a shell string.
"""

EXAMPLES = r"""
- name: Flush the caches of two sites
  aegir_drush:
    sites:
      - {key: a.example.com, drush: /var/aegir/platforms/d10/vendor/bin/drush,
         root: /var/aegir/platforms/d10, uri: a.example.com, commands: [[cache-rebuild]]}
      - {key: b.example.com, drush: /var/aegir/platforms/d10/vendor/bin/drush,
         root: /var/aegir/platforms/d10, uri: b.example.com, commands: [[cache-rebuild]]}
"""

RETURN = r"""
report:
  description:
    - "Per site key, C({failed: msg}), C({changed: [lines]}) or C({}), each with C(output), the
      last lines drush printed (stdout and stderr) per command."
  type: dict
  returned: always
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

MAX_LINES = 40
MAX_LINE = 500
# Exit codes of coreutils timeout(1): the command ran out of time (TERM), or had to be killed.
TIMED_OUT = (124, 137)
KILL_AFTER = 10


def _lines(text):
    out = [line.rstrip()[:MAX_LINE] for line in (text or "").splitlines() if line.strip()]
    return out[-MAX_LINES:]


def _run_site(module, site, timeout, timeout_bin):
    """(report entry, output lines) of one site."""
    check_mode = module.check_mode
    if site.get("error"):
        return {"failed": str(site["error"])}, []
    unchanged = re.compile(site["unchanged"]) if site.get("unchanged") else None
    drush, root, uri = site.get("drush") or "", site.get("root") or "", site.get("uri") or ""
    commands = site.get("commands") or []
    if not os.path.isabs(drush) or not os.path.isfile(drush) or not os.access(drush, os.X_OK):
        return {"failed": "The platform %s has no drush at %s (or it is not executable): this task "
                          "needs the platform's own drush (composer require drush/drush)."
                          % (root, drush)}, []
    if not all(isinstance(c, list) and c for c in commands):
        return {"failed": "A drush command must be a non-empty list of arguments"}, []
    if not commands:
        return {}, ["nothing to run"]
    if check_mode:
        return {}, ["would run: drush %s" % " ".join(str(a) for a in c) for c in commands]
    output, quiet = [], True
    for command in commands:
        argv = [drush, "--root=" + root, "--uri=" + uri] + [str(a) for a in command]
        label = "drush " + " ".join(str(a) for a in command)
        # timeout(1) bounds the run and stops drush's whole process group; values are data:
        # no ~ or $VAR expansion, and an error starting drush fails this site only.
        try:
            rc, stdout, stderr = module.run_command(
                [timeout_bin, "--kill-after=%d" % KILL_AFTER, str(timeout)] + argv,
                cwd=root if os.path.isdir(root) else None,
                expand_user_and_vars=False, handle_exceptions=False)
        except OSError as exc:
            return {"failed": "%s could not start: %s" % (label, exc)}, output
        if rc in TIMED_OUT:
            return {"failed": "%s did not finish within %d seconds" % (label, timeout)}, output
        lines = _lines(stdout) + _lines(stderr)
        output.append("%s:" % label)
        output.extend("  " + line for line in lines)
        if rc != 0:
            why = "; ".join(_lines(stderr) or _lines(stdout) or ["no output"])
            return {"failed": "%s failed (exit code %d): %s" % (label, rc, why[:1000])}, output
        if not (unchanged and any(unchanged.search(line) for line in lines)):
            quiet = False
    if quiet:
        return {}, output
    return {"changed": [line.strip() for line in output if not line.endswith(":")][-5:] or ["drush ran"]}, output


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sites=dict(type="list", elements="dict", required=True),
            timeout=dict(type="int", default=3600),
        ),
        supports_check_mode=True,
    )
    report, diffs = {}, []
    timeout_bin = module.get_bin_path("timeout", required=True)
    for site in module.params["sites"]:
        key = str(site.get("key") or site.get("uri") or "")
        entry, output = _run_site(module, site, module.params["timeout"], timeout_bin)
        entry["output"] = output
        report[key] = entry
        if module._diff and site.get("commands"):
            diffs.append({"before_header": key, "after_header": key, "before": "",
                          "after": "".join("drush %s\n" % " ".join(str(a) for a in c) for c in site["commands"])})
    changed = any("changed" in r for r in report.values())
    module.exit_json(changed=changed, report=report, **({"diff": diffs} if diffs else {}))


if __name__ == "__main__":
    main()
