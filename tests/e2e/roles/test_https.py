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


# -- ACME (Pebble) ---------------------------------------------------------------------------

ACME_VARS = {"aegir_https_acme_validate_certs": False}


def serial(path: Path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def acme(env, acme_server):
    """ACME sites: required with an alias on both servers, enabled (http still served) on nginx.
    Their names resolve (for Pebble only) to their server's address."""
    sites = {
        "req_nginx": ("nginx", "acme.nginx.example.test", ["www.acme.nginx.example.test"], "required"),
        "req_apache": ("apache", "acme.apache.example.test", ["www.acme.apache.example.test"], "required"),
        "en_nginx": ("nginx", "en.nginx.example.test", [], "enabled"),
    }
    for label, (key, uri, aliases, state) in sites.items():
        for name in [uri, *aliases]:
            acme_server.dns.names[name] = env.servers[key].address
        env.add_site(key, uri, label.replace("_", "")[:6], aegir_site_aliases=aliases,
                     aegir_site_https=state, aegir_https_certificate_service="letsencrypt",
                     aegir_https_acme_directory=acme_server.directory_url)
    return sites


def test_acme_issue_required_and_enabled(env, acme, acme_server):
    """Real HTTP-01 validation by Pebble against each vhost; the sites then answer over https
    with a certificate of Pebble's CA for the uri and every alias; required redirects, enabled
    does not."""
    limit = ":".join(uri for _, uri, _, _ in acme.values())
    result = env.run("install.yml", limit=limit, extra_vars=ACME_VARS)
    assert result.rc == 0, result.stdout[-4000:] + acme_server.log_text()[-2000:]
    root = str(acme_server.root_file)
    for key, uri, aliases, state in acme.values():
        server = env.servers[key]
        for name in [uri, *aliases]:
            status, body = curl_https(server, name, cacert=root)
            assert status == 200 and f"Welcome to {uri}" in body, (name, status, body)
        resp = server.request(uri, "/a?b=1")
        if state == "required":
            assert resp.status == 301 and resp.headers["location"] == f"https://{uri}/a?b=1", resp
        else:
            assert resp.status == 200 and f"Welcome to {uri}" in resp.body, resp
        key_file = cert_dir(env, key, uri) / "openssl.key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # The challenge path is answered over http even when https is required.
    key, uri, _, _ = acme["req_apache"]
    challenge_dir = Path(env.servers[key].aegir_root) / "config" / f"server_{key}" / "letsencrypt.d/well-known/acme-challenge"
    (challenge_dir / "probe").write_text("probe-token")
    try:
        resp = env.servers[key].request(uri, "/.well-known/acme-challenge/probe")
        assert resp.status == 200 and resp.body == "probe-token", resp
    finally:
        (challenge_dir / "probe").unlink()


def test_acme_reverify_changes_nothing(env, acme):
    limit = ":".join(uri for _, uri, _, _ in acme.values())
    before = {uri: serial(cert_dir(env, key, uri) / "openssl.crt") for key, uri, _, _ in acme.values()}
    env.run("verify.yml", limit=limit, extra_vars=ACME_VARS).assert_idempotent()
    assert before == {uri: serial(cert_dir(env, key, uri) / "openssl.crt") for key, uri, _, _ in acme.values()}


def test_acme_renews_within_window_and_on_new_names(env, acme, acme_server):
    key, uri, aliases, _ = acme["req_nginx"]
    crt = cert_dir(env, key, uri) / "openssl.crt"
    first = serial(crt)
    # Renewal window larger than the certificate's validity: renewed.
    env.run("verify.yml", limit=uri, extra_vars={**ACME_VARS, "aegir_https_renew_days": 100000}).assert_ok()
    second = serial(crt)
    assert second != first
    # A new alias: re-issued for the new set of names, served over https.
    new_alias = f"new.{uri}"
    acme_server.dns.names[new_alias] = env.servers[key].address
    env.inv.sites[uri]["aegir_site_aliases"] = [*aliases, new_alias]
    env.run("verify.yml", limit=uri, extra_vars=ACME_VARS).assert_ok()
    assert serial(crt) != second
    status, body = curl_https(env.servers[key], new_alias, cacert=str(acme_server.root_file))
    assert status == 200 and f"Welcome to {uri}" in body
    env.run("verify.yml", limit=uri, extra_vars=ACME_VARS).assert_idempotent()


def test_acme_failures_fail_their_site_only(env, acme_server):
    """A name Pebble cannot resolve, and a CA that does not answer: those sites fail with the
    CA's message and keep serving over http; a good site of the same run gets its certificate."""
    from tests.harness.acme import free_port

    bad_dns = "nodns.nginx.example.test"
    bad_ca = "noca.apache.example.test"
    good = "good.apache.example.test"
    acme_server.dns.names[good] = env.servers["apache"].address
    acme_server.dns.names[bad_ca] = env.servers["apache"].address
    common = {"aegir_site_https": "required", "aegir_https_certificate_service": "letsencrypt"}
    env.add_site("nginx", bad_dns, "nodns", aegir_https_acme_directory=acme_server.directory_url, **common)
    env.add_site("apache", bad_ca, "noca",
                 aegir_https_acme_directory=f"https://127.0.0.1:{free_port()}/dir", **common)
    env.add_site("apache", good, "good", aegir_https_acme_directory=acme_server.directory_url, **common)
    result = env.run("install.yml", limit=f"{bad_dns}:{bad_ca}:{good}", extra_vars=ACME_VARS)
    assert result.rc != 0
    assert result.stats[bad_dns].failed == 1 and result.stats[bad_ca].failed == 1
    assert result.stats[good].failed == 0
    assert f"{bad_dns}: certificate (letsencrypt) failed" in result.stdout
    assert "could not resolve" in result.stdout or "NXDOMAIN" in result.stdout, result.stdout[-3000:]
    assert f"{bad_ca}: certificate (letsencrypt) failed: ACME account:" in result.stdout
    assert "Connection refused" in result.stdout
    env.servers["nginx"].wait_for_http(bad_dns, contains=f"Welcome to {bad_dns}")
    env.servers["apache"].wait_for_http(bad_ca, contains=f"Welcome to {bad_ca}")
    status, body = curl_https(env.servers["apache"], good, cacert=str(acme_server.root_file))
    assert status == 200 and f"Welcome to {good}" in body


def test_delete_removes_the_certificate(env, acme):
    key, uri, _, _ = acme["en_nginx"]
    assert cert_dir(env, key, uri).is_dir()
    env.run("delete.yml", limit=uri, extra_vars=ACME_VARS).assert_ok()
    assert not cert_dir(env, key, uri).exists()
    assert not env.vhost(key, uri).exists()
