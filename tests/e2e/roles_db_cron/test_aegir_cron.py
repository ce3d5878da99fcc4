"""aegir_crontab module and aegir_cron role against the real crontab of a throwaway unix user."""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shlex
import shutil
import stat
import subprocess
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import read_crontab, write_crontab
from .helpers import MODULE_PATH, run_module, run_role, start_module

if os.geteuid() != 0:
    pytest.skip("the cron tests create a unix user (root needed)", allow_module_level=True)


def load_module():
    spec = importlib.util.spec_from_file_location("aegir_crontab_under_test", MODULE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cron_command(line: str) -> str:
    """The command cron hands to /bin/sh: field 6 on, `\\%` -> `%`, cut at an unescaped `%`."""
    cmd = line.split(None, 5)[5]
    out, escaped = [], False
    for ch in cmd:
        if escaped:
            if ch == "%":
                out[-1] = "%"
            else:
                out.append(ch)
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            out.append(ch)
            continue
        if ch == "%":
            break
        out.append(ch)
    return "".join(out)


def job_lines(text: str) -> dict[str, str]:
    lines = text.splitlines()
    return {lines[i][len("# aegir-cron: "):]: lines[i + 1]
            for i in range(len(lines) - 1) if lines[i].startswith("# aegir-cron: ")}


def cron_vars(user, lock, jobs, **more):
    v = {"aegir_cron_user": user["name"], "aegir_cron_lock_file": str(lock), "aegir_cron_jobs": jobs,
         "aegir_cron_become": False}
    v.update(more)
    return v


@pytest.fixture
def clean_crontab(cron_user):
    write_crontab(cron_user["name"], "")
    yield cron_user
    write_crontab(cron_user["name"], "")


def test_schedule_math():
    m = load_module()
    key = "example.com"
    h = zlib.crc32(key.encode()) & 0xFFFFFFFF
    assert m.key_hash(key) == h
    assert m.schedule_for(key, 1) == "*/1 * * * *"
    assert m.schedule_for(key, 60) == "*/1 * * * *"
    assert m.schedule_for(key, 300) == "*/5 * * * *"
    assert m.schedule_for(key, 1800) == "*/30 * * * *"
    assert m.schedule_for(key, 3599) == "*/59 * * * *"
    assert m.schedule_for(key, 3600) == f"{h % 60} */1 * * *"
    assert m.schedule_for(key, 6 * 3600) == f"{h % 60} */6 * * *"
    assert m.schedule_for(key, 86399) == f"{h % 60} */23 * * *"
    assert m.schedule_for(key, 86400) == f"{h % 60} {(h // 60) % 24} * * *"
    assert m.schedule_for(key, 3 * 86400) == f"{h % 60} {(h // 60) % 24} */3 * *"
    assert m.schedule_for(key, 7 * 86400) == f"{h % 60} {(h // 60) % 24} * * {(h // 1440) % 7}"
    # Stable across processes (not Python's salted hash()), and spread over the hour.
    out = subprocess.run(["python3", "-c", "import zlib; print(zlib.crc32(b'example.com') % 60)"],
                         capture_output=True, text=True, env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == str(h % 60)
    minutes = {m.schedule_for(f"site{i}.example.com", 3600).split()[0] for i in range(200)}
    assert len(minutes) > 40


def test_role_add_update_remove_keeps_foreign_lines(tmp_path, clean_crontab):
    user = clean_crontab
    lock = tmp_path / "crontab.lock"
    foreign = ("MAILTO=ops@example.com\n"
               "# a comment of someone else\n"
               "17 3 * * * /usr/local/bin/backup --all\n")
    write_crontab(user["name"], foreign)
    jobs = [
        {"key": "a.example.com", "interval": 3600, "command": ["/usr/bin/drush", "--uri=a.example.com", "cron"]},
        {"key": "b.example.com", "interval": 300, "command": ["/usr/bin/drush", "--uri=b.example.com", "cron"],
         "lock_file": str(tmp_path / "b.lock")},
        {"key": "c.example.com", "interval": 86400, "command": ["/usr/bin/drush", "cron"]},
    ]
    # Check mode: reports the change, shows the diff, writes nothing (not even the lock file).
    chk = run_role(tmp_path, "aegir_cron", extra=cron_vars(user, lock, jobs), check=True, diff=True)
    assert chk.rc == 0 and chk.changed == 1, chk
    assert "+# aegir-cron: a.example.com" in chk.output, chk
    assert read_crontab(user["name"]) == foreign
    assert not lock.exists()

    r = run_role(tmp_path, "aegir_cron", extra=cron_vars(user, lock, jobs))
    assert r.rc == 0 and r.changed == 1, r
    text = read_crontab(user["name"])
    assert text.startswith(foreign)
    lines = job_lines(text)
    assert list(lines) == ["a.example.com", "b.example.com", "c.example.com"]
    h = zlib.crc32(b"a.example.com") % 60
    assert lines["a.example.com"].startswith(f"{h} */1 * * * /usr/bin/flock -n ")
    assert lines["b.example.com"] == f"*/5 * * * * /usr/bin/flock -n {tmp_path / 'b.lock'} /usr/bin/drush --uri=b.example.com cron"
    assert shlex.split(cron_command(lines["c.example.com"]))[3:] == ["/usr/bin/drush", "cron"]
    assert lock.exists()

    again = run_role(tmp_path, "aegir_cron", extra=cron_vars(user, lock, jobs))
    assert again.rc == 0 and again.changed == 0, again
    assert read_crontab(user["name"]) == text

    # Someone appends a line of their own; then b is removed (absent) and c by interval 0,
    # and a changes interval.
    write_crontab(user["name"], text + "@reboot /usr/local/bin/other\n")
    jobs2 = [
        {"key": "a.example.com", "interval": 7200, "command": ["/usr/bin/drush", "--uri=a.example.com", "cron"]},
        {"key": "b.example.com", "state": "absent"},
        {"key": "c.example.com", "interval": 0},
        {"key": "never.example.com", "state": "absent"},
    ]
    r2 = run_role(tmp_path, "aegir_cron", extra=cron_vars(user, lock, jobs2), verbosity=1)
    assert r2.rc == 0 and r2.changed == 1, r2
    text2 = read_crontab(user["name"])
    assert text2.startswith(foreign) and text2.endswith("@reboot /usr/local/bin/other\n")
    assert list(job_lines(text2)) == ["a.example.com"]
    assert job_lines(text2)["a.example.com"].startswith(f"{h} */2 * * * ")
    for status in ('"a.example.com": "updated"', '"b.example.com": "removed"', '"c.example.com": "removed"',
                   '"never.example.com": "absent"'):
        assert status in r2.output, r2

    # purge: only the listed keys stay, foreign lines still untouched.
    m = run_module(tmp_path, {"user": user["name"], "lock_file": str(lock), "jobs": [
        {"key": "z.example.com", "interval": 60, "command": ["true"]}]})
    assert m["changed"] and m["jobs"] == {"z.example.com": "added"}
    m = run_module(tmp_path, {"user": user["name"], "lock_file": str(lock), "purge_keys_not_listed": True,
                              "jobs": [{"key": "z.example.com", "interval": 60, "command": ["true"]}]})
    assert m["changed"] and m["jobs"] == {"a.example.com": "purged", "z.example.com": "unchanged"}
    text3 = read_crontab(user["name"])
    assert list(job_lines(text3)) == ["z.example.com"]
    assert text3.startswith(foreign) and "@reboot /usr/local/bin/other\n" in text3


@pytest.mark.e2e
def test_concurrent_playbooks_lose_no_entry(tmp_path, clean_crontab):
    """Several real ansible-playbook processes edit one crontab at the same time."""
    user = clean_crontab
    lock = tmp_path / "crontab.lock"
    n = 8

    def one(i):
        job = {"key": f"site{i}.example.com", "interval": 3600, "command": ["/usr/bin/drush", f"--uri=site{i}", "cron"]}
        return run_role(tmp_path / f"p{i}", "aegir_cron", extra=cron_vars(user, lock, [job]))

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    assert all(r.rc == 0 and r.changed == 1 for r in results), [str(r) for r in results if r.rc or r.changed != 1]
    assert sorted(job_lines(read_crontab(user["name"]))) == sorted(f"site{i}.example.com" for i in range(n))


def test_twenty_concurrent_module_runs_lose_no_entry(tmp_path, clean_crontab):
    user = clean_crontab
    lock = tmp_path / "crontab.lock"
    procs = [start_module(tmp_path, {"user": user["name"], "lock_file": str(lock), "jobs": [
        {"key": f"s{i}.example.org", "interval": 300 + i * 60, "command": ["/bin/true", str(i)]}]})
        for i in range(20)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = job_lines(read_crontab(user["name"]))
    assert sorted(lines) == sorted(f"s{i}.example.org" for i in range(20))
    assert lines["s3.example.org"].startswith("*/8 * * * * ")


def test_shell_metacharacters_stay_inert(tmp_path, clean_crontab):
    user = clean_crontab
    # Relative paths: the line is run with cwd=tmp_path (and cron refuses very long lines).
    evil = "x$(touch pwned); touch pwned2 `touch pwned3` 'q\" && touch pwned4 | cat %s \\ $HOME >pwned5"
    key = "evil" + evil
    argv_out = tmp_path / "argv.out"
    fake_flock = tmp_path / "fake-flock"
    fake_flock.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\000" "$a"; done > "$ARGV_OUT"\n')
    fake_flock.chmod(0o755)
    command = ["/usr/bin/drush", f"--uri={evil}", evil, "date +%Y-%m-%d", "", "a b"]
    job_lock = str(tmp_path / "lock $(touch pwned6) 'x'")
    res = run_module(tmp_path, {"user": user["name"], "lock_file": str(tmp_path / "crontab.lock"),
                                "flock_path": str(fake_flock),
                                "jobs": [{"key": key, "interval": 60, "command": command, "lock_file": job_lock}]})
    assert res.get("changed") is True, res
    text = read_crontab(user["name"])
    line = job_lines(text)[key]
    assert text.count("\n") == 2  # marker + line: no line break smuggled in
    shell_cmd = cron_command(line)
    expected = [str(fake_flock), "-n", job_lock] + command
    assert shlex.split(shell_cmd) == expected
    # Run the line the way cron would (sh -c), with the fake flock that only records its argv.
    proc = subprocess.run(["sh", "-c", shell_cmd], env={"ARGV_OUT": str(argv_out), "PATH": "/usr/bin:/bin",
                                                        "HOME": "/nonexistent"}, cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0, proc
    assert argv_out.read_bytes().split(b"\0")[:-1] == [a.encode() for a in expected[1:]]
    assert not list(tmp_path.glob("pwned*"))


@pytest.mark.parametrize("job, what", [
    ({"key": "a\nb", "interval": 60, "command": ["true"]}, "key"),
    ({"key": "ok.example.com", "interval": 60, "command": ["echo", "x\n* * * * * touch /tmp/x"]}, "command"),
    ({"key": "ok.example.com", "interval": 60, "command": ["echo", "x\ry"]}, "command"),
    ({"key": "ok.example.com", "interval": 60, "command": ["echo", "50\\%"]}, "command"),
    ({"key": "ok.example.com", "interval": 60}, "command"),
])
def test_bad_values_are_refused(tmp_path, clean_crontab, job, what):
    user = clean_crontab
    write_crontab(user["name"], "# keep me\n")
    res = run_module(tmp_path, {"user": user["name"], "lock_file": str(tmp_path / "l"), "jobs": [job]})
    assert res.get("failed") and what in res["msg"], res
    assert read_crontab(user["name"]) == "# keep me\n"


def test_missing_user_and_check_mode_diff(tmp_path, clean_crontab):
    res = run_module(tmp_path, {"user": "no-such-user-" + secrets.token_hex(3), "lock_file": str(tmp_path / "l"),
                                "jobs": []})
    assert res.get("failed") and "does not exist" in res["msg"]
    user = clean_crontab
    res = run_module(tmp_path, {"user": user["name"], "lock_file": str(tmp_path / "l2"),
                                "jobs": [{"key": "k", "interval": 120, "command": ["true"]}]}, check=True, diff=True)
    assert res["changed"] and res["diff"]["before"] == "" and "# aegir-cron: k\n*/2 * * * * " in res["diff"]["after"]
    assert read_crontab(user["name"]) == ""
    assert not (tmp_path / "l2").exists()


def test_lock_file_mode(tmp_path, clean_crontab):
    user = clean_crontab
    lock = tmp_path / "l"
    run_module(tmp_path, {"user": user["name"], "lock_file": str(lock), "jobs": []})
    st = lock.stat()
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_uid == pwd.getpwnam(user["name"]).pw_uid


def test_record_runs_stamps_successful_runs_only(tmp_path, clean_crontab):
    """record_runs: the line ends with `&& touch -- <stamp>`; a run that succeeds (run as cron
    runs it: sh -c, as the crontab's user) touches the stamp and the next call returns its
    time in last_runs; a failing run leaves it; the calls are idempotent."""
    user = clean_crontab
    # The crontab's user runs the lines: a directory it can reach (pytest's are root's only).
    work = Path(tempfile.mkdtemp(prefix="aegir-cron-", dir="/tmp"))
    os.chmod(work, 0o777)
    try:
        _record_runs(tmp_path, work, user)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _record_runs(tmp_path, work, user):
    ok_lock, bad_lock = work / "ok job.lock", work / "bad.lock"
    args = {"user": user["name"], "lock_file": str(tmp_path / "crontab.lock"), "record_runs": True,
            "jobs": [{"key": "ok.example.com", "interval": 300, "command": ["/bin/true"], "lock_file": str(ok_lock)},
                     {"key": "bad.example.com", "interval": 300, "command": ["/bin/false"], "lock_file": str(bad_lock)}]}
    res = run_module(tmp_path, args)
    assert res["changed"] and res["last_runs"] == {}, res
    lines = job_lines(read_crontab(user["name"]))
    ok_stamp, bad_stamp = work / "ok job.last-run", work / "bad.last-run"
    assert shlex.split(cron_command(lines["ok.example.com"])) == [
        "/usr/bin/flock", "-n", str(ok_lock), "/bin/true", "&&", "/usr/bin/touch", "--", str(ok_stamp)]
    for key in ("ok.example.com", "bad.example.com"):
        proc = subprocess.run(["sh", "-c", cron_command(lines[key])], user=user["name"], cwd="/",
                              env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=30)
        assert proc.returncode == (0 if key.startswith("ok") else 1), proc
    assert ok_stamp.exists() and not bad_stamp.exists()
    os.utime(ok_stamp, (1_700_000_000, 1_700_000_000))
    again = run_module(tmp_path, args)
    assert again["changed"] is False and again["last_runs"] == {"ok.example.com": 1_700_000_000}, again
    # Without record_runs the lines are the plain ones again (and nothing is reported).
    plain = run_module(tmp_path, {**args, "record_runs": False})
    assert plain["changed"] and plain["last_runs"] == {}
    assert "touch" not in read_crontab(user["name"])
