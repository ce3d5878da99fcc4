#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Create and deploy Aegir site backup archives (see DOCUMENTATION)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aegir_site_archive
short_description: Create an Aegir site backup archive, or deploy one into a site directory
description:
  - "O(state=archive): write the site directory and a database dump into one gzip tarball
    (mode 0600) with the layout provision uses: the site directory's contents at the top, the
    dump as C(database.sql). Secrets named in O(strip_secrets) are blanked in C(settings.php)
    (lines ending with C(// aegir:secret <name>)), so the database password is never in an
    archive: restore keeps the live site's password, a copy gets a new one. The archive is
    written under a temporary name and renamed when complete."
  - "O(state=deploy): extract an archive into O(site_path). Member names are checked (no
    absolute paths, no C(..), no links that leave the site, no devices); C(database.sql) goes to
    O(dump_dest) (mode 0600), not into the site. Everything is extracted into a staging
    directory next to O(site_path) first; then either renamed into place (a new site) or, with
    O(replace), swapped with the current directory, which is kept as RV(previous_path) and
    whose O(keep_files) are copied into the new one first."
  - "O(state=rollback): put RV(previous_path) back in place of O(site_path)."
  - "O(state=discard): remove O(previous_path) for good."
  - "Every archive gets a manifest beside it, C(<archive>.manifest.json) (mode 0600): the site
    it was made for (O(site_uri), O(site_nid)), its size and sha256. Only this backend writes
    into the backups directory, so a frontend row naming a file cannot forge it."
  - "O(state=check): succeed only if O(src) is an archive this backend made for this site: a
    regular file directly inside O(backup_dir) (real paths, no symlink), with a manifest naming
    this site (by O(site_nid) when both have one, else by O(site_uri)) and the archive's size.
    Returns the manifest's RV(sha256), which O(state=deploy) then checks the archive against."
  - "O(state=remove): remove O(src) and its manifest after the same check (an archive already
    gone is not an error)."
  - "O(state=clean): remove the site's temporary directories (C(.aegir-tmp-<site_uri>_*)) in
    O(backup_dir) that nothing has touched for O(max_age) seconds: what a killed run left."
author:
  - aegir-ansible contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  state:
    type: str
    choices: [archive, deploy, rollback, discard, check, remove, clean]
    required: true
    description: What to do.
  site_path:
    type: path
    description: The site directory.
  dest:
    type: path
    description:
      - "The archive to write (state archive). An existing file is never overwritten: when
        this name is taken (two backups of a site in the same second), C(-2), C(-3), ...
        is added before C(.tar.gz), and RV(path) says the name written."
  src:
    type: path
    description: The archive to deploy (state deploy).
  dump_file:
    type: path
    description: The database dump to add as C(database.sql) (state archive).
  dump_dest:
    type: path
    description: Where to write the archive's C(database.sql) (state deploy; mode 0600).
  exclude:
    type: list
    elements: str
    default: [private/temp, files/css, files/js, files/php]
    description: Paths relative to the site directory left out of the archive.
  strip_secrets:
    type: list
    elements: str
    default: [db_password]
    description: Secret names blanked in C(settings.php).
  reset_secrets:
    type: list
    elements: str
    default: []
    description:
      - "Secret names blanked in the deployed C(settings.php) (state deploy), so that the site
        files step gives the site new ones, as for a new site. A clone resets C(hash_salt):
        the copy must not share the original's salt (one-time login links, form tokens)."
  replace:
    type: bool
    default: false
    description: Deploy over an existing site directory (kept as RV(previous_path)).
  keep_files:
    type: list
    elements: str
    default: []
    description: Files of the current site directory copied into the deployed one (with replace).
  previous_path:
    type: path
    description: The previous directory (states rollback and discard).
  backup_dir:
    type: path
    description: The backups directory of this server (states check, remove, clean).
  site_uri:
    type: str
    description:
      - "The site an archive belongs to: written into the manifest (archive), compared with it
        (check, remove), the name of its temporary directories (clean)."
  site_nid:
    type: int
    default: 0
    description: The site's node id (0 = unknown), written into and compared with the manifest.
  sha256:
    type: str
    description: "Deploy only an archive with this sha256 (from O(state=check))."
  tmp_dir:
    type: path
    description: "Where the archive is written before it gets its name (archive; on the same
      file system as O(dest)). Default: beside O(dest)."
  max_age:
    type: int
    default: 86400
    description: "Seconds without a change after which a temporary directory is stale (clean)."
  owner:
    type: str
    description: Owner of the archive (archive) or of every deployed file (deploy).
  group:
    type: str
    description: Group of every deployed file (deploy).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details: The diff names the paths that appear, are replaced or go (not file contents).
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Back up a site into one archive (the database dump was written to /tmp/run/database.sql)
  aegir.hosting.aegir_site_archive:
    state: archive
    site_path: /var/aegir/platforms/d10/sites/example.com
    site_uri: example.com
    site_nid: 42
    dump_file: /tmp/run/database.sql
    dest: /var/aegir/backups/example.com-20260101.000000.tar.gz
    tmp_dir: /tmp/run
    exclude: [files/css, files/js]
    strip_secrets: [db_password]
    owner: aegir
  become: true

