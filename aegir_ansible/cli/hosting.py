"""`aegir db|server|platform|site|task ...`, `aegir inventory`, `aegir drush-aliases`: the
frontend side for standalone use, and what the database gives Ansible."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from aegir_ansible import defaults, queries, validation
from aegir_ansible.db import init_schema, resolve_url, safe_url
from aegir_ansible.db import models as m
from aegir_ansible.frontend import DB_TYPES, HTTP_TYPES, Frontend
from aegir_ansible.inventory import build_inventory, script_output, unsafe
from aegir_ansible.inventory import graph as graph_of
from aegir_ansible.validation import InputError

from .base import (
    BadUsage,
    checked,
    complete_contexts,
    complete_platforms,
    complete_servers,
    complete_sites,
    complete_task_ids,
    db_option,
    json_option,
    main,
    obj,
    present,
    print_record,
    print_rows,
    read,
    report,
    write,
)
from .grants import grants_command

# -- db ---------------------------------------------------------------------------------

@main.group()
def db():
    """The database schema."""


@db.command("init")
@db_option
def db_init():
    """Create the schema (on an existing hostmaster database: only the backend's tables)."""
    c = obj()
    result = init_schema(c.engine)
    where = safe_url(resolve_url(c.url))
    if result["existing_aegir"]:
        click.echo(f"{where}: existing Aegir database; created backend tables: "
                   f"{', '.join(result['created']) or 'none (already there)'}")
    else:
        click.echo(f"{where}: created {len(result['created'])} tables")


db.add_command(grants_command)  # `aegir db grants --user U --host H`



# -- shared option helpers ----------------------------------------------------------------

def _json_list(ctx, param, value):
    """A JSON argv list option ('' = back to the default, an empty list)."""
    if value is None:
        return None
    if value == "":
        return []
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise click.BadParameter("must be a JSON list of arguments, e.g. '[\"nginx\", \"-t\"]'",
                                 ctx=ctx, param=param) from None
    try:
        return validation.check_command_argv(parsed, param.name.replace("_", " "))
    except InputError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _read_password(path: str | None, env_fallback: bool) -> str | None:
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if env_fallback and os.environ.get("AEGIR_DB_ADMIN_PASSWORD"):
        return os.environ["AEGIR_DB_ADMIN_PASSWORD"]
    return None


def _port(what):
    return checked(validation.check_port, what)


_no_verify = click.option("--no-verify", is_flag=True, help="Do not queue a verify task.")


def _added(fe: Frontend, nid: int, task_type: str) -> dict:
    ctx = fe.find(nid)
    return {"nid": nid, "name": ctx.name, "type": ctx.type, "status": _status_label(ctx),
            "task": fe.outstanding(nid, task_type)}


def _status_label(ctx) -> str:
    enum = {"server": m.ServerStatus, "platform": m.PlatformStatus, "site": m.SiteStatus}[ctx.type]
    return enum.label_of(ctx.status)


def _edited(fe: Frontend, ctx, no_verify: bool) -> dict:
    task = None if no_verify else fe.queue_verify(ctx.nid)
    return {"nid": ctx.nid, "name": ctx.name, "type": ctx.type, "task": task}


def _edit_text(r: dict) -> str:
    return f"{r['type']} {r['name']} changed" + (f"; task {r['task']} (queued) applies it" if r["task"] else "")


def _filter(rows: list[dict], **wanted) -> list[dict]:
    for key, value in wanted.items():
        if value:
            rows = [r for r in rows if value in str(r.get(key) or "").split()]
    return rows


def _delete(name: str, types: tuple[str, ...], as_json: bool) -> None:
    def fn(fe: Frontend):
        ctx = fe.find(name, types=types)
        what, task = fe.delete(ctx.nid, types=types)
        return ctx, what, task

    ctx, what, task = write(fn)
    if what == "queued":
        text = f"{ctx.type} {ctx.name}: delete task {task} queued"
    else:
        text = f"{ctx.type} {ctx.name} deleted (no task of it ever ran: nothing on a server)"
    report(as_json, text, nid=ctx.nid, name=ctx.name, type=ctx.type, result=what, task=task)


def _status_choice(enum):
    return click.Choice([s.label for s in enum])


# -- servers ----------------------------------------------------------------------------

@main.group()
def server():
    """Servers (web and database)."""


@server.command("add")
@click.argument("hostname", callback=checked(validation.normalize_hostname, "server hostname"))
@click.option("--name", help="Context name (default: server_ + hostname without dots).",
              callback=checked(validation.check_context_name))
@click.option("--http", type=click.Choice(HTTP_TYPES), help="Web server type.")
@click.option("--http-port", type=int, default=defaults.HTTP_PORT, show_default=True,
              callback=_port("http port"))
@click.option("--db-service", "db_service", type=click.Choice(DB_TYPES),
              help="Database service type.")
@click.option("--db-port", type=int, default=defaults.DB_PORT, show_default=True,
              callback=_port("db port"))
@click.option("--db-user", default="", help="Admin user of the database service.")
@click.option("--db-password-file", type=click.Path(dir_okay=False),
              help="File holding the db admin password (else $AEGIR_DB_ADMIN_PASSWORD). "
                   "Never given on the command line.")
@click.option("--ip", "ips", multiple=True, help="IP address (repeat for several).",
              callback=checked(validation.check_ip_address))
@click.option("--local", is_flag=True, help="This machine: ansible_connection=local.")
@click.option("--address", help="Address to connect to (default: first IP, else hostname).",
              callback=checked(validation.check_host_address))
@click.option("--ssh-user", default=defaults.SSH_USER, show_default=True,
              callback=checked(validation.check_unix_name, "ssh user"))
@click.option("--ssh-port", type=int, default=defaults.SSH_PORT, show_default=True,
              callback=_port("ssh port"))
@click.option("--ssh-key", help="Private key file for SSH.")
@click.option("--python", "python_interpreter", default=defaults.PYTHON_INTERPRETER,
              show_default=True)
@click.option("--aegir-root", default=defaults.AEGIR_ROOT, show_default=True,
              callback=checked(validation.check_abs_path, "aegir root"))
@click.option("--script-user", default=defaults.SCRIPT_USER, show_default=True,
              callback=checked(validation.check_unix_name, "script user"))
@click.option("--web-group", default=defaults.WEB_GROUP, show_default=True,
              callback=checked(validation.check_unix_name, "web group"))
@click.option("--listen-address", default=defaults.HTTP_LISTEN_ADDRESS, show_default=True,
              help="Address vhosts listen on.", callback=checked(validation.check_listen_address))
@click.option("--http-test-cmd", help="JSON argv list that checks the web server config.",
              callback=_json_list)
@click.option("--http-reload-cmd", help="JSON argv list that reloads the web server.",
              callback=_json_list)
@click.option("--php-fastcgi", default=defaults.PHP_FASTCGI, show_default=True,
              callback=checked(validation.check_fastcgi))
@click.option("--db-grant-host", help="Host the db servers see this web server as.")
@click.option("--db-host", help="Where this server's db service listens (default: its address).")
@_no_verify
@json_option
@db_option
def server_add(hostname, name, http, http_port, db_service, db_port, db_user, db_password_file,
               ips, local, address, ssh_user, ssh_port, ssh_key, python_interpreter, aegir_root,
               script_user, web_group, listen_address, http_test_cmd, http_reload_cmd,
               php_fastcgi, db_grant_host, db_host, no_verify, as_json):
    """Add a server (and queue its verify, as hostmaster does)."""
    password = _read_password(db_password_file, env_fallback=True) or ""

    def fn(fe: Frontend):
        nid = fe.add_server(
            hostname, name=name, http=http, http_port=http_port, db=db_service, db_port=db_port,
            db_user=db_user, db_password=password, ip_addresses=tuple(ips), local=local,
            address=address, ssh_user=ssh_user, ssh_port=ssh_port, ssh_private_key_file=ssh_key,
            python_interpreter=python_interpreter, aegir_root=aegir_root, script_user=script_user,
            web_group=web_group, http_listen_address=listen_address, http_test_cmd=http_test_cmd or None,
            http_reload_cmd=http_reload_cmd or None, php_fastcgi=php_fastcgi,
            db_grant_host=db_grant_host, db_host=db_host, queue_verify=not no_verify)
        return _added(fe, nid, "verify")

    r = write(fn)
    report(as_json, f"server {r['nid']} added: {r['name']}"
           + (f"; verify task {r['task']} queued" if r["task"] else ""), **r)


@server.command("set")
@click.argument("name", shell_complete=complete_servers)
@click.option("--local/--ssh", "local", default=None,
              help="Connect locally (ansible_connection=local) or over SSH.")
@click.option("--address", help="Address to connect to ('' = first IP, else hostname).")
@click.option("--ssh-user", callback=checked(validation.check_unix_name, "ssh user"))
@click.option("--ssh-port", type=int, callback=_port("ssh port"))
@click.option("--ssh-key", help="Private key file for SSH ('' = none).")
@click.option("--python", "python_interpreter", help="Python interpreter on the server.")
@click.option("--aegir-root", callback=checked(validation.check_abs_path, "aegir root"))
@click.option("--script-user", callback=checked(validation.check_unix_name, "script user"))
@click.option("--web-group", callback=checked(validation.check_unix_name, "web group"))
@click.option("--listen-address", callback=checked(validation.check_listen_address),
              help="Address vhosts listen on.")
@click.option("--http-test-cmd", callback=_json_list,
              help="JSON argv list that checks the web server config ('' = the default).")
@click.option("--http-reload-cmd", callback=_json_list,
              help="JSON argv list that reloads the web server ('' = the default).")
@click.option("--php-fastcgi", callback=checked(validation.check_fastcgi))
@click.option("--db-grant-host", help="Host the db servers see this web server as ('' = its address).")
@click.option("--db-host", help="Where this server's db service listens ('' = its address).")
@click.option("--http-port", type=int, callback=_port("http port"))
@click.option("--db-port", type=int, callback=_port("db port"))
@click.option("--db-user", help="Admin user of the database service.")
@click.option("--db-password-file", type=click.Path(dir_okay=False),
              help="File holding the new db admin password (never on the command line).")
@click.option("--ip", "ips", multiple=True, callback=checked(validation.check_ip_address),
              help="IP address (repeat; replaces the server's list).")
@click.option("--no-ips", is_flag=True, help="Remove every IP address of the server.")
@_no_verify
@json_option
@db_option
def server_set(name, local, address, ssh_user, ssh_port, ssh_key, python_interpreter,
               aegir_root, script_user, web_group, listen_address, http_test_cmd,
               http_reload_cmd, php_fastcgi, db_grant_host, db_host, http_port, db_port,
               db_user, db_password_file, ips, no_ips, no_verify, as_json):
    """Change the settings of any server, also one hostmaster created (then queue its verify).

    Only the options given change. A server this backend never saw gets its connection
    settings row here (the others keep their defaults)."""
    if ips and no_ips:
        raise BadUsage("give --ip or --no-ips, not both")
    changes = dict(
        local=local, address=address, ssh_user=ssh_user, ssh_port=ssh_port,
        ssh_private_key_file=ssh_key, python_interpreter=python_interpreter,
        aegir_root=aegir_root, script_user=script_user, web_group=web_group,
        http_listen_address=listen_address, http_test_cmd=http_test_cmd,
        http_reload_cmd=http_reload_cmd, php_fastcgi=php_fastcgi, db_grant_host=db_grant_host,
        db_host=db_host, http_port=http_port, db_port=db_port, db_user=db_user,
        db_password=_read_password(db_password_file, env_fallback=False),
        ip_addresses=list(ips) if ips else ([] if no_ips else None))
    if all(v is None for v in changes.values()):
        raise BadUsage("nothing to change: give at least one setting (see --help)")
    r = write(lambda fe: _edited(fe, fe.set_server(name, **changes), no_verify))
    report(as_json, _edit_text(r), **r)


@server.command("list")
@click.option("--status", type=_status_choice(m.ServerStatus), help="Only servers in this status.")
@click.option("--service", type=click.Choice(["http", "db"]), help="Only servers with this service.")
@click.option("--type", "type_", type=click.Choice([*HTTP_TYPES, *DB_TYPES]),
              help="Only servers with a service of this type.")
@json_option
@db_option
def server_list(status, service, type_, as_json):
    """List servers (live ones unless --status deleted)."""
    rows = read(lambda s: queries.servers(s, include_deleted=status == "deleted"))
    rows = _filter(rows, status=status)
    if service:
        rows = [r for r in rows if any(sv.split(":")[0] == service for sv in r["services"].split())]
    if type_:
        rows = [r for r in rows if any(sv.split(":")[1] == type_ for sv in r["services"].split())]
    print_rows(rows, as_json)


def _show(name: str, as_json: bool, types, keep=lambda k: True):
    def show(session):
        ctx = Frontend(session).find(name, types=types)
        inv = build_inventory(session)
        hv = inv.effective_vars(ctx.name) if ctx.name in inv.hosts else {}
        return {"nid": ctx.nid, "name": ctx.name, "type": ctx.type, "title": ctx.title,
                "status": _status_label(ctx),
                **{k: v for k, v in hv.items() if keep(k)}}

    print_record(read(show), as_json)


def _no_secret(key: str) -> bool:
    return "password" not in key


@server.command("show")
@click.argument("name", shell_complete=complete_servers)
@json_option
@db_option
def server_show(name, as_json):
    """Show a server: its services, addresses and connection settings, and the variables the
    inventory gives it (never a password)."""

    def show(session):
        from sqlalchemy import select

        fe = Frontend(session)
        ctx, s, stored = fe.server_settings(name)
        row = session.get(m.HostingServer, ctx.vid)
        services = [
            {"service": sv.service, "type": sv.type, "port": sv.port, "restart_cmd": sv.restart_cmd}
            for sv in session.execute(select(m.HostingService).where(
                m.HostingService.vid == ctx.vid).order_by(m.HostingService.service)).scalars()]
        dbs = session.get(m.HostingDbServer, ctx.vid)
        ips = session.execute(select(m.HostingIpAddress.ip_address).where(
            m.HostingIpAddress.nid == ctx.nid).order_by(m.HostingIpAddress.id)).scalars().all()
        test_cmd, reload_cmd = s.http_test_cmd, s.http_reload_cmd
        record = {
            "nid": ctx.nid, "name": ctx.name, "hostname": ctx.title,
            "status": _status_label(ctx), "verified": row.verified,
            "services": services, "ip_addresses": list(ips),
            "db_user": dbs.db_user if dbs else None,
            "settings": "stored" if stored else
                        "defaults (no aegir_ansible_server row: set them with 'aegir server set')",
            "connection": s.connection, "address": s.address, "ssh_user": s.ssh_user,
            "ssh_port": s.ssh_port, "ssh_key": s.ssh_private_key_file,
            "python": s.python_interpreter, "aegir_root": s.aegir_root,
            "script_user": s.script_user, "web_group": s.web_group,
            "listen_address": s.http_listen_address,
            "http_test_cmd": json.loads(test_cmd) if test_cmd else None,
            "http_reload_cmd": json.loads(reload_cmd) if reload_cmd else None,
            "php_fastcgi": s.php_fastcgi, "db_grant_host": s.db_grant_host, "db_host": s.db_host,
        }
        inv = build_inventory(session)
        hv = inv.effective_vars(ctx.name) if ctx.name in inv.hosts else {}
        record["inventory"] = {k: v for k, v in hv.items() if _no_secret(k)}
        return record

    record = read(show)
    if as_json:
        record["inventory"] = present(record["inventory"], True)
        print_record(record, True)
        return
    inventory = present(record.pop("inventory"), False)
    record["services"] = " ".join(
        f"{sv['service']}:{sv['type']}:{sv['port']}"
        + (f" (restart: {sv['restart_cmd']})" if sv["restart_cmd"] else "")
        for sv in record["services"])
    record["ip_addresses"] = " ".join(record["ip_addresses"])
    print_record(record, False)
    if inventory:
        click.echo("inventory:")
        width = max(len(k) for k in inventory)
        for k, v in inventory.items():
            click.echo(f"  {k.ljust(width)}  {json.dumps(v) if isinstance(v, (list, dict)) else v}")


@server.command("delete")
@click.argument("name", shell_complete=complete_servers)
@json_option
@db_option
def server_delete(name, as_json):
    """Delete a server: refused while platforms or sites use it; a delete task is queued."""
    _delete(name, ("server",), as_json)


# -- platforms --------------------------------------------------------------------------

@main.group()
def platform():
    """Platforms (Drupal codebases)."""


@platform.command("add")
@click.argument("title", callback=checked(validation.check_title, "platform title"))
@click.option("--root", required=True, help="Absolute path of the codebase on the server.",
              callback=checked(validation.check_abs_path, "platform root"))
@click.option("--server", "web_server", required=True, help="Web server (context name).",
              shell_complete=complete_servers)
@click.option("--name", help="Context name (default: platform_ + title).",
              callback=checked(validation.check_context_name))
@click.option("--makefile", default="")
@_no_verify
@json_option
@db_option
def platform_add(title, root, web_server, name, makefile, no_verify, as_json):
    """Add a platform (and queue its verify)."""
    r = write(lambda fe: _added(fe, fe.add_platform(title, root, web_server, name=name,
                                                    makefile=makefile, queue_verify=not no_verify),
                                "verify"))
    report(as_json, f"platform {r['nid']} added: {r['name']}"
           + (f"; verify task {r['task']} queued" if r["task"] else ""), **r)


@platform.command("set")
@click.argument("name", shell_complete=complete_platforms)
@click.option("--title", callback=checked(validation.check_title, "platform title"),
              help="The platform's title (its context name stays).")
@click.option("--makefile", help="Makefile ('' = none).")
@click.option("--root", callback=checked(validation.check_abs_path, "platform root"),
              help="Codebase path (only before the platform's first verify).")
@click.option("--server", "web_server", shell_complete=complete_servers,
              help="Web server (only before the platform's first verify).")
@_no_verify
@json_option
@db_option
def platform_set(name, title, makefile, root, web_server, no_verify, as_json):
    """Change a platform (then queue its verify)."""
    if (title, makefile, root, web_server) == (None, None, None, None):
        raise BadUsage("nothing to change: give --title, --makefile, --root or --server")
    r = write(lambda fe: _edited(fe, fe.set_platform(name, title=title, makefile=makefile,
                                                     root=root, server=web_server), no_verify))
    report(as_json, _edit_text(r), **r)


@platform.command("list")
@click.option("--status", type=_status_choice(m.PlatformStatus), help="Only platforms in this status.")
@click.option("--server", "web_server", shell_complete=complete_servers,
              help="Only platforms on this web server.")
@json_option
@db_option
def platform_list(status, web_server, as_json):
    """List platforms (live ones unless --status deleted)."""
    rows = read(lambda s: queries.platforms(s, include_deleted=status == "deleted"))
    print_rows(_filter(rows, status=status, server=web_server), as_json)


@platform.command("show")
@click.argument("name", shell_complete=complete_platforms)
@json_option
@db_option
def platform_show(name, as_json):
    """Show a platform."""
    _show(name, as_json, ("platform",), _no_secret)


@platform.command("delete")
@click.argument("name", shell_complete=complete_platforms)
@json_option
@db_option
def platform_delete(name, as_json):
    """Delete a platform: refused while sites are on it; a delete task is queued."""
    _delete(name, ("platform",), as_json)


# -- sites ------------------------------------------------------------------------------

@main.group()
def site():
    """Sites."""


_hostname = checked(validation.normalize_hostname, "site uri")
_alias = checked(validation.normalize_hostname, "alias")


@site.command("add")
@click.argument("uri", callback=_hostname)
@click.option("--platform", "platform_name", required=True, help="Platform (context name).",
              shell_complete=complete_platforms)
@click.option("--db-server", help="Database server (default: the first one).",
              shell_complete=complete_servers)
@click.option("--profile", default=defaults.SITE_PROFILE, show_default=True,
              callback=checked(validation.check_profile))
@click.option("--language", default=defaults.SITE_LANGUAGE, show_default=True,
              callback=checked(validation.check_language))
@click.option("--alias", "aliases", multiple=True, help="Alias host name (repeat).",
              callback=_alias)
@click.option("--redirection", help="Redirect every alias to this host name (uri or an alias).",
              callback=checked(validation.normalize_hostname, "redirection"))
@click.option("--client", help="Client machine name.")
@click.option("--cron-interval", type=int, default=defaults.CRON_INTERVAL, show_default=True,
              help="Seconds between cron runs; 0 turns cron off.",
              callback=checked(validation.check_cron_interval))
@click.option("--no-install", is_flag=True, help="Do not queue an install task.")
@json_option
@db_option
def site_add(uri, platform_name, db_server, profile, language, aliases, redirection, client,
             cron_interval, no_install, as_json):
    """Add a site (and queue its install, as hostmaster does)."""
    r = write(lambda fe: _added(fe, fe.add_site(
        uri, platform_name, db_server=db_server, profile=profile, language=language,
        aliases=aliases, redirection=redirection, client=client, cron_interval=cron_interval,
        queue_install=not no_install), "install"))
    report(as_json, f"site {r['nid']} added: {r['name']}"
           + (f"; install task {r['task']} queued" if r["task"] else ""), **r)


@site.command("set")
@click.argument("name", shell_complete=complete_sites)
@click.option("--alias", "aliases", multiple=True, callback=_alias,
              help="Alias host name (repeat; replaces the site's aliases).")
@click.option("--no-aliases", is_flag=True, help="Remove every alias.")
@click.option("--add-alias", "add_aliases", multiple=True, callback=_alias,
              help="Add this alias (repeat).")
@click.option("--remove-alias", "remove_aliases", multiple=True, callback=_alias,
              help="Remove this alias (repeat).")
@click.option("--redirection", help="Redirect every alias to this host name (the uri or an "
                                    "alias; '' = no redirection).")
@click.option("--cron-interval", type=int, callback=checked(validation.check_cron_interval),
              help="Seconds between cron runs; 0 turns cron off.")
@click.option("--profile", callback=checked(validation.check_profile),
              help="Install profile (machine name).")
@click.option("--client", help="Client machine name ('' = none).")
@_no_verify
@json_option
@db_option
def site_set(name, aliases, no_aliases, add_aliases, remove_aliases, redirection, cron_interval,
             profile, client, no_verify, as_json):
    """Change a site (then queue its verify, which rewrites its vhost, as hostmaster does)."""
    if aliases and no_aliases:
        raise BadUsage("give --alias or --no-aliases, not both")
    if redirection:
        try:
            redirection = validation.normalize_hostname(redirection, "redirection")
        except InputError as exc:
            raise click.BadParameter(str(exc), param_hint="'--redirection'") from None
    if not (aliases or no_aliases or add_aliases or remove_aliases) and \
            (redirection, cron_interval, profile, client) == (None, None, None, None):
        raise BadUsage("nothing to change: give at least one option (see --help)")
    new_aliases = list(aliases) if aliases else ([] if no_aliases else None)
    r = write(lambda fe: _edited(fe, fe.set_site(
        name, aliases=new_aliases, add_aliases=add_aliases, remove_aliases=remove_aliases,
        redirection=redirection, cron_interval=cron_interval, profile=profile, client=client),
        no_verify))
    report(as_json, _edit_text(r), **r)


@site.command("list")
@click.option("--status", type=_status_choice(m.SiteStatus), help="Only sites in this status.")
@click.option("--platform", "platform_name", shell_complete=complete_platforms,
              help="Only sites on this platform.")
@click.option("--db-server", shell_complete=complete_servers, help="Only sites on this db server.")
@json_option
@db_option
def site_list(status, platform_name, db_server, as_json):
    """List sites (live ones unless --status deleted)."""
    rows = read(lambda s: queries.sites(s, include_deleted=status == "deleted"))
    print_rows(_filter(rows, status=status, platform=platform_name, db_server=db_server), as_json)


@site.command("show")
@click.argument("name", shell_complete=complete_sites)
@json_option
@db_option
def site_show(name, as_json):
    """Show a site."""
    _show(name, as_json, ("site",), lambda k: _no_secret(k) and k != "aegir_site_cron_key")


@site.command("delete")
@click.argument("name", shell_complete=complete_sites)
@json_option
@db_option
def site_delete(name, as_json):
    """Delete a site (disable it first, as hostmaster requires): a delete task is queued."""
    _delete(name, ("site",), as_json)


# -- tasks ------------------------------------------------------------------------------

@main.group()
def task():
    """Tasks (the queue hostmaster fills)."""


def _parse_args(pairs) -> dict[str, str]:
    args = {}
    for pair in pairs:
        if "=" not in pair:
            raise BadUsage(f"--arg {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        args[key.strip()] = value
    return args


def _task_types():
    from aegir_ansible.tasks import TASK_TYPES

    return sorted(TASK_TYPES)


@task.command("add")
@click.argument("task_type", type=click.Choice(_task_types()))
@click.argument("target", shell_complete=complete_contexts)
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE",
              help="Task argument (repeat).")
@json_option
@db_option
def task_add(task_type, target, arg_pairs, as_json):
    """Queue a task of TASK_TYPE on TARGET (a context name or nid)."""
    args = _parse_args(arg_pairs)
    nid = write(lambda fe: fe.add_task(task_type, target, args))
    report(as_json, f"task {nid} queued", nid=nid, type=task_type, target=target,
           status="queued", arguments=args)


# In the order the option's help has always listed them.
_STATUS_CHOICES = {s.label: s for s in (m.TaskStatus.QUEUED, m.TaskStatus.PROCESSING,
                                        m.TaskStatus.SUCCESS, m.TaskStatus.ERROR,
                                        m.TaskStatus.WARNING)}


@task.command("list")
@click.option("--status", type=click.Choice(list(_STATUS_CHOICES)), help="Only tasks in this status.")
@click.option("--type", "task_type", type=click.Choice(_task_types()), help="Only tasks of this type.")
@click.option("--target", shell_complete=complete_contexts,
              help="Only tasks of this server, platform or site (name or nid).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@json_option
@db_option
def task_list(status, task_type, target, limit, as_json):
    """List tasks, newest first."""
    st = _STATUS_CHOICES.get(status) if status else None

    def fn(session):
        rid = _target_nid(session, target) if target else None
        return queries.tasks(session, status=st, limit=limit, target=rid, task_type=task_type)

    print_rows(read(fn), as_json, ["nid", "type", "target", "status", "created", "executed", "delta"])


def _target_nid(session, ref: str) -> int:
    """A target by name or nid, deleted ones included (their tasks stay listed)."""
    from sqlalchemy import select

    ref = ref.lstrip("@")
    if ref.isdigit():
        return int(ref)
    nid = session.execute(select(m.HostingContext.nid).where(m.HostingContext.name == ref)).scalar()
    if nid is None:
        nid = session.execute(select(m.Node.nid).where(
            m.Node.title == ref, m.Node.type.in_(["server", "platform", "site"]))
            .order_by(m.Node.nid.desc())).scalar()
    if nid is None:
        raise InputError(f"no server or platform or site named {ref!r}")
    return nid


@task.command("show")
@click.argument("nid", type=int, shell_complete=complete_task_ids)
@json_option
@db_option
def task_show(nid, as_json):
    """Show a task, its arguments and its log."""

    def show(session):
        row = session.get(m.Node, nid)
        if row is None or row.type != "task":
            raise InputError(f"no task {nid}")
        t = session.get(m.HostingTask, row.vid)
        ctx = session.get(m.HostingContext, t.rid)
        return {
            "nid": nid, "title": row.title, "type": t.task_type,
            "target": ctx.name if ctx else f"#{t.rid}",
            "status": m.TaskStatus.label_of(t.task_status),
            "created": row.created, "changed": row.changed,
            "executed": t.executed, "delta": t.delta,
            "arguments": queries.task_arguments(session, nid),
            "log": queries.task_log(session, nid),
        }

    from .base import human_time, iso_time

    record = read(show)
    if as_json:
        record["log"] = [{**line, "timestamp": iso_time(line["timestamp"])} for line in record["log"]]
        print_record(record, True)
        return
    log = record.pop("log")
    print_record(record, False)
    click.echo("log:")
    for line in log:
        click.echo(f"  {human_time(line['timestamp'])}  [{line['type']}] {line['message']}")


@task.command("retry")
@click.argument("nid", type=int, shell_complete=complete_task_ids)
@json_option
@db_option
def task_retry(nid, as_json):
    """Queue a finished task again, as hostmaster's Retry does (a new revision of the task)."""
    vid = write(lambda fe: fe.retry_task(nid))
    report(as_json, f"task {nid} queued again", nid=nid, vid=vid, status="queued")


# -- inventory and drush aliases --------------------------------------------------------

@main.command("inventory")
@click.option("--list", "list_", is_flag=True, help="The inventory script's --list JSON.")
@click.option("--host", help="Variables of one host.", shell_complete=complete_contexts)
@click.option("--graph", is_flag=True, help="Groups and their hosts.")
@db_option
def inventory_cmd(list_, host, graph):
    """The Ansible inventory built from the database (JSON, as ansible-inventory prints it)."""
    inv = read(build_inventory)
    if host:
        if host not in inv.hosts:
            raise InputError(f"no host {host!r} in the inventory")
        click.echo(json.dumps(unsafe(inv.effective_vars(host)), indent=2))
    elif graph:
        click.echo(graph_of(inv))
    else:
        click.echo(json.dumps(script_output(inv), indent=2 if not list_ else None))


@main.command("drush-aliases")
@click.option("--out", "out_dir", default=None,
              help="Folder for the alias files (default: ~/.drush/sites/aegir).")
@json_option
@db_option
def drush_aliases_cmd(out_dir, as_json):
    """Write Drush site aliases (YAML) for every live site, generated from the database."""
    from aegir_ansible.drush_aliases import write_aliases

    inv = read(build_inventory)
    out = Path(out_dir) if out_dir else Path.home() / ".drush" / "sites" / "aegir"
    written = write_aliases(inv, out)
    report(as_json, f"{len(written)} alias files in {out}", folder=str(out),
           files=[str(p) for p in written])
