"""The Ansible inventory, built on the fly from the frontend database (no alias files).

One host per live server, platform and site, named by its hosting_context name, with
the variables listed in docs/inventory-variables.md. The build issues a fixed number of
SELECTs whatever the number of sites, and returns plain str/int/bool/list/dict values
(never Decimal or ORM objects), ready for the inventory script and the plugin alike.

Every string here came from the database or was derived from it: the script front end
wraps them as untrusted (`__ansible_unsafe`), the plugin leaves them untrusted.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, select
from sqlalchemy.orm import Bundle, Session

from . import https_vars
from .db import models as m
from . import defaults
from .db.backend import ServerSettings, SiteDatabase, SiteHostName, SiteSettings
from .queries import SiteClaims, is_reserved_db_name, isolation_conflicts
from .validation import InputError, check_context_name, check_host_address

SERVER_STATUS = {1: "enabled", 0: "queued", -1: "locked"}
PLATFORM_STATUS = {1: "enabled", 0: "queued", -1: "locked"}
SITE_STATUS = {1: "enabled", 0: "queued", -1: "disabled"}

# Server-level variables copied onto the platforms and sites that live on a server.
SERVER_VARS_INHERITED = (
    "ansible_host", "ansible_user", "ansible_port", "ansible_python_interpreter",
    "ansible_connection", "ansible_ssh_private_key_file",
    "aegir_server", "aegir_server_hostname", "aegir_root", "aegir_script_user",
    "aegir_web_group", "aegir_config_path", "aegir_server_config_path", "aegir_backups_path",
    "aegir_clients_path", "aegir_http_service", "aegir_http_port", "aegir_http_listen_address",
    "aegir_http_test_cmd", "aegir_http_reload_cmd", "aegir_php_fastcgi",
    "aegir_db_grant_host", "aegir_ip_addresses",
    "aegir_https_port", "aegir_https_certificate_service",
)


# Platform variables its sites share (set on the platform's group).
PLATFORM_VARS_INHERITED = (
    "aegir_platform", "aegir_platform_title", "aegir_platform_root", "aegir_platform_makefile",
    "aegir_platform_drush",
)


_NOT_IN_GROUP_NAME = re.compile(r"[^A-Za-z0-9_]")


@functools.lru_cache(maxsize=4096)
def group_name(*parts: str) -> str:
    """A valid Ansible group name: anything outside [A-Za-z0-9_] becomes '_'. (Cached: a
    large inventory asks for the same server, platform and status groups for every site.)"""
    return _NOT_IN_GROUP_NAME.sub("_", "_".join(parts))


@dataclass
class InventoryData:
    hosts: dict[str, dict] = field(default_factory=dict)
    groups: dict[str, dict] = field(default_factory=lambda: defaultdict(
        lambda: {"hosts": [], "children": [], "vars": {}}))
    # host -> the groups whose variables it inherits (its server's, its platform's)
    inherits: dict[str, list[str]] = field(default_factory=dict)
    # context name -> why it is left out (a name Ansible would read as a pattern or group,
    # a server address ssh could read as an option, or what it depends on was left out)
    rejected: dict[str, str] = field(default_factory=dict)

    def add(self, group: str, host: str) -> None:
        self.groups[group]["hosts"].append(host)

    def effective_vars(self, host: str) -> dict:
        """A host's variables as Ansible sees them: its server's and platform's group
        variables, then its own (the inventory keeps shared values on those groups only)."""
        merged: dict = {}
        for gname in self.inherits.get(host, ()):
            merged.update(self.groups[gname]["vars"])
        merged.update(self.hosts[host])
        return merged

    def to_dict(self) -> dict:
        return {"hosts": self.hosts, "groups": {k: dict(v) for k, v in self.groups.items()},
                "inherits": self.inherits, "rejected": self.rejected}


def _current(model):
    """Join condition: the current revision's row of a vid-keyed hosting table."""
    return and_(model.vid == m.Node.vid)


def _refusal(name: str, address: str | None = None) -> str | None:
    """Why a context cannot be an inventory host (None: it can)."""
    try:
        check_context_name(name)
        if address is not None:
            check_host_address(address, "server address")
    except InputError as exc:
        return str(exc)
    return None


