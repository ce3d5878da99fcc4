"""End to end: a broken vhost is rolled back while the server keeps serving, hostile inventory
values are refused, a missing platform fails clearly, and 30 sites verified by parallel
ansible-playbook runs on one server all keep their cron entry.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .helpers import Unsafe

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
KEYS = ("nginx", "apache")


def _broken_templates(tmp: Path) -> dict:
    """Copies of the role's vhost templates: a comment for every site, and a directive the web
    server rejects for sites whose uri starts with "broken"."""
    src = REPO / "roles" / "aegir_vhost" / "templates"
    out = {}
    for service in KEYS:
        d = tmp / service
        d.mkdir(parents=True, exist_ok=True)
        for state, name in (("enabled", "vhost.conf.j2"), ("disabled", "vhost_disabled.conf.j2")):
            text = (src / service / name).read_text()
            text += "# changed template\n{% if site.uri.startswith('broken') %}this_is_not_a_directive on;\n{% endif %}\n"
            (d / name).write_text(text)
            out.setdefault(service, {})[state] = str(d / name)
    return out


def test_bad_vhost_rolled_back(env, tmp_path):
    for key in KEYS:
        env.add_site(key, f"good.{key}.example.test", f"g{key[:2]}")
        env.add_site(key, f"broken.{key}.example.test", f"b{key[:2]}")
    limit = ",".join(f"{n}.{k}.example.test" for k in KEYS for n in ("good", "broken"))
    env.run("install.yml", limit=limit).assert_ok()
    before = {k: env.vhost(k, f"broken.{k}.example.test").read_text() for k in KEYS}

    result = env.run("verify.yml", limit=limit, extra_vars={"aegir_vhost_templates": _broken_templates(tmp_path)})
    assert result.rc != 0
    for key, server in env.servers.items():
        broken, good = f"broken.{key}.example.test", f"good.{key}.example.test"
        assert result.stats[broken].failed == 1, result
        assert result.stats[good].failed == 0, result
        assert "rolled back" in result.stdout
        # The broken vhost is back to its previous content, the good one has the new one.
        assert env.vhost(key, broken).read_text() == before[key]
        assert "# changed template" in env.vhost(key, good).read_text()
        assert server.running_config_ok(), server.config_test_output()
        server.wait_for_http(good, contains=f"Welcome to {good}")
        server.wait_for_http(broken, contains=f"Welcome to {broken}")


def test_hostile_values_refused(env):
    token = env.token
    marker = f"/tmp/aegir-pwned-{token}"
    hostile = {
        "evil-jinja": {"aegir_site_uri": Unsafe("{{ lookup('pipe', 'touch " + marker + "') }}")},
        "evil-shell": {"aegir_site_uri": Unsafe(f"x.example.test;touch {marker}")},
        "evil-dots": {"aegir_site_uri": Unsafe("../../../../tmp/evil-dots")},
        "evil-quote": {"aegir_site_uri": Unsafe("ok.example.test"),
                       "aegir_site_aliases": [Unsafe("a'b.example.test"), Unsafe("c\"d.example.test")]},
        "evil-profile": {"aegir_site_uri": Unsafe("ok2.example.test"),
                         "aegir_site_profile": Unsafe(f"standard; touch {marker}")},
        "evil-redirect": {"aegir_site_uri": Unsafe("ok3.example.test"),
                          "aegir_site_aliases": [Unsafe("www.ok3.example.test")],
                          "aegir_site_redirection": Unsafe("evil.test; return 200")},
        "evil-dbname": {"aegir_site_uri": Unsafe("ok4.example.test"),
                        "aegir_site_db_name": Unsafe("x`; DROP DATABASE mysql; --")},
    }
    hosts = []
    for host, extra in hostile.items():
        uri = extra.pop("aegir_site_uri")
        env.add_site("nginx", "placeholder.invalid", f"e{len(hosts)}", host=host)
        env.inv.sites[host].update(aegir_site_uri=uri, aegir_site_path=Unsafe(
            env.platform_roots["nginx"] + "/sites/" + uri), **extra)
        hosts.append(host)
    good = env.add_site("nginx", "fine.nginx.example.test", "fine")
    result = env.run("install.yml", limit=",".join(hosts + [good]))
    assert result.rc != 0
    for host in hosts:
        assert result.stats[host].failed == 1, (host, str(result))
    assert result.stats[good].failed == 0, result
    assert "is not a valid host name" in result.stdout
    assert "install profile" in result.stdout
    assert not os.path.exists(marker)
    assert not glob.glob("/tmp/evil-dots*")
    sites_dir = Path(env.platform_roots["nginx"]) / "sites"
    assert sorted(p.name for p in sites_dir.iterdir() if p.name.startswith(("ok", "x.", "{", "evil"))) == []
    vhosts = os.listdir(env.vhost("nginx", "x").parent)
    assert all(v.endswith(".example.test.conf") and "'" not in v and ";" not in v for v in vhosts), vhosts
    env.servers["nginx"].wait_for_http("fine.nginx.example.test", contains="Welcome")
    for host in hosts:
        del env.inv.sites[host]


def test_missing_platform_fails_clearly(env):
    missing = f"/tmp/aegir-missing-platform-{env.token}"
    env.inv.add_platform(env.servers["apache"], "platform_missing", missing)
    env.inv.add_site(env.servers["apache"], "platform_missing", "lost.apache.example.test", env.db_name("lost"))
    result = env.run("verify.yml", limit="platform_missing")
    assert result.rc != 0
    assert f"the root {missing} does not exist" in result.stdout
    result = env.run("install.yml", limit="lost.apache.example.test")
    assert result.rc != 0
    assert f"platform root {missing} does not exist" in result.stdout
    assert not os.path.exists(missing)
    del env.inv.sites["lost.apache.example.test"]
    del env.inv.platforms["platform_missing"]


def test_parallel_verify_30_sites_keep_cron(env, run_playbook):
    server = env.servers["nginx"]
    uris = [f"p{i:02d}.nginx.example.test" for i in range(30)]
    for i, u in enumerate(uris):
        env.add_site("nginx", u, f"p{i:02d}")
    limit = ",".join(uris)
    # Files only (no database, no installer): what matters here is the crontab and the bulk path.
    fast = {"aegir_site_manage_db": False, "aegir_site_run_installer": False}
    start = time.monotonic()
    env.run("install.yml", limit=limit, extra_vars=fast).assert_ok()
    install_s = time.monotonic() - start
    subprocess.run(["crontab", "-r", "-u", server.script_user], capture_output=True, check=False)

    inventory = env.inventory_path()
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(lambda u: run_playbook("playbooks/verify.yml", inventory, limit=u), uris))
    parallel_s = time.monotonic() - start
    for u, r in zip(uris, results):
        r.assert_ok()
    crontab = server.crontab()
    missing = [u for u in uris if f"# aegir-cron: {u}" not in crontab]
    assert missing == [], crontab

    start = time.monotonic()
    env.run("verify.yml", limit=limit).assert_idempotent()
    bulk_s = time.monotonic() - start
    print(f"\n30 sites: install (files) {install_s:.1f}s, 30 parallel verifies {parallel_s:.1f}s, "
          f"one verify of all 30 {bulk_s:.1f}s")
