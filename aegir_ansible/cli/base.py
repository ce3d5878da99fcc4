"""What every `aegir` command shares: the `aegir` group, the per-invocation context (the
database URL, a lazily made engine), `--db`, `--config`, errors and exit statuses, output
(tables, records, JSON, times).

Exit status: 0 done; 1 the operation failed or was refused (what the database holds does
not allow it: no such site, a name taken, dependants exist, a database error, a task that
failed); 2 bad usage (an unknown option, a value the CLI checks itself with
aegir_ansible.validation before touching the database). Either is one line on stderr
(`aegir: error: ...`; click's usage errors add the usage line), and the database is left
unchanged (every command writes in one transaction that a refusal rolls back).

Settings: an option given on the command line wins; else its environment variable
(AEGIR_<COMMAND>_<OPTION> after the option's long flag, e.g. AEGIR_SERVER_ADD_SSH_USER, set by
apply_envvars(); the database URL is AEGIR_DB_URL, the config file AEGIR_CONFIG);
else the config file (--config / AEGIR_CONFIG, else ~/.config/aegir/config.toml, else
/etc/aegir/config.toml); else the option's default. docs/cli.md documents them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
import tomllib
import typing
from datetime import UTC, datetime
from pathlib import Path

import click
from click.shell_completion import CompletionItem
from sqlalchemy.exc import SQLAlchemyError

from aegir_ansible import __version__
from aegir_ansible.db import make_engine, make_sessionmaker, resolve_url, safe_url
from aegir_ansible.db.engine import ENV_VAR
from aegir_ansible.db.schema import has_aegir_schema
from aegir_ansible.frontend import Frontend
from aegir_ansible.validation import InputError

ENV_PREFIX = "AEGIR"
CONFIG_ENV = "AEGIR_CONFIG"


class Failed(click.ClickException):
    """The operation failed or was refused: `aegir: error: ...`, exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"aegir: error: {self.format_message()}", err=True)


class BadUsage(Failed):
    """A usage error found after parsing (a combination of options): exit status 2."""

    exit_code = 2


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
            raise Failed(
                f"the database {safe_url(resolve_url(self.url))} has no Aegir tables: "
                "run 'aegir db init' first"
            )


def fail(message: str) -> typing.NoReturn:
    """A failed operation: exit status 1."""
    raise Failed(message)


def db_error(exc: SQLAlchemyError, url: str | None) -> Failed:
    msg = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return Failed(f"database error on {safe_url(resolve_url(url))}: {msg}")


def db_option(f):
    """`--db URL` on every command (else AEGIR_DB_URL, else the config file's `db_url`, else the
    embedded SQLite file); refusals of the operation become exit status 1."""

    @click.option("--db", "db_url", metavar="URL", default=None, expose_value=True,
                  help="SQLAlchemy URL of the Aegir database (default: $AEGIR_DB_URL, else "
                       "the config file's `db_url`, else the embedded SQLite file).")
    @click.pass_context
    @functools.wraps(f)
    def wrapper(ctx, db_url, *args, **kwargs):
        obj = ctx.ensure_object(Ctx)
        if db_url:
            obj.url = db_url
        try:
            return ctx.invoke(f, *args, **kwargs)
        except InputError as exc:
            raise Failed(str(exc)) from None
        except SQLAlchemyError as exc:
            raise db_error(exc, obj.url) from None

    return wrapper


def obj() -> Ctx:
    # main() ensures the object before any subcommand runs.
    return typing.cast(Ctx, click.get_current_context().find_object(Ctx))


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


# -- values checked with the project's validation (exit status 2 when bad) -------------------

def checked(check, *check_args):
    """A click callback that checks a value (or each of a multiple option's values) with a
    function of aegir_ansible.validation, so what the CLI accepts the modules accept too."""

    def callback(ctx, param, value):
        if value is None or value == () or value == "":
            return value
        try:
            if isinstance(value, tuple):
                return tuple(check(v, *check_args) for v in value)
            return check(value, *check_args)
        except InputError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return callback


# -- shell completion from the database -------------------------------------------------------