def build_inventory(session: Session) -> InventoryData:
    inv = InventoryData()
    for top in ("aegir_servers", "aegir_platforms", "aegir_sites"):
        inv.groups[top]  # noqa: B018 — the three top groups always exist

    # 1. servers (+ backend connection settings)
    servers: dict[int, dict] = {}
    rejected_servers: dict[int, str] = {}
    rejected_platforms: dict[int, str] = {}
    rows = session.execute(
        select(m.Node.nid, m.Node.vid, m.Node.title, m.HostingContext.name,
               m.HostingServer.status, m.HostingServer.verified, ServerSettings)
        .join(m.HostingServer, _current(m.HostingServer))
        .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
        .outerjoin(ServerSettings, ServerSettings.nid == m.Node.nid)
        .where(m.Node.type == "server", m.HostingServer.status != m.SERVER_DELETED)
        .order_by(m.Node.nid)
    )
    for nid, vid, title, name, status, verified, settings in rows:
        servers[nid] = {"nid": nid, "vid": vid, "title": title, "name": name,
                        "status": status, "verified": verified,
                        "settings": settings or ServerSettings(nid=nid), "services": {},
                        "ips": []}
    by_vid = {s["vid"]: s for s in servers.values()}

    # 2. services of the current server revisions
    for vid, service, type_, port in session.execute(
        select(m.HostingService.vid, m.HostingService.service, m.HostingService.type,
               m.HostingService.port)
        .join(m.Node, m.Node.vid == m.HostingService.vid)
        .where(m.Node.type == "server", m.HostingService.available == 1)
    ):
        if vid in by_vid:
            by_vid[vid]["services"][service] = {"type": type_, "port": port}

    # 3. IP addresses (not revisioned)
    for nid, ip in session.execute(
        select(m.HostingIpAddress.nid, m.HostingIpAddress.ip_address).order_by(m.HostingIpAddress.id)
    ):
        if nid in servers:
            servers[nid]["ips"].append(ip)

    # 4. db admin credentials
    for vid, user, passwd in session.execute(
        select(m.HostingDbServer.vid, m.HostingDbServer.db_user, m.HostingDbServer.db_passwd)
        .join(m.Node, m.Node.vid == m.HostingDbServer.vid)
    ):
        if vid in by_vid:
            by_vid[vid]["db_admin"] = (user, passwd)

    https_vars.add_server_vars(session, servers)
    for nid, server in list(servers.items()):
        hv = _server_vars(server)
        server["vars"] = hv
        name = server["name"]
        why = _refusal(name, hv.get("ansible_host"))
        if why:
            inv.rejected[name] = f"server {name} is left out of the inventory: {why}"
            del servers[nid]
            rejected_servers[nid] = inv.rejected[name]
            continue
        inv.hosts[name] = hv
        inv.add("aegir_servers", name)
        server_group = inv.groups[group_name("aegir_server", name)]
        # What its platforms and sites share is set once, on the server's group.
        server_group["vars"] = {k: hv[k] for k in SERVER_VARS_INHERITED if k in hv}
        inv.add(group_name("aegir_server", name), name)
        inv.add(group_name("aegir_status_server", SERVER_STATUS.get(server["status"], "unknown")), name)

    # 5. platforms
    platforms: dict[int, dict] = {}
    for nid, title, name, root, web_server, status, makefile, verified in session.execute(
        select(m.Node.nid, m.Node.title, m.HostingContext.name, m.HostingPlatform.publish_path,
               m.HostingPlatform.web_server, m.HostingPlatform.status,
               m.HostingPlatform.makefile, m.HostingPlatform.verified)
        .join(m.HostingPlatform, _current(m.HostingPlatform))
        .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
        .where(m.Node.type == "platform", m.HostingPlatform.status != m.PLATFORM_DELETED)
        .order_by(m.Node.nid)
    ):
        server = servers.get(web_server)
        why = _refusal(name) or rejected_servers.get(web_server)
        if why:
            inv.rejected[name] = f"platform {name} is left out of the inventory: {why}"
            rejected_platforms[nid] = inv.rejected[name]
            continue
        if server is None:  # its web server is deleted or missing: nowhere to connect
            continue
        root = (root or "").rstrip("/")
        hv = {}
        hv.update({
            "aegir_context_type": "platform",
            "aegir_nid": nid,
            "aegir_platform": name,
            "aegir_platform_title": title,
            "aegir_platform_root": root,
            "aegir_platform_status": PLATFORM_STATUS.get(status, "unknown"),
            "aegir_platform_makefile": makefile or "",
            "aegir_platform_verified": verified,
            "aegir_platform_drush": f"{root}/vendor/bin/drush",
        })
        platforms[nid] = {"name": name, "vars": hv, "server": server}
        inv.hosts[name] = hv
        inv.add("aegir_platforms", name)
        inv.add(group_name("aegir_server", server["name"]), name)
        inv.inherits[name] = [group_name("aegir_server", server["name"])]
        inv.add(group_name("aegir_status_platform", hv["aegir_platform_status"]), name)
        # What its sites share is set once, on the platform's group (which holds its sites).
        inv.groups[group_name("aegir_platform", name)]["vars"] = {
            k: v for k, v in hv.items() if k in PLATFORM_VARS_INHERITED}

    # 6. sites (+ profile short name, client uname, backend settings)
    profile_pkg = select(m.HostingPackage.nid, m.HostingPackage.short_name).join(
        m.Node, m.Node.vid == m.HostingPackage.vid).subquery()
    client_tbl = select(m.HostingClient.nid, m.HostingClient.uname).join(
        m.Node, m.Node.vid == m.HostingClient.vid).subquery()
    sites: dict[int, dict] = {}
    hs = m.HostingSite
    # Columns (a Bundle), not the HostingSite entity: building 10,000 ORM objects was a
    # third of the time of a large inventory; the bundle reads the same (site.platform).
    site_rows = list(session.execute(
        select(m.Node.nid, m.Node.vid, m.HostingContext.name, m.Node.title,
               Bundle("site", hs.platform, hs.db_server, hs.status, hs.language, hs.verified,
                      hs.cron_key, hs.db_name),
               profile_pkg.c.short_name, client_tbl.c.uname, SiteSettings.cron_interval)
        .join(m.HostingSite, _current(m.HostingSite))
        .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
        .outerjoin(profile_pkg, profile_pkg.c.nid == m.HostingSite.profile)
        .outerjoin(client_tbl, client_tbl.c.nid == m.HostingSite.client)
        .outerjoin(SiteSettings, SiteSettings.nid == m.Node.nid)
        .where(m.Node.type == "site", m.HostingSite.status != m.SITE_DELETED)
        .order_by(m.Node.nid)
    ))
    taken_db_names = {(r[4].db_server, r[4].db_name) for r in site_rows if r[4].db_name}
    # The databases this backend recorded as a site's own (created, or taken over on proof).
    db_records = {rec.nid: rec for rec in session.execute(select(SiteDatabase)).scalars()}
    db_owners = {(rec.db_server, rec.db_name): rec.nid for rec in db_records.values()}
    taken_db_names |= set(db_owners)
    for nid, vid, name, title, site, profile, client, cron_interval in site_rows:
        platform = platforms.get(site.platform)
        why = _refusal(name) or rejected_servers.get(site.db_server)
        if why or platform is None:
            why = why or rejected_platforms.get(site.platform)
            if why:
                inv.rejected[name] = f"site {name} is left out of the inventory: {why}"
            continue
        db = servers.get(site.db_server)
        db_service = (db or {}).get("services", {}).get("db", {})
        hv = {}
        uri = title
        status = SITE_STATUS.get(site.status, "unknown")
        hv.update({
            "aegir_context_type": "site",
            "aegir_nid": nid,
            "aegir_site_uri": uri,
            "aegir_site_path": f"{platform['vars']['aegir_platform_root']}/sites/{uri}",
            "aegir_site_aliases": [],
            "aegir_site_redirection": "",
            "aegir_site_profile": profile or "",
            "aegir_site_language": site.language,
            "aegir_site_client": client or "",
            "aegir_site_status": status,
            "aegir_site_enabled": site.status == m.SITE_ENABLED,
            "aegir_site_verified": site.verified,
            "aegir_site_cron_interval": defaults.CRON_INTERVAL if cron_interval is None else cron_interval,
            "aegir_site_cron_key": site.cron_key or "",
            "aegir_site_db_server": db["name"] if db else "",
            "aegir_site_db_host": db["vars"].get("aegir_db_host", "") if db else "",
            "aegir_site_db_port": int(db_service.get("port") or 3306),
            "aegir_site_db_name": site.db_name or _suggest_db_name(title, site.db_server, taken_db_names),
            "aegir_site_db_record": _db_record(db_records.get(nid), site.db_server, db),
            "aegir_site_db_name_candidates": [] if site.db_name else _db_name_candidates(
                title, site.db_server, taken_db_names),
            "aegir_site_conflicts": [],
            "aegir_site_db_conflicts": [],
        })
        sites[vid] = {"name": name, "vars": hv, "nid": nid, "db_server": site.db_server,
                      "server": platform["server"]}
        inv.hosts[name] = hv
        inv.add("aegir_sites", name)
        inv.add(group_name("aegir_server", platform["server"]["name"]), name)
        inv.add(group_name("aegir_platform", platform["name"]), name)
        inv.inherits[name] = [group_name("aegir_server", platform["server"]["name"]),
                              group_name("aegir_platform", platform["name"])]
        inv.add(group_name("aegir_status_site", status), name)

    # 7. aliases of the current site revisions
    for vid, alias, redirection in session.execute(
        select(m.HostingSiteAlias.vid, m.HostingSiteAlias.alias, m.HostingSiteAlias.redirection)
        .join(m.Node, m.Node.vid == m.HostingSiteAlias.vid)
        .where(m.Node.type == "site")
        .order_by(m.HostingSiteAlias.vid, m.HostingSiteAlias.alias)
    ):
        site = sites.get(vid)
        if site is None:
            continue
        site["vars"]["aegir_site_aliases"].append(alias)
        if redirection and redirection != "0":
            site["vars"]["aegir_site_redirection"] = redirection

    # 8. names and databases two live sites may not share: recorded on the sites, and a
    # contested alias is served by none of them (a playbook run by hand cannot take it over).
    conflicts = isolation_conflicts(
        [SiteClaims(s["nid"], s["vars"]["aegir_site_uri"], s["vars"]["aegir_site_aliases"],
                    s["db_server"], s["vars"]["aegir_site_db_name"]) for s in sites.values()],
        db_owners, dict(session.execute(select(SiteHostName.name, SiteHostName.nid)).all()))
    for site in sites.values():
        hv, nid = site["vars"], site["nid"]
        hv["aegir_site_conflicts"] = conflicts.names.get(nid, [])
        hv["aegir_site_db_conflicts"] = conflicts.db.get(nid, [])
        contested = conflicts.contested.get(nid)
        if contested:
            hv["aegir_site_aliases"] = [a for a in hv["aegir_site_aliases"] if a.lower() not in contested]
            if hv["aegir_site_redirection"].lower() in contested:
                hv["aegir_site_redirection"] = ""

    # 9. https (hosting_https, or the older hosting_ssl): absent tables mean no https
    https_vars.add_site_vars(session, servers, sites)
    return inv


