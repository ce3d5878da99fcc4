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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Bundle, Session

from . import defaults, https_vars
from .db import models as m
from .db.backend import ServerSettings, SiteDatabase, SiteHostName, SiteSettings
from .queries import SiteClaims, hostmaster_title, hostmaster_url, is_reserved_db_name, isolation_conflicts
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
    "aegir_https_port", "aegir_https_certificate_service", "aegir_hostmaster_url",
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


def run_limit(targets: Iterable[tuple[str | None, Mapping[str, str]]]) -> set[str]:
    """The context names a run's inventory must hold as hosts of their own (`limit` of
    build_inventory): the targets, and the site a task's arguments name as its source (sync's
    `source`, "@<site>"). Servers and platforms are always in the inventory."""
    names = set()
    for name, args in targets:
        if name:
            names.add(name)
        source = str((args or {}).get("source") or "").strip().lstrip("@")
        if source:
            names.add(source)
    return names


def build_inventory(session: Session, limit: Iterable[str] | None = None) -> InventoryData:
    """The inventory of every live context; or, with `limit` (context names: a run's targets,
    see run_limit), every live server and platform (what a run delegates to: db servers,
    backup servers, target platforms, the platforms a delete compares roots with) but only the
    sites named in `limit` and the live sites of the platforms named in it. Its cost then
    follows the run, not the number of sites: every query on sites is filtered by the limit.
    A limited site gets exactly the variables the full inventory gives it (its conflicts with
    other sites too: those read by targeted queries)."""
    limit = None if limit is None else list(limit)
    inv = InventoryData()
    for top in ("aegir_servers", "aegir_platforms", "aegir_sites"):
        inv.groups[top]  # noqa: B018 — the three top groups always exist

    # 1. servers (+ backend connection settings)
    servers: dict[int, dict] = {}
    rejected_servers: dict[int, str] = {}
    rejected_platforms: dict[int, str] = {}
    rows = session.execute(
        select(m.Node.nid, m.Node.vid, m.Node.title, m.HostingContext.name,
               m.HostingServer.status, m.HostingServer.verified, ServerSettings,
               hostmaster_title().label("hostmaster_title"))
        .join(m.HostingServer, _current(m.HostingServer))
        .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
        .outerjoin(ServerSettings, ServerSettings.nid == m.Node.nid)
        .where(m.Node.type == "server", m.HostingServer.status != m.SERVER_DELETED)
        .order_by(m.Node.nid)
    )
    master_url = ""
    for nid, vid, title, name, status, verified, settings, master_title in rows:
        master_url = hostmaster_url(master_title)
        servers[nid] = {"nid": nid, "vid": vid, "title": title, "name": name,
                        "status": status, "verified": verified,
                        "settings": settings or ServerSettings(nid=nid), "services": {},
                        "ips": []}
    by_vid = {s["vid"]: s for s in servers.values()}

    # 2. services of the current server revisions
    for vid, service, type_, port, restart_cmd in session.execute(
        select(m.HostingService.vid, m.HostingService.service, m.HostingService.type,
               m.HostingService.port, m.HostingService.restart_cmd)
        .join(m.Node, m.Node.vid == m.HostingService.vid)
        .where(m.Node.type == "server", m.HostingService.available == 1)
    ):
        if vid in by_vid:
            by_vid[vid]["services"][service] = {"type": type_, "port": port, "restart_cmd": restart_cmd}
    server: dict | None
    for server in servers.values():
        server["master_url"] = master_url

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

    # 6. sites (+ profile short name, client uname, backend settings): all live ones, or
    # with a limit only those named in it and those of the platforms named in it.
    site_rows = _site_rows(session, None if limit is None else _limit_condition(limit, platforms))

    def refusal(name, platform, db_server):
        return _site_refusal(name, platform, db_server, platforms, rejected_servers, rejected_platforms)

    def included(k: _SiteKey) -> bool:
        return refusal(k.name, k.platform, k.db_server) is None

    ctx = (_FullSiteContext if limit is None else _LimitedSiteContext)(session, site_rows, included)
    suggestions = _db_suggestions(ctx.suggestion_rows, ctx.taken_db_names, included)
    sites: dict[int, dict] = {}
    for nid, vid, name, title, site, profile, client, cron_interval in site_rows:
        platform = platforms.get(site.platform)
        why = refusal(name, site.platform, site.db_server)
        if why is not None:
            if why:
                inv.rejected[name] = f"site {name} is left out of the inventory: {why}"
            continue
        if platform is None:  # not reached: refusal() leaves out sites of platforms not in it
            raise RuntimeError(f"site {name}: platform {site.platform} is not in the inventory")
        db = servers.get(site.db_server)
        db_service = (db or {}).get("services", {}).get("db", {})
        hv = {}
        uri = title
        status = SITE_STATUS.get(site.status, "unknown")
        suggested, candidates = suggestions.get(nid, ("", []))
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
            "aegir_site_db_name": site.db_name or suggested,
            "aegir_site_db_record": _db_record(ctx.db_records.get(nid), site.db_server, db),
            "aegir_site_db_name_candidates": [] if site.db_name else candidates,
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
    for vid, alias, redirection in _alias_rows(session, None if limit is None else list(sites)):
        site = sites.get(vid)
        if site is None:
            continue
        site["vars"]["aegir_site_aliases"].append(alias)
        if redirection and redirection != "0":
            site["vars"]["aegir_site_redirection"] = redirection

    # 8. names and databases two live sites may not share: recorded on the sites, and a
    # contested alias is served by none of them (a playbook run by hand cannot take it over).
    # With a limit, the other live sites that claim one of the sites' names or databases are
    # read by targeted queries (_LimitedSiteContext.claims), so the verdicts are the same.
    own = [SiteClaims(s["nid"], s["vars"]["aegir_site_uri"], s["vars"]["aegir_site_aliases"],
                      s["db_server"], s["vars"]["aegir_site_db_name"]) for s in sites.values()]
    claims, db_owners, name_owners = ctx.claims(own, suggestions)
    conflicts = isolation_conflicts(claims, db_owners, name_owners)
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
    https_vars.add_site_vars(session, servers, sites, limited=limit is not None)
    return inv


