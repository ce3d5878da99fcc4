# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Validation, quoting and file helpers shared by the aegir_site_files action and module.

Everything here is pure Python (standard library only): the module ships it to the managed
node, the action plugin loads the same file on the controller, so both sides validate with the
same rules.

Values from the Aegir database (uris, aliases, profiles, paths) are data. These helpers refuse
anything that could escape its place in a config file or a path: only plain host names, simple
identifiers and absolute paths made of a conservative character set are accepted.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import re
import stat
import tempfile
import time
from urllib.parse import unquote_plus

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_rules as rules


class AegirValueError(ValueError):
    """A value from the inventory that cannot be used safely."""


def _show(value):
    """A short, printable representation of a refused value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_hostname(value, what="host name"):
    """Return value if it is a plain DNS host name (labels of [a-z0-9-], punycode allowed)."""
    if not isinstance(value, str) or not value:
        raise AegirValueError("%s must be a non-empty string, got %s" % (what, _show(value)))
    if len(value) > rules.HOSTNAME_MAX:
        raise AegirValueError("%s is longer than %d characters: %s"
                              % (what, rules.HOSTNAME_MAX, _show(value)))
    if not rules.is_hostname(value):
        raise AegirValueError(
            "%s %s is not a valid host name (lower-case labels of a-z, 0-9 and '-', "
            "IDNA names as punycode)" % (what, _show(value))
        )
    return value


def check_profile(value):
    if not rules.is_profile(value):
        raise AegirValueError("install profile %s is not a machine name ([a-z][a-z0-9_]*, at most %d "
                              "characters)" % (_show(value), rules.PROFILE_MAX))
    return value


def check_language(value):
    if not rules.is_language(value):
        raise AegirValueError("language %s is not a language code like 'en' or 'pt-br'" % _show(value))
    return value


def check_db_ident(value, what):
    if not rules.is_db_ident(value):
        raise AegirValueError("%s %s must be 1-64 characters of A-Z, a-z, 0-9 and _" % (what, _show(value)))
    return value


def check_port(value, what="port"):
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise AegirValueError("%s %s is not a number" % (what, _show(value)))
    if not rules.is_port(value):
        raise AegirValueError("%s %s is out of range" % (what, _show(value)))
    return port


def check_path(value, what="path"):
    """Return a normalised absolute path without '..' and without characters needing quotes."""
    if not isinstance(value, str) or not value:
        raise AegirValueError("%s must be a non-empty string, got %s" % (what, _show(value)))
    if not rules.SAFE_PATH.match(value):
        raise AegirValueError(
            "%s %s must be an absolute path of letters, digits and . _ + @ / -" % (what, _show(value))
        )
    parts = value.split("/")
    if ".." in parts or "." in parts:
        raise AegirValueError("%s %s must not contain '.' or '..' components" % (what, _show(value)))
    norm = os.path.normpath(value)
    if norm == "/":
        raise AegirValueError("%s must not be /" % what)
    return norm


def check_fastcgi(value):
    if not rules.is_fastcgi(value):
        raise AegirValueError("PHP FastCGI address %s must be unix:/path or host:port" % _show(value))
    return value


def check_listen_address(value):
    if not rules.is_listen_address(value):
        raise AegirValueError("listen address %s must be '*', an IP address or a host name" % _show(value))
    return value


def php_string(value):
    """Return value as a PHP single-quoted string literal (only \\ and ' need escaping)."""
    if value is None:
        value = ""
    if isinstance(value, bool):
        value = "1" if value else ""
    text = str(value)
    if "\x00" in text:
        raise AegirValueError("NUL byte in a value for PHP")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_PHP_LITERAL = r"'((?:[^'\\]|\\.)*)'"


def php_unquote(body):
    """Inverse of php_string for the inside of a single-quoted literal."""
    return re.sub(r"\\([\\'])", r"\1", body)


# Secrets in generated files sit on lines ending with this marker, e.g.
#   'password' => 'xyz', // aegir:secret db_password
SECRET_MARKER = "// aegir:secret "


def read_secrets(text):
    """Return {name: value} for every `'...' ... // aegir:secret <name>` line of a generated file."""
    found = {}
    for line in text.splitlines():
        idx = line.rfind(SECRET_MARKER)
        if idx < 0:
            continue
        name = line[idx + len(SECRET_MARKER):].strip()
        # The value is the last literal before the marker ('password' => 'value', // ...).
        literals = re.findall(_PHP_LITERAL, line[:idx])
        if name and literals:
            found[name] = php_unquote(literals[-1])
    return found


def replace_secrets(text, replacement, names=None):
    """Put the PHP literal `replacement` in place of the value on every secret line (only the
    secrets in `names` when given)."""
    out = []
    for line in text.splitlines(True):
        idx = line.rfind(SECRET_MARKER)
        if idx >= 0 and (names is None or line[idx + len(SECRET_MARKER):].strip() in names):
            head = line[:idx]
            spans = [m.span() for m in re.finditer(_PHP_LITERAL, head)]
            if spans:
                start, end = spans[-1]
                head = head[:start] + replacement + head[end:]
            line = head + line[idx:]
        out.append(line)
    return "".join(out)


def mask_secrets(text):
    """Replace the value on every secret line, for diffs and logs (and the hash salt of a
    settings.php provision wrote, which has no marker)."""
    text = replace_secrets(text, "'********'")
    return _HASH_SALT.sub(lambda mo: mo.group(0).replace(mo.group(1), "********") if mo.group(1) else mo.group(0), text)


class FileLock(object):
    """An exclusive fcntl.flock on a lock file, waiting up to timeout seconds."""

    def __init__(self, path, timeout=120, create=True):
        self.path = path
        self.timeout = timeout
        self.create = create
        self.fd = None

    def __enter__(self):
        if not self.create and not os.path.exists(self.path):
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.time() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.time() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise TimeoutError("timed out after %ss waiting for lock %s" % (self.timeout, self.path))
                time.sleep(0.05)

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def resolve_ids(owner, group):
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    return uid, gid


def needs_attr_change(st, mode, uid, gid):
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        return True
    if uid != -1 and st.st_uid != uid:
        return True
    if gid != -1 and st.st_gid != gid:
        return True
    return False


def set_attrs(path, mode, uid, gid, follow=False):
    """chown then chmod (chown clears setgid bits, so chmod must come last)."""
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid, follow_symlinks=follow)
    if mode is not None:
        os.chmod(path, mode)