def _db_record(rec: SiteDatabase | None, db_server: int, db: dict | None) -> dict:
    """What the backend recorded as the site's own database, if it is on the site's current
    db server: {name, user, host (the db server's address), hosts (the user's hosts)}."""
    if rec is None or rec.db_server != db_server or db is None:
        return {}
    return {"name": rec.db_name, "user": rec.db_user,
            "host": db["vars"].get("aegir_db_host", ""), "hosts": rec.host_list()}


DB_NAME_CANDIDATES = 10


def _db_names(uri: str):
    """Provision's database names for a uri, in order: the uri without a leading 'www.', dots
    and dashes removed, 16 characters; then '<first 15-len(i)>_<i>' for i < 100."""
    base = re.sub(r"[.\-]", "", uri.removeprefix("www."))[:16]
    yield base
    for i in range(1, 100):
        yield f"{base[:15 - len(str(i))]}_{i}"


def _free_db_names(uri: str, db_server: int, taken: set):
    return (n for n in _db_names(uri) if (db_server, n) not in taken and not is_reserved_db_name(n))


def _db_name_candidates(uri: str, db_server: int, taken: set) -> list[str]:
    """Further names for a site that has none recorded yet, for the role to take the first that
    does not exist on the db server (install's choose_name)."""
    return list(itertools.islice(_free_db_names(uri, db_server, taken), DB_NAME_CANDIDATES))


