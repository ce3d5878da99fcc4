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


BAD_INPUTS = [
    (("site", "add", "not a host!", "--platform", "platform_D10"), "not a valid host name"),
    (("site", "add", "bad-.example.com", "--platform", "platform_D10"), "not a valid host name"),
    (("site", "add", "{{lookup('pipe','id')}}", "--platform", "platform_D10"), "not a valid host name"),
    (("site", "add", "example.com", "--platform", "platform_D10"), "already"),
    (("site", "add", "new.example.com", "--platform", "platform_missing"), "no platform named"),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--db-server", "nope"), "no server"),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--alias", "www.example.com"),
     "already used by site 'example.com'"),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--alias", "example.com"),
     "already used by site 'example.com'"),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--alias", "a;rm -rf.example.com"),
     "not a valid host name"),
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--redirection", "other.example.com"),
     "redirection target"),
    # The module's limit (aegir_site_common.check_profile): else every verify would fail.
    (("site", "add", "new.example.com", "--platform", "platform_D10", "--profile", "p" * 100),
     "at most 64 characters"),
    (("server", "add", "new.example.net", "--php-fastcgi", "unix:relative"), "PHP FastCGI address"),
    (("server", "add", "new.example.net", "--listen-address", "0.0.0.0:80"), "listen address"),
    (("platform", "add", "Z", "--root", "/", "--server", "server_masterexamplenet"), "must not be /"),
    (("platform", "add", "D10", "--root", "/var/aegir/platforms/x", "--server", "server_masterexamplenet"),
     "already taken"),
    (("platform", "add", "X", "--root", "/var/aegir/../etc", "--server", "server_masterexamplenet"),
     "absolute path"),
    (("platform", "add", "Y", "--root", "/srv/y", "--server", "server_missing"), "no server named"),
    (("server", "add", "master.example.net", "--http", "nginx"), "already taken"),
    (("task", "add", "frobnicate", "example.com"), "unknown task type"),
    (("task", "add", "lock", "example.com"), "does not apply to a site"),
    (("task", "add", "verify", "missing.example.com"), "no server or platform or site"),
    (("task", "add", "verify", "example.com", "--arg", "novalue"), "KEY=VALUE"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_bad_input_is_refused_and_changes_nothing(populated, args, message):
    before = row_counts(populated)
    result = run(populated, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aegir: error:"), result.stderr
    assert message in lines[0]
    assert row_counts(populated) == before


def test_deleted_entities_are_refused(populated):
    engine = make_engine(populated)
    with engine.begin() as c:
        nid = c.execute(select(m.Node.nid).where(m.Node.title == "example.com")).scalar_one()
        c.execute(m.HostingSite.__table__.update().where(m.HostingSite.nid == nid).values(status=m.SITE_DELETED))
    engine.dispose()
    before = row_counts(populated)
    result = run(populated, "task", "add", "verify", "example.com")
    assert result.exit_code == 2 and "is deleted" in result.stderr
    assert row_counts(populated) == before
    # the deleted site's aliases are free again
    _ok(run(populated, "site", "add", "other.example.com", "--platform", "platform_D10",
            "--alias", "www.example.com"))


def test_missing_schema_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["site", "list", "--db", f"sqlite:///{tmp_path}/empty.sqlite"])
    assert result.exit_code == 2
    assert "aegir db init" in result.stderr


def test_db_url_from_environment(db_url):
    result = CliRunner().invoke(main, ["server", "list"], env={"AEGIR_DB_URL": db_url})
    assert result.exit_code == 0 and "(none)" in result.output
