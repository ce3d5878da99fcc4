#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write the files of many Aegir sites of one server in one call (see DOCUMENTATION)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aegir_site_files
short_description: Bring the directories, settings, sites.php entries and vhosts of many sites up to date in one call
description:
  - Normally called through the M(aegir.hosting.aegir_site_files) action plugin, which renders the role
    templates on the controller and passes the rendered contents here. One call handles every
    site of one server, so re-verifying thousands of sites costs one round trip.
  - For each site it creates the listed directories, writes the listed files (only when the
    content, mode, owner or group differ; atomic rename), keeps the site's aliases in the
    platform's C(sites/sites.php), writes or removes the site's vhost file, or (state
    C(absent)) removes the site directory and its C(sites.php) entries.
  - "Secrets (database password, hash salt) never travel in the rendered content: the content
    holds a placeholder token and the module fills in the value it finds in the existing file
    (lines ending with C(// aegir:secret <name>)), or the candidate value when O(allow_new_secrets)
    is set (site install). Verify therefore reads the password back on the server."
  - Every site is checked on its own; a bad site is reported in RV(sites) with C(failed) and
    does not stop the others.
  - Vhost changes are tested with O(test_cmd) before O(reload_cmd) runs. If the test fails,
    all vhost changes of the call are rolled back and re-applied one at a time, so only the
    broken sites fail and the running web server never loads a broken config. The server is
    reloaded at most once per call.
  - The whole call runs under an exclusive lock on O(lock_file), so parallel playbook runs on
    the same server serialise their edits of C(sites.php) and the vhost test/reload.
author:
  - aegir-ansible contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  sites:
    description: One dict per site (keys C(host), C(uri), C(site_path), C(platform_root),
      C(state), C(aliases), C(dirs), C(files), C(secrets), C(vhost)).
    type: list
    elements: dict
    required: true
  owner:
    description: Owner of the site directories and files.
    type: str
  group:
    description: Group of the site directories and files that the web server must read.
    type: str
  allow_new_secrets:
    description: Use the candidate value of a secret that is not found in the existing file.
    type: bool
    default: false
  refuse_existing_site:
    description:
      - Refuse a site whose directory holds a C(settings.php) or C(drushrc.php) this backend
        did not write (the install task's check, as provision's install validate does).
      - The targets of migrate, clone and restore hold the files they were given and do not set it.
    type: bool
    default: false
  return_secrets:
    description: Return the effective secrets per site (the task must use no_log).
    type: bool
    default: false
  vhost_dir:
    description: Directory every vhost file must be directly inside.
    type: path
  test_cmd:
    description: argv that checks the whole web server config; empty to skip.
    type: list
    elements: str
    default: []
  reload_cmd:
    description: argv that reloads the web server after a vhost change; empty to skip.
    type: list
    elements: str
    default: []
  lock_file:
    description: File flocked for the whole call.
    type: path
    required: true
  lock_timeout:
    description: Seconds to wait for the lock.
    type: int
    default: 300
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
# Through the action plugin of the same name, as the aegir_site role calls it: the plan step
# groups the play's site hosts by server, then one call per server renders each site's files
# on the controller from its inventory variables and writes them all.
- name: Find the servers that hold the sites of this play
  aegir.hosting.aegir_site_files:
    plan: true
    hosts: "{{ ansible_play_hosts }}"
  run_once: true
  register: plan

- name: Write the directories, settings.php and sites.php entries of each server's sites
  aegir.hosting.aegir_site_files:
    part: site
    server: "{{ item }}"
    hosts: "{{ ansible_play_hosts }}"
    state: present
    templates:
      settings: "{{ playbook_dir }}/templates/settings.php.j2"
    site_dirs:
      - {path: ".", mode: "0755"}
      - {path: files, mode: "02775"}
      - {path: private, mode: "02770"}
    lock_timeout: 300
  run_once: true
  delegate_to: "{{ item }}"
  loop: "{{ plan.servers }}"
  become: true
"""

RETURN = r"""
sites:
  description: Per inventory host, C(changed), C(failed), C(msg), C(changes) (and C(secrets) with O(return_secrets)).
  type: dict
  returned: always
reloaded:
  description: Whether the web server was reloaded.
  type: bool
  returned: always
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_site_common as common

SITES_PHP_HEADER = (
    "<?php\n\n"
    "/**\n"
    " * @file\n"
    " * Host name aliases of the sites of this platform (maintained by aegir-ansible).\n"
    " */\n\n"
)


class SiteError(Exception):
    """Fails one site without stopping the others."""


def _rel(path):
    """Validate a path relative to the site directory."""
    if not isinstance(path, str) or path.startswith("/") or "\x00" in path:
        raise SiteError("refusing path %r: must be relative to the site directory" % (path,))
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SiteError("refusing path %r: contains '..'" % (path,))
    return "/".join(parts)


def stat_mode(st):
    import stat

    return stat.S_IMODE(st.st_mode)


def _mode(value):
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    return int(str(value), 8)


class Runner(object):
    def __init__(self, module):
        self.module = module
        self.check = module.check_mode
        self.want_diff = module._diff
        p = module.params
        self.uid, self.gid = common.resolve_ids(p["owner"], p["group"])
        # Files that are not the site's own (sites.php, vhosts): owner's primary group.
        self.owner_gid = -1
        if p["owner"]:
            import pwd

            self.owner_gid = pwd.getpwnam(p["owner"]).pw_gid
        self.results = {}
        self.diffs = []
        self.vhost_changes = []  # dicts: host, path, old (bytes or None), new (bytes or None)
        self.sites_php = {}  # platform_root -> {"path": ..., "uris": {uri: set(aliases) or None}}

    # -- helpers ---------------------------------------------------------------------------
    def result(self, host):
        return self.results.setdefault(host, {"changed": False, "failed": False, "msg": "", "changes": []})

    def note(self, host, what):
        res = self.result(host)
        res["changed"] = True
        res["changes"].append(what)

    def ensure_dir(self, host, path, mode, uid, gid):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not os.path.isdir(path) or (st is not None and os.path.islink(path)):
            raise SiteError("%s exists and is not a directory (or is a symlink)" % path)
        if st is None:
            self.note(host, "created directory %s" % path)
            if self.want_diff:
                self.diffs.append({"before_header": path, "after_header": path,
                                   "before": {"path": path, "state": "absent"},
                                   "after": {"path": path, "state": "directory"}})
            if not self.check:
                os.mkdir(path, 0o700)
                common.set_attrs(path, mode, uid, gid)
            return
        if common.needs_attr_change(st, mode, uid, gid):
            self.note(host, "fixed mode/owner of %s" % path)
            if not self.check:
                common.set_attrs(path, mode, uid, gid)

    def ensure_file(self, host, path, data, mode, uid, gid, secret=False):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and (os.path.islink(path) or not os.path.isfile(path)):
            raise SiteError("%s exists and is not a regular file (or is a symlink)" % path)
        old = None
        if st is not None:
            with open(path, "rb") as handle:
                old = handle.read()
        if old != data:
            self.note(host, ("created %s" if old is None else "updated %s") % path)
            if self.want_diff:
                before = "" if old is None else old.decode("utf-8", "replace")
                after = data.decode("utf-8", "replace")
                if secret:
                    before, after = common.mask_secrets(before), common.mask_secrets(after)
                self.diffs.append({"before_header": path, "after_header": path, "before": before, "after": after})
            if not self.check:
                common.atomic_write(path, data, mode, uid, gid)
            return True
        if common.needs_attr_change(st, mode, uid, gid):
            self.note(host, "fixed mode/owner of %s" % path)
            if not self.check:
                common.set_attrs(path, mode, uid, gid)
        return False

    # -- one site --------------------------------------------------------------------------
    def site_paths(self, site):
        uri = common.check_hostname(site.get("uri"), "site uri")
        for alias in site.get("aliases") or []:
            common.check_hostname(alias, "alias of %s" % uri)
        root = common.check_path(site.get("platform_root"), "platform root")
        site_path = common.check_path(site.get("site_path") or os.path.join(root, "sites", uri), "site path")
        if site_path != os.path.join(root, "sites", uri):
            raise SiteError("site path %s must be <platform root>/sites/<uri> = %s"
                            % (site_path, os.path.join(root, "sites", uri)))
        return uri, root, site_path

    def process_site(self, site):
        host = site["host"]
        state = site.get("state") or "present"
        uri, root, site_path = self.site_paths(site)
        sites_dir = os.path.join(root, "sites")
        if state != "absent" and (site.get("dirs") or site.get("files")):
            if not os.path.isdir(root):
                raise SiteError("platform root %s does not exist (or is not a directory)" % root)
            if not os.path.isdir(sites_dir) or os.path.islink(sites_dir):
                raise SiteError("%s is not a directory: is %s a Drupal platform?" % (sites_dir, root))
        if site.get("manage_sites_php", True) and (state == "absent" or os.path.isdir(sites_dir)):
            entry = self.sites_php.setdefault(root, {"path": os.path.join(sites_dir, "sites.php"), "uris": {}})
            entry["uris"][uri] = (host, None if state == "absent" else set(site.get("aliases") or []))
        if state == "absent":
            if site.get("remove_site_dir", True):
                self.client_links(host, uri, site_path, site.get("clients"), present=False)
                self.remove_site_dir(host, site_path)
        else:
            self.write_site(host, site, site_path)
            self.client_links(host, uri, site_path, site.get("clients"), present=True)
        vhost = site.get("vhost")
        if vhost:
            self.vhost(host, uri, vhost)

    def client_links(self, host, uri, site_path, clients, present):
        """provision's `<clients>/<client>/<uri>` symlink to the site directory: made for the
        site's client (present), and removed wherever one of ours (a symlink pointing at this
        site directory) is under another client or the site goes (absent). Anything else of
        that name is left alone."""
        if not clients or not clients.get("path"):
            return
        base = common.check_path(clients["path"], "clients path")
        client = clients.get("client") or ""
        if client in (".", "..") or "/" in client:
            raise SiteError("client name %r is not usable as a directory name" % client)
        want = os.path.join(base, client, uri) if present and client else None
        if not os.path.isdir(base):
            if want:
                raise SiteError("clients directory %s does not exist: verify the server first" % base)
            return
        for name in sorted(os.listdir(base)):
            link = os.path.join(base, name, uri)
            if link == want or not os.path.islink(link):
                continue
            if os.readlink(link) == site_path:
                self.note(host, "removed client symlink %s" % link)
                if not self.check:
                    os.unlink(link)
        if not want:
            return
        cdir = os.path.dirname(want)
        if os.path.islink(want):
            if os.readlink(want) == site_path:
                return
            self.module.warn("%s: %s points elsewhere (%s): left in place" % (host, want, os.readlink(want)))
            return
        if os.path.lexists(want):
            self.module.warn("%s: %s exists and is not a symlink: left in place" % (host, want))
            return
        if os.path.islink(cdir) or (os.path.lexists(cdir) and not os.path.isdir(cdir)):
            raise SiteError("%s is not a directory" % cdir)
        self.note(host, "created client symlink %s" % want)
        if not self.check:
            if not os.path.isdir(cdir):
                os.mkdir(cdir, 0o750)
                common.set_attrs(cdir, 0o750, self.uid, self.owner_gid)
            os.symlink(site_path, want)
            if self.uid != -1:
                os.lchown(want, self.uid, self.owner_gid)

    def remove_site_dir(self, host, site_path):
        if os.path.islink(site_path):
            self.note(host, "removed symlink %s" % site_path)
            if not self.check:
                os.unlink(site_path)
        elif os.path.isdir(site_path):
            self.note(host, "removed directory %s" % site_path)
            if self.want_diff:
                self.diffs.append({"before_header": site_path, "after_header": site_path,
                                   "before": {"path": site_path, "state": "directory"},
                                   "after": {"path": site_path, "state": "absent"}})
            if not self.check:
                # Drupal makes the site dir and settings.php read-only; rmtree needs write bits.
                for dirpath, dirnames, _files in os.walk(site_path):
                    for name in dirnames:
                        p = os.path.join(dirpath, name)
                        if not os.path.islink(p):
                            os.chmod(p, 0o700)
                os.chmod(site_path, 0o700)
                shutil.rmtree(site_path)
        elif os.path.lexists(site_path):
            raise SiteError("%s is not a directory; refusing to remove it" % site_path)

    def write_site(self, host, site, site_path):
        p = self.module.params
        # Secrets: existing value from the current file, else the candidate (install only).
        existing = {}
        for spec in site.get("files") or []:
            full = os.path.join(site_path, _rel(spec["path"]))
            if os.path.isfile(full) and not os.path.islink(full):
                try:
                    with open(full, "r", encoding="utf-8", errors="replace") as handle:
                        existing.update(common.read_secrets(handle.read()))
                except OSError as exc:
                    raise SiteError("cannot read %s: %s" % (full, exc))
        if p["refuse_existing_site"] and not existing.get("db_password"):
            self.refuse_installed(site, site_path)
        if not existing.get("db_password") and site.get("provision"):
            existing.update(self.provision_secrets(host, site, site_path))
        values = {}
        for name, spec in (site.get("secrets") or {}).items():
            if existing.get(name):
                values[name] = existing[name]
            elif p["allow_new_secrets"] and spec.get("candidate"):
                values[name] = spec["candidate"]
            elif name == "hash_salt" and existing.get("db_password"):
                # A site taken over whose settings.php had no hash salt (provision's Drupal 7
                # template): a new one costs its users their sessions, not data.
                values[name] = spec["candidate"]
            else:
                raise SiteError(
                    "no %s found for %s: not in its settings.php (a line marked '// aegir:secret %s'), "
                    "nor, for a site provision made, in its drushrc.php ($options['db_passwd']) or its "
                    "vhost (db_passwd). Nothing was changed. If the site exists, put its database "
                    "credentials back in one of those places and verify again; if it was never "
                    "installed, its install task creates it." % (name, site_path, name)
                )
        if p["return_secrets"]:
            self.result(host)["secrets"] = values
        for spec in site.get("dirs") or []:
            rel = _rel(spec["path"])
            full = os.path.join(site_path, rel) if rel else site_path
            uid, gid = self.ids(spec)
            self.ensure_dir(host, full, _mode(spec.get("mode")), uid, gid)
        for spec in site.get("files") or []:
            rel = _rel(spec["path"])
            if not rel:
                raise SiteError("file path must not be empty")
            full = os.path.join(site_path, rel)
            if not os.path.isdir(os.path.dirname(full)) and not self.check:
                raise SiteError("directory of %s does not exist" % full)
            content = spec["content"]
            secret = False
            for name, sspec in (site.get("secrets") or {}).items():
                token = sspec.get("token")
                if token and token in content:
                    content = content.replace(token, common.php_string(values[name])[1:-1])
                    secret = True
            uid, gid = self.ids(spec)
            self.ensure_file(host, full, content.encode("utf-8"), _mode(spec.get("mode")), uid, gid,
                             secret=secret or bool(spec.get("secret")))

    @staticmethod
    def refuse_installed(site, site_path):
        """Install (new secrets allowed) of a site whose directory already holds a site that
        is not ours: refused before anything is written, as provision's install validate does."""
        found = [name for name in ("settings.php", "drushrc.php")
                 if os.path.lexists(os.path.join(site_path, name))]
        if found:
            raise SiteError(
                "%s is already installed (%s holds %s, not written by this backend's install): "
                "refusing to install over it. Nothing was changed: its files and database are "
                "untouched. Verify the site to take it over, or import it."
                % (site.get("uri"), site_path, " and ".join(found)))

    def provision_secrets(self, host, site, site_path):
        """The database password (and hash salt) of a site provision made: from its
        drushrc.php, else from its provision vhost (when that file names the site), but only
        when the database name and user recorded there are the site's own."""
        info = site["provision"]
        want = {"db_name": info.get("db_name"), "db_user": info.get("db_user")}
        found = {}
        sources = [("drushrc.php", os.path.join(site_path, "drushrc.php"), common.provision_drushrc_credentials)]
        legacy = info.get("vhost")
        if legacy:
            sources.append(("vhost", common.check_path(legacy, "provision vhost"), None))
        for label, path, reader in sources:
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            try:
                with open(path, "r", encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
            except OSError as exc:
                raise SiteError("cannot read %s: %s" % (path, exc))
            if reader is None:
                if not common.is_vhost_of(text, site["uri"]):
                    continue
                creds = common.provision_vhost_credentials(text)
            else:
                creds = reader(text)
            if not creds.get("db_passwd"):
                continue
            mismatch = [k for k, v in want.items() if v and creds.get(k) and creds[k] != v]
            if mismatch or not creds.get("db_name"):
                raise SiteError(
                    "the %s of %s (%s) names the database %s as user %s, not the site's %s as %s: "
                    "refusing to take its credentials. Nothing was changed."
                    % (label, site["uri"], path, creds.get("db_name", "?"), creds.get("db_user", "?"),
                       want["db_name"], want["db_user"]))
            found["db_password"] = creds["db_passwd"]
            self.note(host, "took over the site from provision (database credentials read from %s)" % path)
            break
        if not found:
            return {}
        settings = os.path.join(site_path, "settings.php")
        if os.path.isfile(settings) and not os.path.islink(settings):
            with open(settings, "r", encoding="utf-8", errors="replace") as handle:
                salt = common.provision_hash_salt(handle.read())
            if salt:
                found["hash_salt"] = salt
        return found

    def ids(self, spec):
        uid, gid = self.uid, self.gid
        if spec.get("owner"):
            uid = common.resolve_ids(spec["owner"], None)[0]
        if spec.get("group"):
            gid = common.resolve_ids(None, spec["group"])[1]
        return uid, gid

    # -- vhosts ----------------------------------------------------------------------------
    def vhost(self, host, uri, vhost):
        vdir = self.module.params["vhost_dir"]
        if not vdir:
            raise SiteError("vhost_dir is not set")
        vdir = common.check_path(vdir, "vhost directory")
        path = common.check_path(vhost.get("path") or "", "vhost path")
        if os.path.dirname(path) != vdir:
            raise SiteError("vhost %s must be directly inside %s" % (path, vdir))
        if not os.path.isdir(vdir):
            raise SiteError("vhost directory %s does not exist: verify the server first" % vdir)
        if os.path.islink(path):
            raise SiteError("vhost %s is a symlink; refusing to touch it" % path)
        old = None
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                old = handle.read()
        content = vhost.get("content")
        new = None if vhost.get("state") == "absent" or content is None else content.encode("utf-8")
        legacy = self.legacy_vhost(host, uri, vdir, vhost)
        if legacy is not None:
            # provision's vhost of the site (vhost.d/<uri>): replaced by this one, in the same
            # change (tested, rolled back and reloaded with it).
            self.note(host, "removed provision's vhost %s" % legacy["path"])
            if self.want_diff:
                self.diffs.append({"before_header": legacy["path"], "after_header": legacy["path"],
                                   "before": common.mask_provision_secrets(legacy["old"].decode("utf-8", "replace")),
                                   "after": ""})
            self.vhost_changes.append(legacy)
        if old == new:
            if new is not None:
                st = os.lstat(path)
                if common.needs_attr_change(st, 0o644, self.uid, self.owner_gid):
                    self.note(host, "fixed mode/owner of %s" % path)
                    if not self.check:
                        common.set_attrs(path, 0o644, self.uid, self.owner_gid)
            return
        self.note(host, ("removed %s" if new is None else "created %s" if old is None else "updated %s") % path)
        if self.want_diff:
            self.diffs.append({"before_header": path, "after_header": path,
                               "before": "" if old is None else old.decode("utf-8", "replace"),
                               "after": "" if new is None else new.decode("utf-8", "replace")})
        self.vhost_changes.append({"host": host, "path": path, "old": old, "new": new})

    def legacy_vhost(self, host, uri, vdir, vhost):
        """provision's own vhost file of the site (`vhost.d/<uri>`, no suffix), as a change that
        removes it, when it is proven to be the site's (it names the site: is_vhost_of). A file
        there that does not name the site is left alone (the server config does not load it)."""
        path = vhost.get("legacy_path")
        if not path:
            return None
        path = common.check_path(path, "provision vhost path")
        if os.path.dirname(path) != vdir or os.path.basename(path) != uri or path == vhost.get("path"):
            raise SiteError("provision vhost %s must be %s/%s" % (path, vdir, uri))
        if os.path.islink(path) or not os.path.isfile(path):
            return None
        st = os.lstat(path)
        with open(path, "rb") as handle:
            old = handle.read()
        if not common.is_vhost_of(old.decode("utf-8", "replace"), uri):
            self.module.warn("%s: %s does not name the site: left in place" % (host, path))
            return None
        return {"host": host, "path": path, "old": old, "new": None,
                "old_attrs": (stat_mode(st), st.st_uid, st.st_gid)}

    def put_vhost(self, change, which):
        data = change[which]
        if data is None:
            if os.path.lexists(change["path"]):
                os.unlink(change["path"])
        elif which == "old" and change.get("old_attrs"):
            mode, uid, gid = change["old_attrs"]
            common.atomic_write(change["path"], data, mode, uid, gid)
        else:
            common.atomic_write(change["path"], data, 0o644, self.uid, self.owner_gid)

    def run_test(self):
        cmd = self.module.params["test_cmd"]
        if not cmd:
            return True, ""
        rc, out, err = self.module.run_command(cmd)
        return rc == 0, (err or out or "").strip()

    def apply_vhosts(self):
        """Write the vhost changes, test, roll back what breaks the config, reload once."""
        changes = [c for c in self.vhost_changes if not self.results[c["host"]]["failed"]]
        if not changes or self.check:
            return False
        for change in changes:
            self.put_vhost(change, "new")
        ok, out = self.run_test()
        if not ok:
            # Roll everything back, then find the broken ones by applying one at a time.
            for change in reversed(changes):
                self.put_vhost(change, "old")
            # One site at a time: a site's changes (its vhost, and provision's vhost it
            # replaces) stand or fall together.
            kept = []
            by_host = {}
            for change in changes:
                by_host.setdefault(change["host"], []).append(change)
            for host, mine in by_host.items():
                for change in mine:
                    self.put_vhost(change, "new")
                good, msg = self.run_test()
                if good:
                    kept.extend(mine)
                else:
                    for change in reversed(mine):
                        self.put_vhost(change, "old")
                    res = self.result(host)
                    res["failed"] = True
                    res["msg"] = ("the web server config test failed with the new vhost %s, which was "
                                  "rolled back: %s" % (", ".join(c["path"] for c in mine), msg))
            changes = kept
        if not changes:
            return False
        cmd = self.module.params["reload_cmd"]
        if cmd:
            rc, out, err = self.module.run_command(cmd)
            if rc != 0:
                for change in changes:
                    res = self.result(change["host"])
                    res["failed"] = True
                    res["msg"] = "web server reload failed: %s" % (err or out).strip()
                return False
        return True

    # -- sites.php -------------------------------------------------------------------------
    def apply_sites_php(self):
        import re

        line_re = re.compile(r"^\$sites\[\s*'((?:[^'\\]|\\.)*)'\s*\]\s*=\s*'((?:[^'\\]|\\.)*)'\s*;\s*$")
        for root, entry in sorted(self.sites_php.items()):
            path = entry["path"]
            hosts = [h for (h, _a) in entry["uris"].values() if not self.results[h]["failed"]]
            if not hosts:
                continue
            try:
                old = None
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "r", encoding="utf-8") as handle:
                        old = handle.read()
                elif os.path.lexists(path):
                    raise SiteError("%s is not a regular file" % path)
                text = old if old is not None else SITES_PHP_HEADER
                lines = text.splitlines(True)
                want = {}
                for uri, (host, aliases) in entry["uris"].items():
                    if self.results[host]["failed"]:
                        continue
                    want[uri] = aliases
                out = []
                seen = set()
                changed_hosts = set()
                for line in lines:
                    m = line_re.match(line.rstrip("\n"))
                    if m:
                        alias = m.group(1).replace("\\'", "'").replace("\\\\", "\\")
                        target = m.group(2).replace("\\'", "'").replace("\\\\", "\\")
                        owner = None
                        if target in want:
                            owner = target
                        elif want.get(alias) is not None:
                            # An alias that now is a site of its own must not keep pointing elsewhere.
                            owner = alias
                        if owner is not None:
                            aliases = want[owner]
                            if owner == target and aliases is not None and alias in aliases and alias not in seen:
                                seen.add(alias)
                                out.append(line)
                                continue
                            changed_hosts.add(entry["uris"][owner][0])
                            continue
                    out.append(line)
                for uri, aliases in sorted(want.items()):
                    for alias in sorted(aliases or []):
                        if alias not in seen and alias != uri:
                            out.append("$sites[%s] = %s;\n" % (common.php_string(alias), common.php_string(uri)))
                            seen.add(alias)
                            changed_hosts.add(entry["uris"][uri][0])
                new = "".join(out)
                if old is None and not any(a for a in want.values()):
                    continue  # no aliases at all: no need for a sites.php
                if new != (old or ""):
                    for h in changed_hosts or set(hosts):
                        self.note(h, "updated %s" % path)
                    if self.want_diff:
                        self.diffs.append({"before_header": path, "after_header": path,
                                           "before": old or "", "after": new})
                    if not self.check:
                        common.atomic_write(path, new.encode("utf-8"), 0o644, self.uid, self.owner_gid)
            except (SiteError, OSError, common.AegirValueError) as exc:
                for h in hosts:
                    res = self.result(h)
                    res["failed"] = True
                    res["msg"] = "sites.php: %s" % exc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sites=dict(type="list", elements="dict", required=True),
            owner=dict(type="str"),
            group=dict(type="str"),
            allow_new_secrets=dict(type="bool", default=False),
            refuse_existing_site=dict(type="bool", default=False),
            return_secrets=dict(type="bool", default=False),
            vhost_dir=dict(type="path"),
            test_cmd=dict(type="list", elements="str", default=[]),
            reload_cmd=dict(type="list", elements="str", default=[]),
            lock_file=dict(type="path", required=True),
            lock_timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    try:
        runner = Runner(module)
    except KeyError as exc:
        module.fail_json(msg="unknown user or group: %s" % exc)
    lock_dir = os.path.dirname(module.params["lock_file"])
    if not os.path.isdir(lock_dir):
        module.fail_json(msg="directory of the lock file %s does not exist: verify the server first"
                         % module.params["lock_file"])
    reloaded = False
    try:
        with common.FileLock(module.params["lock_file"], module.params["lock_timeout"], create=not module.check_mode):
            seen_hosts = set()
            for site in module.params["sites"]:
                host = site.get("host") or site.get("uri") or "?"
                site["host"] = host
                if host in seen_hosts:
                    module.fail_json(msg="host %s is listed twice" % host)
                seen_hosts.add(host)
                res = runner.result(host)
                if site.get("error"):
                    res["failed"] = True
                    res["msg"] = site["error"]
                    continue
                try:
                    runner.process_site(site)
                except (SiteError, common.AegirValueError, OSError, KeyError) as exc:
                    res["failed"] = True
                    res["msg"] = "%s: %s" % (host, exc)
            runner.apply_sites_php()
            reloaded = runner.apply_vhosts()
    except TimeoutError as exc:
        module.fail_json(msg=str(exc))
    for host, res in runner.results.items():
        if not res["msg"]:
            res["msg"] = "; ".join(res["changes"]) if res["changes"] else "ok"
    result = dict(
        changed=any(r["changed"] and not r["failed"] for r in runner.results.values()) or reloaded,
        sites=runner.results,
        reloaded=reloaded,
        failed_hosts=sorted(h for h, r in runner.results.items() if r["failed"]),
    )
    if module._diff:
        result["diff"] = runner.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
