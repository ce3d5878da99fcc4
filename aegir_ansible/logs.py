"""Structured log lines for the runner: one `key=value` line per event on stderr (logfmt,
which journald and log shippers parse), or one JSON object per line (`--log-format json`,
`AEGIR_LOG_FORMAT=json`), with the task id(s) on every line.

A run's thread declares which tasks it works on (`task_context`); every line logged from
that thread, by our code or a library, then carries `task=<nid>[,<nid>...]`. Lines not about
a task carry `task=-`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time

_current_tasks: contextvars.ContextVar[str] = contextvars.ContextVar("aegir_tasks", default="-")


@contextlib.contextmanager
def task_context(nids):
    token = _current_tasks.set(",".join(str(n) for n in nids) or "-")
    try:
        yield
    finally:
        _current_tasks.reset(token)


def _quote(value) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _fields(formatter: logging.Formatter, record: logging.LogRecord) -> list[tuple[str, str]]:
    task = getattr(record, "task", None) or _current_tasks.get()
    fields = [
        ("ts", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
         + f".{int(record.msecs):03d}Z"),
        ("level", record.levelname.lower()),
        ("logger", record.name),
        ("task", str(task)),
        ("msg", record.getMessage()),
    ]
    if record.exc_info:
        fields.append(("exc", formatter.formatException(record.exc_info)))
    return fields


class LogfmtFormatter(logging.Formatter):
    """ts=... level=... logger=... task=... msg="..." [exc="..."]"""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_quote(v)}" for k, v in _fields(self, record))


class JsonFormatter(logging.Formatter):
    """{"ts": ..., "level": ..., "logger": ..., "task": ..., "msg": ..., ["exc": ...]}: the
    logfmt line's fields as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(dict(_fields(self, record)), ensure_ascii=False)


FORMATS = {"logfmt": LogfmtFormatter, "json": JsonFormatter}


def setup(verbosity: int = 0, fmt: str = "logfmt") -> None:
    """Send the `aegir` loggers to stderr as logfmt (or JSON) lines (INFO; DEBUG with -vv)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (one of: {', '.join(FORMATS)})")
    handler = logging.StreamHandler()
    handler.setFormatter(FORMATS[fmt]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
