"""The inventory script's command line (`--list`, `--host NAME`), kept importable."""

from __future__ import annotations

import json
import sys

from .db import make_engine, make_sessionmaker
from .inventory import build_inventory, script_output, unsafe


def load_inventory(url: str | None = None):
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return build_inventory(session)
    finally:
        engine.dispose()


def script_main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        data = script_output(load_inventory())
    elif len(argv) == 2 and argv[0] == "--host":
        data = unsafe(load_inventory().hosts.get(argv[1], {}))
    else:
        print("usage: aegir_inventory.py --list | --host NAME", file=sys.stderr)
        return 2
    try:
        json.dump(data, sys.stdout, separators=(",", ":"))
    except BrokenPipeError:
        return 1
    return 0