def atomic_write(path, data, mode, uid, gid):
    """Write bytes to path through a temporary file in the same directory and rename."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".aegir-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        set_attrs(tmp, mode, uid, gid)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- sites provision made (Aegir 3) -----------------------------------------------------------
# Provision keeps a site's database credentials in the site's drushrc.php
# (`$options['db_passwd'] = '...';`, var_export format) and in its vhost (nginx
# `fastcgi_param db_passwd <urlencoded>;`, Apache `SetEnv db_passwd <urlencoded>`); its
# settings.php is "cloaked" (reads them from $_SERVER). These read them back, so the first
# verify by this backend takes such a site over without regenerating anything.

PROVISION_DB_KEYS = ("db_type", "db_name", "db_user", "db_passwd", "db_host", "db_port")
_PHP_OPTION = re.compile(r"^\s*\$options\[\s*'(db_[a-z]+)'\s*\]\s*=\s*" + _PHP_LITERAL + r"\s*;", re.M)
_HASH_SALT = re.compile(r"^\s*\$settings\[\s*'hash_salt'\s*\]\s*=\s*" + _PHP_LITERAL + r"\s*;", re.M)
_NGINX_ENV = re.compile(r"^\s*fastcgi_param\s+(db_[a-z]+)\s+([^\s;]*)\s*;", re.M)
_APACHE_ENV = re.compile(r"^\s*SetEnv\s+(db_[a-z]+)\s+(\S*)\s*$", re.M)
_NGINX_NAMES = re.compile(r"^\s*server_name\s+([^;]*);", re.M)
_APACHE_NAMES = re.compile(r"^\s*(?:ServerName|ServerAlias)\s+(.*?)\s*$", re.M | re.I)
_APACHE_SERVERNAME = re.compile(r"^\s*ServerName\s+(\S+)\s*$", re.M | re.I)


def provision_drushrc_credentials(text):
    """{db_name, db_user, db_passwd, db_host, db_port, ...} from a site drushrc.php of provision."""
    return {key: php_unquote(value) for key, value in _PHP_OPTION.findall(text)}


def provision_hash_salt(text):
    """The hash salt of a settings.php provision wrote (Drupal 8+), or ''."""
    found = _HASH_SALT.search(text)
    return php_unquote(found.group(1)) if found else ""


def vhost_names(text):
    """The host names a vhost file answers for (server_name, ServerName, ServerAlias)."""
    names = []
    for line in _NGINX_NAMES.findall(text):
        names.extend(line.split())
    for line in _APACHE_NAMES.findall(text):
        names.extend(line.split())
    return [n.lower() for n in names]


def is_vhost_of(text, uri):
    """Whether a (provision) vhost file is the site `uri`'s own: an Apache ServerName that is
    the uri, or an nginx server_name listing the uri. A file naming no host, or naming the uri
    only in a comment or an alias list of another ServerName, is not proven to be the site's."""
    uri = uri.lower()
    apache = [n.lower() for n in _APACHE_SERVERNAME.findall(text)]
    if apache:
        return uri in apache
    nginx = []
    for line in _NGINX_NAMES.findall(text):
        nginx.extend(n.lower() for n in line.split())
    return uri in nginx


def provision_vhost_credentials(text):
    """The db_* values a provision vhost hands to PHP (url-decoded)."""
    found = {}
    for key, value in _NGINX_ENV.findall(text) + _APACHE_ENV.findall(text):
        found.setdefault(key, unquote_plus(value))
    return found


_PROVISION_SECRET_LINE = re.compile(r"^(\s*(?:fastcgi_param|SetEnv)\s+db_passwd\s+)\S*?(;?\s*)$", re.M | re.I)


def mask_provision_secrets(text):
    """A provision vhost with its db_passwd values masked, for diffs."""
    return _PROVISION_SECRET_LINE.sub(lambda mo: mo.group(1) + "********" + mo.group(2), text)
