# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTTPS values of one site, shared by the aegir_site_files (vhosts) and aegir_certificates
(certificate check) action plugins, so both agree on where a site's key and certificate live.

Loaded by path on the controller next to aegir_site_common (see the action plugins); pure
Python. Every value is validated: inventory values are data, never config or template code.
"""

from __future__ import annotations

import hashlib
import re

HTTPS_STATES = ("disabled", "enabled", "required")
SOURCES = ("letsencrypt", "self_signed", "provided")
# hosting_ssl_cert.ssl_key names a directory under config/ssl.d/.
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def https_values(common, get, site, srv):
    """The https dict of a site (state, port, certificate source and file paths).

    get(names, default) reads the site host's inventory variables; site and srv are the
    validated values of aegir_site_files (_site_values / _server_values).
    """
    state = get("aegir_site_https", "disabled") or "disabled"
    if state not in HTTPS_STATES:
        raise common.AegirValueError("aegir_site_https %r is not one of %s" % (state, ", ".join(HTTPS_STATES)))
    key_name = get("aegir_site_https_key", "") or ""
    source = "provided" if key_name else (get(["aegir_https_certificate_service"], "") or "self_signed")
    if source not in SOURCES:
        raise common.AegirValueError("aegir_https_certificate_service %r is not one of %s" % (source, ", ".join(SOURCES)))
    if key_name:
        if not _KEY_NAME.match(str(key_name)) or ".." in str(key_name):
            raise common.AegirValueError("aegir_site_https_key %r is not a plain directory name" % key_name)
        cert_dir = "%s/ssl.d/%s" % (srv["config_path"], key_name)
    else:
        cert_dir = "%s/ssl.d/%s" % (srv["server_config_path"], site["uri"])
    letsencrypt_dir = "%s/letsencrypt.d" % srv["server_config_path"]
    directory = get("aegir_https_acme_directory", "") or ""
    # One account key per server and ACME directory (production and staging differ).
    account_key = letsencrypt_dir + ("/account-%s.key" % hashlib.sha256(directory.encode()).hexdigest()[:12]
                                     if directory else "/account.key")
    hsts = int(get(["aegir_vhost_https_hsts_max_age", "aegir_https_hsts_max_age"], 0) or 0)
    if hsts < 0:
        raise common.AegirValueError("aegir_https_hsts_max_age must be >= 0")
    return {
        "state": state,
        "on": state != "disabled",
        "port": common.check_port(get(["aegir_vhost_https_port", "aegir_https_port"], 443), "https port"),
        "source": source,
        "dir": common.check_path(cert_dir, "certificate directory"),
        "key_file": cert_dir + "/openssl.key",
        "cert_file": cert_dir + "/openssl.crt",
        "chain_file": cert_dir + "/openssl_chain.crt",
        "letsencrypt_dir": letsencrypt_dir,
        "challenge_dir": letsencrypt_dir + "/well-known/acme-challenge",
        "account_key": account_key,
        "hsts_max_age": hsts,
        "client_authentication": bool(get("aegir_site_https_client_authentication", False)),
        # Set by the caller from the certificate check: the files exist and parse.
        "ready": False,
        "serial": "",
    }
