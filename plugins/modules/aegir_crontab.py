#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Manage many Aegir cron entries of one user's crontab in one locked call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aegir_crontab
short_description: Manage many keyed cron jobs in one user's crontab, under an exclusive lock
description:
  - Adds, updates and removes cron jobs in the crontab of one unix user, all in one call.
  - "Each job owns two lines, a marker comment C(# aegir-cron: <key>) and the job line
    directly after it. Lines the module does not own are kept untouched and in order."
  - The whole read-modify-write of the crontab runs under an exclusive C(fcntl.flock) on
    O(lock_file), so concurrent C(ansible-playbook) processes (or forks) editing the same
    crontab never lose each other's entries, unlike M(ansible.builtin.cron).
  - "The job line is C(<schedule> /usr/bin/flock -n <job lock> <argv...>): every element is
    passed through Python's C(shlex.quote), so values such as site uris are inert arguments,
    never shell code. C(%), which cron would turn into a newline, is escaped as C(\\%)."
  - The per-job C(flock -n) keeps one run of a job from overlapping the next one.
  - Keys and command elements that contain a newline, a carriage return or a NUL byte are
    refused, and so is the two-character sequence C(\%), which cron cannot represent.
  - The crontab is read with C(crontab -l -u <user>) (no crontab counts as empty) and only
    written, with C(crontab -u <user> <tmpfile>), when its content changes.