class _SiteKey(NamedTuple):
    """What decides whether a site is in the inventory and its suggested database name."""

    nid: int
    vid: int
    name: str
    title: str
    platform: int
    db_server: int
    db_name: str | None


def _site_refusal(name: str, platform: int, db_server: int, platforms: dict, rejected_servers: dict,
                  rejected_platforms: dict) -> str | None:
    """None: the site is an inventory host; "": it is left out silently (its platform is
    deleted or missing); else why it is rejected."""
    why = _refusal(name) or rejected_servers.get(db_server)
    if why or platform not in platforms:
        return why or rejected_platforms.get(platform) or ""
    return None


def _live_sites(*columns):
    """SELECT of the live sites' current revisions (hosting_site joined on node.vid, with a
    context: the rows of _site_rows), by default the columns of a _SiteKey."""
    columns = columns or (m.Node.nid, m.Node.vid, m.HostingContext.name, m.Node.title,
                          m.HostingSite.platform, m.HostingSite.db_server, m.HostingSite.db_name)
    return (select(*columns).select_from(m.Node)
            .join(m.HostingSite, _current(m.HostingSite))
            .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
            .where(m.Node.type == "site", m.HostingSite.status != m.SITE_DELETED))


def _site_keys(session: Session, vids=(), nids=()) -> list[_SiteKey]:
    """The live sites among these revision ids (current ones only) and node ids: primary key
    lookups, in nid order."""
    cond = [c for c in (m.Node.vid.in_(sorted(set(vids))) if vids else None,
                        m.Node.nid.in_(sorted(set(nids))) if nids else None) if c is not None]
    if not cond:
        return []
    return [_SiteKey(*r) for r in session.execute(_live_sites().where(or_(*cond)).order_by(m.Node.nid))]


