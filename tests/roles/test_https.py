"""HTTPS end to end on the harness' nginx and Apache (issue 15): self-signed certificates,
ACME (Let's Encrypt) certificates from a real Pebble with real HTTP-01 validation, "required"
redirects, renewal, failures, delete.

The tests of this module run in order and share the servers' state (module-scoped `env`).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

KEYS = ("nginx", "apache")


def curl_https(server, host: str, path: str = "/", cacert: str | None = None, port: int = 443):
    """(status, body) of GET https://host/path sent to the server's address (curl --resolve),
    the certificate checked against cacert (or not checked when None)."""
    argv = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}",
            "--resolve", f"{host}:{port}:{server.address}", f"https://{host}:{port}{path}"]
    argv[1:1] = ["--cacert", cacert] if cacert else ["-k"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    body, _, status = proc.stdout.rpartition("\n")
    return int(status), body


def cert_dir(env, key: str, uri: str) -> Path:
    return Path(env.servers[key].aegir_root) / "config" / f"server_{key}" / "ssl.d" / uri


def test_self_signed_required(env):
    """A self-signed certificate per site covering uri + aliases; http 301s to https, except
    the ACME path; a second verify changes nothing."""
    for key in KEYS:
        env.add_site(key, f"ss.{key}.example.test", f"{key[:2]}ss",
                     aegir_site_aliases=[f"www.ss.{key}.example.test"],
                     aegir_site_https="required", aegir_https_certificate_service="self_signed")
    env.run("install.yml", limit="aegir_sites").assert_ok()
    for key, server in env.servers.items():
        uri = f"ss.{key}.example.test"
        d = cert_dir(env, key, uri)
        assert stat.S_IMODE(os.stat(d / "openssl.key").st_mode) == 0o600
        for name in (uri, f"www.{uri}"):
            status, body = curl_https(server, name)
            assert status == 200 and f"Welcome to {uri}" in body, (name, status, body)
        resp = server.request(uri, "/some/path?x=1")
        assert resp.status == 301 and resp.headers["location"] == f"https://{uri}/some/path?x=1", resp
    env.run("verify.yml", limit="aegir_sites").assert_idempotent()
