"""Unit tests of the aegir_sites filters (plugins/filter/aegir_sites.py): the data shaping of
the aegir_site and aegir_vhost roles, with plain dicts for hostvars (no servers needed). The
last test runs the filters through ansible itself, as the roles do (ansible.cfg's
filter_plugins)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("aegir_sites_filters", REPO / "plugins/filter/aegir_sites.py")
flt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flt)
FILTERS = flt.FilterModule().filters()


def site(root="/var/aegir/platforms/d10", **extra):
    return {"aegir_platform_root": root, **extra}


@pytest.fixture
def hostvars():
    return {
        "server_a": {"aegir_script_user": "aegir", "aegir_root": "/var/aegir"},
        "server_b": {"aegir_script_user": "web", "aegir_root": "/srv/aegir"},
        "a1.example": site(aegir_server="server_a"),
        "a2.example": site(aegir_server="server_a", aegir_site_enabled=False),
        "b1.example": site(aegir_server="server_b", aegir_script_user="web", aegir_root="/srv/aegir",
                           aegir_site_cron_interval=600),
        # Its server is not in the inventory: the site is its own server.
        "lone.example": site(aegir_server="gone"),
        "broken": site(aegir_server="server_a", aegir_site_uri="Not A Host"),
    }


def test_every_filter_is_registered():
    assert set(FILTERS) == {
        "aegir_site_servers", "aegir_site_cron_jobs", "aegir_site_failures", "aegir_site_changes",
        "aegir_site_failed_hosts", "aegir_site_secrets", "aegir_site_report", "aegir_site_last_cron",
        "aegir_http_commands"}


def test_servers_in_order_first_met(hostvars):
    hosts = ["b1.example", "a1.example", "lone.example", "a2.example"]
    assert FILTERS["aegir_site_servers"](hosts, hostvars) == ["server_b", "server_a", "lone.example"]
    assert FILTERS["aegir_site_servers"]([], hostvars) == []


def test_cron_jobs_one_call_per_server(hostvars):
    calls = FILTERS["aegir_site_cron_jobs"](["a1.example", "b1.example", "a2.example"], hostvars)
    assert [c["server"] for c in calls] == ["server_a", "server_b"]
    a, b = calls
    assert (a["script_user"], a["aegir_root"]) == ("aegir", "/var/aegir")
    assert (b["script_user"], b["aegir_root"]) == ("web", "/srv/aegir")
    root = "/var/aegir/platforms/d10"
    assert a["cron_jobs"] == [
        {"key": "a1.example", "interval": 3600, "state": "present",
         "command": [root + "/vendor/bin/drush", "--root=" + root, "--uri=a1.example", "cron"]},
        # auto: a disabled site has no cron job
        {"key": "a2.example", "interval": 0, "state": "absent",
         "command": [root + "/vendor/bin/drush", "--root=" + root, "--uri=a2.example", "cron"]},
    ]
    assert b["cron_jobs"][0]["interval"] == 600 and a["failed_sites"] == b["failed_sites"] == {}


@pytest.mark.parametrize("state,expect", [("present", ["present", "present"]), ("absent", ["absent", "absent"])])
def test_cron_state_overrides_the_site_status(hostvars, state, expect):
    (call,) = FILTERS["aegir_site_cron_jobs"](["a1.example", "a2.example"], hostvars, state)
    assert [j["state"] for j in call["cron_jobs"]] == expect


def test_cron_interval_zero_means_no_job(hostvars):
    hostvars["a1.example"]["aegir_site_cron_interval"] = 0
    (call,) = FILTERS["aegir_site_cron_jobs"](["a1.example"], hostvars, "present")
    assert call["cron_jobs"][0]["state"] == "absent" and call["cron_jobs"][0]["interval"] == 0


def test_cron_broken_site_fails_alone(hostvars):
    (call,) = FILTERS["aegir_site_cron_jobs"](["a1.example", "broken"], hostvars)
    assert [j["key"] for j in call["cron_jobs"]] == ["a1.example"]
    assert list(call["failed_sites"]) == ["broken"] and "site uri" in call["failed_sites"]["broken"]


def test_cron_refuses_an_unknown_state(hostvars):
    with pytest.raises(AnsibleFilterError):
        FILTERS["aegir_site_cron_jobs"](["a1.example"], hostvars, "sometimes")


RESULTS = [
    {"failed_sites": {"a1.example": "a1: settings.php failed"}, "changed_sites": {"a2.example": ["settings.php"]},
     "secrets": {"a2.example": {"db_password": "pw2"}}},
    {"skipped": True, "changed": False},  # a server with none of the sites
    "not a dict",
    {"failed_sites": {"a1.example": "a1: vhost failed", "b1.example": "b1: vhost failed"},
     "changed_sites": {"a2.example": ["vhost"], "a3.example": []}},
]


def test_failures_changes_failed_hosts_secrets():
    assert FILTERS["aegir_site_failures"](RESULTS, "a1.example") == ["a1: settings.php failed", "a1: vhost failed"]
    assert FILTERS["aegir_site_failures"](RESULTS, "a2.example") == []
    assert FILTERS["aegir_site_changes"](RESULTS, "a2.example") == ["settings.php", "vhost"]
    assert FILTERS["aegir_site_changes"](RESULTS, "a3.example") == []
    assert FILTERS["aegir_site_failed_hosts"](RESULTS) == ["a1.example", "b1.example"]
    assert FILTERS["aegir_site_secrets"](RESULTS, "a2.example") == {"db_password": "pw2"}
    assert FILTERS["aegir_site_secrets"](RESULTS, "a1.example") == {}
    # A registered loop result (a dict with `results`) and nothing at all are read too.
    assert FILTERS["aegir_site_failed_hosts"]({"results": RESULTS[:1]}) == ["a1.example"]
    assert FILTERS["aegir_site_failures"](None, "a1.example") == []


def test_report_failure_wins_and_cron_status_is_a_change(hostvars):
    hostvars["a2.example"]["aegir_site_uri"] = "www.a2.example"
    cron = {"jobs": {"www.a2.example": "added", "b1.example": "unchanged"}}
    report = FILTERS["aegir_site_report"](["a1.example", "a2.example", "b1.example", "broken"], hostvars, RESULTS, cron)
    assert report == {
        "a1.example": {"failed": "a1: settings.php failed; a1: vhost failed"},
        # the cron key is the site's uri, not its inventory host name
        "a2.example": {"changed": ["settings.php", "vhost", "cron job added"]},
        "b1.example": {"failed": "b1: vhost failed"},
        "broken": {"changed": []},
    }
    assert FILTERS["aegir_site_report"](["a2.example"], hostvars, [], None) == {"a2.example": {"changed": []}}


def test_last_cron_by_uri_only_for_recorded_runs(hostvars):
    hostvars["a1.example"]["aegir_site_uri"] = "www-a1.example"
    runs = {"www-a1.example": 1_700_000_000, "a2.example": 0, "b1.example": "soon", "broken": 5}
    got = FILTERS["aegir_site_last_cron"](["a1.example", "a2.example", "b1.example", "broken", "lone.example"],
                                          hostvars, runs)
    # keyed by the site's uri; no run (0), a value that is not a time, and unknown sites: nothing
    assert got == {"a1.example": {"last_cron": 1_700_000_000}, "broken": {"last_cron": 5}}
    assert FILTERS["aegir_site_last_cron"](["a1.example"], hostvars, None) == {}


def test_http_commands_are_the_one_table():
    assert FILTERS["aegir_http_commands"]("nginx") == {"test": ["nginx", "-t"], "reload": ["nginx", "-s", "reload"]}
    assert FILTERS["aegir_http_commands"]("apache") == {"test": ["apache2ctl", "-t"], "reload": ["apache2ctl", "graceful"]}
    with pytest.raises(AnsibleFilterError):
        FILTERS["aegir_http_commands"]("lighttpd")
    # The vhost writer's defaults are the same values.
    srv = flt.sites.server_values(flt.sites.Vars({"s": site(aegir_http_service="apache")}, "s"))
    assert (srv["test_cmd"], srv["reload_cmd"]) == (["apache2ctl", "-t"], ["apache2ctl", "graceful"])


def test_filters_run_in_ansible(tmp_path):
    """The roles call the filters by FQCN (aegir.hosting.*), resolved from the checkout as the collection."""
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "{{ {'servers': ansible_play_hosts | aegir.hosting.aegir_site_servers(hostvars),
                  'cron': ansible_play_hosts | aegir.hosting.aegir_site_cron_jobs(hostvars) | map(attribute='cron_jobs') | list,
                  'failed': results | aegir.hosting.aegir_site_failed_hosts,
                  'apache': 'apache' | aegir.hosting.aegir_http_commands} | to_json }}"
      vars:
        results: [{failed_sites: {one.example: boom}}, {skipped: true}]
""")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {
        "one.example": {"aegir_platform_root": "/p", "aegir_server": "one.example", "ansible_connection": "local"}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "json"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    msg = json.loads(out["plays"][0]["tasks"][0]["hosts"]["one.example"]["msg"])
    assert msg == {"servers": ["one.example"],
                   "cron": [[{"key": "one.example", "interval": 3600, "state": "present",
                              "command": ["/p/vendor/bin/drush", "--root=/p", "--uri=one.example", "cron"]}]],
                   "failed": ["one.example"],
                   "apache": {"test": ["apache2ctl", "-t"], "reload": ["apache2ctl", "graceful"]}}