def _complete_names(types: tuple[str, ...]):
    def complete(ctx, param, incomplete: str) -> list[CompletionItem]:
        from sqlalchemy import select

        from aegir_ansible.db import models as m

        try:
            root = ctx.find_root()
            url = ctx.params.get("db_url") or getattr(root.obj, "url", None) or \
                root.params.get("db_url") or _config_db(root)
            engine = make_engine(url)
            try:
                with make_sessionmaker(engine)() as s:
                    rows = s.execute(
                        select(m.HostingContext.name, m.Node.type, m.Node.title)
                        .join(m.Node, m.Node.nid == m.HostingContext.nid)
                        .where(m.Node.type.in_(types),
                               m.HostingContext.name.startswith(incomplete, autoescape=True))
                        .order_by(m.HostingContext.name).limit(200)).all()
            finally:
                engine.dispose()
        except Exception:  # completion never prints a traceback into the shell
            return []
        return [CompletionItem(name, help=f"{type_}: {title}") for name, type_, title in rows]

    return complete


def complete_task_ids(ctx, param, incomplete: str) -> list[CompletionItem]:
    from sqlalchemy import String, cast, select

    from aegir_ansible.db import models as m

    try:
        root = ctx.find_root()
        url = ctx.params.get("db_url") or root.params.get("db_url") or _config_db(root)
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as s:
                rows = s.execute(
                    select(m.Node.nid, m.HostingTask.task_type, m.HostingContext.name,
                           m.HostingTask.task_status)
                    .join(m.HostingTask, m.HostingTask.vid == m.Node.vid)
                    .outerjoin(m.HostingContext, m.HostingContext.nid == m.HostingTask.rid)
                    .where(m.Node.type == "task",
                           cast(m.Node.nid, String).startswith(incomplete, autoescape=True))
                    .order_by(m.Node.nid.desc()).limit(100)).all()
        finally:
            engine.dispose()
    except Exception:
        return []
    from aegir_ansible.db.models import TaskStatus

    return [CompletionItem(str(nid), help=f"{tt} {name or ''} ({TaskStatus.label_of(st)})")
            for nid, tt, name, st in rows]


complete_servers = _complete_names(("server",))
complete_platforms = _complete_names(("platform",))
complete_sites = _complete_names(("site",))
complete_contexts = _complete_names(("server", "platform", "site"))


# -- output: tables, records, JSON; times -------------------------------------------------------

# Columns holding a unix time (0 or None: never) and those holding a duration in seconds.
TIME_KEYS = frozenset({"executed", "verified", "created", "changed", "timestamp", "last_cron",
                       "not_before", "heartbeat", "claimed_at"})
DURATION_KEYS = frozenset({"delta"})


def _is_time_key(key: str) -> bool:
    return key in TIME_KEYS or key.endswith("_verified")


def iso_time(ts) -> str | None:
    """A unix time as ISO 8601 with its UTC offset, or None for never (0/None)."""
    if not ts:
        return None
    return datetime.fromtimestamp(int(ts), UTC).isoformat()


def human_time(ts, now: float | None = None) -> str:
    """`3 min ago`, `in 2 h`, `never`; older than a week: the local date and time."""
    if not ts:
        return "never"
    now = time.time() if now is None else now
    diff = now - int(ts)
    ahead, diff = diff < 0, abs(diff)
    if diff >= 7 * 86400:
        return datetime.fromtimestamp(int(ts)).strftime("%Y-%m-%d %H:%M")
    if diff < 45:
        text = f"{int(diff)} s" if diff >= 1 else "now"
    elif diff < 3600:
        text = f"{round(diff / 60)} min"
    elif diff < 86400:
        text = f"{round(diff / 3600)} h"
    else:
        text = f"{round(diff / 86400)} d"
    if text == "now":
        return "just now"
    return f"in {text}" if ahead else f"{text} ago"


def human_duration(seconds) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def present(record: dict, as_json: bool) -> dict:
    """A record for output: its times in ISO 8601 (JSON) or relative (text)."""
    out = {}
    for k, v in record.items():
        if _is_time_key(k) and (v is None or isinstance(v, (int, float))):
            out[k] = iso_time(v) if as_json else human_time(v)
        elif k in DURATION_KEYS and not as_json and isinstance(v, (int, float)):
            out[k] = human_duration(v)
        else:
            out[k] = v
    return out


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def print_rows(rows: list[dict], as_json: bool, columns: list[str] | None = None) -> None:
    rows = [present(r, as_json) for r in rows]
    if as_json:
        echo_json(rows)
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
    record = present(record, as_json)
    if as_json:
        echo_json(record)
        return
    width = max(len(k) for k in record)
    for k, v in record.items():
        if isinstance(v, (list, dict)):
            v = json.dumps(v)
        click.echo(f"{k.ljust(width)}  {'' if v is None else v}")


