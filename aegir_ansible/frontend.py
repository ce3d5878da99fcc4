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
from typing import cast

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import defaults
from .db import models as m
from .db.backend import ServerSettings, SiteSettings
from .tasks import TASK_TYPES
from .validation import (
    InputError,
    check_abs_path,
    check_command_argv,
    check_context_name,
    check_cron_interval,
    check_fastcgi,
    check_host_address,
    check_ip_address,
    check_language,
    check_listen_address,
    check_port,
    check_profile,
    check_title,
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
        if node.vid is None:  # not reached: _status() raised NoResultFound for it
            raise RuntimeError(f"{node.type} {name!r} has no current revision")
        return Context(node.nid, node.vid, node.type, name, node.title, status)

    def _status(self, node: m.Node) -> int:
        table: dict[str, type[m.HostingServer | m.HostingPlatform | m.HostingSite]] = {
            "server": m.HostingServer, "platform": m.HostingPlatform, "site": m.HostingSite}
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
        import json

        title = normalize_hostname(hostname, "server hostname")
        name = name or server_context_name(title)
        if http is not None and http not in HTTP_TYPES:
            raise InputError(f"unknown http service {http!r} (one of {', '.join(HTTP_TYPES)})")
        if db is not None and db not in DB_TYPES:
            raise InputError(f"unknown db service {db!r} (one of {', '.join(DB_TYPES)})")
        if db and not db_user:
            raise InputError("a db service needs its admin user (--db-user)")
        ip_addresses = tuple(check_ip_address(ip) for ip in ip_addresses)
        _check_server_settings(
            address=address, aegir_root=aegir_root, script_user=script_user, web_group=web_group,
            ssh_user=None if local else ssh_user, http_port=http_port, db_port=db_port,
            ssh_port=ssh_port, php_fastcgi=php_fastcgi, http_listen_address=http_listen_address,
            http_test_cmd=http_test_cmd, http_reload_cmd=http_reload_cmd)

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
        title = check_title(title, "platform title")
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
        check_cron_interval(cron_interval)
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

    def outstanding(self, nid: int, task_type: str, running: bool = True) -> int | None:
        """The queued (or, with `running`, running) task of this type on this object, if one
        waits (hosting_task_outstanding)."""
        statuses = [m.TASK_QUEUED, m.TASK_PROCESSING] if running else [m.TASK_QUEUED]
        return self.session.execute(
            select(m.Node.nid)
            .join(m.HostingTask, m.HostingTask.vid == m.Node.vid)
            .where(m.HostingTask.rid == nid, m.HostingTask.task_type == task_type,
                   m.HostingTask.task_status.in_(statuses))
            .order_by(m.Node.nid)
        ).scalar()

    def queue_verify(self, ref: str | int) -> int:
        """Queue a verify of the object, as hostmaster does after a node edit, unless a task
        that writes everything of it from the database is already waiting (a verify, or a
        site's install or import): the nid of that task."""
        ctx = self.find(ref)
        for task_type in ("verify", "install", "import") if ctx.type == "site" else ("verify",):
            waiting = self.outstanding(ctx.nid, task_type, running=False)
            if waiting:
                return waiting
        return self.add_task("verify", ctx.name)

    # -- edits (a node edit without a new revision: the current revision's rows change) -------

    def server_settings(self, ref: str | int) -> tuple[Context, ServerSettings, bool]:
        """A server and its connection settings: (context, settings, stored). A server this
        backend did not create (hostmaster's) has no row: the defaults, not stored."""
        ctx = self.find(ref, types=("server",))
        row = self.session.get(ServerSettings, ctx.nid)
        if row is not None:
            return ctx, row, True
        return ctx, _default_server_settings(ctx.nid), False

    def set_server(self, ref: str | int, **changes) -> Context:
        """Change a server's settings; only the given (not None) keys change.

        Keys: local (bool), address, ssh_user, ssh_port, ssh_private_key_file,
        python_interpreter, aegir_root, script_user, web_group, http_listen_address,
        http_test_cmd / http_reload_cmd (argv lists, [] = the service's default),
        php_fastcgi, db_grant_host, db_host (for the optional ones "" = the default),
        http_port, db_port, db_user, db_password, ip_addresses (the whole list)."""
        import json

        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - SERVER_SETTING_KEYS
        if unknown:
            raise InputError(f"unknown server setting(s): {', '.join(sorted(unknown))}")
        ctx, row, stored = self.server_settings(ref)
        services = self._services(ctx.vid)
        local = changes.pop("local", None)
        if local is not None:
            row.connection = "local" if local else "ssh"
        for key in ("address", "ssh_private_key_file", "db_grant_host", "db_host"):
            if key in changes:
                value = changes.pop(key).strip()
                if value and key in ("address", "db_grant_host", "db_host"):
                    check_host_address(value, key.replace("_", " "))
                setattr(row, key, value or None)
        for key in ("http_test_cmd", "http_reload_cmd"):
            if key in changes:
                cmd = changes.pop(key)
                if cmd:
                    check_command_argv(cmd, key.replace("_cmd", " command").replace("_", " "))
                setattr(row, key, json.dumps(cmd) if cmd else None)
        ips = changes.pop("ip_addresses", None)
        http_port, db_port = changes.pop("http_port", None), changes.pop("db_port", None)
        db_user, db_password = changes.pop("db_user", None), changes.pop("db_password", None)
        if http_port is not None and "http" not in services:
            raise InputError(f"server {ctx.name!r} has no http service")
        if (db_port, db_user, db_password) != (None, None, None) and "db" not in services:
            raise InputError(f"server {ctx.name!r} has no db service")
        if db_user is not None and not db_user:
            raise InputError("a db service needs its admin user (--db-user)")
        for key, value in changes.items():
            setattr(row, key, value.rstrip("/") if key == "aegir_root" else value)
        _check_server_settings(
            address=row.address, aegir_root=row.aegir_root, script_user=row.script_user,
            web_group=row.web_group, ssh_user=None if row.connection == "local" else row.ssh_user,
            ssh_port=row.ssh_port, php_fastcgi=row.php_fastcgi,
            http_listen_address=row.http_listen_address,
            http_port=http_port if http_port is not None else defaults.HTTP_PORT,
            db_port=db_port if db_port is not None else defaults.DB_PORT)
        if not stored:
            self.session.add(row)
        for service, port in (("http", http_port), ("db", db_port)):
            if port is not None:
                svc = self.session.execute(select(m.HostingService).where(
                    m.HostingService.vid == ctx.vid, m.HostingService.service == service)).scalar_one()
                svc.port = port
        if db_user is not None or db_password is not None:
            dbs = self.session.get(m.HostingDbServer, ctx.vid)
            if dbs is None:
                dbs = m.HostingDbServer(vid=ctx.vid, nid=ctx.nid, db_user="", db_passwd="")
                self.session.add(dbs)
            if db_user is not None:
                dbs.db_user = db_user
            if db_password is not None:
                dbs.db_passwd = db_password
        if ips is not None:
            clean = list(dict.fromkeys(check_ip_address(ip) for ip in ips))
            self.session.execute(delete(m.HostingIpAddress).where(m.HostingIpAddress.nid == ctx.nid))
            for ip in clean:
                self.session.add(m.HostingIpAddress(nid=ctx.nid, ip_address=ip))
        self._touch(ctx)
        self.session.flush()
        return ctx

    def set_platform(self, ref: str | int, *, title: str | None = None,
                     makefile: str | None = None, root: str | None = None,
                     server: str | None = None) -> Context:
        """Change a platform. Its root and web server only before its first verify: hostmaster's
        form offers them only when the platform is created (its codebase is there after)."""
        ctx = self.find(ref, types=("platform",))
        row = self.session.get(m.HostingPlatform, ctx.vid)
        if row is None:  # not reached: find() read its status from this row
            raise RuntimeError(f"platform {ctx.name!r} has no hosting_platform row")
        if (root is not None or server is not None) and (row.verified or self._has_run(ctx.nid)):
            raise InputError(f"platform {ctx.name!r} was verified: its root and web server no "
                             "longer change (add a new platform and migrate its sites)")
        if title is not None:
            self._retitle(ctx, check_title(title, "platform title"))
        if makefile is not None:
            row.makefile = makefile
        if root is not None:
            row.publish_path = check_abs_path(root, "platform root")
        if server is not None:
            web = self.find(server, types=("server",))
            if "http" not in self._services(web.vid):
                raise InputError(f"server {web.name!r} has no http service")
            row.web_server = web.nid
        self._touch(ctx)
        self.session.flush()
        return ctx

    def set_site(self, ref: str | int, *, aliases=None, add_aliases=(), remove_aliases=(),
                 redirection: str | None = None, cron_interval: int | None = None,
                 profile: str | None = None, client: str | None = None) -> Context:
        """Change a site: its aliases (`aliases` replaces the custom ones; or add/remove some),
        redirection ("" = none), cron interval, install profile, client."""
        ctx = self.find(ref, types=("site",))
        row = self.session.get(m.HostingSite, ctx.vid)
        if row is None:  # not reached: find() read its status from this row
            raise RuntimeError(f"site {ctx.name!r} has no hosting_site row")
        alias_rows = self.session.execute(select(m.HostingSiteAlias).where(
            m.HostingSiteAlias.vid == ctx.vid)).scalars().all()
        custom = [a.alias for a in alias_rows if not a.automatic]
        automatic = [a.alias for a in alias_rows if a.automatic]
        current_redirect = next((a.redirection for a in alias_rows
                                 if a.redirection and a.redirection != "0"), "")
        new_custom = list(custom if aliases is None else aliases)
        removed = {normalize_hostname(a, "alias") for a in remove_aliases}
        missing = removed - set(custom) - set(automatic)
        if missing:
            raise InputError(f"site {ctx.name!r} has no alias {', '.join(sorted(missing))}")
        new_custom = [a for a in [*new_custom, *add_aliases]
                      if normalize_hostname(a, "alias") not in removed]
        new_automatic = [a for a in automatic if a not in removed]
        redirect_in = current_redirect if redirection is None else redirection
        if redirect_in and redirection is None and redirect_in != ctx.title and \
                redirect_in not in [*new_custom, *new_automatic]:
            redirect_in = ""  # its target alias was removed: no redirection, as hostmaster
        clean, redirect = self._check_aliases(ctx.title, [*new_custom, *new_automatic],
                                              redirect_in or None, own_uri=ctx.title)
        self.session.execute(delete(m.HostingSiteAlias).where(m.HostingSiteAlias.vid == ctx.vid))
        auto = {normalize_hostname(a, "alias") for a in new_automatic}
        for alias in clean:
            self.session.add(m.HostingSiteAlias(vid=ctx.vid, nid=ctx.nid, alias=alias,
                                                automatic=1 if alias in auto else 0,
                                                redirection=redirect))
        if cron_interval is not None:
            check_cron_interval(cron_interval)
            settings = self.session.get(SiteSettings, ctx.nid)
            if settings is None:
                self.session.add(SiteSettings(nid=ctx.nid, cron_interval=cron_interval))
            else:
                settings.cron_interval = cron_interval
        now = int(time.time())
        if profile is not None:
            row.profile = self._profile_nid(check_profile(profile), now)
        if client is not None:
            row.client = self._client_nid(client, now) if client else 0
        self._touch(ctx)
        self.session.flush()
        return ctx

    def _touch(self, ctx: Context) -> None:
        now = int(time.time())
        node = self.session.get(m.Node, ctx.nid)
        if node is None:  # not reached: find() read this node
            raise RuntimeError(f"{ctx.type} {ctx.name!r} has no node")
        node.changed = now
        rev = self.session.get(m.NodeRevision, ctx.vid)
        if rev is not None:
            rev.timestamp = now

    def _retitle(self, ctx: Context, title: str) -> None:
        node = self.session.get(m.Node, ctx.nid)
        if node is None:  # not reached: find() read this node
            raise RuntimeError(f"{ctx.type} {ctx.name!r} has no node")
        node.title = title
        rev = self.session.get(m.NodeRevision, ctx.vid)
        if rev is not None:
            rev.title = title

    def _has_run(self, nid: int) -> bool:
        """Whether any task on the object ever started (hostmaster's or this backend's)."""
        return self.session.execute(
            select(m.HostingTask.nid).where(
                m.HostingTask.rid == nid,
                m.HostingTask.task_status.not_in([m.TASK_QUEUED]) | (m.HostingTask.executed > 0))
            .limit(1)
        ).first() is not None

    # -- delete --------------------------------------------------------------------------

    def dependants(self, ctx: Context) -> list[str]:
        """What still uses the object: live sites of a platform; live platforms on a web
        server and live sites on a db server."""
        out: list[str] = []
        name_of = select(m.HostingContext.nid, m.HostingContext.name).subquery()
        if ctx.type in ("platform", "server"):
            col = m.HostingSite.platform if ctx.type == "platform" else m.HostingSite.db_server
            out += [f"site {n}" for n in self.session.execute(
                select(m.Node.title).join(m.HostingSite, m.HostingSite.vid == m.Node.vid)
                .where(col == ctx.nid, m.HostingSite.status != m.SITE_DELETED)
                .order_by(m.Node.nid)).scalars()]
        if ctx.type == "server":
            out = [f"{d} (its db server)" for d in out]
            out += [f"platform {n}" for n in self.session.execute(
                select(name_of.c.name).join(m.Node, m.Node.nid == name_of.c.nid)
                .join(m.HostingPlatform, m.HostingPlatform.vid == m.Node.vid)
                .where(m.HostingPlatform.web_server == ctx.nid,
                       m.HostingPlatform.status != m.PLATFORM_DELETED)
                .order_by(m.Node.nid)).scalars()]
        return out

    def delete(self, ref: str | int, *, types=("server", "platform", "site")) -> tuple[str, int | None]:
        """Delete a server, platform or site as hostmaster does: refused while something uses
        it, or while an enabled site is not disabled first (hosting_require_disable_before_delete);
        a delete task is queued when the object may exist on servers (it was verified, or a task
        of it ever started). One nothing ever ran for exists only here: its queued tasks are
        cancelled and it is marked deleted at once. Returns ("queued", task nid) or
        ("deleted", None)."""
        ctx = self.find(ref, types=types)
        deps = self.dependants(ctx)
        if deps:
            raise InputError(f"{ctx.type} {ctx.name!r} is still used by: {', '.join(deps[:10])}"
                             + (f" and {len(deps) - 10} more" if len(deps) > 10 else "")
                             + ": delete or migrate those first")
        waiting = self.outstanding(ctx.nid, "delete")
        if waiting:
            raise InputError(f"{ctx.type} {ctx.name!r} has a delete task already: task {waiting}")
        if ctx.type == "site" and ctx.status == m.SITE_ENABLED:
            raise InputError(f"site {ctx.name!r} is enabled: disable it first "
                             f"(aegir task add disable {ctx.name}), as hostmaster requires")
        models: dict[str, type[m.HostingServer | m.HostingPlatform | m.HostingSite]] = {
            "server": m.HostingServer, "platform": m.HostingPlatform, "site": m.HostingSite}
        model = models[ctx.type]
        # Session.get() of a union of models is typed as their base class (mypy joins them).
        row = cast("m.HostingServer | m.HostingPlatform | m.HostingSite | None", self.session.get(model, ctx.vid))
        if row is None:  # not reached: find() read its status from this row
            raise RuntimeError(f"{ctx.type} {ctx.name!r} has no {model.__tablename__} row")
        if row.verified or self._has_run(ctx.nid):
            return "queued", self.add_task("delete", ctx.name)
        now = int(time.time())
        for task_nid, task_vid in self.session.execute(
            select(m.Node.nid, m.Node.vid).join(m.HostingTask, m.HostingTask.vid == m.Node.vid)
            .where(m.HostingTask.rid == ctx.nid, m.HostingTask.task_status == m.TASK_QUEUED)
        ).all():
            self.session.execute(update(m.HostingTask).where(m.HostingTask.vid == task_vid)
                                 .values(task_status=m.TASK_WARNING))
            self.session.add(m.HostingTaskLog(vid=task_vid, nid=task_nid, type="warning",
                                              message="Task was cancelled.", error="",
                                              timestamp=now))
        row.status = {"server": m.SERVER_DELETED, "platform": m.PLATFORM_DELETED,
                      "site": m.SITE_DELETED}[ctx.type]
        self.session.execute(delete(m.HostingContext).where(m.HostingContext.nid == ctx.nid))
        self._touch(ctx)
        self.session.flush()
        return "deleted", None

    # -- retry ---------------------------------------------------------------------------

    def retry_task(self, nid: int) -> int:
        """Queue a finished task again as hosting_task_retry() does: a new revision of the same
        task node, QUEUED, with its arguments and a `queue` log line (the old revision keeps
        its status and log). Refused while it is queued or running, or when its target is
        deleted. Returns the new revision's vid."""
        from .queue.revisions import requeue

        node = self.session.get(m.Node, nid)
        if node is None or node.type != "task":
            raise InputError(f"no task {nid}")
        t = self.session.get(m.HostingTask, node.vid)
        if t is None:  # a task node without a hosting_task row for its current revision
            raise RuntimeError(f"task {nid} has no hosting_task row for its current revision")
        if t.task_status in (m.TASK_QUEUED, m.TASK_PROCESSING):
            raise InputError(f"task {nid} is {m.TaskStatus.label_of(t.task_status)}: "
                             "only a finished task is retried")
        self.find(t.rid)  # refused when the target is gone or deleted
        tt = TASK_TYPES.get(t.task_type or "")
        if tt is None:
            raise InputError(f"task {nid} has an unknown type {t.task_type!r}")
        self.session.flush()
        return requeue(self.session.connection(), nid, time.time(),
                       "The task is being retried and has been added to the hosting queue again")


SERVER_SETTING_KEYS = frozenset({
    "local", "address", "ssh_user", "ssh_port", "ssh_private_key_file", "python_interpreter",
    "aegir_root", "script_user", "web_group", "http_listen_address", "http_test_cmd",
    "http_reload_cmd", "php_fastcgi", "db_grant_host", "db_host", "http_port", "db_port",
    "db_user", "db_password", "ip_addresses",
})


def _default_server_settings(nid: int) -> ServerSettings:
    """The settings the inventory uses for a server without a row (the columns' defaults)."""
    return ServerSettings(
        nid=nid, connection="ssh", address=None, ssh_user=defaults.SSH_USER,
        ssh_port=defaults.SSH_PORT, ssh_private_key_file=None,
        python_interpreter=defaults.PYTHON_INTERPRETER, aegir_root=defaults.AEGIR_ROOT,
        script_user=defaults.SCRIPT_USER, web_group=defaults.WEB_GROUP,
        http_listen_address=defaults.HTTP_LISTEN_ADDRESS, http_test_cmd=None,
        http_reload_cmd=None, php_fastcgi=defaults.PHP_FASTCGI, db_grant_host=None, db_host=None)


def _check_server_settings(*, address, aegir_root, script_user, web_group, ssh_user, ssh_port,
                           php_fastcgi, http_listen_address, http_port, db_port,
                           http_test_cmd=None, http_reload_cmd=None) -> None:
    """The checks of a server's settings, shared by add and set (ssh_user None: local)."""
    if address is not None:
        check_host_address(address)
    check_abs_path(aegir_root, "aegir root")
    check_unix_name(script_user, "script user")
    check_unix_name(web_group, "web group")
    if ssh_user is not None:
        check_unix_name(ssh_user, "ssh user")
    for port, what in ((http_port, "http port"), (db_port, "db port"), (ssh_port, "ssh port")):
        check_port(port, what)
    check_fastcgi(php_fastcgi)
    check_listen_address(http_listen_address)
    for cmd, what in ((http_test_cmd, "http test command"), (http_reload_cmd, "http reload command")):
        if cmd is not None:
            check_command_argv(cmd, what)
