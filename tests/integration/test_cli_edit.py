"""`aegir server|site|platform set`, `... delete` and `task retry`: the rows they change, the way
hostmaster's node edits, delete tasks and retry change them."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import delete, select, update

from aegir_ansible.db import make_engine
from aegir_ansible.db import models as m
from aegir_ansible.db.backend import ServerSettings, SiteSettings
from aegir_ansible.inventory import build_inventory

from .test_cli import _ok, row_counts, run


@pytest.fixture
def hosting(db_url):
    ok = lambda *a, **kw: _ok(run(db_url, *a, **kw))  # noqa: E731
    ok("server", "add", "master.example.net", "--local", "--http", "nginx", "--db-service", "mysql",
       "--db-user", "root", "--ip", "127.0.0.1", "--no-verify")
    ok("server", "add", "web2.example.net", "--http", "apache", "--no-verify")
    ok("platform", "add", "D10", "--root", "/var/aegir/platforms/d10", "--server",
       "server_masterexamplenet", "--no-verify")
    ok("site", "add", "example.com", "--platform", "platform_D10", "--alias", "www.example.com",
       "--redirection", "example.com", "--no-install")
    return db_url


def _engine_do(url, fn):
    engine = make_engine(url)
    try:
        with engine.begin() as c:
            return fn(c)
    finally:
        engine.dispose()


def _nid(c, name):
    return c.execute(select(m.HostingContext.nid).where(m.HostingContext.name == name)).scalar_one()


def _tasks(c, rid):
    return c.execute(select(m.Node.nid, m.HostingTask.task_type, m.HostingTask.task_status)
                     .join(m.HostingTask, m.HostingTask.vid == m.Node.vid)
                     .where(m.HostingTask.rid == rid).order_by(m.Node.nid)).all()


def _vars(url, host):
    engine = make_engine(url)
    try:
        from sqlalchemy.orm import Session

        with Session(engine) as s:
            return build_inventory(s).effective_vars(host)
    finally:
        engine.dispose()


def test_server_set_on_a_server_hostmaster_created(hosting):
    """A server with no backend settings row (hostmaster made it): `show` says so and lists
    the defaults; `set` creates the row with the given settings and queues a verify."""
    nid = _engine_do(hosting, lambda c: _nid(c, "server_web2examplenet"))
    _engine_do(hosting, lambda c: c.execute(delete(ServerSettings).where(ServerSettings.nid == nid)))
    shown = json.loads(_ok(run(hosting, "server", "show", "server_web2examplenet", "--json")).output)
    assert shown["settings"].startswith("defaults") and shown["ssh_user"] == "aegir"
    assert shown["ssh_port"] == 22 and shown["connection"] == "ssh"

    out = _ok(run(hosting, "server", "set", "server_web2examplenet", "--ssh-user", "deploy",
                  "--ssh-port", "2222", "--ssh-key", "/etc/aegir/id_ed25519", "--aegir-root",
                  "/srv/aegir/", "--script-user", "aegirx", "--web-group", "nginx", "--address",
                  "10.0.0.12", "--ip", "10.0.0.12", "--ip", "10.0.0.13", "--http-port", "8080",
                  "--http-reload-cmd", '["sudo", "systemctl", "reload", "apache2"]', "--json"))
    result = json.loads(out.output)
    assert result["name"] == "server_web2examplenet" and result["task"]
    hv = _vars(hosting, "server_web2examplenet")
    assert (hv["ansible_user"], hv["ansible_port"], hv["ansible_host"]) == ("deploy", 2222, "10.0.0.12")
    assert hv["ansible_ssh_private_key_file"] == "/etc/aegir/id_ed25519"
    assert (hv["aegir_root"], hv["aegir_script_user"], hv["aegir_web_group"]) == ("/srv/aegir", "aegirx", "nginx")
    assert hv["aegir_http_port"] == 8080 and hv["aegir_ip_addresses"] == ["10.0.0.12", "10.0.0.13"]
    assert hv["aegir_http_reload_cmd"] == ["sudo", "systemctl", "reload", "apache2"]
    shown = json.loads(_ok(run(hosting, "server", "show", "server_web2examplenet", "--json")).output)
    assert shown["settings"] == "stored" and shown["ssh_user"] == "deploy"
    assert shown["ip_addresses"] == ["10.0.0.12", "10.0.0.13"]
    # the verify hostmaster queues after an edit, once: a second edit reuses the waiting one
    again = json.loads(_ok(run(hosting, "server", "set", "server_web2examplenet", "--ssh-port",
                               "2223", "--json")).output)
    assert again["task"] == result["task"]
    verifies = _engine_do(hosting, lambda c: [t for t in _tasks(c, nid) if t.task_type == "verify"])
    assert len(verifies) == 1 and verifies[0].task_status == m.TASK_QUEUED
    # '' puts an optional setting back to its default; --local drops the ssh variables
    _ok(run(hosting, "server", "set", "server_web2examplenet", "--ssh-key", "", "--address", "",
            "--http-reload-cmd", "", "--local", "--no-verify"))
    hv = _vars(hosting, "server_web2examplenet")
    assert hv["ansible_connection"] == "local" and "ansible_ssh_private_key_file" not in hv
    assert hv["aegir_http_reload_cmd"] != ["sudo", "systemctl", "reload", "apache2"]


def test_server_set_refusals_change_nothing(hosting):
    before = row_counts(hosting)
    r = run(hosting, "server", "set", "server_web2examplenet", "--db-user", "x")
    assert r.exit_code == 1 and "has no db service" in r.stderr
    r = run(hosting, "server", "set", "server_web2examplenet", "--http-test-cmd", "nginx -t")
    assert r.exit_code == 2 and "JSON list" in r.stderr
    r = run(hosting, "server", "set", "server_web2examplenet", "--address", "-oProxyCommand=x")
    assert r.exit_code == 1 and "not a host name or IP address" in r.stderr
    assert row_counts(hosting) == before


def test_server_set_db_credentials(hosting, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("n3w-secret\n")
    out = _ok(run(hosting, "server", "set", "server_masterexamplenet", "--db-user", "aegir_root",
                  "--db-password-file", str(secret), "--db-port", "3307", "--no-verify"))
    assert "n3w-secret" not in out.output
    hv = _vars(hosting, "server_masterexamplenet")
    assert (hv["aegir_db_admin_user"], hv["aegir_db_admin_password"], hv["aegir_db_port"]) == \
        ("aegir_root", "n3w-secret", 3307)
    shown = _ok(run(hosting, "server", "show", "server_masterexamplenet")).output
    assert "n3w-secret" not in shown and "aegir_root" in shown


def test_site_set_aliases_redirection_cron_profile(hosting):
    _ok(run(hosting, "site", "set", "example.com", "--add-alias", "shop.example.com",
            "--cron-interval", "900", "--profile", "minimal", "--client", "acme", "--no-verify"))
    hv = _vars(hosting, "example.com")
    assert sorted(hv["aegir_site_aliases"]) == ["shop.example.com", "www.example.com"]
    assert hv["aegir_site_redirection"] == "example.com"  # kept, on every alias row
    assert hv["aegir_site_profile"] == "minimal" and hv["aegir_site_cron_interval"] == 900

    def rows(c):
        nid = _nid(c, "example.com")
        vid = c.execute(select(m.Node.vid).where(m.Node.nid == nid)).scalar_one()
        aliases = c.execute(select(m.HostingSiteAlias.alias, m.HostingSiteAlias.redirection)
                            .where(m.HostingSiteAlias.vid == vid)).all()
        return sorted(aliases), c.execute(select(SiteSettings.cron_interval)
                                          .where(SiteSettings.nid == nid)).scalar_one()

    aliases, cron = _engine_do(hosting, rows)
    assert aliases == [("shop.example.com", "example.com"), ("www.example.com", "example.com")]
    assert cron == 900
    # redirect to an alias, then remove that alias: the redirection goes with it
    _ok(run(hosting, "site", "set", "example.com", "--redirection", "www.example.com", "--no-verify"))
    assert _vars(hosting, "example.com")["aegir_site_redirection"] == "www.example.com"
    _ok(run(hosting, "site", "set", "example.com", "--remove-alias", "www.example.com", "--no-verify"))
    hv = _vars(hosting, "example.com")
    assert hv["aegir_site_aliases"] == ["shop.example.com"] and not hv.get("aegir_site_redirection")
    # an alias another site uses is refused
    _ok(run(hosting, "site", "add", "other.example.org", "--platform", "platform_D10", "--no-install"))
    r = run(hosting, "site", "set", "other.example.org", "--alias", "shop.example.com")
    assert r.exit_code == 1 and "already used by site 'example.com'" in r.stderr
    # the site's own aliases may be given again (a replace)
    _ok(run(hosting, "site", "set", "example.com", "--alias", "shop.example.com", "--alias",
            "m.example.com", "--redirection", "", "--json"))
    assert sorted(_vars(hosting, "example.com")["aegir_site_aliases"]) == ["m.example.com", "shop.example.com"]


def test_platform_set(hosting):
    _ok(run(hosting, "platform", "set", "platform_D10", "--title", "Drupal 10 (main)",
            "--root", "/var/aegir/platforms/d10b", "--no-verify"))
    hv = _vars(hosting, "platform_D10")
    assert hv["aegir_platform_root"] == "/var/aegir/platforms/d10b"
    # after its first verify the codebase is there: root and server no longer change
    _engine_do(hosting, lambda c: c.execute(update(m.HostingPlatform).values(verified=int(time.time()))))
    r = run(hosting, "platform", "set", "platform_D10", "--root", "/srv/elsewhere")
    assert r.exit_code == 1 and "was verified" in r.stderr
    r = run(hosting, "platform", "set", "platform_D10", "--server", "server_web2examplenet")
    assert r.exit_code == 1 and "was verified" in r.stderr
    _ok(run(hosting, "platform", "set", "platform_D10", "--makefile", "/srv/d10.make"))
    out = json.loads(_ok(run(hosting, "platform", "show", "platform_D10", "--json")).output)
    assert out["title"] == "Drupal 10 (main)"


def test_delete_of_what_never_ran_removes_it_at_once(hosting):
    """Nothing of a site whose install never ran is on a server: deleted here, its queued
    tasks cancelled as hostmaster's cancel does."""
    _ok(run(hosting, "site", "add", "new.example.org", "--platform", "platform_D10"))
    out = json.loads(_ok(run(hosting, "site", "delete", "new.example.org", "--json")).output)
    assert out["result"] == "deleted" and out["task"] is None

    def check(c):
        nid = c.execute(select(m.Node.nid).where(m.Node.title == "new.example.org")).scalar_one()
        assert c.execute(select(m.HostingContext).where(m.HostingContext.nid == nid)).first() is None
        vid = c.execute(select(m.Node.vid).where(m.Node.nid == nid)).scalar_one()
        assert c.execute(select(m.HostingSite.status).where(m.HostingSite.vid == vid)).scalar_one() \
            == m.SITE_DELETED
        assert [t.task_status for t in _tasks(c, nid)] == [m.TASK_WARNING]

    _engine_do(hosting, check)
    # a server nothing uses and nothing ran on
    out = json.loads(_ok(run(hosting, "server", "delete", "server_web2examplenet", "--json")).output)
    assert out["result"] == "deleted"
    assert "server_web2examplenet" not in _ok(run(hosting, "server", "list")).output