def report(as_json: bool, text: str, **fields) -> None:
    """The result of a command that changes something: a line, or its fields as JSON."""
    if as_json:
        echo_json(present(fields, True))
    else:
        click.echo(text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# -- environment variables ----------------------------------------------------------------

def envvar_name(command_path: tuple[str, ...], option: click.Option) -> str:
    """AEGIR_<COMMAND>_<OPTION>, from the command's words and the option's (first) long flag:
    `aegir server add --ssh-user` reads AEGIR_SERVER_ADD_SSH_USER."""
    longs = [o for o in option.opts if o.startswith("--")] or [f"--{option.name}"]
    words = [ENV_PREFIX, *command_path, longs[0][2:]]
    return "_".join(re.sub(r"[^A-Za-z0-9]+", "_", w).upper() for w in words)


def apply_envvars(group: click.Group, path: tuple[str, ...] = ()) -> None:
    """Give every option of every command its environment variable (shown in --help), except
    the per-command --db (AEGIR_DB_URL, read by the `aegir` group) and --version."""
    for name, cmd in group.commands.items():
        sub = (*path, name)
        for param in cmd.params:
            if isinstance(param, click.Option) and param.envvar is None and \
                    param.name not in ("db_url", "version"):
                param.envvar = envvar_name(sub, param)
                param.show_envvar = True
        if isinstance(cmd, click.Group):
            apply_envvars(cmd, sub)


# -- the config file ------------------------------------------------------------------------

def config_paths() -> list[Path]:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path(xdg) / "aegir" / "config.toml", Path("/etc/aegir/config.toml")]


def _normalize(table: dict) -> dict:
    """TOML keys as click's parameter names: `ssh-user` and `ssh_user` both work."""
    return {k.replace("-", "_") if not isinstance(v, dict) else k:
            _normalize(v) if isinstance(v, dict) else v for k, v in table.items()}


def load_config(path: str | None) -> tuple[dict, Path | None]:
    """The config file's settings: the one given (--config / AEGIR_CONFIG, which must exist),
    else the first of ~/.config/aegir/config.toml and /etc/aegir/config.toml that exists."""
    if path:
        candidates, required = [Path(path)], True
    else:
        candidates, required = config_paths(), False
    for p in candidates:
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            if required:
                raise BadUsage(f"config file {p} does not exist") from None
            continue
        except OSError as exc:
            raise Failed(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            return _normalize(tomllib.loads(data.decode("utf-8"))), p
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadUsage(f"config file {p} is not valid TOML: {exc}") from None
    return {}, None


def _config_db(root: click.Context) -> str | None:
    if root.default_map and isinstance(root.default_map.get("db_url"), str):
        return root.default_map["db_url"]
    try:
        conf, _ = load_config(root.params.get("config_path") or os.environ.get(CONFIG_ENV))
    except click.ClickException:
        return None
    db = conf.get("db_url")
    return db if isinstance(db, str) else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="aegir", message="%(prog)s %(version)s")
@click.option("--db", "db_url", metavar="URL", default=None, envvar=ENV_VAR, show_envvar=True,
              help="SQLAlchemy URL of the Aegir database (default: the config file's `db_url`, "
                   "else the embedded SQLite file).")
@click.option("--config", "config_path", metavar="FILE", default=None, envvar=CONFIG_ENV,
              show_envvar=True, type=click.Path(dir_okay=False),
              help="TOML file of option defaults (default: ~/.config/aegir/config.toml, "
                   "else /etc/aegir/config.toml, if there).")
@click.pass_context
def main(ctx, db_url, config_path):
    """aegir-ansible: an Ansible backend for the Aegir hosting system.

    Exit status: 0 done, 1 the operation failed or was refused, 2 bad usage.
    """
    conf, _where = load_config(config_path)
    if conf:
        # Subcommands read their defaults from here (below the command line and the
        # environment): {"db_url": URL, "server": {"add": {"ssh_user": ...}}}.
        for key, value in conf.items():
            if key != "db_url" and not isinstance(value, dict):
                raise BadUsage(f"config file {_where}: {key!r} must be a table of a command's "
                               "options ([server.add] ...); only db_url is a top-level value")
        ctx.default_map = {**conf, **(ctx.default_map or {})}
    db = db_url or conf.get("db_url")
    if db is not None and not isinstance(db, str):
        raise BadUsage(f"config file {_where}: db_url must be a string (a database URL)")
    ctx.ensure_object(Ctx).url = db
