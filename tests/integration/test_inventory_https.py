"""HTTPS variables of the inventory, read as hostmaster's hosting_https (Aegir HTTPS) and the
older hosting_ssl write them; a hostmaster without those tables means no https."""

from __future__ import annotations

from sqlalchemy import select, update

from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend
from aegir_ansible.inventory import build_inventory

HTTPS_TABLES = [m.HostingHttpsServer, m.HostingHttpsSite, m.HostingSslServer, m.HostingSslSite,
                m.HostingSslCert, m.HostingSslCertIp]


def _vid(s, nid):
    return s.execute(select(m.Node.vid).where(m.Node.nid == nid)).scalar_one()


def _server(s, fe, http_type, certificate=None):
    nid = fe.add_server("web1.example.net", http="nginx" if "nginx" in http_type else "apache",
                        db="mysql", db_user="aegir_root", ip_addresses=("192.0.2.10",),
                        queue_verify=False)
    vid = _vid(s, nid)
    s.execute(update(m.HostingService).where(m.HostingService.vid == vid, m.HostingService.service == "http")
              .values(type=http_type))
    if certificate:
        s.add(m.HostingService(vid=vid, nid=nid, service="Certificate", type=certificate, port=0, available=1))
    fe.add_platform("D10", "/var/aegir/platforms/d10", "server_web1examplenet", queue_verify=False)
    return nid, vid


def _inventory(url):
    """The whole inventory, after checking that a run's inventory limited to each site gives
    that site the same variables (the limited one reads only its sites' https rows)."""
    engine = make_engine(url)
    with make_sessionmaker(engine)() as s:
        inv = build_inventory(s)
        for site in inv.groups["aegir_sites"]["hosts"]:
            limited = build_inventory(s, limit=[site])
            assert limited.groups["aegir_sites"]["hosts"] == [site]
            assert limited.effective_vars(site) == inv.effective_vars(site), site
    engine.dispose()
    return inv


def test_hosting_https_server_and_sites(db_url):
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as s, s.begin():
        fe = Frontend(s)
        nid, vid = _server(s, fe, "https_nginx", "LetsEncrypt")
        s.add(m.HostingHttpsServer(vid=vid, nid=nid, https_port=8443))
        for uri, state, client_auth in (("req.example.net", 2, 1), ("en.example.net", 1, 0), ("off.example.net", 0, 0)):
            site = fe.add_site(uri, "platform_D10", queue_install=False)
            s.add(m.HostingHttpsSite(vid=_vid(s, site), nid=site, https_enabled=state,
                                     client_authentication=client_auth))
        fe.add_site("none.example.net", "platform_D10", queue_install=False)  # no hosting_https_site row
    engine.dispose()
    inv = _inventory(db_url)
    req = inv.effective_vars("req.example.net")
    assert req["aegir_http_service"] == "nginx"
    assert req["aegir_https_port"] == 8443
    assert req["aegir_https_certificate_service"] == "letsencrypt"
    assert req["aegir_site_https"] == "required" and req["aegir_site_https_client_authentication"] is True
    assert inv.effective_vars("en.example.net")["aegir_site_https"] == "enabled"
    assert inv.effective_vars("off.example.net")["aegir_site_https"] == "disabled"
    assert inv.effective_vars("none.example.net")["aegir_site_https"] == "disabled"
    assert "aegir_site_https_key" not in req


def test_legacy_hosting_ssl(db_url):
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as s, s.begin():
        fe = Frontend(s)
        nid, vid = _server(s, fe, "apache_ssl")
        s.add(m.HostingSslServer(vid=vid, nid=nid, ssl_port=4443))
        cert = m.HostingSslCert(ssl_key="example_cert", client=0, status=1)
        s.add(cert)
        s.flush()
        site = fe.add_site("ssl.example.net", "platform_D10", queue_install=False)
        s.add(m.HostingSslSite(vid=_vid(s, site), nid=site, ssl_enabled=1, ssl_key=cert.cid))
    engine.dispose()
    site = _inventory(db_url).effective_vars("ssl.example.net")
    assert site["aegir_http_service"] == "apache"
    assert site["aegir_https_port"] == 4443
    assert site["aegir_site_https"] == "enabled"
    assert site["aegir_site_https_key"] == "example_cert"
    assert site["aegir_https_certificate_service"] == "self_signed"


def test_hostmaster_without_https_tables_means_no_https(db_url):
    engine = make_engine(db_url)
    m.AegirBase.metadata.drop_all(engine, tables=[t.__table__ for t in HTTPS_TABLES])
    with make_sessionmaker(engine)() as s, s.begin():
        fe = Frontend(s)
        _server(s, fe, "https_nginx", "SelfSigned")
        fe.add_site("a.example.net", "platform_D10", queue_install=False)
    engine.dispose()
    site = _inventory(db_url).effective_vars("a.example.net")
    assert site["aegir_http_service"] == "nginx"
    assert site["aegir_site_https"] == "disabled"
    assert site["aegir_https_port"] == 443