def _site_rows(session: Session, condition) -> list:
    """The sites' rows (+ profile short name, client uname, backend settings), in nid order:
    all live sites, or those matching `condition`."""
    profile_pkg = select(m.HostingPackage.nid, m.HostingPackage.short_name).join(
        m.Node, m.Node.vid == m.HostingPackage.vid).subquery()
    client_tbl = select(m.HostingClient.nid, m.HostingClient.uname).join(
        m.Node, m.Node.vid == m.HostingClient.vid).subquery()
    hs = m.HostingSite
    # Columns (a Bundle), not the HostingSite entity: building 10,000 ORM objects was a
    # third of the time of a large inventory; the bundle reads the same (site.platform).
    q = (select(m.Node.nid, m.Node.vid, m.HostingContext.name, m.Node.title,
                Bundle("site", hs.platform, hs.db_server, hs.status, hs.language, hs.verified,
                       hs.cron_key, hs.db_name),
                profile_pkg.c.short_name, client_tbl.c.uname, SiteSettings.cron_interval)
         .join(m.HostingSite, _current(m.HostingSite))
         .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
         .outerjoin(profile_pkg, profile_pkg.c.nid == m.HostingSite.profile)
         .outerjoin(client_tbl, client_tbl.c.nid == m.HostingSite.client)
         .outerjoin(SiteSettings, SiteSettings.nid == m.Node.nid)
         .where(m.Node.type == "site", m.HostingSite.status != m.SITE_DELETED))
    if condition is not None:
        q = q.where(condition)
    return list(session.execute(q.order_by(m.Node.nid)))


def _limit_condition(limit: Iterable[str], platforms: dict):
    """The sites of a limited inventory: named in the limit, or on a platform named in it
    (a platform's group lists its live sites: delete refuses while there are any)."""
    names = sorted({n for n in limit if n})
    cond = m.HostingContext.name.in_(names)
    on_platforms = [nid for nid, p in platforms.items() if p["name"] in names]
    return or_(cond, m.HostingSite.platform.in_(on_platforms)) if on_platforms else cond


def _alias_rows(session: Session, vids: list[int] | None):
    """(vid, alias, redirection) of the current site revisions (of these vids), in order."""
    q = (select(m.HostingSiteAlias.vid, m.HostingSiteAlias.alias, m.HostingSiteAlias.redirection)
         .join(m.Node, m.Node.vid == m.HostingSiteAlias.vid)
         .where(m.Node.type == "site"))
    if vids is not None:
        if not vids:
            return []
        q = q.where(m.HostingSiteAlias.vid.in_(vids))
    return session.execute(q.order_by(m.HostingSiteAlias.vid, m.HostingSiteAlias.alias)).all()


def _db_suggestions(rows: list[_SiteKey], taken: set, include) -> dict[int, tuple[str, list[str]]]:
    """{nid: (suggested database name, further candidates)} of the sites without a database
    name, in nid order (each suggestion is taken for the next sites, as provision does)."""
    out = {}
    for k in rows:
        if k.db_name or not include(k):
            continue
        name = _suggest_db_name(k.title, k.db_server, taken)
        out[k.nid] = (name, _db_name_candidates(k.title, k.db_server, taken))
    return out