version_added: "0.1.0"
author:
  - aegir-ansible contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  user:
    description:
      - The unix user whose crontab is managed. It must exist.
      - Editing another user's crontab needs root (use C(become)).
    type: str
    required: true
  lock_file:
    description:
      - Path of the file to C(flock) while the crontab is read, edited and written.
      - Every caller that edits this user's crontab must use the same path.
      - Created (mode 0644, owned by O(user) when the module runs as root) if missing.
        In check mode it is not created; the lock is taken only if it already exists.
    type: path
    required: true
  lock_timeout:
    description:
      - Seconds to wait for O(lock_file) before failing.
    type: int
    default: 120
  jobs:
    description:
      - The jobs to manage. Keys must be unique in the list.
    type: list
    elements: dict
    default: []
    suboptions:
      key:
        description:
          - Unique id of the job in this crontab, typically the site uri.
          - "Written into the marker comment C(# aegir-cron: <key>)."
        type: str
        required: true
      interval:
        description:
          - Seconds between runs. C(0) (or less) removes the job.
          - Below 3600 the job runs every C(N = interval // 60) minutes (at least 1), as C(*/N * * * *).
          - From 3600 to below 86400 it runs every C(H = interval // 3600) hours at minute
            C(M), as C(M */H * * *).
          - From 86400 it runs daily at C(H:M) (C(M H * * *)); from 2 to 6 days every
            C(D = interval // 86400) days (C(M H */D * *)); from 604800 weekly (C(M H * * W)).
          - C(M), C(H) and C(W) come from the CRC32 of the key, so they are stable across
            runs and hosts and spread many sites over the hour, day and week.
        type: int
        default: 0
      command:
        description:
          - The command as an argv list (no shell). Required when the job is present.
        type: list
        elements: str
      lock_file:
        description:
          - Path that C(flock -n) holds while the job runs, so runs never overlap.
          - Defaults to C(.aegir-cron-<safe key>-<crc32>.lock) in the directory of O(lock_file).
        type: path
      state:
        description:
          - Whether the job should be in the crontab.
        type: str
        choices: [present, absent]
        default: present
  purge_keys_not_listed:
    description:
      - "Also remove every job owned by this module (marker C(# aegir-cron: ...)) whose key is not in O(jobs)."
    type: bool
    default: false
  flock_path:
    description:
      - Path of the C(flock) program written into the job lines.
    type: path
    default: /usr/bin/flock
  crontab_path:
    description:
      - The C(crontab) program used to read and write the crontab.
    type: path
    default: crontab
  record_runs:
    description:
      - "Each job line ends with C(&& <touch> <stamp>): a run that succeeded updates the time of
        its stamp file (the job lock's path with C(.lock) replaced by C(.last-run)), and
        RV(last_runs) returns that time per job. Hostmaster shows it as the site's last cron run."
    type: bool
    default: false
  touch_path:
    description:
      - Path of the C(touch) program written into the job lines with O(record_runs).
    type: path
    default: /usr/bin/touch
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
notes:
  - Values are data, never code. Do not build O(jobs[].command) from a shell string; pass the argv.
  - Keep secrets out of job lines; crontabs are readable by their owner and root.
seealso:
  - module: ansible.builtin.cron
"""

EXAMPLES = r"""
- name: Site cron jobs of one web server in one locked call
  aegir_crontab:
    user: aegir
    lock_file: /var/aegir/.aegir-crontab.lock
    jobs:
      - key: example.com
        interval: 3600
        command: [/var/aegir/platforms/d10/vendor/bin/drush, --root=/var/aegir/platforms/d10, --uri=example.com, cron]
        lock_file: /var/aegir/.locks/cron-example.com.lock
      - key: old.example.org
        state: absent
  become: true

- name: Keep exactly the listed jobs, drop every other aegir-cron entry
  aegir_crontab:
    user: aegir
    lock_file: /var/aegir/.aegir-crontab.lock
    purge_keys_not_listed: true
    jobs: "{{ aegir_cron_jobs }}"
"""

RETURN = r"""
changed:
  description: Whether the crontab was (or, in check mode, would be) rewritten.
  returned: always
  type: bool
jobs:
  description:
    - Per-key status, one of C(added), C(updated), C(unchanged), C(removed), C(absent)
      (asked to remove, was not there) and C(purged) (removed by O(purge_keys_not_listed)).
  returned: always
  type: dict
  sample: {"example.com": "added", "old.example.org": "removed"}
lines:
  description: The job line (without marker) of each present job.
  returned: always
  type: dict
  sample: {"example.com": "17 */1 * * * /usr/bin/flock -n /var/aegir/.locks/x.lock /usr/bin/drush cron"}
last_runs:
  description:
    - With O(record_runs), the time (seconds since the epoch) of the last successful run of
      each present job that has run since its line records runs.
  returned: always
  type: dict
  sample: {"example.com": 1796412345}
diff:
  description: Crontab before and after, when run with C(--diff).
  returned: when diff mode is on
  type: dict
"""

import errno
import fcntl
import os
import pwd
import re
import shlex
import tempfile
import time
import zlib

from ansible.module_utils.basic import AnsibleModule

MARKER = "# aegir-cron: "
FORBIDDEN_CHARS = ("\n", "\r", "\x00")


class CrontabError(Exception):
    pass


def key_hash(key):
    """Stable hash of a key (CRC32 of its UTF-8 bytes, not Python's salted hash())."""
    return zlib.crc32(key.encode("utf-8")) & 0xFFFFFFFF


def schedule_for(key, interval):
    """Cron schedule (5 fields) for a job that runs every `interval` seconds."""
    interval = int(interval)
    if interval <= 0:
        raise CrontabError("interval must be positive to build a schedule")
    h = key_hash(key)
    minute = h % 60
    hour = (h // 60) % 24
    weekday = (h // 1440) % 7
    if interval < 3600:
        n = max(1, interval // 60)
        return "*/%d * * * *" % n
    if interval < 86400:
        return "%d */%d * * *" % (minute, interval // 3600)
    days = interval // 86400
    if days >= 7:
        return "%d %d * * %d" % (minute, hour, weekday)
    if days >= 2:
        return "%d %d */%d * *" % (minute, hour, days)
    return "%d %d * * *" % (minute, hour)


def check_value(what, value):
    for ch in FORBIDDEN_CHARS:
        if ch in value:
            raise CrontabError("%s %r contains a newline, carriage return or NUL byte; "
                               "refusing to write it into a crontab" % (what, value))
    if "\\%" in value:
        raise CrontabError("%s %r contains the sequence '\\%%', which cannot be written "
                           "into a crontab line" % (what, value))


def cron_escape(text):
    """Escape '%' so cron does not turn it into a newline (cron removes the backslash)."""
    return text.replace("%", "\\%")


def default_job_lock(lock_file, key):
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:80]
    return os.path.join(os.path.dirname(lock_file) or ".",
                        ".aegir-cron-%s-%08x.lock" % (safe, key_hash(key)))


def run_stamp(job_lock):
    """The file a successful run touches (record_runs): beside the job's lock."""
    base = job_lock[:-len(".lock")] if job_lock.endswith(".lock") else job_lock
    return base + ".last-run"


def job_line(key, interval, command, job_lock, flock_path="/usr/bin/flock", stamp=None,
             touch_path="/usr/bin/touch"):
    argv = [flock_path, "-n", job_lock] + list(command)
    line = " ".join(shlex.quote(a) for a in argv)
    if stamp:
        # The only shell syntax of the line, written by the module: every value stays quoted.
        line += " && " + " ".join(shlex.quote(a) for a in (touch_path, "--", stamp))
    return schedule_for(key, interval) + " " + cron_escape(line)


def parse_crontab(text):
    """Split crontab text into items: ('line', str) or ('job', key, line_or_None)."""
    items = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(MARKER):
            key = line[len(MARKER):]
            job = None
            if i + 1 < len(lines) and not lines[i + 1].startswith(MARKER):
                job = lines[i + 1]
                i += 1
            items.append(("job", key, job))
        else:
            items.append(("line", line))
        i += 1
    return items


def render_crontab(items):
    out = []
    for item in items:
        if item[0] == "line":
            out.append(item[1])
        else:
            out.append(MARKER + item[1])
            if item[2] is not None:
                out.append(item[2])
    return "".join(line + "\n" for line in out)


def apply_jobs(text, jobs, purge=False):
    """Return (new_text, status, lines) after applying normalised jobs to crontab text.

    jobs: list of dicts with key, state ('present'|'absent') and, when present, line.
    """
    items = parse_crontab(text)
    wanted = {}
    for job in jobs:
        wanted[job["key"]] = job
    status = {}
    lines = {}
    seen = set()
    new_items = []
    for item in items:
        if item[0] != "job":
            new_items.append(item)
            continue
        key, old_line = item[1], item[2]
        if key in seen:
            # A duplicate block for a key already handled: drop it.
            if key in wanted and wanted[key]["state"] == "present" and status.get(key) == "unchanged":
                status[key] = "updated"
            continue
        seen.add(key)
        job = wanted.get(key)
        if job is None:
            if purge:
                status[key] = "purged"
                continue
            new_items.append(item)
            continue
        if job["state"] == "absent":
            status[key] = "removed"
            continue
        lines[key] = job["line"]
        status[key] = "unchanged" if old_line == job["line"] else "updated"
        new_items.append(("job", key, job["line"]))
    for job in jobs:
        key = job["key"]
        if key in seen:
            continue
        if job["state"] == "absent":
            status[key] = "absent"
        else:
            status[key] = "added"
            lines[key] = job["line"]
            new_items.append(("job", key, job["line"]))
    return render_crontab(new_items), status, lines


def normalise_jobs(params):
    jobs = []
    keys = set()
    for raw in params["jobs"]:
        key = raw["key"]
        if key is None or key == "":
            raise CrontabError("every job needs a non-empty key")
        check_value("key", key)
        if key in keys:
            raise CrontabError("duplicate key %r in jobs" % key)
        keys.add(key)
        state = raw.get("state") or "present"
        interval = int(raw.get("interval") or 0)
        if state == "present" and interval <= 0:
            state = "absent"
        job = {"key": key, "state": state}
        if state == "present":
            command = raw.get("command")
            if not command:
                raise CrontabError("job %r: command (a non-empty argv list) is required when the job is present" % key)
            for arg in command:
                check_value("command element of job %r:" % key, arg)
            job_lock = raw.get("lock_file") or default_job_lock(params["lock_file"], key)
            check_value("lock_file of job %r:" % key, job_lock)
            stamp = run_stamp(job_lock) if params.get("record_runs") else None
            if stamp:
                check_value("touch_path", params.get("touch_path") or "/usr/bin/touch")
            job["line"] = job_line(key, interval, command, job_lock, params["flock_path"],
                                   stamp, params.get("touch_path") or "/usr/bin/touch")
            if stamp:
                job["stamp"] = stamp
        jobs.append(job)
    return jobs


class CrontabLock(object):
    def __init__(self, module, path, timeout, create, owner_uid):
        self.module = module
        self.path = path
        self.timeout = timeout
        self.create = create
        self.owner_uid = owner_uid
        self.fd = None

    def __enter__(self):
        path = self.path
        created = False
        if self.create:
            try:
                self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise CrontabError("cannot create lock file %s: %s" % (path, e))
        if self.fd is None:
            for flags in (os.O_RDWR, os.O_RDONLY):
                try:
                    self.fd = os.open(path, flags)
                    break
                except OSError as e:
                    if e.errno == errno.ENOENT and not self.create:
                        return self  # check mode without a lock file: nothing to lock
                    if e.errno not in (errno.EACCES, errno.EPERM) or flags == os.O_RDONLY:
                        raise CrontabError("cannot open lock file %s: %s" % (path, e))
        if created and os.geteuid() == 0 and self.owner_uid is not None:
            try:
                os.fchown(self.fd, self.owner_uid, -1)
            except OSError:
                pass
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise CrontabError("cannot lock %s: %s" % (path, e))
            if time.monotonic() >= deadline:
                raise CrontabError("timed out after %ss waiting for the lock on %s" % (self.timeout, path))
            time.sleep(0.05)

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None
        return False


class Crontab(object):
    def __init__(self, module, user, crontab_path):
        self.module = module
        self.user = user
        self.bin = module.get_bin_path(crontab_path, required=True) if "/" not in crontab_path else crontab_path
        pw = pwd.getpwnam(user)
        self.uid = pw.pw_uid
        # Non-root callers editing their own crontab do not need (and may not use) -u.
        self.user_args = [] if os.geteuid() == self.uid else ["-u", user]

    def read(self):
        rc, out, err = self.module.run_command([self.bin, "-l"] + self.user_args)
        if rc == 0:
            return out
        if "no crontab for" in (err + out).lower():
            return ""
        raise CrontabError("crontab -l for %s failed (rc=%s): %s" % (self.user, rc, (err or out).strip()))

    def write(self, text):
        fd, path = tempfile.mkstemp(prefix="aegir-crontab-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            if os.geteuid() == 0:
                os.chmod(path, 0o644)
            rc, out, err = self.module.run_command([self.bin] + self.user_args + [path])
            if rc != 0:
                raise CrontabError("crontab for %s could not be installed (rc=%s): %s"
                                   % (self.user, rc, (err or out).strip()))
        finally:
            os.unlink(path)


def last_runs(jobs):
    """{key: mtime} of the stamps of the present jobs that record their runs."""
    out = {}
    for job in jobs:
        stamp = job.get("stamp")
        if not stamp:
            continue
        try:
            st = os.lstat(stamp)
        except OSError:
            continue
        if not os.path.islink(stamp):
            out[job["key"]] = int(st.st_mtime)
    return out


def run_module():
    job_spec = dict(
        key=dict(type="str", required=True, no_log=False),
        interval=dict(type="int", default=0),
        command=dict(type="list", elements="str"),
        lock_file=dict(type="path"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleModule(
        argument_spec=dict(
            user=dict(type="str", required=True),
            lock_file=dict(type="path", required=True),
            lock_timeout=dict(type="int", default=120),
            jobs=dict(type="list", elements="dict", options=job_spec, default=[]),
            purge_keys_not_listed=dict(type="bool", default=False),
            flock_path=dict(type="path", default="/usr/bin/flock"),
            crontab_path=dict(type="path", default="crontab"),
            record_runs=dict(type="bool", default=False),
            touch_path=dict(type="path", default="/usr/bin/touch"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        pwd.getpwnam(params["user"])
    except KeyError:
        module.fail_json(msg="unix user %r does not exist" % params["user"])
    try:
        jobs = normalise_jobs(params)
        crontab = Crontab(module, params["user"], params["crontab_path"])
        with CrontabLock(module, params["lock_file"], params["lock_timeout"],
                         create=not module.check_mode, owner_uid=crontab.uid):
            before = crontab.read()
            after, status, lines = apply_jobs(before, jobs, params["purge_keys_not_listed"])
            changed = after != before
            if changed and not module.check_mode:
                crontab.write(after)
    except CrontabError as e:
        module.fail_json(msg=str(e))
    result = dict(changed=changed, jobs=status, lines=lines, last_runs=last_runs(jobs))
    if module._diff:
        header = "crontab of %s" % params["user"]
        result["diff"] = dict(before=before, after=after, before_header=header, after_header=header)
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
