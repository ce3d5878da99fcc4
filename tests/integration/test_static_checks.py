"""ruff and mypy, configured in pyproject.toml, run on the tree as part of the suite.

Also: the one version (aegir_ansible.__version__) is the collection's too (galaxy.yml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import aegir_ansible

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> list[str]:
    """The tool from this interpreter's venv (the `test` extra installs it), else from PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return [str(local)]
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")
    return [found]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"


def test_ruff_check_is_clean():
    _run([*_tool("ruff"), "check", "--no-cache", "."])


def test_mypy_is_clean():
    # The files and settings are [tool.mypy] in pyproject.toml.
    _run([*_tool("mypy"), "--no-incremental", "--cache-dir=/dev/null"])


def test_galaxy_version_is_the_package_version():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert galaxy["version"] == aegir_ansible.__version__
