"""The inventory limited to a run's targets (build_inventory(limit=...), issue 19): the targets
get exactly the variables of the full inventory (conflicts with other sites and suggested
database names included), every server and platform is there, the other sites are not."""

from __future__ import annotations

import pytest
from sqlalchemy import event, update

from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.db.backend import SiteDatabase, SiteHostName
from aegir_ansible.frontend import Frontend
from aegir_ansible.inventory import _db_names, build_inventory, run_limit

from .realistic import populate


@pytest.fixture
def realistic(db_url):
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as s, s.begin():
        info = populate(Frontend(s))
    yield make_sessionmaker(engine), info
    engine.dispose()


def build(Session, limit=None):
    with Session() as s:
        return build_inventory(s, limit=limit)


def site_names(inv) -> set[str]:
    return set(inv.groups["aegir_sites"]["hosts"])


def assert_same_for(full, limited, names):
    for name in names:
        assert name in limited.hosts, name
        assert limited.effective_vars(name) == full.effective_vars(name), name
        assert limited.inherits.get(name) == full.inherits.get(name), name


def test_a_site_run_holds_the_site_every_server_and_platform_and_no_other_site(realistic):
    Session, _info = realistic
    full = build(Session)
    for target in ("site000.example.org", "site002.example.org", "site007.example.org"):
        inv = build(Session, limit=[target])
        assert site_names(inv) == {target}
        assert_same_for(full, inv, [target])
        # what a site run delegates to: its web server, its db server, any platform (migrate,
        # clone), any server (a backup's server, a new db server): all there, unchanged
        assert inv.groups["aegir_servers"]["hosts"] == full.groups["aegir_servers"]["hosts"]
        assert inv.groups["aegir_platforms"]["hosts"] == full.groups["aegir_platforms"]["hosts"]
        assert_same_for(full, inv, full.groups["aegir_servers"]["hosts"] + full.groups["aegir_platforms"]["hosts"])
        hv = inv.effective_vars(target)
        assert hv["aegir_site_db_server"] in inv.hosts and hv["aegir_server"] in inv.hosts
        assert hv["aegir_platform"] in inv.hosts
        # the groups' variables (what the site inherits) are the full inventory's
        for group in inv.inherits[target]:
            assert inv.groups[group]["vars"] == full.groups[group]["vars"]
        assert set(inv.hosts) == (set(full.groups["aegir_servers"]["hosts"])
                                  | set(full.groups["aegir_platforms"]["hosts"]) | {target})


def test_several_targets_and_unknown_or_deleted_names(realistic):
    Session, info = realistic
    full = build(Session)
    targets = ["site001.example.org", "site014.example.org", "site020.example.org"]
    inv = build(Session, limit=targets + info["deleted_uris"] + ["nosuch.example.org", ""])
    assert site_names(inv) == set(targets)
    assert_same_for(full, inv, targets)
    for uri in info["deleted_uris"]:
        assert uri not in inv.hosts
    assert build(Session, limit=[]).groups["aegir_sites"]["hosts"] == []


def test_a_platform_run_holds_the_platforms_live_sites(realistic):
    Session, _info = realistic
    full = build(Session)
    inv = build(Session, limit=["platform_Drupal7"])
    group = "aegir_platform_platform_Drupal7"
    assert inv.groups[group]["hosts"] == full.groups[group]["hosts"]  # what delete refuses on
    assert site_names(inv) == set(full.groups[group]["hosts"])
    assert_same_for(full, inv, full.groups[group]["hosts"] + ["platform_Drupal7"])


def test_a_server_run_holds_no_site(realistic):
    Session, _info = realistic
    full = build(Session)
    inv = build(Session, limit=["server_web1examplenet"])
    assert site_names(inv) == set()
    assert_same_for(full, inv, ["server_web1examplenet"])


