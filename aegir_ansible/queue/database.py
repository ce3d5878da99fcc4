"""The queue's database: which errors are transient (and which transactions simply run
again), the claim-style transaction, and whether the server can run the queue at all."""

from __future__ import annotations

import logging
import random
import re
import time
import typing

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from . import metrics

log = logging.getLogger("aegir.queue")

RETRYABLE_MYSQL_ERRORS = {1213, 1205, 1020}
# Lost connection / server gone / cannot connect: wait and try again.
CONNECTION_MYSQL_ERRORS = {2002, 2003, 2006, 2013, 2055, 1927, 1053, 4031}
# SQLite errors that pass: another writer, a file that cannot be opened or written now.
SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL")


class QueueError(Exception):
    pass


def is_retryable(exc: BaseException) -> bool:
    """A transient conflict: the transaction can simply be run again."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    if code in RETRYABLE_MYSQL_ERRORS:
        return True
    return "database is locked" in str(orig)


def is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    return isinstance(exc, OperationalError) and code in CONNECTION_MYSQL_ERRORS


def error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", None) if orig is not None else None
    return args[0] if args and isinstance(args[0], int) else None


def is_transient(exc: BaseException) -> bool:
    """An error that may go away if the same write is tried again later: the connection
    was lost or the server is down, a lock wait timed out, a deadlock, a busy SQLite
    file. Anything else the database says about a statement (no grant 1142/1044/1045, an
    unknown column or table 1054/1146, data too long or wrong 1406/1366, ...) will be
    said again: retrying it forever hides it."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, SQLAlchemyError):
        return False
    if not isinstance(exc, DBAPIError):
        return True  # SQLAlchemy's own state after a lost connection (pending rollback...)
    if is_disconnect(exc) or is_retryable(exc):
        return True
    orig = exc.orig
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name is not None:
        return sqlite_name.startswith(SQLITE_TRANSIENT)
    if isinstance(orig, OSError) or error_code(exc) is None:
        return isinstance(exc, OperationalError)  # a socket error or timeout, no server errno
    return False


def with_retries(fn, *, attempts: int = 8, what: str = "transaction"):
    """Run fn() again on deadlocks / lock waits (short random backoff)."""
    for i in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_retryable(exc) or i == attempts - 1:
                raise
            log.debug("%s: retrying after %s", what, exc.orig)
            metrics.count("claim_conflicts" if what.startswith("claim") else "tx_conflicts")
            time.sleep(min(0.02 * (2 ** i), 1.0) * (0.5 + random.random()))
    return None  # pragma: no cover


# -- transactions ------------------------------------------------------------------------

def connect(engine: Engine):
    """A connection for a claim-style transaction: READ COMMITTED on MariaDB/MySQL (the claim
    locks what it reads), BEGIN IMMEDIATE on SQLite (one writer at a time)."""
    conn = engine.connect()
    if engine.dialect.name != "sqlite":
        return conn.execution_options(isolation_level="READ COMMITTED")
    return conn.execution_options(sqlite_immediate=True)


def transaction(engine: Engine, fn, what: str = "transaction"):
    """fn(conn) in one claim-style transaction, retried on conflicts."""

    def once():
        with connect(engine) as conn:
            with conn.begin():
                return fn(conn)

    return with_retries(once, what=what)


# -- server capability -------------------------------------------------------------------

def parse_server_version(version: str) -> tuple[str, tuple[int, ...]]:
    """('mariadb'|'mysql', (major, minor, patch)) from SELECT VERSION()."""
    flavour = "mariadb" if "mariadb" in version.lower() else "mysql"
    # MariaDB 10.x replication builds may prefix '5.5.5-'.
    v = version.split("-", 1)[1] if version.startswith("5.5.5-") else version
    nums = re.match(r"(\d+)\.(\d+)\.?(\d+)?", v)
    if not nums:
        raise QueueError(f"cannot parse the database server version {version!r}")
    return flavour, tuple(int(x or 0) for x in nums.groups())


def skip_locked_problem(version: str) -> str | None:
    """Why this server cannot run several runners safely, or None if it can."""
    flavour, ver = parse_server_version(version)
    if flavour == "mariadb" and ver < (10, 6, 0):
        return (f"MariaDB {version} has no SELECT ... FOR UPDATE SKIP LOCKED (it arrived in 10.6): "
                "upgrade to MariaDB 10.6 or newer to run the queue")
    if flavour == "mysql" and ver < (8, 0, 1):
        return (f"MySQL {version} has no SELECT ... FOR UPDATE SKIP LOCKED (it arrived in 8.0.1): "
                "upgrade to MySQL 8 to run the queue")
    return None


def check_database(engine: Engine) -> str:
    """Fail clearly when the database cannot run the queue; return a description."""
    if engine.dialect.name == "sqlite":
        return "SQLite (one machine only: claims are serialised with BEGIN IMMEDIATE)"
    with engine.connect() as conn:
        # SELECT VERSION() always returns one string.
        version = typing.cast(str, conn.exec_driver_sql("SELECT VERSION()").scalar())
    problem = skip_locked_problem(version)
    if problem:
        raise QueueError(problem)
    return f"{engine.dialect.name} {version} (SKIP LOCKED supported)"
