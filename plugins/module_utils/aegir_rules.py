# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The input rules, in one place: what a host name, profile, language, database name, path,
FastCGI or listen address may look like.

Every side checks values with these: the frontend CLI (aegir_ansible.validation imports this
file from the installed collection), the modules and action plugins on both ends
(aegir_site_common), and the roles' asserts (the `aegir.hosting` Jinja tests). So a value the
CLI accepts is one the modules accept. Standard library only: modules ship it to the servers.
Each side words its own error messages; the rules are these.
"""

from __future__ import annotations

import re

HOSTNAME_MAX = 253
LABEL_MAX = 63
PROFILE_MAX = 64
PORT_MAX = 65535
DB_IDENT_MAX = 64  # MySQL/MariaDB database names
DB_USER_MAX = 80  # MariaDB user names (MySQL: 32; the server refuses what it cannot hold)

# A DNS label: letters, digits and hyphens, not starting or ending with a hyphen. IDNA names
# arrive as punycode (xn--...). Lower case only, so the inventory, the site directory and the
# vhost always spell a site the same way.
LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,%d}[a-z0-9])?$" % (LABEL_MAX - 2))
PROFILE = re.compile(r"^[a-z][a-z0-9_]{0,%d}$" % (PROFILE_MAX - 1))
LANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$")
DB_IDENT = re.compile(r"^[A-Za-z0-9_]{1,%d}$" % DB_IDENT_MAX)
DB_USER = re.compile(r"^[A-Za-z0-9_]{1,%d}$" % DB_USER_MAX)
# Absolute paths limited to characters that need no quoting in nginx, Apache, PHP or a shell.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
FASTCGI = re.compile(
    r"^(?:unix:/[A-Za-z0-9._+@/-]+|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}"
    r"|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5})$"
)
LISTEN_ADDR = re.compile(
    r"^(?:\*|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)$")


def _text(value):
    return value if isinstance(value, str) else None


def is_hostname(value):
    """A plain DNS host name: at most 253 characters of valid labels (no trailing dot)."""
    text = _text(value)
    return bool(text) and len(text) <= HOSTNAME_MAX and all(
        LABEL.match(label) for label in text.split("."))


def is_profile(value):
    return bool(PROFILE.match(_text(value) or ""))


def is_language(value):
    return bool(LANGUAGE.match(_text(value) or ""))


def is_db_ident(value):
    return bool(DB_IDENT.match(_text(value) or ""))


def is_db_user(value):
    return bool(DB_USER.match(_text(value) or ""))


def is_safe_path(value):
    """An absolute path of the safe characters, without '.' or '..' components, not /."""
    text = _text(value) or ""
    parts = text.split("/")
    return bool(SAFE_PATH.match(text)) and "." not in parts and ".." not in parts \
        and bool(text.strip("/"))


def is_port(value):
    try:
        port = int(value)
    except (TypeError, ValueError):
        return False
    return 0 < port <= PORT_MAX and str(value).strip() == str(port)


def is_fastcgi(value):
    return bool(FASTCGI.match(_text(value) or ""))


def is_listen_address(value):
    return bool(LISTEN_ADDR.match(_text(value) or ""))
