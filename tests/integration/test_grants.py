"""The grants of `aegir db grants` are enough, on MariaDB, for `aegir db init` and the whole
queue (server/platform/site task types with their outcome hooks, clone's new site, renames,
backups, packages), and nothing more than that: the backend's user cannot read the rest of
the Drupal site, nor drop hostmaster's tables. The wildcard grant the docs used to give does
not let `aegir db init` create the backend's tables."""

from __future__ import annotations

import copy
import importlib.util
import secrets
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from aegir_ansible.cli import main
from aegir_ansible.cli.grants import grants_command
from aegir_ansible.db import make_engine
from aegir_ansible.db import models as m
from aegir_ansible.db.grants import FRONTEND_WRITES, backend_tables, grant_statements
from aegir_ansible.tasks import playbook_name
from tests.integration.queue.conftest import PLAYBOOKS, World, configure, run_once

REPO = Path(__file__).resolve().parents[2]
DDL = (REPO / "tests" / "integration" / "hostmaster_schema.sql").read_text()
# A Drupal site also has tables the backend must not read.
EXTRA_DDL = [
    "CREATE TABLE `users` (`uid` int(10) unsigned NOT NULL DEFAULT 0, `name` varchar(60) NOT NULL "
    "DEFAULT '', `pass` varchar(128) NOT NULL DEFAULT '', PRIMARY KEY (`uid`)) ENGINE=InnoDB",
    "INSERT INTO `users` VALUES (1, 'admin', '$S$hash')",
]
# Test playbooks reporting what the real ones would (set_stats aegir_results).
RESULT_PLAYBOOKS = {
    "backup": "{'backup_file': '/nonexistent/' ~ inventory_hostname ~ '.tar.gz', 'backup_size': 1}",
    "backup-delete": "{'deleted_bids': aegir_task_backup_files | map(attribute='bid') | list}",
    "migrate": "{'uri': aegir_task_new_uri, 'platform': aegir_task_target_platform, 'db_name': 'dropinmoved'}",
    "clone": "{'uri': aegir_task_new_uri, 'platform': aegir_task_target_platform, 'db_name': 'dropinclone'}",
}

pytestmark = pytest.mark.usefixtures("mysql_server_url")


def _account_host(admin_engine) -> list[str]:
    """The hosts MariaDB may see a TCP client on 127.0.0.1 as."""
    return ["127.0.0.1", "localhost"]


@pytest.fixture
def hostmaster(mysql_server_url):
    """A hostmaster database (dropin_gr_*) and a backend user (no grants yet)."""
    name = f"dropin_gr_{uuid.uuid4().hex[:10]}"
    user = f"dropin_gr_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(18)
    admin = create_engine(mysql_server_url)
    with admin.begin() as c:
        c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        for host in _account_host(admin):
            c.execute(text("CREATE USER :u@:h IDENTIFIED BY :p"), {"u": user, "h": host, "p": password})
    db = create_engine(f"{mysql_server_url}/{name}")
    with db.begin() as c:
        for statement in DDL.split(";\n") + EXTRA_DDL:
            if statement.strip():
                c.exec_driver_sql(statement)
    db.dispose()
    host_part = mysql_server_url.split("@", 1)[1]
    url = f"mysql+pymysql://{user}:{quote_plus(password)}@{host_part}/{name}"
    yield {"name": name, "user": user, "url": url, "admin": admin,
           "admin_url": f"{mysql_server_url}/{name}"}
    with admin.begin() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        for host in _account_host(admin):
            c.execute(text("DROP USER IF EXISTS :u@:h"), {"u": user, "h": host})
    admin.dispose()


def _apply(admin, statements):
    with admin.begin() as c:
        for statement in statements:
            c.exec_driver_sql(statement.replace("%", "%%"))  # the DBAPI's paramstyle is 'format'