def test_the_limited_build_makes_as_many_statements_for_ten_targets_as_for_one(realistic):
    """No statement per target (sites with a database name: the names a site without one may
    take are read in IN lists of up to 1,000 names)."""
    Session, info = realistic
    engine = Session.kw["bind"]
    with Session() as s, s.begin():
        for nid in info["sites"]:
            s.execute(update(m.HostingSite).where(m.HostingSite.nid == nid).values(db_name=f"db{nid}"))

    def statements(limit):
        seen = []

        def count(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)

        event.listen(engine, "after_cursor_execute", count)
        try:
            build(Session, limit=limit)
        finally:
            event.remove(engine, "after_cursor_execute", count)
        return len(seen)

    one = statements(["site002.example.org"])
    ten = statements([f"site{i:03d}.example.org" for i in range(20, 30)])
    assert one == ten


def test_run_limit_takes_the_sync_source():
    assert run_limit([("dev.example.org", {"source": "@www.example.org", "destination": "@dev.example.org"}),
                      ("b.example.org", {}), ("", {"source": ""})]) == {
        "dev.example.org", "www.example.org", "b.example.org"}


def test_the_sync_source_is_in_a_sync_runs_inventory(realistic):
    Session, _info = realistic
    full = build(Session)
    inv = build(Session, limit=run_limit([("site001.example.org", {"source": "@site003.example.org"})]))
    assert site_names(inv) == {"site001.example.org", "site003.example.org"}
    assert_same_for(full, inv, ["site001.example.org", "site003.example.org"])


@pytest.fixture
def contested(db_url):
    """Sites whose names and databases collide in every way the checks know: a uri as another
    site's alias, an alias of two sites (one keeping it as its last served name), case
    variants, a shared database, a database recorded as another (live or gone) site's, a
    reserved name, and sites without a database name whose suggestions follow each other."""
    engine = make_engine(db_url)
    Session = make_sessionmaker(engine)
    with Session() as s, s.begin():
        fe = Frontend(s)
        fe.add_server("web.example.net", http="nginx", db="mysql", db_user="admin", db_password="pw",
                      queue_verify=False)
        fe.add_server("db2.example.net", db="mysql", db_user="admin", db_password="pw2",
                      queue_verify=False)
        fe.add_platform("P", "/var/aegir/platforms/p", "server_webexamplenet", queue_verify=False)
        fe.add_platform("Q", "/var/aegir/platforms/q", "server_webexamplenet", queue_verify=False)
        server = fe.find("server_webexamplenet").nid
        nids = {}
        for uri, platform in (("a.example.org", "P"), ("b.example.org", "P"), ("c.example.org", "Q"),
                              ("d.example.org", "Q"), ("e.example.org", "P"), ("f.example.org", "Q"),
                              ("g.example.org", "P"), ("h.example.org", "Q"),
                              ("same.example.org", "P"), ("www.same.example.org", "Q"),
                              ("same.example.orgx", "P"), ("ro.ot", "Q"), ("other.example.org", "P"),
                              ("y.example.org", "P"), ("www.y.example.org", "Q")):
            nids[uri] = fe.add_site(uri, f"platform_{platform}", queue_install=False,
                                    db_server="server_db2examplenet" if uri == "other.example.org"
                                    else "server_webexamplenet")
        vids = {uri: s.get(m.Node, nid).vid for uri, nid in nids.items()}

        def alias(uri, name):
            s.add(m.HostingSiteAlias(vid=vids[uri], nid=nids[uri], alias=name, automatic=0, redirection=""))

        alias("b.example.org", "a.example.org")        # b claims a's uri
        alias("b.example.org", "shared.example.org")   # b and c share an alias ...
        alias("c.example.org", "Shared.Example.org")   # ... in another case
        alias("d.example.org", "kept.example.org")     # d keeps it (last served), e loses it
        alias("e.example.org", "kept.example.org")
        alias("e.example.org", "www.e.example.org")
        s.add(SiteHostName(name="kept.example.org", nid=nids["d.example.org"]))
        db_names = {"a.example.org": "a_db", "b.example.org": "a_db",   # shared
                    "c.example.org": "c_db",                            # recorded as f's
                    "d.example.org": "mysql",                           # reserved
                    "e.example.org": "e_db",                            # recorded as a gone site's
                    "f.example.org": "f_db", "g.example.org": "g_db",
                    "other.example.org": "sameexampleorg",              # same name, other server
                    "y.example.org": "yexampleorg"}
        for uri, db_name in db_names.items():
            s.execute(update(m.HostingSite).where(m.HostingSite.nid == nids[uri]).values(db_name=db_name))
        # h, same.example.org, www.same.example.org, same.example.orgx, ro.ot: no database name
        # yet; the three "same" ones derive the same name and take it in nid order
        s.execute(update(m.HostingSite).where(m.HostingSite.nid.in_(
            [nids[u] for u in ("h.example.org", "same.example.org", "www.same.example.org",
                               "same.example.orgx", "ro.ot", "www.y.example.org")])).values(db_name=""))
        # www.y.example.org finds every name it may take taken (y's, and 99 recorded for sites
        # that are gone): it falls back to the first, y's database
        for i, name in enumerate(list(_db_names("y.example.org"))[1:]):
            s.add(SiteDatabase(nid=80000 + i, db_server=server, db_name=name, db_user=name,
                               hosts="[]", created=1))
        s.add(SiteDatabase(nid=nids["f.example.org"], db_server=server, db_name="c_db", db_user="c_db",
                           hosts='["127.0.0.1"]', created=1))
        s.add(SiteDatabase(nid=nids["g.example.org"], db_server=server, db_name="g_db", db_user="g_db",
                           hosts='["127.0.0.1"]', created=1))
        s.add(SiteDatabase(nid=99999, db_server=server, db_name="e_db", db_user="e_db",
                           hosts='["127.0.0.1"]', created=1))
        # a name suggestion must skip: recorded by the backend for a site that is gone
        s.add(SiteDatabase(nid=99998, db_server=server, db_name="hexampleorg", db_user="x",
                           hosts="[]", created=1))
    yield Session
    engine.dispose()