- name: Check that an archive is a backup of this site before restoring it
  aegir.hosting.aegir_site_archive:
    state: check
    src: /var/aegir/backups/example.com-20260101.000000.tar.gz
    backup_dir: /var/aegir/backups
    site_uri: example.com
    site_nid: 42
  register: backup_check

- name: Deploy it over the live site, keeping settings.php from the running one
  aegir.hosting.aegir_site_archive:
    state: deploy
    src: /var/aegir/backups/example.com-20260101.000000.tar.gz
    sha256: "{{ backup_check.sha256 }}"
    site_path: /var/aegir/platforms/d10/sites/example.com
    site_uri: example.com
    dump_dest: /tmp/run/database.sql
    replace: true
    keep_files: [settings.php]
    owner: aegir
    group: www-data
  become: true

- name: Remove temporary directories that killed runs of this site left behind
  aegir.hosting.aegir_site_archive:
    state: clean
    backup_dir: /var/aegir/backups
    site_uri: example.com
    max_age: 86400
"""

RETURN = r"""
path:
  description: The archive written (archive).
  type: str
  returned: success
size:
  description: Size of the archive in bytes (archive).
  type: int
  returned: success
previous_path:
  description: Where the replaced site directory was moved (deploy with replace).
  type: str
  returned: success
members:
  description: Number of archive members written or extracted.
  type: int
  returned: success
sha256:
  description: The archive's sha256 (archive, check).
  type: str
  returned: success
removed:
  description: The temporary directories removed (clean).
  type: list
  returned: success
"""

import hashlib
import json
import os
import secrets
import shutil
import stat
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_site_common as common
DUMP_NAME = "database.sql"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "aegir-ansible-backup/1"
# A run's private temporary directory in the backups directory: TMP_PREFIX<uri>_<random>
# ('_' is never part of a uri, so one site's prefix never matches another site's).
TMP_PREFIX = ".aegir-tmp-"


class ArchiveError(Exception):
    pass


class NotOurs(ArchiveError):
    """The archive a row names is not one this backend made for this site."""


def strip_secrets(text, names):
    """Blank the value on every `// aegir:secret <name>` line whose name is listed."""
    return common.replace_secrets(text, "''", names)


def _reset_secrets(path, names):
    """Blank these secrets in a deployed settings.php (a regular file; owner and mode kept)."""
    if not names or not os.path.isfile(path) or os.path.islink(path):
        return
    with open(path, "r", encoding="utf-8", errors="surrogateescape") as fh:
        text = fh.read()
    new = strip_secrets(text, set(names))
    if new != text:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        os.chmod(path, mode | 0o200)
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(new)
        os.chmod(path, mode)


def _rel_ok(name):
    if not name or name.startswith("/") or "\x00" in name:
        return False
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return bool(parts) and ".." not in parts


def _norm(name):
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _chown_tree(path, uid, gid):
    if uid == -1 and gid == -1:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.lchown(dirpath, uid, gid)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            os.lchown(p, uid, gid)
            if not stat.S_ISLNK(st.st_mode):
                # chown clears set-id bits: put the archived mode back.
                os.chmod(p, stat.S_IMODE(st.st_mode))
    st = os.lstat(path)
    os.chmod(path, stat.S_IMODE(st.st_mode))


def rmtree(path):
    """Remove a site tree even where Drupal left read-only directories."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
        return
    if not os.path.isdir(path):
        return
    for dirpath, dirnames, _files in os.walk(path):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
    os.chmod(path, 0o700)
    shutil.rmtree(path)


def _ids(owner, group):
    import grp
    import pwd

    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    return uid, gid


