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
    description: The platform's Drupal root.
    type: path
    required: true
  sites:
    description:
      - Sites of this platform to report packages for. Each dict has C(uri), C(site_dir)
        (directory under C(sites/), default the uri), C(profile), and optionally C(enabled),
        the names of the site's enabled modules and themes (e.g. from C(drush pm:list
        --status=enabled)); without it every module and theme is reported with status 0
        except the site's profile.
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
  description: Site directories with a settings.php (not C(default), not symlinks).
  type: list
  elements: str
  returned: always
packages:
  description: The platform's packages (keys C(base), C(sites-all), C(profiles)).
  type: dict
  returned: always
site_packages:
  description: Per requested site uri, its packages (keys C(platforms), C(profiles), C(modules), C(themes)).
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule

try:  # installed as the aegir.hosting collection
    from ansible_collections.aegir.hosting.plugins.module_utils import aegir_packages as pk
except ImportError:  # from this repository (ansible.cfg: module_utils = plugins/module_utils)
    from ansible.module_utils import aegir_packages as pk


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "sites": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    root = module.params["root"]
    try:
        scan = pk.scan_platform(root)
        site_packages = {}
        for site in module.params["sites"]:
            uri = str(site.get("uri") or "")
            if not uri:
                module.fail_json(msg="every site needs a uri")
            enabled = site.get("enabled")
            if enabled is not None and not isinstance(enabled, list):
                module.fail_json(msg=f"site {uri}: enabled must be a list of names")
            site_packages[uri] = pk.scan_site(root, str(site.get("site_dir") or uri),
                                              str(site.get("profile") or ""), enabled, scan)
    except (pk.PackageError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, version=scan["version"], profiles=scan["profiles"],
                     sites_found=scan["sites"], packages=scan["packages"],
                     site_packages=site_packages)


if __name__ == "__main__":
    main()