def test_every_site_limited_alone_gets_the_full_inventorys_verdicts(contested):
    full = build(contested)
    sites = full.groups["aegir_sites"]["hosts"]
    assert len(sites) == 15
    # the scenario has what it says (so that the comparison below compares something)
    hv = full.hosts
    assert hv["a.example.org"]["aegir_site_conflicts"] == []
    assert hv["b.example.org"]["aegir_site_conflicts"] and hv["c.example.org"]["aegir_site_conflicts"]
    assert hv["e.example.org"]["aegir_site_aliases"] == ["www.e.example.org"]
    assert hv["d.example.org"]["aegir_site_aliases"] == ["kept.example.org"]
    assert "is also the database of site 'b.example.org'" in hv["a.example.org"]["aegir_site_db_conflicts"][0]
    assert "belongs to site 'f.example.org'" in hv["c.example.org"]["aegir_site_db_conflicts"][0]
    assert "reserved" in hv["d.example.org"]["aegir_site_db_conflicts"][0]
    assert "belongs to site #99999" in hv["e.example.org"]["aegir_site_db_conflicts"][0]
    assert [hv[u]["aegir_site_db_name"] for u in ("same.example.org", "www.same.example.org",
                                                  "same.example.orgx")] == [
        "sameexampleorg", "sameexampleorg_1", "sameexampleorgx"]
    assert hv["h.example.org"]["aegir_site_db_name"] == "hexampleorg_1"
    assert hv["ro.ot"]["aegir_site_db_name"] == "root_1"
    assert hv["www.y.example.org"]["aegir_site_db_name"] == "yexampleorg"
    assert "is also the database of site 'www.y.example.org'" in hv["y.example.org"]["aegir_site_db_conflicts"][0]
    for name in sites:
        inv = build(contested, limit=[name])
        assert site_names(inv) == {name}
        assert_same_for(full, inv, [name])
    # and two at a time, each with the other in the limit
    inv = build(contested, limit=["b.example.org", "www.same.example.org"])
    assert_same_for(full, inv, ["b.example.org", "www.same.example.org"])
