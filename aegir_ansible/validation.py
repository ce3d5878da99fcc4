"""Checks on user input, so bad values are refused with one clear message."""

from __future__ import annotations

import ipaddress
import re


class InputError(ValueError):
    """Bad input from a user: reported as one line, exit status 2, nothing written."""


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CONTEXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,234}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]*$")


def normalize_hostname(value: str, what: str = "uri") -> str:
    """A lower-cased host name in its ASCII (IDNA) form, or InputError.

    Internationalised names are accepted and stored in punycode, which is what web
    servers and DNS use.
    """
    raw = (value or "").strip()
    if not raw:
        raise InputError(f"{what} is empty")
    if raw.endswith("."):
        raw = raw[:-1]
    try:
        ascii_name = raw.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InputError(f"{what} {value!r} is not a valid host name ({exc})") from None
    if len(ascii_name) > 253:
        raise InputError(f"{what} {value!r} is longer than 253 characters")
    labels = ascii_name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise InputError(
            f"{what} {value!r} is not a valid host name "
            "(labels of letters, digits and hyphens, separated by dots)"
        )
    return ascii_name


# Names Ansible resolves to groups: the inventory's own groups (all start with "aegir_") and
# Ansible's implicit ones. A host named like a group would be matched as that group.
RESERVED_NAMES = frozenset({"all", "ungrouped", "localhost"})
RESERVED_PREFIX = "aegir_"


def check_context_name(value: str) -> str:
    """A context name usable as an Ansible host name that matches only itself.

    The one rule for every context name (frontend writes, inventory, queue runner): no
    character Ansible reads in a host pattern (`,` `:` `&` `!` `~` `*` `?` `[` ...) and no
    name Ansible or the inventory uses for a group."""
    if not _CONTEXT.match(value or ""):
        raise InputError(
            f"name {value!r} is not valid (letters, digits, '_', '.', '-'; at most 235)"
        )
    if value.lower() in RESERVED_NAMES or value.startswith(RESERVED_PREFIX):
        raise InputError(
            f"name {value!r} is reserved (it names an inventory group: 'all', 'ungrouped', "
            f"'localhost' and names starting with {RESERVED_PREFIX!r})"
        )
    return value


def check_host_address(value: str, what: str = "address") -> str:
    """An IP address or a host name as given to ssh (`ansible_host`): nothing ssh could
    read as an option (`-oProxyCommand=...`) or a user/port part."""
    raw = value if isinstance(value, str) else ""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    if raw != raw.strip() or not raw or not re.match(r"^[A-Za-z0-9]", raw):
        raise InputError(f"{what} {value!r} is not a host name or IP address")
    try:
        name = normalize_hostname(raw, what)
    except InputError:
        raise InputError(f"{what} {value!r} is not a host name or IP address") from None
    if name != raw.lower().rstrip("."):
        raise InputError(f"{what} {value!r} is not an ASCII host name or IP address")
    return raw


def check_abs_path(value: str, what: str = "path") -> str:
    """An absolute path without '..' or characters that have a meaning to a shell."""
    if not value or not _SAFE_PATH.match(value) or "/../" in value + "/" or value.endswith("/.."):
        raise InputError(
            f"{what} {value!r} must be an absolute path of letters, digits and ./_-@+ "
            "without '..'"
        )
    return value.rstrip("/") or "/"


def check_unix_name(value: str, what: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value or ""):
        raise InputError(f"{what} {value!r} is not a valid unix user/group name")
    return value


def check_profile(value: str) -> str:
    if not re.match(r"^[a-z][a-z0-9_]{0,254}$", value or ""):
        raise InputError(f"install profile {value!r} is not a valid machine name")
    return value


def check_language(value: str) -> str:
    if not re.match(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$", (value or "").lower()):
        raise InputError(f"language {value!r} is not a language code")
    return value.lower()
