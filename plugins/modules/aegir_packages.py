#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report a platform's (and its sites') install profiles, modules and themes in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aegir_packages
short_description: Read the install profiles, modules and themes of a Drupal platform and of its sites
description:
  - Scans the codebase at O(root) once, the way Aegir's provision did on verify (C(.info.yml)
    files for Drupal 8+, C(.info)/C(.module)/C(.profile) files for Drupal 7, the C(profiles/)
    and C(core/profiles/) directories, versions and schema versions), and returns the data in
    the shape hostmaster's C(hosting_package_sync()) consumes; the controller stores it with
    C(aegir_ansible.packages).
  - One call covers the platform and any number of its sites (O(sites)), so a platform verify
    or a batch of site verifies costs one round trip, not one per package.
  - Read-only; never changes anything (C(changed) is always false).
options:
  root:
    description:
      - The platform's Drupal root. Without it only O(sites) are read (each with its own
        C(root)).
    type: path
  sites:
    description:
      - Sites to report packages for (of any platforms of the node). Each dict has C(uri),
        C(key) (the name the results are keyed by, default the uri),
        C(site_dir) (directory under C(sites/), default the uri), C(root) (the site's
        platform root, default O(root)), C(profile), and optionally C(enabled), the names
        of the site's enabled modules and themes. Without C(enabled) but with C(drush) (the
        platform's drush), they are read with C(drush pm:list --status=enabled
        --format=json); with neither every module and theme is reported with status 0
        except the site's profile. With C(read_site=true) the site's database name and
        install profile (C(drush status)), language (its C(drushrc.php)) and the aliases
        C(sites/sites.php) maps to its directory are returned in RV(site_info) (import).
        With C(read_packages=false) its packages are not read (for import, as drush cannot
        bootstrap a site provision made before it is taken over; its verify reads them).
      - A site whose drush fails is reported in RV(failed_sites) only; the others are read.
    type: list
    elements: dict
    default: []
author:
  - aegir-ansible contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: It changes nothing, so there is never a diff to show.
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Packages of the platform and two of its sites
  aegir.hosting.aegir_packages:
    root: /var/aegir/platforms/d10
    sites:
      - {uri: example.com, profile: standard, enabled: [node, olivero]}
      - {uri: other.example.com, profile: minimal}
  register: packages
"""

RETURN = r"""
version:
  description: The Drupal core version of the platform.
  type: str
  returned: always
profiles:
  description: Short names of the install profiles found.
  type: list
  elements: str
  returned: always
sites_found:
  description:
    - Site directories of O(root) with a settings.php (not C(default) or C(all)), that are
      real directories inside the platform's C(sites/) (no symbolic link, the settings.php
      a regular file), the candidates for import.
  type: list
  elements: str
  returned: always
packages:
  description: The platform's packages (keys C(base), C(sites-all), C(profiles)).
  type: dict
  returned: always
site_packages:
  description: Per requested site (its key), its packages (keys C(platforms), C(profiles), C(modules), C(themes)).
  type: dict
  returned: always
site_info:
  description: Per site read with C(read_site), {db_name, profile, language, aliases}.
  type: dict
  returned: always
failed_sites:
  description: Per site uri whose packages could not be read, why.
  type: dict
  returned: always
