"""How the `aegir` CLI is driven and read: settings from the environment and the config file
(and their precedence), shell completion from the database, --json on every command, times
(relative in text, ISO 8601 in JSON) and exit statuses."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from aegir_ansible.cli import main
from aegir_ansible.cli.base import human_time, iso_time
from aegir_ansible.db import make_engine
from aegir_ansible.db import models as m

from .test_cli import _ok, run

# Commands without --json, and why: their output is JSON, SQL or a daemon's log already.
NO_JSON = {
    "inventory": "prints the inventory's JSON",
    "db grants": "prints SQL statements",
    "db init": "the db group is another module's (see docs/cli.md)",
    "db revision": "a hidden developers' command that writes a migration file",
    "queue run": "a daemon: its output is its log",
}


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)
        else:
            yield " ".join(path), cmd


def test_every_command_has_json_or_a_reason():
    missing = [path for path, cmd in _commands(main)
               if path not in NO_JSON and "as_json" not in {p.name for p in cmd.params}]
    assert missing == []


@pytest.fixture
def sites(db_url):
    ok = lambda *a, **kw: _ok(run(db_url, *a, **kw))  # noqa: E731
    ok("server", "add", "master.example.net", "--local", "--http", "nginx", "--db-service", "mysql",
       "--db-user", "root")
    ok("platform", "add", "D10", "--root", "/var/aegir/platforms/d10", "--server", "server_masterexamplenet")
    ok("site", "add", "example.com", "--platform", "platform_D10")
    ok("site", "add", "example.org", "--platform", "platform_D10", "--no-install")
    return db_url


def _set_task(url, nid, status, executed, lines=()):
    engine = make_engine(url)
    with engine.begin() as c:
        vid = c.execute(select(m.Node.vid).where(m.Node.nid == nid)).scalar_one()
        c.execute(update(m.HostingTask).where(m.HostingTask.vid == vid)
                  .values(task_status=status, executed=executed, delta=75))
        for type_, message in lines:
            c.execute(m.HostingTaskLog.__table__.insert().values(
                vid=vid, nid=nid, type=type_, message=message, error="", timestamp=executed))
    engine.dispose()


def _task_nid(url, task_type, target):
    rows = json.loads(_ok(run(url, "task", "list", "--type", task_type, "--target", target,
                              "--json")).output)
    assert len(rows) == 1, rows
    return rows[0]["nid"]


def test_times_are_relative_in_text_and_iso_in_json(sites):
    nid = _task_nid(sites, "install", "example.com")
    executed = int(time.time()) - 180
    _set_task(sites, nid, m.TASK_SUCCESS, executed, [("success", "installed")])
    text = _ok(run(sites, "task", "list", "--status", "success")).output
    assert "3 min ago" in text and "1 min 15 s" in text and str(executed) not in text
    shown = json.loads(_ok(run(sites, "task", "show", str(nid), "--json")).output)
    assert datetime.fromisoformat(shown["executed"]).timestamp() == executed
    assert shown["log"][0]["timestamp"] == shown["executed"]
    assert shown["delta"] == 75  # a duration stays a number of seconds
    # no epoch seconds anywhere in the JSON of the listings
    for args in (("task", "list"), ("server", "list"), ("site", "list"), ("platform", "list")):
        out = _ok(run(sites, *args, "--json")).output
        assert not re.search(r":\s*1[0-9]{9}\b", out), (args, out)
    log = json.loads(_ok(run(sites, "task", "log", str(nid), "--json")).output.splitlines()[0])
    assert datetime.fromisoformat(log["timestamp"]).timestamp() == executed


def test_human_time():
    now = 1_800_000_000
    assert human_time(0) == "never" and iso_time(0) is None
    assert human_time(now - 180, now) == "3 min ago"
    assert human_time(now - 2 * 3600, now) == "2 h ago"
    assert human_time(now + 600, now) == "in 10 min"
    assert human_time(now - 30 * 86400, now) == datetime.fromtimestamp(now - 30 * 86400).strftime("%Y-%m-%d %H:%M")
    assert iso_time(now) == "2027-01-15T08:00:00+00:00"


def test_lists_are_filtered(sites):
    assert [r["uri"] for r in json.loads(_ok(run(sites, "site", "list", "--status", "enabled",
                                                 "--json")).output)] == ["example.org"]
    assert [r["uri"] for r in json.loads(_ok(run(sites, "site", "list", "--platform", "platform_D10",
                                                 "--json")).output)] == ["example.com", "example.org"]
    assert json.loads(_ok(run(sites, "site", "list", "--platform", "platform_none", "--json")).output) == []
    rows = json.loads(_ok(run(sites, "task", "list", "--type", "verify", "--json")).output)
    assert sorted(r["target"] for r in rows) == ["platform_D10", "server_masterexamplenet"]
    rows = json.loads(_ok(run(sites, "task", "list", "--target", "example.com", "--json")).output)
    assert [(r["type"], r["target"]) for r in rows] == [("install", "example.com")]
    assert json.loads(_ok(run(sites, "task", "list", "--status", "error", "--json")).output) == []
    rows = json.loads(_ok(run(sites, "server", "list", "--service", "db", "--json")).output)
    assert [r["name"] for r in rows] == ["server_masterexamplenet"]
    assert json.loads(_ok(run(sites, "server", "list", "--type", "apache", "--json")).output) == []
    assert len(json.loads(_ok(run(sites, "platform", "list", "--server", "server_masterexamplenet",
                                  "--json")).output)) == 1


def test_task_log_follow_exit_status(sites):
    nid = _task_nid(sites, "install", "example.com")
    _set_task(sites, nid, m.TASK_ERROR, int(time.time()), [("error", "it broke")])
    r = run(sites, "task", "log", str(nid), "--follow")
    assert r.exit_code == 1 and "it broke" in r.output and f"task {nid} failed" in r.stderr
    assert run(sites, "task", "log", str(nid)).exit_code == 0  # without --follow: printing worked
    other = _task_nid(sites, "verify", "platform_D10")
    _set_task(sites, other, m.TASK_SUCCESS, int(time.time()), [("success", "done")])
    assert _ok(run(sites, "task", "log", str(other), "--follow"))


def test_add_and_set_print_json(sites):
    out = json.loads(_ok(run(sites, "site", "add", "new.example.net", "--platform", "platform_D10",
                             "--json")).output)
    assert out["name"] == "new.example.net" and out["type"] == "site" and out["task"]
    assert out["status"] == "queued"
    out = json.loads(_ok(run(sites, "task", "add", "verify", "example.org", "--json")).output)
    assert out["status"] == "queued" and out["type"] == "verify"
    out = json.loads(_ok(run(sites, "task", "cancel", str(out["nid"]), "--json")).output)
    assert out["result"] == "cancelled"


def test_environment_supplies_every_option(sites):
    env = {"AEGIR_SITE_ADD_PROFILE": "minimal", "AEGIR_SITE_ADD_NO_INSTALL": "1",
           "AEGIR_SITE_ADD_PLATFORM": "platform_D10"}
    _ok(run(sites, "site", "add", "env.example.net", env=env))
    shown = json.loads(_ok(run(sites, "site", "show", "env.example.net", "--json")).output)
    assert shown["aegir_site_profile"] == "minimal" and shown["status"] == "enabled"
    # the command line wins over the environment
    _ok(run(sites, "site", "add", "cli.example.net", "--profile", "standard", env=env))
    assert json.loads(_ok(run(sites, "site", "show", "cli.example.net", "--json")).output)[
        "aegir_site_profile"] == "standard"
    # a bad value from the environment is bad usage too
    r = run(sites, "site", "add", "bad.example.net", env={**env, "AEGIR_SITE_ADD_PROFILE": "Not OK"})
    assert r.exit_code == 2 and "install profile" in r.stderr


def test_config_file_and_precedence(sites, tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text(f'db_url = "{sites}"\n[site.add]\nno-install = true\nprofile = "minimal"\n'
                    '[site.list]\nstatus = "enabled"\n')
    invoke = CliRunner().invoke
    r = invoke(main, ["--config", str(conf), "site", "add", "conf.example.net", "--platform",
                      "platform_D10"])
    assert r.exit_code == 0, r.output + r.stderr
    shown = json.loads(_ok(invoke(main, ["--config", str(conf), "site", "show", "conf.example.net",
                                         "--json"])).output)
    assert shown["aegir_site_profile"] == "minimal" and shown["status"] == "enabled"
    # environment over the file; AEGIR_CONFIG names the file
    r = invoke(main, ["site", "add", "env.example.net", "--platform", "platform_D10"],
               env={"AEGIR_CONFIG": str(conf), "AEGIR_SITE_ADD_PROFILE": "standard"})
    assert r.exit_code == 0, r.stderr
    r = invoke(main, ["site", "show", "env.example.net", "--json"], env={"AEGIR_CONFIG": str(conf)})
    assert json.loads(r.output)["aegir_site_profile"] == "standard"
    # a list's filter from the file; the command line overrides it
    r = invoke(main, ["site", "list", "--json"], env={"AEGIR_CONFIG": str(conf)})
    assert "example.com" not in [s["uri"] for s in json.loads(r.output)]
    r = invoke(main, ["site", "list", "--status", "queued", "--json"], env={"AEGIR_CONFIG": str(conf)})
    assert [s["uri"] for s in json.loads(r.output)] == ["example.com"]
    # the default file under $XDG_CONFIG_HOME
    (tmp_path / "xdg" / "aegir").mkdir(parents=True)
    (tmp_path / "xdg" / "aegir" / "config.toml").write_text(conf.read_text())
    r = invoke(main, ["site", "list", "--json"], env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert r.exit_code == 0 and "conf.example.net" in r.output
    # broken files are bad usage, said in one line
    bad = tmp_path / "bad.toml"
    bad.write_text("db_url = \n")
    r = invoke(main, ["--config", str(bad), "site", "list"])
    assert r.exit_code == 2 and "not valid TOML" in r.stderr
    bad.write_text('profile = "minimal"\n')
    r = invoke(main, ["--config", str(bad), "site", "list"])
    assert r.exit_code == 2 and "must be a table" in r.stderr
    r = invoke(main, ["--config", str(tmp_path / "missing.toml"), "site", "list"])
    assert r.exit_code == 2 and "does not exist" in r.stderr


def _complete(args: str, env=None) -> list[str]:
    words = f"aegir {args}"
    r = CliRunner().invoke(main, [], prog_name="aegir", env={
        "_AEGIR_COMPLETE": "bash_complete", "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)), **(env or {})})
    return [line.split(",", 1)[1] for line in r.output.splitlines() if "," in line]


def test_shell_completion_from_the_database(sites):
    env = {"AEGIR_DB_URL": sites}
    assert _complete("site set example.", env) == ["example.com", "example.org"]
    assert _complete("server show ", env) == ["server_masterexamplenet"]
    assert _complete(f"--db {sites} platform delete plat") == ["platform_D10"]
    assert _complete("site add x --platform ", env) == ["platform_D10"]
    nid = _task_nid(sites, "install", "example.com")
    assert str(nid) in _complete("task retry ", env)
    assert "platform_D10" in _complete("task add verify ", env)
    assert _complete("task add veri", env) == ["verify"]
    # no database there: nothing, and no traceback
    assert _complete("site set ", {"AEGIR_DB_URL": "sqlite:////nonexistent/dir/x.sqlite"}) == []
    src = CliRunner().invoke(main, [], prog_name="aegir", env={"_AEGIR_COMPLETE": "bash_source"})
    assert "_AEGIR_COMPLETE=bash_complete" in src.output
