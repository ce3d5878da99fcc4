"""aegir_ansible.packages writes hosting_package, hosting_package_instance and
hosting_package_languages as hosting_package_sync() / hosting_package_instance_sync() do, on
SQLite and MariaDB (databases named dropin_*), from the scanner's data of the fixture
codebase."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import pytest
from ansible_collections.aegir.hosting.plugins.module_utils import aegir_packages as scanner
from sqlalchemy import create_engine, func, select, text

from aegir_ansible import packages as pkg
from aegir_ansible.db import init_schema, make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend

REPO = Path(__file__).resolve().parents[2]
CODEBASE = REPO / "tests" / "fixtures" / "provision" / "codebase"
SCAN = scanner.scan_platform(str(CODEBASE / "d10"))


@pytest.fixture(params=["sqlite", "mysql"])
def Session(request, tmp_path):
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'pk.sqlite'}", None
    else:
        server = request.getfixturevalue("mysql_server_url")
        name = f"dropin_pk_{uuid.uuid4().hex[:10]}"
        admin = create_engine(server)
        with admin.begin() as c:
            c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        url = f"{server}/{name}"

        def drop():
            with admin.begin() as c:
                c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()
    engine = make_engine(url)
    init_schema(engine)
    with make_sessionmaker(engine)() as s, s.begin():
        fe = Frontend(s)
        fe.add_server("master.pk.test", name="server_master", local=True, http="nginx", db="mysql",
                      db_user="root", db_password="x", queue_verify=False)
        fe.add_platform("D10", "/var/aegir/platforms/d10", "server_master", queue_verify=False)
        fe.add_site("example.com", "platform_D10", queue_install=False)
    yield make_sessionmaker(engine)
    engine.dispose()
    if drop:
        drop()


def _nid(s, name):
    return s.execute(select(m.HostingContext.nid).where(m.HostingContext.name == name)).scalar_one()


def _instances(s, rid):
    rows = s.execute(select(m.HostingPackage.package_type, m.HostingPackage.short_name, m.HostingPackageInstance)
                     .join(m.HostingPackage, m.HostingPackage.nid == m.HostingPackageInstance.package_id)
                     .where(m.HostingPackageInstance.rid == rid)).all()
    return {(t, n): i for t, n, i in rows}


@pytest.mark.parametrize("version,code", [
    ("7.x-3.29", 70003290500), ("8.x-4.2", 80004020500), ("8.x-3.0-rc8", 80003000408),
    ("7.98", 79800000500), ("6.x-1.0-beta2", 60001000302), ("10.2.5", 200000500),
    ("1.0.0-beta2", 10000000500), ("Unknown", 0), ("", 0), ("8.x-1.0-2", 80001000002),
    ("7.x-2.x-dev", 70002000000), ("7.50-rc1", 75000000401),
])
def test_version_code(version, code):
    """Values checked against hostmaster's own function run by PHP."""
    assert pkg.version_code(version) == code


def test_platform_sync(Session):
    with Session() as s, s.begin():
        plat = _nid(s, "platform_D10")
        data = copy.deepcopy(SCAN["packages"])
        pkg.sync_platform(s, plat, data, SCAN["profiles"], now=1700000000)
        types = dict(s.execute(select(m.HostingPackage.package_type, func.count())
                               .group_by(m.HostingPackage.package_type)).all())
        # node vbo vbo_extra token cp_helper; olivero gin; 3 profiles (+ the site's 'standard'
        # package made by add_site, which the sync found and reused); drupal.
        assert types == {"module": 5, "theme": 2, "profile": 3, "platform": 1}
        inst = _instances(s, plat)
        assert set(inst) == {("module", "node"), ("module", "vbo"), ("module", "vbo_extra"),
                             ("module", "token"), ("theme", "olivero"), ("theme", "gin"),
                             ("profile", "standard"), ("profile", "minimal"),
                             ("profile", "custom_profile"), ("platform", "drupal")}
        node = inst[("module", "node")]
        assert (node.version, node.schema_version, node.status, node.platform) == ("10.2.5", 10202, 0, plat)
        assert node.version_code == pkg.version_code("10.2.5")
        assert node.filename.endswith("/core/modules/node/node.info.yml")
        assert inst[("platform", "drupal")].filename == ""
        # The package nodes as hostmaster titles them.
        titles = dict(s.execute(select(m.HostingPackage.short_name, m.Node.title)
                                .join(m.Node, m.Node.vid == m.HostingPackage.vid)).all())
        assert titles["node"] == "Node" and titles["drupal"] == "drupal"
        assert titles["custom_profile"] == "Custom profile"
        # The profiles' own packages are instances of the profile instances.
        cp_iid = inst[("profile", "custom_profile")].iid
        cp = _instances(s, cp_iid)
        assert ("module", "cp_helper") in cp and ("module", "node") in cp
        assert cp[("module", "cp_helper")].platform == plat
        langs = s.execute(select(m.HostingPackageLanguage.language)
                          .where(m.HostingPackageLanguage.iid == cp_iid)).scalars().all()
        assert sorted(langs) == ["de", "en", "fr"]
        assert ("module", "cp_helper") not in _instances(s, inst[("profile", "standard")].iid)
        assert pkg.platform_profiles(s, plat) == ["custom_profile", "minimal", "standard"]
        assert pkg.platform_profiles(s, plat, blocked=("minimal",)) == ["custom_profile", "standard"]
        assert data["base"]["modules"]["node"]["package_id"] == node.package_id


