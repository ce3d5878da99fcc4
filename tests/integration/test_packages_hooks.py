"""The outcome hooks (aegir_ansible/queue/hooks.py) write what hostmaster's post-task hooks
would from what the playbooks report: a platform verify's packages and profiles
(hosting_package_sync()), the sites it found on disk (site nodes and import tasks), a site's
packages on verify/install/import, the import's rows, cron_key on install and last_cron on
run_cron, an import queued after an install refused as "already installed". On SQLite and on
MariaDB with Aegir 3's real schema (tests/integration/hostmaster_schema.sql)."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import pytest
from ansible_collections.aegir.hosting.plugins.module_utils import aegir_packages as scanner
from sqlalchemy import create_engine, insert, select, text

from aegir_ansible import packages as pkg
from aegir_ansible.db import init_schema, make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend
from aegir_ansible.queue.hooks import run_hooks
from aegir_ansible.queue.types import TaskResult, TaskRow

REPO = Path(__file__).resolve().parents[2]
CODEBASE = REPO / "tests" / "fixtures" / "provision" / "codebase"
SCAN = scanner.scan_platform(str(CODEBASE / "d10"))
DDL = (REPO / "tests" / "integration" / "hostmaster_schema.sql").read_text()


@pytest.fixture(params=["sqlite", "hostmaster"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'hooks.sqlite'}")
        init_schema(engine)
        yield engine
        engine.dispose()
        return
    server = request.getfixturevalue("mysql_server_url")
    name = f"dropin_ph_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server)
    with admin.begin() as c:
        c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    engine = make_engine(f"{server}/{name}")
    try:
        with engine.begin() as c:
            for stmt in (s.strip() for s in DDL.split(";\n")):
                body = "\n".join(line for line in stmt.splitlines() if not line.startswith("--")).strip()
                if body:
                    c.execute(text(body))
        init_schema(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def world(engine):
    S = make_sessionmaker(engine)
    with S() as s, s.begin():
        fe = Frontend(s)
        fe.add_server("master.ph.test", name="server_ph", local=True, http="nginx", db="mysql",
                      db_user="root", db_password="x", queue_verify=False)
        fe.add_platform("D10", "/var/aegir/platforms/d10", "server_ph", queue_verify=False)
        fe.add_site("known.example.com", "platform_D10", queue_install=False,
                    aliases=["alias.example.com"])
    return S


def _nid(s, name):
    return s.execute(select(m.HostingContext.nid).where(m.HostingContext.name == name)).scalar_one()


def _task(S, task_type, target, status=m.TASK_PROCESSING) -> TaskRow:
    with S() as s, s.begin():
        fe = Frontend(s)
        nid = fe.add_task(task_type, target)
        s.flush()
        node = s.get(m.Node, nid)
        task = s.get(m.HostingTask, node.vid)
        task.task_status = status
        rid = task.rid
        tnode = s.get(m.Node, rid)
        return TaskRow(vid=node.vid, nid=nid, task_type=task_type, rid=rid, target_type=tnode.type,
                       target_name=str(target), site_status=None, platform_status=None,
                       server_status=None, server=None, platform=None, site=None)


def _hooks(engine, task: TaskRow, result: dict, succeeded=True, now=1_700_000_000):
    tr = TaskResult(task=task, result=result)
    with engine.begin() as conn:
        run_hooks(conn, tr, succeeded, now)
    return tr


def _site(S, name):
    with S() as s:
        node = s.get(m.Node, _nid(s, name))
        return s.get(m.HostingSite, node.vid)


def _log(S, task: TaskRow):
    with S() as s:
        return [(t, msg) for t, msg in s.execute(select(m.HostingTaskLog.type, m.HostingTaskLog.message)
                                                 .where(m.HostingTaskLog.vid == task.vid))]


def _queued(S, task_type, rid):
    with S() as s:
        return s.execute(select(m.HostingTask.nid).join(m.Node, m.Node.vid == m.HostingTask.vid).where(
            m.HostingTask.rid == rid, m.HostingTask.task_type == task_type,
            m.HostingTask.task_status == m.TASK_QUEUED)).scalars().all()


def _platform_result(sites_found=()):
    return {"packages": copy.deepcopy(SCAN["packages"]), "profiles": SCAN["profiles"],
            "drupal_version": SCAN["version"], "sites_found": list(sites_found)}


def test_platform_verify_stores_packages_and_profiles(engine, world):
    task = _task(world, "verify", "platform_D10")
    _hooks(engine, task, _platform_result())
    with world() as s:
        platform = _nid(s, "platform_D10")
        # hostmaster offers these profiles for new sites on the platform (hosting_get_profiles()).
        assert pkg.platform_profiles(s, platform) == ["custom_profile", "minimal", "standard"]
        names = set(s.execute(select(m.HostingPackage.short_name).join(
            m.HostingPackageInstance, m.HostingPackageInstance.package_id == m.HostingPackage.nid)
            .where(m.HostingPackageInstance.rid == platform)).scalars())
        assert {"node", "token", "olivero", "drupal", "standard"} <= names
        languages = s.execute(select(m.HostingPackageLanguage.language)).scalars().all()
        assert "en" in languages
        assert s.get(m.HostingPlatform, s.get(m.Node, platform).vid).verified == 1_700_000_000
    # Again: the same rows, no duplicates (hosting_package_sync() finds the packages).
    with world() as s:
        before = (s.execute(select(m.HostingPackage.nid)).scalars().all(),
                  s.execute(select(m.HostingPackageInstance.iid)).scalars().all())
    _hooks(engine, _task(world, "verify", "platform_D10"), _platform_result())
    with world() as s:
        assert s.execute(select(m.HostingPackage.nid)).scalars().all() == before[0]
        assert sorted(s.execute(select(m.HostingPackageInstance.iid)).scalars().all()) == sorted(before[1])


def test_platform_verify_imports_unknown_sites_only(engine, world):
    task = _task(world, "verify", "platform_D10")
    found = ["new.example.com", "known.example.com", "alias.example.com", "Bad_Name!", "platform_D10"]
    _hooks(engine, task, _platform_result(found))
    with world() as s:
        nid = _nid(s, "new.example.com")
        site = s.get(m.HostingSite, s.get(m.Node, nid).vid)
        assert site.status == m.SITE_QUEUED and site.platform == _nid(s, "platform_D10")
        # Its instances are the platform's base packages (hostmaster does the same).
        assert s.execute(select(m.HostingPackageInstance.iid)
                         .where(m.HostingPackageInstance.rid == nid)).first() is not None
        sites = s.execute(select(m.Node.title).join(m.HostingSite, m.HostingSite.vid == m.Node.vid).where(
            m.Node.type == "site", m.HostingSite.platform == _nid(s, "platform_D10")).order_by(m.Node.nid)).scalars().all()
        assert sites == ["known.example.com", "new.example.com"]
    assert len(_queued(world, "import", nid)) == 1
    text_ = "\n".join(msg for _t, msg in _log(world, task))
    assert "Imported existing site(s), an import task queued for each: new.example.com." in text_
    assert "Bad_Name!" in text_
    # A second verify finds it known: nothing new.
    _hooks(engine, _task(world, "verify", "platform_D10"), _platform_result(found))
    assert len(_queued(world, "import", nid)) == 1


def test_site_verify_and_install_store_the_site_packages(engine, world):
    _hooks(engine, _task(world, "verify", "platform_D10"), _platform_result())
    site = scanner.scan_site(str(CODEBASE / "d10"), "example.com", "standard", ["node", "olivero"], SCAN)
    task = _task(world, "verify", "known.example.com")
    _hooks(engine, task, {"packages": copy.deepcopy(site)})
    with world() as s:
        nid = _nid(s, "known.example.com")
        rows = dict(s.execute(select(m.HostingPackage.short_name, m.HostingPackageInstance.status)
                              .join(m.HostingPackageInstance, m.HostingPackageInstance.package_id == m.HostingPackage.nid)
                              .where(m.HostingPackageInstance.rid == nid)).all())
    assert rows["node"] == 1 and rows["olivero"] == 1 and rows["token"] == 0 and rows["standard"] == 1
    # A failed read leaves the instances and says why.
    task2 = _task(world, "verify", "known.example.com")
    _hooks(engine, task2, {"packages_failed": "known.example.com: drush pm:list failed"})
    with world() as s:
        assert s.execute(select(m.HostingPackageInstance.iid)
                         .where(m.HostingPackageInstance.rid == _nid(s, "known.example.com"))).first()
    assert ("warning", "The site's packages could not be read: known.example.com: drush pm:list failed") in _log(world, task2)
    # Data hostmaster's sync cannot store costs a warning, not the outcome.
    task3 = _task(world, "verify", "known.example.com")
    _hooks(engine, task3, {"packages": {"modules": {"x": {"version": "1", "status": "not a number"}}}})
    assert any(t == "warning" and "could not be recorded" in msg for t, msg in _log(world, task3))
    assert _site(world, "known.example.com").verified == 1_700_000_000


def test_install_writes_the_cron_key_only_when_the_site_has_none(engine, world):
    with world() as s, s.begin():
        site = s.get(m.HostingSite, s.get(m.Node, _nid(s, "known.example.com")).vid)
        site.cron_key = ""
    _hooks(engine, _task(world, "install", "known.example.com"), {"cron_key": "K" * 43})
    assert _site(world, "known.example.com").cron_key == "K" * 43
    _hooks(engine, _task(world, "install", "known.example.com"), {"cron_key": "L" * 43})
    assert _site(world, "known.example.com").cron_key == "K" * 43


def test_install_refused_as_already_installed_queues_an_import(engine, world):
    task = _task(world, "install", "known.example.com")
    with engine.begin() as c:
        c.execute(insert(m.HostingTaskLog).values(
            vid=task.vid, nid=task.nid, type="error", error="", timestamp=1,
            message="known.example.com is already installed: an install would overwrite it."))
    _hooks(engine, task, {}, succeeded=False)
    with world() as s:
        nid = _nid(s, "known.example.com")
    assert len(_queued(world, "import", nid)) == 1
    assert any("Generating an import task" in msg for _t, msg in _log(world, task))
    _hooks(engine, task, {}, succeeded=False)  # written again: still one
    assert len(_queued(world, "import", nid)) == 1
    # Another failure queues nothing.
    other = _task(world, "install", "known.example.com")
    _hooks(engine, other, {}, succeeded=False)
    assert len(_queued(world, "import", nid)) == 1


def test_import_fills_the_site_rows(engine, world):
    _hooks(engine, _task(world, "verify", "platform_D10"),
           _platform_result(["imp.example.com", "other.example.com"]))
    with world() as s, s.begin():
        vid = s.get(m.Node, _nid(s, "imp.example.com")).vid
        s.get(m.HostingSite, vid).cron_key = ""
        s.execute(select(m.Node.nid)).all()
    task = _task(world, "import", "imp.example.com")
    site_pk = scanner.scan_site(str(CODEBASE / "d10"), "example.com", "custom_profile", ["node"], SCAN)
    _hooks(engine, task, {"import": {"db_name": "impdb", "profile": "custom_profile", "language": "fr",
                                     "aliases": ["www.imp.example.com", "alias.example.com", "other.example.com",
                                                 "bad alias"],
                                     "cron_key": "C" * 43},
                          "packages": copy.deepcopy(site_pk)})
    with world() as s:
        nid = _nid(s, "imp.example.com")
        node = s.get(m.Node, nid)
        site = s.get(m.HostingSite, node.vid)
        assert (site.status, site.verified, site.db_name, site.language, site.cron_key) == (
            m.SITE_ENABLED, 1_700_000_000, "impdb", "fr", "C" * 43)
        profile = s.execute(select(m.HostingPackage.short_name).where(m.HostingPackage.nid == site.profile)).scalar()
        assert profile == "custom_profile"
        aliases = s.execute(select(m.HostingSiteAlias.alias).where(m.HostingSiteAlias.vid == node.vid)).scalars().all()
        assert aliases == ["www.imp.example.com"]  # the others are other sites' names
        assert s.execute(select(m.HostingPackageInstance.status)
                         .join(m.HostingPackage, m.HostingPackage.nid == m.HostingPackageInstance.package_id)
                         .where(m.HostingPackageInstance.rid == nid, m.HostingPackage.short_name == "node")).scalar() == 1
    warning = [msg for t, msg in _log(world, task) if t == "warning"]
    assert warning and "alias.example.com" in warning[0] and "other.example.com" in warning[0]
    assert len(_queued(world, "verify", nid)) == 1


def test_failed_import_disables_the_site(engine, world):
    _hooks(engine, _task(world, "verify", "platform_D10"), _platform_result(["fail.example.com"]))
    _hooks(engine, _task(world, "import", "fail.example.com"), {}, succeeded=False)
    site = _site(world, "fail.example.com")
    assert (site.status, site.verified) == (m.SITE_DISABLED, 0)


def test_run_cron_records_last_cron(engine, world):
    assert _site(world, "known.example.com").last_cron in (None, 0)
    _hooks(engine, _task(world, "run_cron", "known.example.com"), {}, succeeded=False)
    assert _site(world, "known.example.com").last_cron in (None, 0)
    _hooks(engine, _task(world, "run_cron", "known.example.com"), {}, now=1_700_000_123)
    assert _site(world, "known.example.com").last_cron == 1_700_000_123


def test_platform_delete_clears_its_instances(engine, world):
    _hooks(engine, _task(world, "verify", "platform_D10"), _platform_result())
    with world() as s:
        platform = _nid(s, "platform_D10")
    _hooks(engine, _task(world, "delete", "platform_D10"), {})
    with world() as s:
        assert s.execute(select(m.HostingPackageInstance.iid)
                         .where(m.HostingPackageInstance.rid == platform)).first() is None