def _playbooks(tmp_path) -> Path:
    out = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, out)
    for task_type, report in RESULT_PLAYBOOKS.items():
        (out / f"{playbook_name(task_type)}.yml").write_text(
            f"- name: Queue test playbook ({task_type})\n"
            "  ansible.builtin.import_playbook: verify.yml\n"
            f"- name: Report the {task_type}\n  hosts: all\n  gather_facts: false\n  tasks:\n"
            "    - name: Report\n      ansible.builtin.set_stats:\n        data:\n"
            "          aegir_results: \"{{ {inventory_hostname: " + report + "} }}\"\n")
    return out


def test_cli_prints_what_the_database_needs(hostmaster):
    result = CliRunner().invoke(grants_command, ["--user", "u1", "--host", "runner.example.com",
                                                 "--db", hostmaster["admin_url"]])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    grants = [ln for ln in lines if ln.startswith("GRANT ")]
    # The trimmed hostmaster has no hosting_https/ssl tables: skipped and said so.
    assert any("optional modules" in ln and "hosting_https_site" in ln for ln in lines)
    assert not any("hosting_https_site" in g for g in grants)
    assert f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{hostmaster['name']}`.`hosting_site_alias` " \
           "TO 'u1'@'runner.example.com';" in grants
    assert all("%" not in g for g in grants)
    assert len([g for g in grants if "`aegir_ansible_" in g]) == len(backend_tables())
    offline = CliRunner().invoke(grants_command, ["--user", "u1", "--host", "h", "--database", "hm", "--offline"])
    assert offline.exit_code == 0 and "`hm`.`hosting_https_site`" in offline.output
    bad = CliRunner().invoke(grants_command, ["--user", "u'1", "--host", "h", "--database", "hm", "--offline"])
    assert bad.exit_code == 2 and "unusable MySQL user name" in bad.output


def test_wildcard_grant_does_not_let_db_init_create_tables(hostmaster):
    """What docs/operations.md used to say: GRANT ALL ON db.`aegir\\_ansible\\_%` names one table."""
    name, user = hostmaster["name"], hostmaster["user"]
    _apply(hostmaster["admin"], [f"GRANT SELECT ON `{name}`.* TO '{user}'@'{h}'" for h in _account_host(None)]
           + [f"GRANT ALL ON `{name}`.`aegir\\_ansible\\_%` TO '{user}'@'{h}'" for h in _account_host(None)])
    result = CliRunner().invoke(main, ["db", "init", "--db", hostmaster["url"]])
    assert result.exit_code != 0
    assert "CREATE command denied" in result.output


