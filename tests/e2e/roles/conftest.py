"""Fixtures of the aegir_server / aegir_platform / aegir_site / aegir_vhost role tests.

The harness plugin (tests.harness.fixtures) is enabled by tests/conftest.py.
"""

from __future__ import annotations

import pytest

from .helpers import Env


@pytest.fixture(scope="module")
def env(fresh_servers, test_db_server, make_platform, run_playbook, tmp_path_factory):
    """Both servers reset, a platform on each, servers and platforms verified."""
    e = Env(fresh_servers, test_db_server, make_platform, run_playbook, tmp_path_factory.mktemp("roles"))
    e.run("verify.yml", limit="aegir_servers:aegir_platforms").assert_ok()
    yield e
    e.cleanup()
