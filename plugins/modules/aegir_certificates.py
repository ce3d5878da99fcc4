#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check (or remove) the https certificates of many Aegir sites of one server in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aegir_certificates
short_description: Check the certificates of many sites of one server in one call
description:
  - Normally called through the M(aegir.hosting.aegir_certificates) action plugin, which lists the https sites
    of one server from their inventory variables. One call reads every site's certificate, so
    re-verifying thousands of https sites costs one round trip per server.
  - For each site it reads the certificate file (expiry, names, serial, issuer) and decides
    whether it must be issued (no key or certificate), renewed (expires within O(renew_days),
    its names differ from the site's names, or it comes from another source), or is fine.
  - Operator-provided certificates (source C(provided)) are never issued or renewed; a missing
    one fails that site only.
  - With O(state=present) it creates each site's certificate directory (mode 0700, with a marker
    file naming the site) and the ACME challenge directories (0755).
  - With O(state=absent) it removes the certificate directory of each listed site, only when its
    marker names that site (a directory it did not create is never removed).
  - Needs the Python C(cryptography) library on the managed node (as community.crypto does).
author:
  - aegir-ansible contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  sites:
    description: One dict per site (C(host), C(uri), C(names), C(source), C(dir), C(key_file),
      C(cert_file), C(challenge_dir)).
    type: list
    elements: dict
    required: true
  renew_days:
    description: Renew a certificate that expires within this many days.
    type: int
    default: 30
  state:
    description: C(present) checks, C(absent) removes the sites' generated certificates.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details: With O(state=absent), the certificate directories that are (or would be) removed.
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
# Through the action plugin of the same name, as the aegir_https role calls it: one call per
# server checks the certificates of all the https sites on it.
- name: Check the https certificates of each server's sites
  aegir.hosting.aegir_certificates:
    server: "{{ item }}"
    hosts: "{{ groups['aegir_sites'] }}"
    state: present
    renew_days: 30
  run_once: true
  delegate_to: "{{ item }}"
  loop: "{{ groups['aegir_servers'] }}"
  become: true
  register: certificates
"""

RETURN = r"""
sites:
  description: Per host C(ready), C(action) (ok, issue, renew, missing, removed), C(serial),
    C(not_after) (unix time), C(names), C(msg).
  type: dict
  returned: always
"""

import datetime
import os
import shutil

from ansible.module_utils.basic import AnsibleModule

MARKER = ".aegir-certificate"


def _read_cert(path):
    """(serial hex, not_after unix time, names, self-signed) of a PEM certificate file."""
    from cryptography import x509

    with open(path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    not_after = getattr(cert, "not_valid_after_utc", None)
    if not_after is None:
        not_after = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return "%x" % cert.serial_number, int(not_after.timestamp()), sorted(names), cert.issuer == cert.subject


def _owned(directory, uri):
    try:
        with open(os.path.join(directory, MARKER)) as handle:
            return handle.read().strip() == uri
    except OSError:
        return False


def check_site(module, site, renew_days, now):
    source = site["source"]
    res = {"ready": False, "action": "ok", "serial": "", "not_after": 0, "names": [], "changed": False}
    have_key = os.path.isfile(site["key_file"])
    have_cert = os.path.isfile(site["cert_file"])
    if have_cert:
        try:
            serial, not_after, names, self_signed = _read_cert(site["cert_file"])
        except Exception as exc:  # noqa: BLE001 — an unreadable certificate is re-issued
            res["msg"] = "unreadable certificate %s: %s" % (site["cert_file"], exc)
            have_cert = False
        else:
            res.update(serial=serial, not_after=not_after, names=names)
    res["ready"] = bool(have_key and have_cert)
    if source == "provided":
        if not res["ready"]:
            res.update(action="missing", msg="the provided key and certificate %s, %s are missing"
                       % (site["key_file"], site["cert_file"]))
        return res
    if not res["ready"]:
        res["action"] = "issue"
    elif sorted(set(site["names"])) != res["names"]:
        res["action"] = "renew"
        res["msg"] = "names changed"
    elif res["not_after"] - now < renew_days * 86400:
        res["action"] = "renew"
        res["msg"] = "expires within %d days" % renew_days
    elif self_signed != (source == "self_signed"):
        res["action"] = "renew"
        res["msg"] = "certificate source changed to %s" % source
    if not module.check_mode:
        if not os.path.isdir(site["dir"]):
            os.makedirs(site["dir"], 0o700)
            res["changed"] = True
        os.chmod(site["dir"], 0o700)
        marker = os.path.join(site["dir"], MARKER)
        if not os.path.exists(marker):
            with open(marker, "w") as handle:
                handle.write(site["uri"] + "\n")
        if source == "letsencrypt" and not os.path.isdir(site["challenge_dir"]):
            os.makedirs(site["challenge_dir"], 0o755)
            for d in (site["challenge_dir"], os.path.dirname(site["challenge_dir"])):
                os.chmod(d, 0o755)
    return res


def remove_site(module, site):
    directory = site["dir"]
    if not os.path.isdir(directory):
        return {"ready": False, "action": "ok", "changed": False}
    if not _owned(directory, site["uri"]):
        return {"ready": False, "action": "ok", "changed": False,
                "msg": "kept %s: not marked as the certificate of %s" % (directory, site["uri"])}
    if not module.check_mode:
        shutil.rmtree(directory)
    return {"ready": False, "action": "removed", "changed": True,
            "diff": {"before_header": directory, "before": "certificate of %s\n" % site["uri"], "after": ""}}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sites=dict(type="list", elements="dict", required=True),
            renew_days=dict(type="int", default=30),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    try:
        import cryptography  # noqa: F401
    except ImportError:
        module.fail_json(msg="aegir_certificates needs the Python cryptography library on the server "
                             "(Debian: python3-cryptography)")
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    results = {}
    for site in module.params["sites"]:
        try:
            if module.params["state"] == "absent":
                results[site["host"]] = remove_site(module, site)
            else:
                results[site["host"]] = check_site(module, site, module.params["renew_days"], now)
        except (OSError, KeyError, ValueError) as exc:
            results[site["host"]] = {"ready": False, "action": "failed", "changed": False,
                                     "msg": "%s: %s" % (site.get("uri"), exc)}
    diffs = [r.pop("diff") for r in results.values() if "diff" in r]
    extra = {"diff": diffs} if diffs and module._diff else {}
    module.exit_json(changed=any(r.get("changed") for r in results.values()), sites=results, **extra)


if __name__ == "__main__":
    main()
