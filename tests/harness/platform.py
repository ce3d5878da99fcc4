"""Copies of the fixture PHP platform (tests/fixtures/platform) on a test server."""

from __future__ import annotations

import os
import pwd
import re
import shutil
from pathlib import Path

FIXTURE_PLATFORM = Path(__file__).resolve().parents[1] / "fixtures" / "platform"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def make_platform(server, name: str) -> str:
    """Copy the fixture platform to <aegir_root>/platforms/<name>; return its absolute path.

    The tree is owned by the server's script user (as Aegir's platforms are), so roles running
    as that user can write sites/<uri>; files are world-readable for PHP-FPM (www-data). An
    existing copy with the same name is replaced.
    """
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"bad platform name {name!r}")
    dest = Path(server.aegir_root) / "platforms" / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(FIXTURE_PLATFORM, dest, symlinks=True)
    user = pwd.getpwnam(server.script_user)
    for dirpath, dirnames, filenames in os.walk(dest):
        os.chown(dirpath, user.pw_uid, user.pw_gid)
        os.chmod(dirpath, 0o755)
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
    os.chmod(dest / "vendor" / "bin" / "drush", 0o755)
    return str(dest)
