"""Writing servers, platforms, sites and tasks the way hostmaster writes them.

For a standalone install and for tests: every entity is a node with a node_revision,
its hosting_* rows share the node's current vid, and its backend name is registered in
hosting_context. Each public method validates first and writes in the caller's
transaction, so a refused input leaves the database unchanged.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import defaults
from .db import models as m
from .db.backend import ServerSettings, SiteSettings
from .tasks import TASK_TYPES
from .validation import (
    InputError,
    check_abs_path,
    check_context_name,
    check_fastcgi,
    check_host_address,
    check_language,
    check_listen_address,
    check_port,
    check_profile,
    check_unix_name,
    normalize_hostname,
)

HTTP_TYPES = ("nginx", "apache")
DB_TYPES = ("mysql",)


@dataclass(frozen=True)
class Context:
    """A live entity found by its context name."""

    nid: int
    vid: int
    type: str  # server, platform, site
    name: str
    title: str
    status: int


def server_context_name(hostname: str) -> str:
    return "server_" + re.sub(r"[\W.\-]", "", hostname)


def platform_context_name(title: str) -> str:
    return "platform_" + re.sub(r"\W", "", title)


class Frontend:
    """Hostmaster's side of the database, as far as the backend needs to play it."""

    def __init__(self, session: Session, uid: int = 1):
        self.session = session
        self.uid = uid

    # -- lookups ---------------------------------------------------------------------

    def find(self, ref: str | int, *, types=("server", "platform", "site")) -> Context:
        """A live server, platform or site by context name (with or without '@') or nid."""
        s = self.session
        q = (
            select(m.Node, m.HostingContext.name)
            .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
            .where(m.Node.type.in_(types))
        )
        ref_s = str(ref).lstrip("@")
        q = q.where(m.Node.nid == int(ref_s)) if ref_s.isdigit() else q.where(
            m.HostingContext.name == ref_s
        )
        row = s.execute(q).first()
        if row is None:
            raise InputError(f"no {' or '.join(types)} named {ref!r}")
        node, name = row
        status = self._status(node)
        if status == m.SiteStatus.DELETED:  # the same value for servers and platforms
            raise InputError(f"{node.type} {name!r} is deleted")
        return Context(node.nid, node.vid, node.type, name, node.title, status)

    def _status(self, node: m.Node) -> int:
        table = {"server": m.HostingServer, "platform": m.HostingPlatform, "site": m.HostingSite}
        model = table[node.type]
        return self.session.execute(
            select(model.status).where(model.vid == node.vid)
        ).scalar_one()

    def _name_taken(self, name: str) -> bool:
        return (
            self.session.execute(
                select(m.HostingContext.nid).where(m.HostingContext.name == name)
            ).first()
            is not None
        )

    def _services(self, server_vid: int) -> dict[str, str]:
        rows = self.session.execute(
            select(m.HostingService.service, m.HostingService.type).where(
                m.HostingService.vid == server_vid
            )
        )
        return {service: type_ for service, type_ in rows}

    # -- node plumbing ---------------------------------------------------------------

    def _new_node(self, type_: str, title: str, now: int) -> tuple[int, int]:
        node = m.Node(
            type=type_, title=title, language="", uid=self.uid, status=1,
            created=now, changed=now, comment=0, promote=0, sticky=0, tnid=0, translate=0,
        )
        self.session.add(node)
        self.session.flush()
        rev = m.NodeRevision(
            nid=node.nid, title=title, uid=self.uid, log="", timestamp=now, status=1,
            comment=0, promote=0, sticky=0,
        )
        self.session.add(rev)
        self.session.flush()
        node.vid = rev.vid
        self.session.flush()
        return node.nid, rev.vid

    def _register_context(self, nid: int, name: str) -> None:
        check_context_name(name)
        if self._name_taken(name):
            raise InputError(f"name {name!r} is already taken")
        self.session.add(m.HostingContext(nid=nid, name=name))

    # -- servers -----------------------------------------------------------------------

    def add_server(
        self,
        hostname: str,
        *,
        name: str | None = None,
        http: str | None = None,
        http_port: int = defaults.HTTP_PORT,
        db: str | None = None,
        db_port: int = defaults.DB_PORT,
        db_user: str = "",
        db_password: str = "",
        ip_addresses: tuple[str, ...] = (),
        local: bool = False,
        address: str | None = None,
        ssh_user: str = defaults.SSH_USER,
        ssh_port: int = defaults.SSH_PORT,
        ssh_private_key_file: str | None = None,
        python_interpreter: str = defaults.PYTHON_INTERPRETER,
        aegir_root: str = defaults.AEGIR_ROOT,
        script_user: str = defaults.SCRIPT_USER,
        web_group: str = defaults.WEB_GROUP,
        http_listen_address: str = defaults.HTTP_LISTEN_ADDRESS,
        http_test_cmd: list[str] | None = None,
        http_reload_cmd: list[str] | None = None,
        php_fastcgi: str = defaults.PHP_FASTCGI,
        db_grant_host: str | None = None,
        db_host: str | None = None,
        queue_verify: bool = True,
    ) -> int:
        import ipaddress
        import json

        title = normalize_hostname(hostname, "server hostname")
        name = name or server_context_name(title)
        if http is not None and http not in HTTP_TYPES:
            raise InputError(f"unknown http service {http!r} (one of {', '.join(HTTP_TYPES)})")
        if db is not None and db not in DB_TYPES:
            raise InputError(f"unknown db service {db!r} (one of {', '.join(DB_TYPES)})")
        if db and not db_user:
            raise InputError("a db service needs its admin user (--db-user)")
        for ip in ip_addresses:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise InputError(f"{ip!r} is not an IP address") from None
        if address is not None:
            check_host_address(address)
        check_abs_path(aegir_root, "aegir root")
        check_unix_name(script_user, "script user")
        check_unix_name(web_group, "web group")
        if not local:
            check_unix_name(ssh_user, "ssh user")
        for port, what in ((http_port, "http port"), (db_port, "db port"), (ssh_port, "ssh port")):
            check_port(port, what)
        check_fastcgi(php_fastcgi)
        check_listen_address(http_listen_address)
        for cmd, what in ((http_test_cmd, "http test command"), (http_reload_cmd, "http reload command")):
            if cmd is not None and (not cmd or not all(isinstance(a, str) and a for a in cmd)):
                raise InputError(f"{what} must be a non-empty list of arguments")

        now = int(time.time())
        nid, vid = self._new_node("server", title, now)
        self._register_context(nid, name)
        status = m.SERVER_QUEUED if queue_verify else m.SERVER_ENABLED
        self.session.add(m.HostingServer(vid=vid, nid=nid, human_name=title, verified=0, status=status))
        if http:
            self.session.add(m.HostingService(vid=vid, nid=nid, service="http", type=http,
                                              restart_cmd=None, port=http_port, available=1))
        if db:
            self.session.add(m.HostingService(vid=vid, nid=nid, service="db", type=db,
                                              restart_cmd=None, port=db_port, available=1))
            self.session.add(m.HostingDbServer(vid=vid, nid=nid, db_user=db_user, db_passwd=db_password))
        for ip in ip_addresses:
            self.session.add(m.HostingIpAddress(nid=nid, ip_address=ip))
        self.session.add(
            ServerSettings(
                nid=nid, connection="local" if local else "ssh", address=address,
                ssh_user=ssh_user, ssh_port=ssh_port, ssh_private_key_file=ssh_private_key_file,
                python_interpreter=python_interpreter, aegir_root=aegir_root.rstrip("/"),
                script_user=script_user, web_group=web_group,
                http_listen_address=http_listen_address,
                http_test_cmd=json.dumps(http_test_cmd) if http_test_cmd else None,
                http_reload_cmd=json.dumps(http_reload_cmd) if http_reload_cmd else None,
                php_fastcgi=php_fastcgi, db_grant_host=db_grant_host, db_host=db_host,
            )
        )
        self.session.flush()
        if queue_verify:
            self.add_task("verify", name)
        return nid

    # -- platforms ---------------------------------------------------------------------

    def add_platform(
        self,
        title: str,
        root: str,
        server: str,
        *,
        name: str | None = None,
        makefile: str = "",
        queue_verify: bool = True,
    ) -> int:
        title = (title or "").strip()
        if not title or len(title) > 255 or "\n" in title:
            raise InputError("platform title must be one line of 1 to 255 characters")
        name = name or platform_context_name(title)
        root = check_abs_path(root, "platform root")
        web = self.find(server, types=("server",))
        if "http" not in self._services(web.vid):
            raise InputError(f"server {web.name!r} has no http service")
        now = int(time.time())
        nid, vid = self._new_node("platform", title, now)
        self._register_context(nid, name)
        status = m.PLATFORM_QUEUED if queue_verify else m.PLATFORM_ENABLED
        self.session.add(m.HostingPlatform(vid=vid, nid=nid, publish_path=root, makefile=makefile,
                                           web_server=web.nid, verified=0, status=status,
                                           make_working_copy=0))
        self.session.flush()
        if queue_verify:
            self.add_task("verify", name)
        return nid

    # -- sites -------------------------------------------------------------------------

    def _profile_nid(self, short_name: str, now: int) -> int:
        found = self.session.execute(
            select(m.HostingPackage.nid)
            .join(m.Node, m.Node.vid == m.HostingPackage.vid)
            .where(m.HostingPackage.package_type == "profile",
                   m.HostingPackage.short_name == short_name)
        ).first()
        if found:
            return found[0]
        nid, vid = self._new_node("package", short_name, now)
        self.session.add(m.HostingPackage(vid=vid, nid=nid, package_type="profile",
                                          short_name=short_name, old_short_name="",
                                          description=""))
        return nid

    def _client_nid(self, uname: str, now: int) -> int:
        check_unix_name(uname.replace(".", "_"), "client name")
        found = self.session.execute(
            select(m.HostingClient.nid).join(m.Node, m.Node.vid == m.HostingClient.vid)
            .where(m.HostingClient.uname == uname)
        ).first()
        if found:
            return found[0]
        nid, vid = self._new_node("client", uname, now)
        self.session.add(m.HostingClient(vid=vid, nid=nid, uname=uname))
        return nid

    def site_owning(self, hosts: list[str]) -> dict[str, str]:
        """Which live site answers to each of these host names (as uri or alias): {host: uri}."""
        live = (
            select(m.Node.vid, m.Node.title)
            .join(m.HostingSite, m.HostingSite.vid == m.Node.vid)
            .where(m.Node.type == "site", m.HostingSite.status != m.SITE_DELETED)
        ).subquery()
        owners = {title: title for _vid, title in self.session.execute(
            select(live).where(live.c.title.in_(hosts)))}
        for alias, title in self.session.execute(
            select(m.HostingSiteAlias.alias, live.c.title)
            .join(live, live.c.vid == m.HostingSiteAlias.vid)
            .where(m.HostingSiteAlias.alias.in_(hosts))
        ):
            owners.setdefault(alias, title)
        return owners

    def _check_aliases(self, uri: str, aliases, redirection: str | None, own_uri: str | None = None):
        clean = []
        for alias in aliases:
            a = normalize_hostname(alias, "alias")
            if a == uri:
                raise InputError(f"alias {a!r} is the site's own uri")
            if a not in clean:
                clean.append(a)
        taken = self.site_owning([uri, *clean])
        for host in [uri, *clean]:
            owner = taken.get(host)
            if owner is not None and owner != own_uri:
                what = "uri" if host == uri else "alias"
                raise InputError(f"{what} {host!r} is already used by site {owner!r}")
        redirect = ""
        if redirection:
            redirect = normalize_hostname(redirection, "redirection")
            if redirect != uri and redirect not in clean:
                raise InputError(
                    f"redirection target {redirect!r} must be the site's uri or one of its aliases"
                )
        return clean, redirect

    def add_site(
        self,
        uri: str,
        platform: str,
        *,
        db_server: str | None = None,
        profile: str = defaults.SITE_PROFILE,
        language: str = defaults.SITE_LANGUAGE,
        aliases=(),
        redirection: str | None = None,
        client: str | None = None,
        cron_interval: int = defaults.CRON_INTERVAL,
        queue_install: bool = True,
        status: int | None = None,
    ) -> int:
        uri = normalize_hostname(uri, "site uri")
        check_profile(profile)
        language = check_language(language)
        if cron_interval < 0:
            raise InputError("cron interval must be 0 (off) or a number of seconds")
        plat = self.find(platform, types=("platform",))
        if plat.status == m.PLATFORM_LOCKED:
            raise InputError(f"platform {plat.name!r} is locked: no new sites on it")
        if db_server is None:
            db = self._default_db_server()
        else:
            db = self.find(db_server, types=("server",))
            if "db" not in self._services(db.vid):
                raise InputError(f"server {db.name!r} has no db service")
        if self._name_taken(uri):
            raise InputError(f"name {uri!r} is already taken")
        clean_aliases, redirect = self._check_aliases(uri, aliases, redirection)
        now = int(time.time())
        profile_nid = self._profile_nid(profile, now)
        client_nid = self._client_nid(client, now) if client else 0
        nid, vid = self._new_node("site", uri, now)
        self._register_context(nid, uri)
        if status is None:
            status = m.SITE_QUEUED if queue_install else m.SITE_ENABLED
        self.session.add(m.HostingSite(
            vid=vid, nid=nid, client=client_nid, db_server=db.nid, db_name="",
            platform=plat.nid, profile=profile_nid, language=language, last_cron=None,
            cron_key=secrets.token_urlsafe(32), verified=0, status=status,
        ))
        for alias in clean_aliases:
            self.session.add(m.HostingSiteAlias(vid=vid, nid=nid, alias=alias, automatic=0,
                                                redirection=redirect))
        self.session.add(SiteSettings(nid=nid, cron_interval=cron_interval))
        self.session.flush()
        if queue_install:
            self.add_task("install", uri)
        return nid

    def _default_db_server(self) -> Context:
        row = self.session.execute(
            select(m.HostingContext.name)
            .join(m.Node, m.Node.nid == m.HostingContext.nid)
            .join(m.HostingService, m.HostingService.vid == m.Node.vid)
            .join(m.HostingServer, m.HostingServer.vid == m.Node.vid)
            .where(m.HostingService.service == "db", m.HostingServer.status != m.SERVER_DELETED)
            .order_by(m.Node.nid)
        ).first()
        if row is None:
            raise InputError("no db server exists: add one with 'aegir server add --db-service mysql'")
        return self.find(row[0], types=("server",))

    # -- tasks -------------------------------------------------------------------------

    def add_task(self, task_type: str, target: str | int, args: dict[str, str] | None = None) -> int:
        """Queue a task as hosting_add_task() does: a new task node in QUEUED state."""
        tt = TASK_TYPES.get(task_type)
        if tt is None:
            raise InputError(
                f"unknown task type {task_type!r} (one of {', '.join(sorted(TASK_TYPES))})"
            )
        ctx = self.find(target)
        if ctx.type not in tt.objects:
            raise InputError(f"task {task_type!r} does not apply to a {ctx.type}")
        args = dict(args or {})
        for key, value in args.items():
            if not re.match(r"^([a-z][a-z0-9_-]{0,63}|[0-9]{1,10})$", key):  # bids: backup-delete
                raise InputError(f"task argument name {key!r} is not valid")
            if not isinstance(value, str):
                raise InputError(f"task argument {key!r} must be a string")
        now = int(time.time())
        nid, vid = self._new_node("task", f"{tt.title}: {ctx.title}", now)
        self.session.add(m.HostingTask(vid=vid, nid=nid, task_type=task_type, rid=ctx.nid,
                                       task_status=m.TASK_QUEUED, executed=0, delta=0))
        for key, value in args.items():
            self.session.add(m.HostingTaskArgument(vid=vid, nid=nid, name=key, value=value))
        self.session.flush()
        return nid
