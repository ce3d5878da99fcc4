"""The inventory script's command line (`--list`, `--host NAME`), kept importable."""

from __future__ import annotations

import json
import sys

from sqlalchemy.exc import SQLAlchemyError

from .db import make_engine, make_sessionmaker, resolve_url, safe_url
from .inventory import build_inventory, script_output, unsafe


def load_inventory(url: str | None = None):
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return build_inventory(session)
    finally:
        engine.dispose()


def script_main(argv: list[str]) -> int:
    if argv[:1] != ["--list"] and not (len(argv) == 2 and argv[0] == "--host"):
        print("usage: aegir_inventory.py --list | --host NAME", file=sys.stderr)
        return 2
    try:
        inv = load_inventory()
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        hint = " (run 'aegir db init'?)" if "no such table" in cause or "doesn't exist" in cause else ""
        print(f"aegir_inventory.py: cannot read the Aegir database {safe_url(resolve_url())}: "
              f"{cause}{hint}", file=sys.stderr)
        return 1
    for why in inv.rejected.values():  # ansible shows an inventory script's stderr
        print(f"aegir_inventory.py: warning: {why}", file=sys.stderr)
    data = script_output(inv) if argv[0] == "--list" else unsafe(inv.hosts.get(argv[1], {}))
    try:
        json.dump(data, sys.stdout, separators=(",", ":"))
    except BrokenPipeError:
        return 1
    return 0