def _suggest_db_name(uri: str, db_server: int, taken: set) -> str:
    """A database name for a site that has none yet, as provision chooses it (_db_names), the
    first not taken on that db server nor reserved (mysql, root, ...). The queue records it in
    hosting_site.db_name."""
    candidate = next(_free_db_names(uri, db_server, taken), None)
    if candidate is None:  # 100 names taken: the role refuses what exists
        candidate = next(_db_names(uri))
    taken.add((db_server, candidate))
    return candidate


def _server_vars(server: dict) -> dict:
    s: ServerSettings = server["settings"]
    name = server["name"]
    root = (s.aegir_root or defaults.AEGIR_ROOT).rstrip("/")
    http = server["services"].get("http")
    db = server["services"].get("db")
    http_type = http["type"] if http else ""
    http_type = https_vars.WEB_SERVER_OF_HTTP_TYPE.get(http_type, http_type)
    test_cmd, reload_cmd = s.http_commands(http_type)
    address = s.address or (server["ips"][0] if server["ips"] else server["title"])
    hv = {
        "aegir_context_type": "server",
        "aegir_nid": server["nid"],
        "aegir_server": name,
        "aegir_server_hostname": server["title"],
        "aegir_server_status": SERVER_STATUS.get(server["status"], "unknown"),
        "aegir_server_verified": server["verified"],
        "aegir_root": root,
        "aegir_script_user": s.script_user or defaults.SCRIPT_USER,
        "aegir_web_group": s.web_group or defaults.WEB_GROUP,
        "aegir_config_path": f"{root}/config",
        "aegir_server_config_path": f"{root}/config/{name}",
        "aegir_backups_path": f"{root}/backups",
        "aegir_clients_path": f"{root}/clients",
        "aegir_http_service": http_type,
        "aegir_http_port": int(http["port"] or defaults.HTTP_PORT) if http else defaults.HTTP_PORT,
        "aegir_http_listen_address": s.http_listen_address or defaults.HTTP_LISTEN_ADDRESS,
        "aegir_http_test_cmd": test_cmd,
        "aegir_http_reload_cmd": reload_cmd,
        "aegir_php_fastcgi": s.php_fastcgi or defaults.PHP_FASTCGI,
        "aegir_db_grant_host": s.db_grant_host or address,
        "aegir_ip_addresses": list(server["ips"]),
        **server.get("https", {}),
    }
    if s.connection == "local":
        hv["ansible_connection"] = "local"
    else:
        hv.update({
            "ansible_connection": "ssh",
            "ansible_host": address,
            "ansible_user": s.ssh_user or defaults.SSH_USER,
            "ansible_port": int(s.ssh_port or defaults.SSH_PORT),
        })
        if s.ssh_private_key_file:
            hv["ansible_ssh_private_key_file"] = s.ssh_private_key_file
    hv["ansible_python_interpreter"] = s.python_interpreter or defaults.PYTHON_INTERPRETER
    if db:
        user, passwd = server.get("db_admin", ("", ""))
        hv.update({
            "aegir_db_service": db["type"],
            "aegir_db_host": s.db_host or address,
            "aegir_db_port": int(db["port"] or 3306),
            "aegir_db_admin_user": user,
            "aegir_db_admin_password": passwd,
        })
    return hv