def test_delete_of_what_exists_queues_a_delete_task(hosting):
    # an enabled site must be disabled first (hosting_require_disable_before_delete)
    def enable(c):
        c.execute(update(m.HostingSite).values(status=m.SITE_ENABLED, verified=int(time.time())))

    _engine_do(hosting, enable)
    r = run(hosting, "site", "delete", "example.com")
    assert r.exit_code == 1 and "disable it first" in r.stderr
    _engine_do(hosting, lambda c: c.execute(update(m.HostingSite).values(status=m.SITE_DISABLED)))
    out = json.loads(_ok(run(hosting, "site", "delete", "example.com", "--json")).output)
    assert out["result"] == "queued" and out["task"]
    tasks = _engine_do(hosting, lambda c: _tasks(c, _nid(c, "example.com")))
    assert (out["task"], "delete", m.TASK_QUEUED) in [tuple(t) for t in tasks]
    r = run(hosting, "site", "delete", "example.com")
    assert r.exit_code == 1 and "has a delete task already" in r.stderr
    # the platform still has that site until its delete ran
    r = run(hosting, "platform", "delete", "platform_D10")
    assert r.exit_code == 1 and "still used by: site example.com" in r.stderr
    r = run(hosting, "server", "delete", "server_masterexamplenet")
    assert r.exit_code == 1 and "site example.com (its db server)" in r.stderr and "platform platform_D10" in r.stderr


