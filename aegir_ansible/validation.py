"""Checks on user input, so bad values are refused with one clear message."""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_rules as rules


class InputError(ValueError):
    """Bad input from a user: reported as one line, exit status 2, nothing written."""


# The rules the modules apply again on the servers live in the collection
# (plugins/module_utils/aegir_rules.py, shipped with this package): one source, so a value
# accepted here passes there.
HOSTNAME_MAX = rules.HOSTNAME_MAX
LABEL_MAX = rules.LABEL_MAX
PROFILE_MAX = rules.PROFILE_MAX
PORT_MAX = rules.PORT_MAX

_CONTEXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,234}$")


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
    if len(ascii_name) > HOSTNAME_MAX:
        raise InputError(f"{what} {value!r} is longer than {HOSTNAME_MAX} characters")
    if not rules.is_hostname(ascii_name):
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
    """An absolute path below / without '.' or '..' components or characters that have a
    meaning to a shell (the managed side's check_path)."""
    if value and not value.strip("/"):
        raise InputError(f"{what} must not be /")
    if not rules.is_safe_path(value):
        raise InputError(
            f"{what} {value!r} must be an absolute path of letters, digits and ./_-@+ "
            "without '.' or '..' components"
        )
    return value.rstrip("/")


def check_unix_name(value: str, what: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value or ""):
        raise InputError(f"{what} {value!r} is not a valid unix user/group name")
    return value


def check_profile(value: str) -> str:
    if not rules.is_profile(value):
        raise InputError(f"install profile {value!r} is not a valid machine name "
                         f"([a-z][a-z0-9_]*, at most {PROFILE_MAX} characters)")
    return value


def check_language(value: str) -> str:
    if not rules.is_language((value or "").lower()):
        raise InputError(f"language {value!r} is not a language code")
    return value.lower()


def check_port(value: int, what: str = "port") -> int:
    if not rules.is_port(value):
        raise InputError(f"{what} {value} is out of range")
    return int(value)


def check_fastcgi(value: str) -> str:
    """Where PHP-FPM listens, as the vhosts name it: unix:/path, host:port or [v6]:port."""
    if not rules.is_fastcgi(value):
        raise InputError(f"PHP FastCGI address {value!r} must be unix:/path or host:port")
    return value


def check_listen_address(value: str) -> str:
    if not rules.is_listen_address(value):
        raise InputError(f"listen address {value!r} must be '*', an IP address or a host name")
    return value


def check_ip_address(value: str) -> str:
    """An IPv4 or IPv6 address (hosting_ip_addresses), in its canonical form."""
    try:
        return str(ipaddress.ip_address((value or "").strip()))
    except ValueError:
        raise InputError(f"{value!r} is not an IP address") from None


def check_cron_interval(value: int) -> int:
    """Seconds between a site's cron runs; 0 turns its cron off."""
    if int(value) < 0:
        raise InputError("cron interval must be 0 (off) or a number of seconds")
    return int(value)


def check_title(value: str, what: str = "title") -> str:
    """A node title: one line of 1 to 255 characters (node.title is varchar(255))."""
    title = (value or "").strip()
    if not title or len(title) > 255 or "\n" in title or "\r" in title:
        raise InputError(f"{what} must be one line of 1 to 255 characters")
    return title


def check_command_argv(value, what: str) -> list[str]:
    """A command as a non-empty list of non-empty string arguments (never a shell line)."""
    if not isinstance(value, list) or not value or not all(isinstance(a, str) and a for a in value):
        raise InputError(f"{what} must be a non-empty list of arguments")
    return value
