"""HTTPS variables of the inventory, read from Aegir HTTPS (hosting_https) or its predecessor
hosting_ssl, as hostmaster writes them.

Both are optional modules: a hostmaster without them has none of these tables, which means "no
https" (each table is looked up once per build, never an error). A server serves https when its
http service type is one of HTTPS_HTTP_TYPES; its sites then read hosting_https_site (https_*
types) or hosting_ssl_site (*_ssl types). Two SELECTs per table family, whatever the number of
sites.
"""

from __future__ import annotations

from sqlalchemy import inspect, select, true
from sqlalchemy.orm import Session

from .db import models as m

# hosting_service.type of an http service -> the web server it runs.
WEB_SERVER_OF_HTTP_TYPE = {"nginx_ssl": "nginx", "apache_ssl": "apache",
                           "https_nginx": "nginx", "https_apache": "apache"}
HTTPS_TYPES = ("https_nginx", "https_apache")
SSL_TYPES = ("nginx_ssl", "apache_ssl")
# hosting_service rows of service "Certificate" (hosting_certificate submodules).
CERTIFICATE_SERVICES = {"LetsEncrypt": "letsencrypt", "SelfSigned": "self_signed"}
DEFAULT_HTTPS_PORT = 443


def _tables(session: Session) -> set[str]:
    wanted = ("hosting_https_server", "hosting_https_site", "hosting_ssl_server", "hosting_ssl_site",
              "hosting_ssl_cert")
    insp = inspect(session.connection())
    return {t for t in wanted if insp.has_table(t)}


def add_server_vars(session: Session, servers: dict[int, dict]) -> None:
    """Set server["https"] (the server's https variables) and server["https_family"] ("https",
    "ssl" or ""), from the services of build_inventory; before the server variables are built."""
    server: dict | None
    for server in servers.values():
        http_type = (server["services"].get("http") or {}).get("type", "")
        cert = (server["services"].get("Certificate") or {}).get("type", "")
        server["https_family"] = ("https" if http_type in HTTPS_TYPES else
                                  "ssl" if http_type in SSL_TYPES else "")
        server["https"] = {}
        if server["https_family"]:
            server["https"] = {"aegir_https_port": DEFAULT_HTTPS_PORT,
                               "aegir_https_certificate_service": CERTIFICATE_SERVICES.get(cert, "self_signed")}
    if not any(s["https_family"] for s in servers.values()):
        return
    tables = _tables(session)
    by_vid = {s["vid"]: s for s in servers.values()}
    for model, port_col, family in ((m.HostingHttpsServer, "https_port", "https"),
                                    (m.HostingSslServer, "ssl_port", "ssl")):
        if model.__tablename__ not in tables:
            continue
        for vid, port in session.execute(select(model.vid, getattr(model, port_col))
                                         .join(m.Node, m.Node.vid == model.vid)):
            server = by_vid.get(vid)
            if server is not None and server["https_family"] == family and port:
                server["https"]["aegir_https_port"] = int(port)


def add_site_vars(session: Session, servers: dict[int, dict], sites: dict[int, dict],
                  limited: bool = False) -> None:
    """Set the sites' https variables (in place); sites: vid -> {"vars", "server"}. `limited`:
    the sites are a few of them (a limited inventory): only their rows are read."""
    site: dict | None
    for site in sites.values():
        site["vars"]["aegir_site_https"] = "disabled"
    if not any(s.get("https_family") for s in servers.values()):
        return
    tables = _tables(session)
    # Sites: state (and the legacy certificate key name) of the current revision.
    if "hosting_https_site" in tables:
        https_rows = session.execute(
            select(m.HostingHttpsSite.vid, m.HostingHttpsSite.https_enabled,
                   m.HostingHttpsSite.client_authentication)
            .join(m.Node, m.Node.vid == m.HostingHttpsSite.vid)
            .where(m.HostingHttpsSite.vid.in_(list(sites)) if limited else true()))
        for vid, enabled, client_auth in https_rows:
            site = sites.get(vid)
            if site is not None and site["server"].get("https_family") == "https":
                site["vars"]["aegir_site_https"] = m.HTTPS_STATE_NAMES.get(int(enabled or 0), "disabled")
                site["vars"]["aegir_site_https_client_authentication"] = bool(client_auth)
    if "hosting_ssl_site" in tables:
        rows = session.execute(
            select(m.HostingSslSite.vid, m.HostingSslSite.ssl_enabled, m.HostingSslSite.ssl_key)
            .join(m.Node, m.Node.vid == m.HostingSslSite.vid)
            .where(m.HostingSslSite.vid.in_(list(sites)) if limited else true())).all()
        key_names = {}
        if "hosting_ssl_cert" in tables:
            cids = sorted({cid for _vid, _enabled, cid in rows if cid})
            key_names = dict(session.execute(
                select(m.HostingSslCert.cid, m.HostingSslCert.ssl_key)
                .where(m.HostingSslCert.cid.in_(cids) if limited else true())).all())
        for vid, enabled, cid in rows:
            site = sites.get(vid)
            if site is not None and site["server"].get("https_family") == "ssl":
                site["vars"]["aegir_site_https"] = m.HTTPS_STATE_NAMES.get(int(enabled or 0), "disabled")
                if key_names.get(cid):
                    site["vars"]["aegir_site_https_key"] = key_names[cid]