def test_resync_keeps_rows_and_follows_changes(Session):
    with Session() as s, s.begin():
        plat = _nid(s, "platform_D10")
        pkg.sync_platform(s, plat, copy.deepcopy(SCAN["packages"]), SCAN["profiles"], now=1700000000)
        before = {k: v.iid for k, v in _instances(s, plat).items()}
        nodes = s.execute(select(func.count()).select_from(m.Node)).scalar()
        revisions = s.execute(select(func.count()).select_from(m.NodeRevision)).scalar()
    with Session() as s, s.begin():
        pkg.sync_platform(s, plat, copy.deepcopy(SCAN["packages"]), SCAN["profiles"], now=1700000100)
        assert {k: v.iid for k, v in _instances(s, plat).items()} == before
        assert s.execute(select(func.count()).select_from(m.Node)).scalar() == nodes
    # vbo removed from the codebase, token renamed and upgraded: its instance goes, the
    # package node stays; the title changes in place (no new revision).
    data = copy.deepcopy(SCAN["packages"])
    for scope in ("base",):
        del data[scope]["modules"]["vbo"]
    for scope in ("base", "sites-all"):
        data[scope]["modules"]["token"]["info"]["name"] = "Token (renamed)"
        data[scope]["modules"]["token"]["version"] = "8.x-1.15"
    with Session() as s, s.begin():
        pkg.sync_platform(s, plat, data, SCAN["profiles"], now=1700000200)
        after = _instances(s, plat)
        assert ("module", "vbo") not in after
        assert after[("module", "token")].iid == before[("module", "token")]
        assert after[("module", "token")].version == "8.x-1.15"
        token = s.execute(select(m.Node).join(m.HostingPackage, m.HostingPackage.vid == m.Node.vid)
                          .where(m.HostingPackage.short_name == "token")).scalar_one()
        assert token.title == "Token (renamed)" and token.changed == 1700000200
        assert s.execute(select(func.count()).select_from(m.NodeRevision)).scalar() == revisions
        assert s.execute(select(func.count()).select_from(m.HostingPackage)
                         .where(m.HostingPackage.short_name == "vbo")).scalar() == 1


def test_site_sync_and_clear(Session):
    site = scanner.scan_site(str(CODEBASE / "d10"), "example.com", "standard", ["node", "site_only"], SCAN)
    with Session() as s, s.begin():
        plat, nid = _nid(s, "platform_D10"), _nid(s, "example.com")
        pkg.sync_platform(s, plat, copy.deepcopy(SCAN["packages"]), SCAN["profiles"])
        pkg.sync_site(s, nid, site)
        inst = _instances(s, nid)
        assert inst[("module", "node")].status == 1 and inst[("module", "vbo")].status == 0
        assert inst[("module", "site_only")].platform == -1
        assert inst[("module", "node")].platform == plat
        assert inst[("profile", "standard")].status == 1
        # The site's profile row points at the package the sync found, not a second one.
        profile_nid = s.get(m.HostingSite, s.get(m.Node, nid).vid).profile
        assert inst[("profile", "standard")].package_id == profile_nid
        pkg.sync_site(s, nid, scanner.scan_site(str(CODEBASE / "d10"), "example.com", "standard", ["node"], SCAN))
        assert _instances(s, nid)[("module", "site_only")].status == 0
        pkg.clear_instances(s, nid, "site")
        assert _instances(s, nid) == {}
        assert _instances(s, plat)  # the platform's rows are untouched
    with Session() as s, pytest.raises(ValueError, match="not synced"):
        pkg.sync_instances(s, nid, "site", {"modules": {"x": {"version": "1"}}})