# -- front ends ------------------------------------------------------------------------

def unsafe(value):
    """Wrap every string as `{"__ansible_unsafe": ...}` so Ansible never templates it."""
    if isinstance(value, str):
        return {"__ansible_unsafe": value}
    if isinstance(value, list):
        return [unsafe(v) for v in value]
    if isinstance(value, dict):
        return {k: unsafe(v) for k, v in value.items()}
    return value


def script_output(inv: InventoryData) -> dict:
    """The `--list` JSON of an inventory script, with `_meta.hostvars`, all strings unsafe."""
    out: dict = {
        "_meta": {"hostvars": {h: unsafe(v) for h, v in inv.hosts.items()}},
        "all": {"children": ["ungrouped"]},
        "ungrouped": {"hosts": []},
    }
    for gname, g in sorted(inv.groups.items()):
        entry: dict = {"hosts": list(g["hosts"])}
        if g["children"]:
            entry["children"] = list(g["children"])
        if g["vars"]:
            entry["vars"] = unsafe(g["vars"])
        out[gname] = entry
        out["all"]["children"].append(gname)
    return out


def graph(inv: InventoryData) -> str:
    lines = ["@all:"]
    for gname, g in sorted(inv.groups.items()):
        lines.append(f"  |--@{gname}:")
        lines.extend(f"  |  |--{h}" for h in g["hosts"])
    return "\n".join(lines)