def test_whole_queue_as_the_least_privileged_user(hostmaster, tmp_path):
    name, user, url = hostmaster["name"], hostmaster["user"], hostmaster["url"]
    with hostmaster["admin"].connect() as c:
        existing = [r[0] for r in c.execute(text(f"SHOW TABLES FROM `{name}`"))]
    for host in _account_host(None):
        _apply(hostmaster["admin"], grant_statements(user, host, name, existing_tables=existing))

    result = CliRunner().invoke(main, ["db", "init", "--db", url])
    assert result.exit_code == 0, result.output
    assert "existing Aegir database" in result.output
    configure(url, retry_max_attempts=1)

    # Entities added as `aegir server/platform/site add` would (the CLI's writes).
    w = World(url)
    try:
        w.server("web.local")
        p1 = w.platform("P1", "server_weblocal")
        p2 = w.platform("P2", "server_weblocal")
        a = w.site("a.dropin.test", "platform_P1", status=m.SITE_QUEUED, client="acme")
        b = w.site("b.dropin.test", "platform_P1", aliases=["www.b.dropin.test"])
        c = w.site("c.dropin.test", "platform_P1")
        d = w.site("d.dropin.test", "platform_P1", aliases=["d2.dropin.test"], redirection="d2.dropin.test")
        playbooks = _playbooks(tmp_path)
        first = [w.task("verify", "server_weblocal"), w.task("install", "a.dropin.test"),
                 w.task("verify", "b.dropin.test"), w.task("disable", "c.dropin.test"),
                 w.task("backup", "b.dropin.test"), w.task("lock", "platform_P2")]
        run_once(url, playbooks_dir=playbooks)
        for t in first:
            assert w.status(t) == m.TASK_SUCCESS, w.log_text(t)
        with w.Session() as s:
            bid = s.execute(select(m.HostingSiteBackup.bid).where(m.HostingSiteBackup.site == b)).scalar_one()
        second = [w.task("enable", "c.dropin.test"), w.task("unlock", "platform_P2"),
                  w.task("backup-delete", "b.dropin.test", **{str(bid): "/nonexistent/b.dropin.test.tar.gz"}),
                  w.task("migrate", "d.dropin.test", target_platform=str(p2), new_uri="d3.dropin.test"),
                  w.task("clone", "b.dropin.test", target_platform=str(p2), new_uri="e.dropin.test")]
        run_once(url, playbooks_dir=playbooks)
        for t in second:
            assert w.status(t) == m.TASK_SUCCESS, w.log_text(t)
        third = [w.task("disable", "a.dropin.test")]
        run_once(url, playbooks_dir=playbooks)
        third.append(w.task("delete", "a.dropin.test"))
        run_once(url, playbooks_dir=playbooks)
        for t in third:
            assert w.status(t) == m.TASK_SUCCESS, w.log_text(t)

        assert w.row(m.HostingSite, a).status == m.SITE_DELETED
        assert w.row(m.HostingSite, c).status == m.SITE_ENABLED
        assert w.row(m.HostingPlatform, p2).status == m.PLATFORM_ENABLED
        with w.Session() as s:
            assert s.get(m.HostingContext, d).name == "d3.dropin.test"  # the rename
            assert s.get(m.Node, d).title == "d3.dropin.test"
            clone = s.execute(select(m.HostingContext.nid).where(m.HostingContext.name == "e.dropin.test")).scalar()
            assert clone and s.get(m.HostingSite, s.get(m.Node, clone).vid).platform == p2
            assert s.execute(select(m.HostingSiteBackup).where(m.HostingSiteBackup.site == b)).first() is None
            # server verify queued the verify of its platforms (new task nodes)
            assert s.execute(select(m.HostingTask).where(m.HostingTask.rid == p1,
                                                         m.HostingTask.task_type == "verify")).first()

        # Packages and profiles, as platform and site verify will store them.
        from aegir_ansible import packages

        spec = importlib.util.spec_from_file_location("aegir_packages_utils", REPO / "plugins/module_utils/aegir_packages.py")
        scanner = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(scanner)
        scan = scanner.scan_platform(str(REPO / "tests/fixtures/provision/codebase/d10"))
        with w.Session() as s, s.begin():
            packages.sync_platform(s, p1, copy.deepcopy(scan["packages"]), scan["profiles"])
            packages.sync_site(s, b, scanner.scan_site(str(REPO / "tests/fixtures/provision/codebase/d10"),
                                                       "example.com", "standard", ["node"], scan))
            packages.sync_platform(s, p1, copy.deepcopy(scan["packages"]), [])
            packages.clear_instances(s, b, "site")
            assert packages.platform_profiles(s, p1)
    finally:
        w.close()

    # ... and no more than that.
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            for sql in ("SELECT * FROM users", "SELECT * FROM variable", "DROP TABLE hosting_task",
                        "DELETE FROM hosting_task", "UPDATE hosting_db_server SET db_passwd = ''",
                        "CREATE TABLE aegir_ansible_other (x int)"):
                with pytest.raises((OperationalError, ProgrammingError), match="denied"):
                    conn.execute(text(sql))
                conn.rollback()
    finally:
        eng.dispose()


def test_writes_name_only_modelled_tables():
    with pytest.raises(ValueError, match="does not model"):
        grant_statements("u", "h", "db", writes={**FRONTEND_WRITES, "users": ("UPDATE",)})
    with pytest.raises(ValueError):
        grant_statements("u", "h", "db`; DROP DATABASE x; --")