def _by_server(pairs) -> dict[int, list[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for server, name in pairs:
        out[server].add(name)
    return {k: sorted(v) for k, v in out.items()}


class _FullSiteContext:
    """What the checks of every site need, read whole (the full inventory)."""

    def __init__(self, session: Session, site_rows: list, include):
        self.session = session
        # The databases this backend recorded as a site's own (created, or taken over on proof).
        self.db_records = {rec.nid: rec for rec in session.execute(select(SiteDatabase)).scalars()}
        self.db_owners = {(rec.db_server, rec.db_name): rec.nid for rec in self.db_records.values()}
        self.taken_db_names = {(r[4].db_server, r[4].db_name) for r in site_rows if r[4].db_name}
        self.taken_db_names |= set(self.db_owners)
        self.suggestion_rows = [_SiteKey(nid, vid, name, title, site.platform, site.db_server, site.db_name)
                                for nid, vid, name, title, site, *_rest in site_rows]

    def claims(self, own: list[SiteClaims], suggestions: dict):
        return own, self.db_owners, dict(self.session.execute(
            select(SiteHostName.name, SiteHostName.nid)).all())


# The most names in the IN lists of one query of recorded database names.
_IN_LIST_MAX = 1000


class _LimitedSiteContext:
    """What the checks of a few sites need, read by queries filtered by those sites: the
    database names their suggestions must avoid, and the other live sites that claim one of
    their host names or databases (as uri, alias, recorded or suggested database, owner of
    the database's record)."""

    def __init__(self, session: Session, site_rows: list, include):
        self.session = session
        self.include = include
        targets = [_SiteKey(nid, vid, name, title, site.platform, site.db_server, site.db_name)
                   for nid, vid, name, title, site, *_rest in site_rows]
        self.target_nids = [k.nid for k in targets]
        db_servers = sorted({k.db_server for k in targets})
        self.db_records = {rec.nid: rec for rec in session.execute(
            select(SiteDatabase).where(SiteDatabase.nid.in_(self.target_nids))).scalars()}
        # A site without a database name gets one suggested in nid order over the live sites
        # of its db server that have none either (each takes its suggestion from the next):
        # those of the targets' db servers take part, and a suggestion of theirs may also be
        # the database a target names.
        # (Each query on hosting_site alone, then the live current revisions by primary key:
        # joined to node, MariaDB read every site row through the join.)
        no_name = or_(m.HostingSite.db_name.is_(None), m.HostingSite.db_name == "")
        unnamed_vids = session.execute(select(m.HostingSite.vid).where(
            m.HostingSite.db_server.in_(db_servers), no_name)).scalars().all() if db_servers else []
        mine = set(self.target_nids)
        self.unnamed = [k for k in _site_keys(session, vids=unnamed_vids) if k.nid not in mine]
        self.suggestion_rows = sorted(targets + self.unnamed, key=lambda k: k.nid)
        wanted = {(k.db_server, n) for k in self.suggestion_rows if not k.db_name
                  for n in _db_names(k.title)}
        self.taken_db_names = self._recorded(wanted)

    def _recorded(self, wanted: set) -> set:
        """The (db server, name) pairs of `wanted` that a live site records or the backend
        records as a site's own: one query of each kind per _IN_LIST_MAX names (a db server
        with more candidates than that is read whole, its names only)."""
        parts: list[tuple[int, list[str] | None]] = []
        for server, names in _by_server(wanted).items():
            if len(names) > 5 * _IN_LIST_MAX:
                parts.append((server, None))
            else:
                parts += [(server, names[i:i + _IN_LIST_MAX]) for i in range(0, len(names), _IN_LIST_MAX)]
        groups: list[list[tuple[int, list[str] | None]]] = []
        size = 0
        for server, part in parts:
            if not groups or size + len(part or ()) > _IN_LIST_MAX:
                groups.append([])
                size = 0
            groups[-1].append((server, part))
            size += len(part or ())
        taken: set = set()
        for group in groups:
            def where(model):
                return or_(*(model.db_server == server if part is None else
                             and_(model.db_server == server, model.db_name.in_(part))
                             for server, part in group))  # noqa: B023 (called in this iteration)

            rows = [(vid, (server, name)) for vid, server, name in self.session.execute(
                select(m.HostingSite.vid, m.HostingSite.db_server, m.HostingSite.db_name)
                .where(where(m.HostingSite))) if (server, name) in wanted]
            live = {k.vid for k in _site_keys(self.session, vids=[vid for vid, _key in rows])}
            taken.update(key for vid, key in rows if vid in live)
            taken.update((server, name) for server, name in self.session.execute(
                select(SiteDatabase.db_server, SiteDatabase.db_name).where(where(SiteDatabase)))
                if (server, name) in wanted)
        return taken

    def claims(self, own: list[SiteClaims], suggestions: dict):
        names = sorted({n.lower() for c in own for n in (c.uri, *c.aliases)})
        keys = {(c.db_server, c.db_name) for c in own if c.db_name}
        by_server = _by_server(keys)
        db_owners = {}
        if by_server:
            for server, nid, db_name in self.session.execute(
                    select(SiteDatabase.db_server, SiteDatabase.nid, SiteDatabase.db_name).where(or_(*(
                        and_(SiteDatabase.db_server == s, SiteDatabase.db_name.in_(n))
                        for s, n in by_server.items())))):
                if (server, db_name) in keys:
                    db_owners[(server, db_name)] = nid
        # The other sites naming one of these host names (uri or alias), or one of these
        # databases, or owning one: one table each, then the live ones by primary key. Host
        # names compare lower-cased (as isolation_conflicts does), which no index of
        # hostmaster's tables serves: those two read one narrow column of the sites' nodes
        # and of the aliases, in the database.
        ex = self.session.execute
        vids = list(ex(select(m.HostingSiteAlias.vid)
                       .where(func.lower(m.HostingSiteAlias.alias).in_(names))).scalars().all())
        if by_server:
            vids += ex(select(m.HostingSite.vid).where(or_(*(
                and_(m.HostingSite.db_server == s, m.HostingSite.db_name.in_(n))
                for s, n in by_server.items())))).scalars().all()
        nids = list(ex(select(m.Node.nid).where(m.Node.type == "site",
                                                func.lower(m.Node.title).in_(names))).scalars().all())
        nids += sorted(set(db_owners.values()))
        found = {k.nid: k for k in _site_keys(self.session, vids=vids, nids=nids)}
        # Sites whose suggested database is one of the targets' databases.
        found.update((k.nid, k) for k in self.unnamed
                     if k.nid in suggestions and (k.db_server, suggestions[k.nid][0]) in keys)
        mine = {c.nid for c in own}
        others = [k for nid, k in sorted(found.items()) if nid not in mine and self.include(k)]
        aliases: dict[int, list[str]] = defaultdict(list)
        for vid, alias, _redirection in _alias_rows(self.session, [k.vid for k in others]):
            aliases[vid].append(alias)
        claims = own + [SiteClaims(k.nid, k.title, aliases[k.vid], k.db_server,
                                   k.db_name or suggestions.get(k.nid, ("", []))[0]) for k in others]
        claims.sort(key=lambda c: c.nid)
        name_owners = dict(self.session.execute(
            select(SiteHostName.name, SiteHostName.nid).where(SiteHostName.name.in_(names))).all())
        return claims, db_owners, name_owners


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


_RESTART_WORD = re.compile(r"^[A-Za-z0-9_./:=@+,%-]+$")


def restart_argv(command: str, root_user: bool = False) -> list[str]:
    """hostmaster's `hosting_service.restart_cmd` (a command line provision ran through a
    shell, e.g. `sudo /etc/init.d/nginx reload`) as an argv list for the command module:
    plain words only (no quoting, variables, redirections, pipes or command separators: such a
    line is refused, never handed to a shell), the first an absolute path or `sudo`. A leading
    `sudo` is dropped when the backend connects as root (it needs none, and sudo may be
    missing there)."""
    words = command.split()
    bad = [w for w in words if not _RESTART_WORD.match(w)]
    if not words or bad or not (words[0].startswith("/") or words[0] == "sudo"):
        raise InputError(
            f"hosting_service.restart_cmd {command[:80]!r} is not a plain command (words of "
            "A-Z a-z 0-9 _ . / : = @ + , % -, starting with an absolute path or sudo): refusing it")
    if words[0] == "sudo":
        rest = words[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[1:]
        if not rest or not rest[0].startswith("/"):
            raise InputError(f"hosting_service.restart_cmd {command[:80]!r}: sudo must run an absolute path")
        if root_user:
            return rest
    return words


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
    # hostmaster's restart command of the web service (hosting_service.restart_cmd) reloads
    # the web server, unless the backend's own settings name one (aegir_ansible_server).
    restart_error = ""
    if http and not s.http_reload_cmd and (http.get("restart_cmd") or "").strip():
        try:
            reload_cmd = restart_argv(http["restart_cmd"], root_user=s.connection != "local"
                                      and (s.ssh_user or defaults.SSH_USER) == "root")
        except InputError as exc:
            restart_error = str(exc)
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
        "aegir_hostmaster_url": server.get("master_url", ""),
        **server.get("https", {}),
    }
    if restart_error:
        hv["aegir_http_restart_cmd_error"] = restart_error
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