def make_archive(module, p):
    site = p["site_path"]
    dest = p["dest"]
    if not site or not dest:
        raise ArchiveError("site_path and dest are required for state=archive")
    if not os.path.isdir(site) or os.path.islink(site):
        raise ArchiveError("site directory %s does not exist (is the site installed?)" % site)
    ddir = os.path.dirname(dest)
    if not os.path.isdir(ddir):
        raise ArchiveError("backup directory %s does not exist or is not a directory" % ddir)
    if not os.access(ddir, os.W_OK):
        raise ArchiveError("backup directory %s is not writable" % ddir)
    dump = p["dump_file"]
    if dump and not module.check_mode and not os.path.isfile(dump):
        raise ArchiveError("database dump %s does not exist" % dump)
    excluded = {_norm(e) for e in p["exclude"] if _rel_ok(e)}
    strip = set(p["strip_secrets"])
    if module.check_mode:
        return dict(changed=True, path=_free_name(dest), size=0, members=0)
    uid, gid = _ids(p["owner"], None)
    site_uri = common.check_hostname(p["site_uri"] or os.path.basename(site.rstrip("/")), "site uri")
    tmp_dir = p["tmp_dir"] or ddir
    tmp = os.path.join(tmp_dir, ".%s.%s.part" % (os.path.basename(dest), secrets.token_hex(4)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                for dirpath, dirnames, filenames in os.walk(site):
                    rel_dir = os.path.relpath(dirpath, site)
                    rel_dir = "" if rel_dir == "." else rel_dir
                    dirnames[:] = sorted(d for d in dirnames
                                         if _norm(os.path.join(rel_dir, d)) not in excluded)
                    if rel_dir:
                        tar.add(dirpath, arcname=rel_dir, recursive=False)
                    else:
                        tar.add(dirpath, arcname=".", recursive=False)
                    count += 1
                    for name in sorted(filenames):
                        rel = _norm(os.path.join(rel_dir, name))
                        if rel in excluded or (not rel_dir and name == DUMP_NAME):
                            continue
                        full = os.path.join(dirpath, name)
                        if rel == "settings.php" and strip and os.path.isfile(full) \
                                and not os.path.islink(full):
                            with open(full, "r", encoding="utf-8", errors="surrogateescape") as fh:
                                data = strip_secrets(fh.read(), strip).encode("utf-8", "surrogateescape")
                            info = tar.gettarinfo(full, arcname=rel)
                            info.size = len(data)
                            import io

                            tar.addfile(info, io.BytesIO(data))
                        else:
                            tar.add(full, arcname=rel, recursive=False)
                        count += 1
                if dump:
                    info = tar.gettarinfo(dump, arcname=DUMP_NAME)
                    info.mode = 0o600
                    with open(dump, "rb") as fh:
                        tar.addfile(info, fh)
                    count += 1
            raw.flush()
            os.fsync(raw.fileno())
        if uid != -1:
            os.chown(tmp, uid, -1)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as fh:
            digest = _sha256(fh)
        manifest = {"format": MANIFEST_FORMAT, "site_uri": site_uri, "site_nid": p["site_nid"] or None,
                    "sha256": digest, "size": os.path.getsize(tmp), "created": int(time.time())}
        dest = _publish(tmp, dest, manifest, uid)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dict(changed=True, path=dest, size=os.path.getsize(dest), members=count, sha256=digest)


def _sha256(fh):
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _candidates(dest):
    """dest, then <name>-2.tar.gz, <name>-3.tar.gz, ..."""
    base = dest[:-len(".tar.gz")] if dest.endswith(".tar.gz") else dest
    ext = dest[len(base):]
    yield dest
    for i in range(2, 1000):
        yield "%s-%d%s" % (base, i, ext)


def _free_name(dest):
    """The name _publish would take now (check mode)."""
    for name in _candidates(dest):
        if not os.path.lexists(name) and not os.path.lexists(name + MANIFEST_SUFFIX):
            return name
    raise ArchiveError("no free backup name beside %s" % dest)


def _publish(tmp, dest, manifest, uid):
    """Give the finished archive its name, then its manifest beside it, without ever
    replacing a file: a hard link fails when the name exists (another backup of the same
    second took it), then the next name is tried. Returns the name taken; tmp is removed."""
    for name in _candidates(dest):
        if os.path.lexists(name + MANIFEST_SUFFIX):
            continue
        try:
            os.link(tmp, name)
        except FileExistsError:
            continue
        mtmp = "%s.%s.part" % (tmp, secrets.token_hex(4))
        try:
            data = json.dumps(dict(manifest, archive=os.path.basename(name)), sort_keys=True)
            fd = os.open(mtmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(data + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            if uid != -1:
                os.chown(mtmp, uid, -1)
            os.link(mtmp, name + MANIFEST_SUFFIX)
        except BaseException:
            os.unlink(name)
            raise
        finally:
            if os.path.lexists(mtmp):
                os.unlink(mtmp)
        os.unlink(tmp)
        return name
    raise ArchiveError("no free backup name beside %s" % dest)


def _names_site(manifest, site_uri, site_nid):
    """A manifest names this site: by node id when both know one (a migrate may have
    changed the uri), else by uri."""
    nid = manifest.get("site_nid")
    if site_nid and nid:
        return isinstance(nid, int) and nid == site_nid
    return manifest.get("site_uri") == site_uri


def owned_archive(src, backup_dir, site_uri, site_nid):
    """The manifest of src if src is an archive this backend made for this site; NotOurs
    (the reason) otherwise. FileNotFoundError if src is gone."""
    common.check_hostname(site_uri, "site uri")
    name = os.path.basename(src)
    if not name.endswith(".tar.gz") or name.startswith("."):
        raise NotOurs("it is not named like a backup archive")
    if os.path.realpath(os.path.dirname(src)) != os.path.realpath(backup_dir):
        raise NotOurs("it is not in the backups directory %s of its server" % backup_dir)
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise NotOurs("it is not a regular file")
    try:
        mst = os.lstat(src + MANIFEST_SUFFIX)
        if not stat.S_ISREG(mst.st_mode):
            raise NotOurs("its manifest is not a regular file")
        with open(src + MANIFEST_SUFFIX, "rb") as fh:
            manifest = json.loads(fh.read(65536).decode("utf-8"))
    except FileNotFoundError:
        raise NotOurs("it has no backup manifest (this backend did not make it)")
    except (ValueError, UnicodeDecodeError):
        raise NotOurs("its manifest is not readable")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or manifest.get("archive") != name:
        raise NotOurs("its manifest does not describe it")
    if not _names_site(manifest, site_uri, site_nid):
        raise NotOurs("it was not made for this site (its manifest names another site)")
    sha = manifest.get("sha256")
    if manifest.get("size") != st.st_size or not isinstance(sha, str) or len(sha) != 64:
        raise NotOurs("it changed since the backup was made")
    return manifest


def _owned(p, verb):
    for key in ("src", "backup_dir", "site_uri"):
        if not p[key]:
            raise ArchiveError("src, backup_dir and site_uri are required for state=%s" % p["state"])
    try:
        return owned_archive(p["src"], p["backup_dir"], p["site_uri"], p["site_nid"])
    except NotOurs as exc:
        raise NotOurs("Refusing to %s %s: %s. Nothing was changed." % (verb, p["src"], exc))


def check(module, p):
    try:
        manifest = _owned(p, "restore")
    except FileNotFoundError:
        raise ArchiveError("The backup %s does not exist on its server." % p["src"])
    return dict(changed=False, sha256=manifest["sha256"], size=manifest["size"])


def remove(module, p):
    """Remove an archive of this site and its manifest (one already gone counts as removed)."""
    src = p["src"]
    try:
        _owned(p, "remove")
    except FileNotFoundError:
        return dict(changed=False)
    if not module.check_mode:
        try:
            os.unlink(src)
        except OSError as exc:
            raise ArchiveError("Could not remove %s (%s)" % (src, exc.strerror or exc))
        try:
            os.unlink(src + MANIFEST_SUFFIX)
        except FileNotFoundError:
            pass
    return dict(changed=True)


def _newest_change(path):
    newest = os.lstat(path).st_mtime
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except FileNotFoundError:
                pass
    return newest


def clean(module, p):
    """Remove the site's temporary run directories nothing touched for max_age seconds."""
    bdir, uri = p["backup_dir"], p["site_uri"]
    if not bdir or not uri:
        raise ArchiveError("backup_dir and site_uri are required for state=clean")
    prefix = TMP_PREFIX + common.check_hostname(uri, "site uri") + "_"
    if not os.path.isdir(bdir):
        return dict(changed=False, removed=[])
    removed = []
    now = time.time()
    for name in sorted(os.listdir(bdir)):
        path = os.path.join(bdir, name)
        if not name.startswith(prefix) or os.path.islink(path) or not os.path.isdir(path):
            continue
        if now - _newest_change(path) < p["max_age"]:
            continue
        removed.append(path)
        if not module.check_mode:
            rmtree(path)
    return dict(changed=bool(removed), removed=removed)


def _check_members(tar, site_path):
    """Refuse anything that could land outside the site directory."""
    checked = []
    dump = None
    links = set()
    for member in tar.getmembers():
        name = member.name
        if name in (".", "./"):
            continue
        if not _rel_ok(name):
            raise ArchiveError("refusing archive member %r (absolute path or '..')" % name)
        norm = _norm(name)
        parts = norm.split("/")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise ArchiveError("refusing archive member %r below a symlink" % name)
        if norm == DUMP_NAME:
            if not member.isfile():
                raise ArchiveError("%s in the archive is not a regular file" % DUMP_NAME)
            dump = member
            continue
        if member.isdev() or member.isfifo() or member.ischr() or member.isblk():
            raise ArchiveError("refusing device or fifo %r in the archive" % name)
        if member.islnk():
            raise ArchiveError("refusing hard link %r in the archive" % name)
        if member.issym():
            target = os.path.normpath(os.path.join(os.path.dirname(norm), member.linkname))
            if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise ArchiveError("refusing symlink %r -> %r leaving the site" % (name, member.linkname))
            links.add(norm)
        if not (member.isfile() or member.isdir() or member.issym()):
            raise ArchiveError("refusing archive member %r of an unknown type" % name)
        member.name = norm
        checked.append(member)
    return checked, dump


def deploy(module, p):
    src, site = p["src"], p["site_path"]
    if not src or not site:
        raise ArchiveError("src and site_path are required for state=deploy")
    if not os.path.isfile(src):
        raise ArchiveError("backup %s does not exist on this server" % src)
    parent = os.path.dirname(site)
    if not os.path.isdir(parent):
        raise ArchiveError("%s does not exist: is the target platform there?" % parent)
    if not os.access(parent, os.W_OK):
        raise ArchiveError("%s is not writable" % parent)
    exists = os.path.lexists(site)
    if exists and not p["replace"]:
        raise ArchiveError("%s already exists: refusing to overwrite another site" % site)
    if exists and (os.path.islink(site) or not os.path.isdir(site)):
        raise ArchiveError("%s is not a directory" % site)
    try:
        raw = open(src, "rb")
    except OSError as exc:
        raise ArchiveError("cannot read backup %s: %s" % (src, exc))
    with raw:
        if p["sha256"] and _sha256(raw) != p["sha256"].lower():
            raise ArchiveError("Refusing to restore %s: it does not match its manifest (changed since "
                               "the backup was made). Nothing was changed." % src)
        raw.seek(0)
        return _deploy_from(module, p, raw, exists, parent)


def _deploy_from(module, p, raw, exists, parent):
    src, site = p["src"], p["site_path"]
    try:
        tar = tarfile.open(fileobj=raw, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError("cannot read backup %s: %s" % (src, exc))
    with tar:
        members, dump = _check_members(tar, site)
        if p["dump_dest"] and dump is None:
            raise ArchiveError("backup %s has no %s" % (src, DUMP_NAME))
        if module.check_mode:
            return dict(changed=True, members=len(members), previous_path=None)
        uid, gid = _ids(p["owner"], p["group"])
        staging = os.path.join(parent, ".aegir-deploy-%s" % secrets.token_hex(6))
        os.mkdir(staging, 0o700)
        try:
            kwargs = {}
            if hasattr(tarfile, "data_filter"):
                kwargs["filter"] = "data"
            tar.extractall(staging, members=members, **kwargs)
            # The data filter drops group write and set-gid bits; the site needs them back
            # (files/ is written by the web server). Set-uid and sticky bits stay off.
            for member in members:
                if not member.issym():
                    keep = 0o2777 if member.isdir() else 0o777
                    os.chmod(os.path.join(staging, member.name), member.mode & keep)
            _chown_tree(staging, uid, gid)
            _reset_secrets(os.path.join(staging, "settings.php"), p["reset_secrets"])
            if dump is not None and p["dump_dest"]:
                fd = os.open(p["dump_dest"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as out, tar.extractfile(dump) as fh:
                    shutil.copyfileobj(fh, out)
            root_mode = None
            for member in tar.getmembers():
                if member.name in (".", "./") and member.isdir():
                    root_mode = member.mode & 0o7777 & ~0o7000
            os.chmod(staging, root_mode if root_mode is not None else 0o755)
            previous = None
            if exists:
                for rel in p["keep_files"]:
                    if not _rel_ok(rel):
                        raise ArchiveError("keep_files entry %r must be relative" % rel)
                    old = os.path.join(site, _norm(rel))
                    new = os.path.join(staging, _norm(rel))
                    if os.path.isfile(old) and not os.path.islink(old):
                        if os.path.lexists(new):
                            os.chmod(new, 0o600)
                            os.unlink(new)
                        shutil.copy2(old, new)
                        st = os.stat(old)
                        os.chown(new, st.st_uid, st.st_gid)
                        os.chmod(new, stat.S_IMODE(st.st_mode))
                previous = os.path.join(parent, ".aegir-previous-%s-%s"
                                        % (os.path.basename(site), secrets.token_hex(4)))
                os.rename(site, previous)
            try:
                os.rename(staging, site)
            except OSError:
                if previous:
                    os.rename(previous, site)
                raise
        except BaseException:
            if os.path.lexists(staging):
                rmtree(staging)
            raise
    return dict(changed=True, members=len(members), previous_path=previous)


def rollback(module, p):
    site, prev = p["site_path"], p["previous_path"]
    if not site or not prev:
        raise ArchiveError("site_path and previous_path are required for state=rollback")
    if not os.path.isdir(prev):
        raise ArchiveError("previous directory %s does not exist" % prev)
    if module.check_mode:
        return dict(changed=True)
    if os.path.lexists(site):
        rmtree(site)
    os.rename(prev, site)
    return dict(changed=True)


def discard(module, p):
    prev = p["previous_path"]
    if not prev:
        return dict(changed=False)
    if not os.path.basename(prev).startswith(".aegir-previous-"):
        raise ArchiveError("refusing to remove %s: not a previous site directory" % prev)
    if not os.path.lexists(prev):
        return dict(changed=False)
    if not module.check_mode:
        rmtree(prev)
    return dict(changed=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True,
                       choices=["archive", "deploy", "rollback", "discard", "check", "remove", "clean"]),
            site_path=dict(type="path"),
            dest=dict(type="path"),
            src=dict(type="path"),
            dump_file=dict(type="path"),
            dump_dest=dict(type="path"),
            exclude=dict(type="list", elements="str",
                         default=["private/temp", "files/css", "files/js", "files/php"]),
            strip_secrets=dict(type="list", elements="str", default=["db_password"], no_log=False),
            reset_secrets=dict(type="list", elements="str", default=[], no_log=False),
            replace=dict(type="bool", default=False),
            keep_files=dict(type="list", elements="str", default=[]),
            previous_path=dict(type="path"),
            backup_dir=dict(type="path"),
            site_uri=dict(type="str"),
            site_nid=dict(type="int", default=0),
            sha256=dict(type="str"),
            tmp_dir=dict(type="path"),
            max_age=dict(type="int", default=86400),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        handler = {"archive": make_archive, "deploy": deploy, "rollback": rollback,
                   "discard": discard, "check": check, "remove": remove, "clean": clean}[p["state"]]
        result = handler(module, p)
    except (ArchiveError, common.AegirValueError) as exc:
        module.fail_json(msg=str(exc))
    except (OSError, KeyError, tarfile.TarError) as exc:
        module.fail_json(msg="%s: %s" % (type(exc).__name__, exc))
    if module._diff and result.get("changed"):
        result["diff"] = _path_diff(p, result)
    module.exit_json(**result)


def _path_diff(p, result):
    """Which paths this call makes appear, replaces or removes (contents are not shown:
    an archive may hold a site's private files)."""
    state = p["state"]
    if state == "archive":
        return {"before": "", "after": "%s (archive of %s)\n" % (p["dest"], p["site_path"]),
                "after_header": p["dest"]}
    if state == "deploy":
        before = "%s\n" % p["site_path"] if p["replace"] else ""
        return {"before": before, "after": "%s (from %s)\n" % (p["site_path"], p["src"]),
                "before_header": p["site_path"], "after_header": p["site_path"]}
    if state == "rollback":
        return {"before": "%s\n" % p["site_path"],
                "after": "%s (put back from %s)\n" % (p["site_path"], p["previous_path"])}
    if state == "remove":
        return {"before": "%s\n%s%s\n" % (p["src"], p["src"], MANIFEST_SUFFIX), "after": "",
                "before_header": p["src"]}
    if state == "clean":
        return {"before": "".join("%s\n" % path for path in result["removed"]), "after": ""}
    return {"before": "%s\n" % p["previous_path"], "after": "",
            "before_header": p["previous_path"]}


if __name__ == "__main__":
    main()