def test_task_retry_makes_a_new_revision(hosting):
    nid = json.loads(_ok(run(hosting, "task", "add", "backup", "example.com", "--arg",
                             "description=before upgrade", "--json")).output)["nid"]
    r = run(hosting, "task", "retry", str(nid))
    assert r.exit_code == 1 and "only a finished task is retried" in r.stderr

    def fail(c):
        vid = c.execute(select(m.Node.vid).where(m.Node.nid == nid)).scalar_one()
        c.execute(update(m.HostingTask).where(m.HostingTask.vid == vid)
                  .values(task_status=m.TASK_ERROR, executed=int(time.time()) - 300, delta=12))
        c.execute(m.HostingTaskLog.__table__.insert().values(
            vid=vid, nid=nid, type="error", message="it broke", error="", timestamp=int(time.time())))
        return vid

    old_vid = _engine_do(hosting, fail)
    out = json.loads(_ok(run(hosting, "task", "retry", str(nid), "--json")).output)
    assert out["status"] == "queued" and out["vid"] != old_vid

    def check(c):
        vid = c.execute(select(m.Node.vid).where(m.Node.nid == nid)).scalar_one()
        assert vid == out["vid"]
        assert c.execute(select(m.HostingTask.task_status).where(m.HostingTask.vid == old_vid)).scalar_one() \
            == m.TASK_ERROR
        assert c.execute(select(m.HostingTask.task_status).where(m.HostingTask.vid == vid)).scalar_one() \
            == m.TASK_QUEUED
        args = c.execute(select(m.HostingTaskArgument.name, m.HostingTaskArgument.value)
                         .where(m.HostingTaskArgument.vid == vid)).all()
        assert [tuple(a) for a in args] == [("description", "before upgrade")]
        types = c.execute(select(m.HostingTaskLog.type).where(m.HostingTaskLog.vid == vid)).scalars().all()
        assert types == ["queue"]

    _engine_do(hosting, check)
    shown = _ok(run(hosting, "task", "show", str(nid))).output
    assert "hosting queue again" in shown and "it broke" not in shown  # the new revision's log
