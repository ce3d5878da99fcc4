"""The `aegir` command: the frontend side for standalone use, the inventory, the queue.

Bad input is reported as one line on stderr with exit status 2, and the database is left
unchanged (every command writes in one transaction that a refusal rolls back).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from . import queries
from .db import init_schema, make_engine, make_sessionmaker, resolve_url
from .db.schema import has_aegir_schema
from .frontend import DB_TYPES, HTTP_TYPES, Frontend
from .validation import InputError


class Ctx:
    """Per-invocation state: the database URL and a lazily made engine."""

    def __init__(self):
        self.url: str | None = None
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def session(self):
        return make_sessionmaker(self.engine)()

    def require_schema(self):
        if not has_aegir_schema(self.engine):
            raise InputError(
                f"the database {safe_url(resolve_url(self.url))} has no Aegir tables: "
                "run 'aegir db init' first"
            )


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 — a malformed URL is shown as given, minus nothing
        return "<invalid URL>"


def fail(message: str) -> None:
    click.echo(f"aegir: error: {message}", err=True)
    sys.exit(2)


def db_option(f):
    """`--db URL` on every command (else AEGIR_DB_URL, else the embedded SQLite file)."""

    @click.option("--db", "db_url", metavar="URL", default=None, expose_value=True,
                  help="SQLAlchemy URL of the Aegir database (default: $AEGIR_DB_URL, "
                       "else the embedded SQLite file).")
    @click.pass_context
    @functools.wraps(f)
    def wrapper(ctx, db_url, *args, **kwargs):
        obj = ctx.ensure_object(Ctx)
        if db_url:
            obj.url = db_url
        try:
            return ctx.invoke(f, *args, **kwargs)
        except InputError as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            msg = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
            fail(f"database error on {safe_url(resolve_url(obj.url))}: {msg}")

    return wrapper


def obj() -> Ctx:
    return click.get_current_context().find_object(Ctx)


def write(fn):
    """Run fn(frontend) in one transaction; InputError rolls everything back."""
    c = obj()
    c.require_schema()
    with c.session() as session:
        with session.begin():
            return fn(Frontend(session))


def read(fn):
    c = obj()
    c.require_schema()
    with c.session() as session:
        return fn(session)


def print_rows(rows: list[dict], as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
        return
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def print_record(record: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    width = max(len(k) for k in record)
    for k, v in record.items():
        if isinstance(v, (list, dict)):
            v = json.dumps(v)
        click.echo(f"{k.ljust(width)}  {v}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", metavar="URL", default=None,
              help="SQLAlchemy URL of the Aegir database (default: $AEGIR_DB_URL, else the "
                   "embedded SQLite file).")
@click.pass_context
def main(ctx, db_url):
    """aegir-ansible: an Ansible backend for the Aegir hosting system."""
    ctx.ensure_object(Ctx).url = db_url


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


# -- servers ----------------------------------------------------------------------------

@main.group()
def server():
    """Servers (web and database)."""


def _json_list(value, what):
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise InputError(f"{what} must be a JSON list of arguments, e.g. '[\"nginx\", \"-t\"]'") from None
    if not isinstance(parsed, list):
        raise InputError(f"{what} must be a JSON list of arguments")
    return parsed


@server.command("add")
@click.argument("hostname")
@click.option("--name", help="Context name (default: server_ + hostname without dots).")
@click.option("--http", type=click.Choice(HTTP_TYPES), help="Web server type.")
@click.option("--http-port", type=int, default=80, show_default=True)
@click.option("--db-service", "db_service", type=click.Choice(DB_TYPES),
              help="Database service type.")
@click.option("--db-port", type=int, default=3306, show_default=True)
@click.option("--db-user", default="", help="Admin user of the database service.")
@click.option("--db-password-file", type=click.Path(dir_okay=False),
              help="File holding the db admin password (else $AEGIR_DB_ADMIN_PASSWORD). "
                   "Never given on the command line.")
@click.option("--ip", "ips", multiple=True, help="IP address (repeat for several).")
@click.option("--local", is_flag=True, help="This machine: ansible_connection=local.")
@click.option("--address", help="Address to connect to (default: first IP, else hostname).")
@click.option("--ssh-user", default="aegir", show_default=True)
@click.option("--ssh-port", type=int, default=22, show_default=True)
@click.option("--ssh-key", help="Private key file for SSH.")
@click.option("--python", "python_interpreter", default="/usr/bin/python3", show_default=True)
@click.option("--aegir-root", default="/var/aegir", show_default=True)
@click.option("--script-user", default="aegir", show_default=True)
@click.option("--web-group", default="www-data", show_default=True)
@click.option("--listen-address", default="*", show_default=True,
              help="Address vhosts listen on.")
@click.option("--http-test-cmd", help="JSON argv list that checks the web server config.")
@click.option("--http-reload-cmd", help="JSON argv list that reloads the web server.")
@click.option("--php-fastcgi", default="unix:/run/php/php-fpm.sock", show_default=True)
@click.option("--db-grant-host", help="Host the db servers see this web server as.")
@click.option("--db-host", help="Where this server's db service listens (default: its address).")
@click.option("--no-verify", is_flag=True, help="Do not queue a verify task.")
@db_option
def server_add(hostname, name, http, http_port, db_service, db_port, db_user, db_password_file,
               ips, local, address, ssh_user, ssh_port, ssh_key, python_interpreter, aegir_root,
               script_user, web_group, listen_address, http_test_cmd, http_reload_cmd,
               php_fastcgi, db_grant_host, db_host, no_verify):
    """Add a server."""
    password = ""
    if db_password_file:
        try:
            password = Path(db_password_file).read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read {db_password_file}: {exc.strerror}") from None
    elif os.environ.get("AEGIR_DB_ADMIN_PASSWORD"):
        password = os.environ["AEGIR_DB_ADMIN_PASSWORD"]
    test_cmd = _json_list(http_test_cmd, "--http-test-cmd")
    reload_cmd = _json_list(http_reload_cmd, "--http-reload-cmd")
    nid = write(lambda fe: fe.add_server(
        hostname, name=name, http=http, http_port=http_port, db=db_service, db_port=db_port,
        db_user=db_user, db_password=password, ip_addresses=tuple(ips), local=local,
        address=address, ssh_user=ssh_user, ssh_port=ssh_port, ssh_private_key_file=ssh_key,
        python_interpreter=python_interpreter, aegir_root=aegir_root, script_user=script_user,
        web_group=web_group, http_listen_address=listen_address, http_test_cmd=test_cmd,
        http_reload_cmd=reload_cmd, php_fastcgi=php_fastcgi, db_grant_host=db_grant_host,
        db_host=db_host, queue_verify=not no_verify))
    click.echo(f"server {nid} added")


@server.command("list")
@json_option
@db_option
def server_list(as_json):
    """List live servers."""
    print_rows(read(queries.servers), as_json)


def _show(name: str, as_json: bool, keep=lambda k: True):
    from .inventory import build_inventory

    def show(session):
        ctx = Frontend(session).find(name)
        inv = build_inventory(session)
        hv = inv.effective_vars(ctx.name) if ctx.name in inv.hosts else {}
        return {"nid": ctx.nid, "name": ctx.name, "type": ctx.type, "title": ctx.title,
                **{k: v for k, v in hv.items() if keep(k)}}

    print_record(read(show), as_json)


def _no_secret(key: str) -> bool:
    return "password" not in key


@server.command("show")
@click.argument("name")
@json_option
@db_option
def server_show(name, as_json):
    """Show a server and the variables the inventory gives it (without secrets)."""
    _show(name, as_json, _no_secret)


# -- platforms --------------------------------------------------------------------------

@main.group()
def platform():
    """Platforms (Drupal codebases)."""


@platform.command("add")
@click.argument("title")
@click.option("--root", required=True, help="Absolute path of the codebase on the server.")
@click.option("--server", "web_server", required=True, help="Web server (context name).")
@click.option("--name", help="Context name (default: platform_ + title).")
@click.option("--makefile", default="")
@click.option("--no-verify", is_flag=True, help="Do not queue a verify task.")
@db_option
def platform_add(title, root, web_server, name, makefile, no_verify):
    """Add a platform."""
    nid = write(lambda fe: fe.add_platform(title, root, web_server, name=name, makefile=makefile,
                                           queue_verify=not no_verify))
    click.echo(f"platform {nid} added")


@platform.command("list")
@json_option
@db_option
def platform_list(as_json):
    """List live platforms."""
    print_rows(read(queries.platforms), as_json)


@platform.command("show")
@click.argument("name")
@json_option
@db_option
def platform_show(name, as_json):
    """Show a platform."""
    _show(name, as_json, _no_secret)


# -- sites ------------------------------------------------------------------------------

@main.group()
def site():
    """Sites."""


@site.command("add")
@click.argument("uri")
@click.option("--platform", "platform_name", required=True, help="Platform (context name).")
@click.option("--db-server", help="Database server (default: the first one).")
@click.option("--profile", default="standard", show_default=True)
@click.option("--language", default="en", show_default=True)
@click.option("--alias", "aliases", multiple=True, help="Alias host name (repeat).")
@click.option("--redirection", help="Redirect every alias to this host name (uri or an alias).")
@click.option("--client", help="Client machine name.")
@click.option("--cron-interval", type=int, default=3600, show_default=True,
              help="Seconds between cron runs; 0 turns cron off.")
@click.option("--no-install", is_flag=True, help="Do not queue an install task.")
@db_option
def site_add(uri, platform_name, db_server, profile, language, aliases, redirection, client,
             cron_interval, no_install):
    """Add a site (and queue its install, as hostmaster does)."""
    nid = write(lambda fe: fe.add_site(
        uri, platform_name, db_server=db_server, profile=profile, language=language,
        aliases=aliases, redirection=redirection, client=client, cron_interval=cron_interval,
        queue_install=not no_install))
    click.echo(f"site {nid} added")


@site.command("list")
@json_option
@db_option
def site_list(as_json):
    """List live sites."""
    print_rows(read(queries.sites), as_json)


@site.command("show")
@click.argument("name")
@json_option
@db_option
def site_show(name, as_json):
    """Show a site."""
    _show(name, as_json, lambda k: _no_secret(k) and k != "aegir_site_cron_key")


# -- tasks ------------------------------------------------------------------------------

@main.group()
def task():
    """Tasks (the queue hostmaster fills)."""


def _parse_args(pairs) -> dict[str, str]:
    args = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--arg {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        args[key.strip()] = value
    return args


@task.command("add")
@click.argument("task_type")
@click.argument("target")
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE",
              help="Task argument (repeat).")
@db_option
def task_add(task_type, target, arg_pairs):
    """Queue a task of TASK_TYPE on TARGET (a context name or nid)."""
    args = _parse_args(arg_pairs)
    nid = write(lambda fe: fe.add_task(task_type, target, args))
    click.echo(f"task {nid} queued")


_STATUS_CHOICES = {"queued": 0, "processing": -1, "success": 1, "error": 2, "warning": 3}


@task.command("list")
@click.option("--status", type=click.Choice(list(_STATUS_CHOICES)))
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@db_option
def task_list(status, limit, as_json):
    """List tasks, newest first."""
    st = _STATUS_CHOICES.get(status) if status else None
    print_rows(read(lambda s: queries.tasks(s, status=st, limit=limit)), as_json,
               ["nid", "type", "target", "status", "executed", "delta"])


@task.command("show")
@click.argument("nid", type=int)
@json_option
@db_option
def task_show(nid, as_json):
    """Show a task, its arguments and its log."""

    def show(session):
        from .db import models as m

        row = session.get(m.Node, nid)
        if row is None or row.type != "task":
            raise InputError(f"no task {nid}")
        t = session.get(m.HostingTask, row.vid)
        ctx = session.get(m.HostingContext, t.rid)
        return {
            "nid": nid, "title": row.title, "type": t.task_type,
            "target": ctx.name if ctx else f"#{t.rid}",
            "status": m.TASK_STATUS_NAMES.get(t.task_status, str(t.task_status)),
            "executed": t.executed, "delta": t.delta,
            "arguments": queries.task_arguments(session, nid),
            "log": [f"[{line['type']}] {line['message']}" for line in queries.task_log(session, nid)],
        }

    record = read(show)
    if as_json:
        print_record(record, True)
        return
    log = record.pop("log")
    print_record(record, False)
    click.echo("log:")
    for line in log:
        click.echo(f"  {line}")


# -- inventory and drush aliases --------------------------------------------------------

@main.command("inventory")
@click.option("--list", "list_", is_flag=True, help="The inventory script's --list JSON.")
@click.option("--host", help="Variables of one host.")
@click.option("--graph", is_flag=True, help="Groups and their hosts.")
@db_option
def inventory_cmd(list_, host, graph):
    """The Ansible inventory built from the database."""
    from .inventory import build_inventory
    from .inventory import graph as graph_of
    from .inventory import script_output, unsafe

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
@db_option
def drush_aliases_cmd(out_dir):
    """Write Drush site aliases (YAML) for every live site, generated from the database."""
    from .drush_aliases import write_aliases
    from .inventory import build_inventory

    inv = read(build_inventory)
    out = Path(out_dir) if out_dir else Path.home() / ".drush" / "sites" / "aegir"
    written = write_aliases(inv, out)
    click.echo(f"{len(written)} alias files in {out}")


def _register_queue_commands():
    from .queue import cli as queue_cli

    queue_cli.register(main, task, db_option)


_register_queue_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
