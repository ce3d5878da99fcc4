"""Which database, and how to connect to it.

The URL comes from `--db`, else `AEGIR_DB_URL`, else an SQLite file in the user's data
directory (the embedded default for a standalone install).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

ENV_VAR = "AEGIR_DB_URL"


def default_sqlite_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "aegir-ansible" / "aegir.sqlite"


def resolve_url(url: str | None = None) -> str:
    """The database URL to use: the explicit one, the environment's, or the default file."""
    if url:
        return url
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    path = default_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _setup_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and explicit transactions; BEGIN IMMEDIATE on request.

    pysqlite's own transaction handling is switched off (SQLAlchemy's documented
    recipe) so that a claim can take the write lock at BEGIN: a deferred transaction that
    reads then writes fails at once with SQLITE_BUSY instead of waiting.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# Client-side timeouts of a MariaDB/MySQL connection (seconds), unless the URL sets them
# (`?read_timeout=5`): a database that hangs is an error after this long (the server's
# greeting is read with the read timeout too), not a runner that waits forever without a
# word. The read timeout is above the session's lock wait (MYSQL_LOCK_WAIT), the longest a
# healthy statement of ours waits: claims skip locked rows, other locks are held briefly.
MYSQL_TIMEOUTS = {"connect_timeout": 10, "read_timeout": 15, "write_timeout": 15}
MYSQL_LOCK_WAIT = 10


class _QuietPoolErrors(logging.Filter):
    """SQLAlchemy's pool logs a traceback at error level when it cannot reset or close a
    connection the database dropped ("Exception during reset or similar"): expected during
    an outage, and the caller gets the error anyway. One warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if record.levelno >= logging.ERROR and text.startswith(("Exception during reset",
                                                                 "Exception closing connection")):
            exc = record.exc_info[1] if record.exc_info else None
            record.msg = "database connection dropped (%s): %s"
            record.args = (text.split(" %r")[0].lower(),
                           str(exc).splitlines()[0] if exc else "no details")
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_pool(engine: Engine) -> None:
    logger = engine.pool.logger
    if isinstance(logger, logging.Logger) and not any(
            isinstance(f, _QuietPoolErrors) for f in logger.filters):
        logger.addFilter(_QuietPoolErrors())


def make_engine(url: str | None = None, **kwargs) -> Engine:
    url = resolve_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        _setup_sqlite(engine)
        _quiet_pool(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 3600)
    mysql = url.startswith("mysql")
    if mysql and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    if mysql:
        given = make_url(url).query
        connect_args = dict(kwargs.pop("connect_args", {}))
        for name, seconds in MYSQL_TIMEOUTS.items():
            if name not in given:
                connect_args.setdefault(name, seconds)
        kwargs["connect_args"] = connect_args
    engine = create_engine(url, **kwargs)
    if mysql:
        @event.listens_for(engine, "connect")
        def _session(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute(f"SET SESSION innodb_lock_wait_timeout = {MYSQL_LOCK_WAIT}")
            cur.close()
    _quiet_pool(engine)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 — a malformed URL is shown as given, minus nothing
        return "<invalid URL>"