"""

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

try:  # installed as the aegir.hosting collection
    from ansible_collections.aegir.hosting.plugins.module_utils import aegir_packages as pk
except ImportError:  # from this repository (ansible.cfg: module_utils = plugins/module_utils)
    from ansible.module_utils import aegir_packages as pk

# $sites['alias'] = 'dir'; (sites/sites.php) and $options['language'] = 'xx'; (drushrc.php):
# read as data, never executed.
_SITES_PHP = re.compile(r"""^\s*\$sites\s*\[\s*(['"])([^'"]+)\1\s*\]\s*=\s*(['"])([^'"]+)\3\s*;""", re.M)
_DRUSHRC_LANGUAGE = re.compile(r"""\$options\s*\[\s*['"]language['"]\s*\]\s*=\s*['"]([A-Za-z0-9_-]{1,12})['"]\s*;""")
_NAME = re.compile(r"^[a-z0-9_]+$")


def _read(path, limit=1 << 20):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return ""


def sites_php_aliases(root):
    """{site dir: [aliases]} of the platform's sites/sites.php (aliases to real dirs only)."""
    out = {}
    for _q, alias, _q2, target in _SITES_PHP.findall(_read(os.path.join(root, "sites", "sites.php"))):
        alias, target = alias.strip().lower(), target.strip()
        if alias != target.lower() and "/" not in target and target not in (".", ".."):
            out.setdefault(target, [])
            if alias not in out[target]:
                out[target].append(alias)
    return out


def own_site_dirs(root, names):
    """The site directories that belong to the platform at root: sites/<name> a real
    directory inside <root>/sites (no symbolic link on the way), its settings.php a regular
    file. 'all' and 'default' are never sites."""
    sites = os.path.realpath(os.path.join(root, "sites"))
    out = []
    for name in names:
        if name in ("all", "default") or "/" in name or name.startswith("."):
            continue
        path = os.path.join(root, "sites", name)
        settings = os.path.join(path, "settings.php")
        if os.path.islink(path) or os.path.islink(settings) or not os.path.isfile(settings):
            continue
        if os.path.dirname(os.path.realpath(path)) != sites:
            continue
        out.append(name)
    return out


def _drush_json(module, drush, root, uri, args):
    argv = [drush, "--root=" + root, "--uri=" + uri] + args
    rc, out, err = module.run_command(argv, cwd=root)
    if rc != 0:
        raise pk.PackageError("drush %s failed: %s" % (args[0], (err or out).strip().splitlines()[-1:] or rc))
    start = out.find("{")
    try:
        data = json.loads(out[start:]) if start >= 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise pk.PackageError("drush %s did not print a JSON object" % args[0])
    return data


def enabled_by_drush(module, drush, root, uri):
    data = _drush_json(module, drush, root, uri, ["pm:list", "--status=enabled", "--format=json"])
    return sorted(name for name, row in data.items()
                  if _NAME.match(str(name)) and (not isinstance(row, dict)
                                                 or str(row.get("status", "enabled")).lower() == "enabled"))


def _drushrc_option(text, name):
    match = re.search(r"""\$options\s*\[\s*['"]%s['"]\s*\]\s*=\s*['"]([^'"\\]{1,255})['"]\s*;""" % re.escape(name), text)
    return match.group(1) if match else ""


def site_info(module, site, root, site_dir, aliases):
    """What import needs to know of a site, read from its drush (status) and, where that
    says nothing (provision's cloaked settings.php has no credentials outside the web
    server), from the drushrc.php provision wrote next to it."""
    drush, status, why = site.get("drush"), {}, ""
    if drush:
        try:
            status = _drush_json(module, str(drush), root, site["uri"], ["status", "--format=json"])
        except pk.PackageError as exc:
            why = str(exc)
    drushrc = _read(os.path.join(root, "sites", site_dir, "drushrc.php"))
    language = _DRUSHRC_LANGUAGE.search(drushrc)
    info = {"db_name": str(status.get("db-name") or "") or _drushrc_option(drushrc, "db_name"),
            "profile": str(status.get("install-profile") or "") or _drushrc_option(drushrc, "profile"),
            "language": language.group(1) if language else "",
            "aliases": sorted(a for a in aliases.get(site_dir, []) if a != site["uri"])}
    if not info["db_name"]:
        raise pk.PackageError("its database name is unknown (%s)" % (why or "drush status reports no db-name"))
    return info


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path"},
            "sites": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    root = module.params["root"]
    scans, aliases = {}, {}
    result = {"version": "", "profiles": [], "sites_found": [], "packages": {}, "site_packages": {},
              "site_info": {}, "failed_sites": {}}

    def scan(path):
        real = os.path.realpath(path)
        if real not in scans:
            scans[real] = pk.scan_platform(real)
        return real, scans[real]

    try:
        if root:
            real, platform = scan(root)
            result.update(version=platform["version"], profiles=platform["profiles"],
                          sites_found=own_site_dirs(real, platform["sites"]), packages=platform["packages"])
    except (pk.PackageError, OSError) as exc:
        module.fail_json(msg=str(exc))
    for site in module.params["sites"]:
        uri = str(site.get("uri") or "")
        if not uri:
            module.fail_json(msg="every site needs a uri")
        enabled = site.get("enabled")
        if enabled is not None and not isinstance(enabled, list):
            module.fail_json(msg="site %s: enabled must be a list of names" % uri)
        site_root = str(site.get("root") or root or "")
        if not site_root:
            module.fail_json(msg="site %s: no root (set root, or the site's root)" % uri)
        site_dir = str(site.get("site_dir") or uri)
        key = str(site.get("key") or uri)
        try:
            real, platform = scan(site_root)
            if site.get("read_site"):
                if real not in aliases:
                    aliases[real] = sites_php_aliases(real)
                if site_dir not in own_site_dirs(real, [site_dir]):
                    raise pk.PackageError("sites/%s is not a site directory of %s" % (site_dir, real))
                result["site_info"][key] = site_info(module, site, real, site_dir, aliases[real])
            if site.get("read_packages", True) is False:
                continue
            if enabled is None and site.get("drush"):
                enabled = enabled_by_drush(module, str(site["drush"]), real, uri)
            profile = str(site.get("profile") or "") or result["site_info"].get(key, {}).get("profile", "")
            result["site_packages"][key] = pk.scan_site(real, site_dir, profile, enabled, platform)
        except (pk.PackageError, OSError) as exc:
            result["failed_sites"][key] = "%s: %s" % (uri, exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
