"""`aegir db|server|platform|site|task ...`, `aegir inventory`, `aegir drush-aliases`: the
frontend side for standalone use, and what the database gives Ansible."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from aegir_ansible import defaults, queries
from aegir_ansible.db import init_schema, resolve_url, safe_url
from aegir_ansible.db import models as m
from aegir_ansible.frontend import DB_TYPES, HTTP_TYPES, Frontend
from aegir_ansible.inventory import build_inventory, script_output, unsafe
from aegir_ansible.inventory import graph as graph_of
from aegir_ansible.validation import InputError

from .base import db_option, json_option, main, obj, print_record, print_rows, read, write
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
@click.option("--http-port", type=int, default=defaults.HTTP_PORT, show_default=True)
@click.option("--db-service", "db_service", type=click.Choice(DB_TYPES),
              help="Database service type.")
@click.option("--db-port", type=int, default=defaults.DB_PORT, show_default=True)
@click.option("--db-user", default="", help="Admin user of the database service.")
@click.option("--db-password-file", type=click.Path(dir_okay=False),
              help="File holding the db admin password (else $AEGIR_DB_ADMIN_PASSWORD). "
                   "Never given on the command line.")
@click.option("--ip", "ips", multiple=True, help="IP address (repeat for several).")
@click.option("--local", is_flag=True, help="This machine: ansible_connection=local.")
@click.option("--address", help="Address to connect to (default: first IP, else hostname).")
@click.option("--ssh-user", default=defaults.SSH_USER, show_default=True)
@click.option("--ssh-port", type=int, default=defaults.SSH_PORT, show_default=True)
@click.option("--ssh-key", help="Private key file for SSH.")
@click.option("--python", "python_interpreter", default=defaults.PYTHON_INTERPRETER,
              show_default=True)
@click.option("--aegir-root", default=defaults.AEGIR_ROOT, show_default=True)
@click.option("--script-user", default=defaults.SCRIPT_USER, show_default=True)
@click.option("--web-group", default=defaults.WEB_GROUP, show_default=True)
@click.option("--listen-address", default=defaults.HTTP_LISTEN_ADDRESS, show_default=True,
              help="Address vhosts listen on.")
@click.option("--http-test-cmd", help="JSON argv list that checks the web server config.")
@click.option("--http-reload-cmd", help="JSON argv list that reloads the web server.")
@click.option("--php-fastcgi", default=defaults.PHP_FASTCGI, show_default=True)
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
@click.option("--profile", default=defaults.SITE_PROFILE, show_default=True)
@click.option("--language", default=defaults.SITE_LANGUAGE, show_default=True)
@click.option("--alias", "aliases", multiple=True, help="Alias host name (repeat).")
@click.option("--redirection", help="Redirect every alias to this host name (uri or an alias).")
@click.option("--client", help="Client machine name.")
@click.option("--cron-interval", type=int, default=defaults.CRON_INTERVAL, show_default=True,
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


# In the order the option's help has always listed them.
_STATUS_CHOICES = {s.label: s for s in (m.TaskStatus.QUEUED, m.TaskStatus.PROCESSING,
                                        m.TaskStatus.SUCCESS, m.TaskStatus.ERROR,
                                        m.TaskStatus.WARNING)}


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
        row = session.get(m.Node, nid)
        if row is None or row.type != "task":
            raise InputError(f"no task {nid}")
        t = session.get(m.HostingTask, row.vid)
        ctx = session.get(m.HostingContext, t.rid)
        return {
            "nid": nid, "title": row.title, "type": t.task_type,
            "target": ctx.name if ctx else f"#{t.rid}",
            "status": m.TaskStatus.label_of(t.task_status),
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
    from aegir_ansible.drush_aliases import write_aliases

    inv = read(build_inventory)
    out = Path(out_dir) if out_dir else Path.home() / ".drush" / "sites" / "aegir"
    written = write_aliases(inv, out)
    click.echo(f"{len(written)} alias files in {out}")
