"""The `aegir` CLI: rows written like hostmaster, and bad input refused cleanly."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from aegir_ansible.cli import main
from aegir_ansible.db import make_engine
from aegir_ansible.db import models as m
from aegir_ansible.db.backend import BackendBase
from aegir_ansible.db.models import AegirBase


def run(db_url, *args, env=None):
    return CliRunner().invoke(main, [*args, "--db", db_url], env=env)


def row_counts(db_url) -> dict[str, int]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for md in (AegirBase.metadata, BackendBase.metadata)
                  for t in md.sorted_tables}
    engine.dispose()
    return counts


@pytest.fixture
def populated(db_url):
    ok = lambda *a, **kw: _ok(run(db_url, *a, **kw))  # noqa: E731
    ok("server", "add", "master.example.net", "--local", "--http", "nginx",
       "--db-service", "mysql", "--db-user", "root", "--ip", "127.0.0.1",
       env={"AEGIR_DB_ADMIN_PASSWORD": "pw-from-env"})
    ok("platform", "add", "D10", "--root", "/var/aegir/platforms/d10", "--server",
       "server_masterexamplenet")
    ok("site", "add", "example.com", "--platform", "platform_D10", "--alias", "www.example.com",
       "--redirection", "example.com")
    return db_url


def _ok(result):
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


def test_rows_written_like_hostmaster(populated):
    engine = make_engine(populated)
    with engine.connect() as c:
        site = c.execute(select(m.Node).where(m.Node.type == "site")).one()
        # node.vid points at its revision, and the hosting row shares that vid
        rev = c.execute(select(m.NodeRevision).where(m.NodeRevision.vid == site.vid)).one()
        assert rev.nid == site.nid and rev.title == "example.com"
        hs = c.execute(select(m.HostingSite).where(m.HostingSite.vid == site.vid)).one()
        assert hs.nid == site.nid and hs.status == m.SITE_QUEUED and hs.language == "en"
        assert c.execute(select(m.HostingContext.name).where(m.HostingContext.nid == site.nid)).scalar_one() == "example.com"
        alias = c.execute(select(m.HostingSiteAlias).where(m.HostingSiteAlias.vid == site.vid)).one()
        assert (alias.alias, alias.redirection, alias.automatic) == ("www.example.com", "example.com", 0)
        # profile is the nid of a package node of type profile
        pkg = c.execute(select(m.HostingPackage).where(m.HostingPackage.nid == hs.profile)).one()
        assert (pkg.package_type, pkg.short_name) == ("profile", "standard")
        # services and the db admin row of the server revision
        server = c.execute(select(m.Node).where(m.Node.type == "server")).one()
        services = dict(c.execute(select(m.HostingService.service, m.HostingService.type)
                                  .where(m.HostingService.vid == server.vid)).all())
        assert services == {"http": "nginx", "db": "mysql"}
        assert c.execute(select(m.HostingDbServer.db_passwd).where(
            m.HostingDbServer.vid == server.vid)).scalar_one() == "pw-from-env"
        # hostmaster queues verify for a new server/platform and install for a new site
        tasks = c.execute(select(m.HostingTask.task_type, m.HostingTask.rid, m.HostingTask.task_status)
                          .join(m.Node, m.Node.vid == m.HostingTask.vid)).all()
        assert ("install", site.nid, m.TASK_QUEUED) in tasks
        title = c.execute(select(m.Node.title).join(m.HostingTask, m.HostingTask.vid == m.Node.vid)
                          .where(m.HostingTask.task_type == "install")).scalar_one()
        assert title == "Install: example.com"
    engine.dispose()


def test_task_add_with_arguments_and_listing(populated):
    _ok(run(populated, "task", "add", "backup", "example.com", "--arg", "description=before upgrade"))
    out = _ok(run(populated, "task", "list", "--json")).output
    assert '"type": "backup"' in out
    engine = make_engine(populated)
    with engine.connect() as c:
        args = c.execute(select(m.HostingTaskArgument.name, m.HostingTaskArgument.value)).all()
    engine.dispose()
    assert ("description", "before upgrade") in args
    task_nid = int(_ok(run(populated, "task", "add", "verify", "example.com")).output.split()[1])
    shown = _ok(run(populated, "task", "show", str(task_nid))).output
    assert "Verify: example.com" in shown and "queued" in shown
    assert "example.com" in _ok(run(populated, "site", "list")).output
    assert "platform_D10" in _ok(run(populated, "platform", "list")).output
    assert "server_masterexamplenet" in _ok(run(populated, "server", "list")).output


def test_show_hides_secrets(populated):
    out = _ok(run(populated, "server", "show", "server_masterexamplenet")).output
    assert "pw-from-env" not in out and "aegir_db_admin_user" in out


def test_idna_uri_is_stored_in_ascii(populated):
    _ok(run(populated, "site", "add", "Bücher.Example", "--platform", "platform_D10"))
    assert "xn--bcher-kva.example" in _ok(run(populated, "site", "list")).output


# Exit status 2: a value the CLI checks itself (aegir_ansible.validation) before it touches
# the database; 1: the operation is refused by what the database holds.
BAD_INPUTS = [
    (("site", "add", "not a host!", "--platform", "platform_D10"), "not a valid host name", 2),
    (("site", "add", "bad-.example.com", "--platform", "platform_D10"), "not a valid host name", 2),
    (("site", "add", "{{lookup('pipe','id')}}", "--platform", "platform_D10"), "not a valid host name", 2),
    (("site", "add", "example.com", "--platform", "platform_D10"), "already", 1),
    (("site", "add", "new.example.com", "--platform", "platform_missing"), "no platform named", 1),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--db-server", "nope"), "no server", 1),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--alias", "www.example.com"),
     "already used by site 'example.com'", 1),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--alias", "example.com"),
     "already used by site 'example.com'", 1),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--alias", "a;rm -rf.example.com"),
     "not a valid host name", 2),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--redirection", "other.example.com"),
     "redirection target", 1),
    # The module's limit (aegir_site_common.check_profile): else every verify would fail.
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--profile", "p" * 100),
     "at most 64 characters", 2),
    (("server", "add", "new.example.net", "--php-fastcgi", "unix:relative"), "PHP FastCGI address", 2),
    (("server", "add", "new.example.net", "--listen-address", "0.0.0.0:80"), "listen address", 2),
    (("server", "add", "new.example.net", "--ssh-port", "70000"), "ssh port 70000 is out of range", 2),
    (("server", "add", "new.example.net", "--ip", "300.1.1.1"), "not an IP address", 2),
    (("platform", "add", "Z", "--root", "/", "--server", "server_masterexamplenet"), "must not be /", 2),
    (("platform", "add", "D10", "--root", "/var/aegir/platforms/x", "--server", "server_masterexamplenet"),
     "already taken", 1),
    (("platform", "add", "X", "--root", "/var/aegir/../etc", "--server", "server_masterexamplenet"),
     "absolute path", 2),
    (("platform", "add", "Y", "--root", "/srv/y", "--server", "server_missing"), "no server named", 1),
    (("server", "add", "master.example.net", "--http", "nginx"), "already taken", 1),
    (("task", "add", "frobnicate", "example.com"), "'frobnicate' is not one of", 2),
    (("task", "add", "lock", "example.com"), "does not apply to a site", 1),
    (("task", "add", "verify", "missing.example.com"), "no server or platform or site", 1),
    (("task", "add", "verify", "example.com", "--arg", "novalue"), "KEY=VALUE", 2),
    (("server", "set", "server_masterexamplenet", "--ssh-user", "Bad User"), "not a valid unix", 2),
    (("server", "set", "server_masterexamplenet"), "nothing to change", 2),
    (("server", "set", "server_missing", "--ssh-port", "2222"), "no server named", 1),
    (("site", "set", "example.com", "--cron-interval", "-5"), "cron interval", 2),
    (("site", "set", "example.com", "--redirection", "elsewhere.example.org"), "redirection target", 1),
    (("site", "set", "example.com", "--remove-alias", "nope.example.com"), "has no alias", 1),
    (("platform", "set", "platform_D10", "--root", "/srv/a/../b"), "absolute path", 2),
    (("server", "delete", "server_masterexamplenet"), "still used by", 1),
    (("platform", "delete", "platform_D10"), "still used by: site example.com", 1),
    (("task", "retry", "999"), "no task 999", 1),
]


@pytest.mark.parametrize("args,message,code", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _, _ in BAD_INPUTS])
def test_bad_input_is_refused_and_changes_nothing(populated, args, message, code):
    before = row_counts(populated)
    result = run(populated, *args)
    assert result.exit_code == code, result.output + result.stderr
    assert message in result.stderr
    if code == 1 or "Usage:" not in result.stderr:  # ours: one line; click's adds its usage
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("aegir: error:"), result.stderr
    assert row_counts(populated) == before


def test_deleted_entities_are_refused(populated):
    engine = make_engine(populated)
    with engine.begin() as c:
        nid = c.execute(select(m.Node.nid).where(m.Node.title == "example.com")).scalar_one()
        c.execute(m.HostingSite.__table__.update().where(m.HostingSite.nid == nid).values(status=m.SITE_DELETED))
    engine.dispose()
    before = row_counts(populated)
    result = run(populated, "task", "add", "verify", "example.com")
    assert result.exit_code == 1 and "is deleted" in result.stderr
    assert row_counts(populated) == before
    # the deleted site's aliases are free again
    _ok(run(populated, "site", "add", "other.example.com", "--platform", "platform_D10",
            "--alias", "www.example.com"))


def test_missing_schema_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["site", "list", "--db", f"sqlite:///{tmp_path}/empty.sqlite"])
    assert result.exit_code == 1
    assert "aegir db init" in result.stderr


def test_db_url_from_environment(db_url):
    result = CliRunner().invoke(main, ["server", "list"], env={"AEGIR_DB_URL": db_url})
    assert result.exit_code == 0 and "(none)" in result.output
