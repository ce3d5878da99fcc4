# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that shape the data of the aegir_site and aegir_vhost roles: which servers hold a
play's sites, each server's cron jobs, and each site's part of the bulk calls' results.

The bulk tasks (action plugin aegir_site_files, one module call per server) are registered
with a loop over the servers, so their results are a list with one item per server, each
holding ``failed_sites`` (host -> message) and ``changed_sites`` (host -> list of changes)
and, on install, ``secrets`` (host -> {db_password, ...}). These filters read a site's part
of such a list, so the role YAML needs no ``range | map('extract')`` idioms.

  loop: "{{ aegir_site_hosts | aegir_site_servers(hostvars) }}"
  loop: "{{ hosts | aegir_site_cron_jobs(hostvars, 'absent') }}"
  that: _files.results | aegir_site_failures(inventory_hostname) | length == 0
  hosts: "{{ aegir_site_hosts | difference(_files.results | aegir_site_failed_hosts) }}"
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.aegir.hosting.plugins.plugin_utils import aegir_sites as sites

plain = sites.plain

CRON_STATES = ("auto", "present", "absent")


def _items(results):
    """The dict items of a registered loop's results (skipped or odd items give nothing)."""
    if results is None:
        return []
    if isinstance(results, dict):
        results = results.get("results", [results])
    return [r for r in results if isinstance(r, dict)]


def site_servers(hosts, hostvars):
    """The servers that hold the sites `hosts` (the inventory host each site's work is
    delegated to: its aegir_server when that is in the inventory, else the site itself)."""
    return sites.servers(hostvars, hosts or [])


def site_cron_jobs(hosts, hostvars, cron_state="auto"):
    """The aegir_cron call of each server holding some of `hosts`:
    [{server, script_user, aegir_root, cron_jobs: [{key, interval, command, state}],
      failed_sites: {host: msg}}], one per server, in the order the servers are first met.
    cron_state: auto (present for enabled sites, absent for disabled ones), present or absent;
    a site whose cron interval is 0 always gets absent. A site whose values do not validate
    gets no job and a message in failed_sites."""
    if cron_state not in CRON_STATES:
        raise AnsibleFilterError("cron_state must be one of %s, not %r" % (", ".join(CRON_STATES), cron_state))
    calls = []
    for server in sites.servers(hostvars, hosts or []):
        mine = sites.by_server(hostvars, hosts, server)
        try:
            srv = sites.server_values(sites.Vars(hostvars, mine[0]))
        except sites.common.AegirValueError as exc:
            raise AnsibleFilterError("%s: %s" % (mine[0], exc)) from exc
        jobs, errors = [], {}
        for host in mine:
            try:
                jobs.append(sites.cron_job(host, sites.Vars(hostvars, host), cron_state))
            except sites.SITE_ERRORS as exc:
                errors[host] = "%s: %s" % (host, exc)
        calls.append({"server": server, "script_user": srv["script_user"], "aegir_root": srv["aegir_root"],
                      "cron_jobs": jobs, "failed_sites": errors})
    return calls


def site_failures(results, host):
    """The failure messages of `host` in the bulk results (empty: the site did not fail)."""
    out = []
    for res in _items(results):
        failed = res.get("failed_sites") or {}
        if host in failed:
            out.append(plain(failed[host]))
    return out


def site_changes(results, host):
    """What changed for `host` in the bulk results (a flat list of descriptions)."""
    out = []
    for res in _items(results):
        changed = res.get("changed_sites") or {}
        if host in changed:
            value = plain(changed[host]) or []
            out.extend(value if isinstance(value, list) else [value])
    return out


def site_failed_hosts(results):
    """Every site host that failed in the bulk results."""
    out = []
    for res in _items(results):
        for host in res.get("failed_sites") or {}:
            host = plain(host)
            if host not in out:
                out.append(host)
    return out


def site_secrets(results, host):
    """The secrets the install's file call returned for `host` ({} when it returned none)."""
    for res in _items(results):
        found = res.get("secrets") or {}
        if host in found:
            return plain(found[host])
    return {}


def site_report(hosts, hostvars, results, cron_result=None):
    """Each site's result from the bulk calls' results and the crontab call's per-key status:
    {host: {'failed': 'msg; msg'} | {'changed': [...]}} (verify_batch reports this through
    set_stats). A cron job added, updated, removed or purged counts as a change of its site."""
    cron_status = plain((cron_result or {}).get("jobs") or {})
    report = {}
    for host in (plain(h) for h in hosts or []):
        failures = site_failures(results, host)
        if failures:
            report[host] = {"failed": "; ".join(failures)}
            continue
        changes = site_changes(results, host)
        if cron_status:
            # A site whose values do not validate has no cron job.
            status = cron_status.get(_site_key(host, hostvars))
            if status in ("added", "updated", "removed", "purged"):
                changes.append("cron job %s" % status)
        report[host] = {"changed": changes}
    return report


def _site_key(host, hostvars):
    """The key of a site's cron job: its uri (the host name when its values do not validate)."""
    try:
        return sites.site_values(host, sites.Vars(hostvars, host))["uri"]
    except Exception:  # noqa: BLE001 pylint: disable=broad-exception-caught
        return host


def site_last_cron(hosts, hostvars, last_runs):
    """{host: {'last_cron': time}} of the sites whose cron job has a recorded run (the
    crontab calls' last_runs, keyed by uri), for the queue runner (hosting_site.last_cron)."""
    runs = plain(last_runs or {})
    report = {}
    for host in (plain(h) for h in hosts or []):
        when = runs.get(_site_key(host, hostvars))
        if isinstance(when, int) and when > 0:
            report[host] = {"last_cron": when}
    return report


def http_commands(service):
    """{'test': argv, 'reload': argv} of a web server: the roles' one default."""
    try:
        return sites.http_commands(plain(service))
    except sites.common.AegirValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """aegir_site_* and aegir_http_commands filters."""

    def filters(self):
        return {
            "aegir_site_servers": site_servers,
            "aegir_site_cron_jobs": site_cron_jobs,
            "aegir_site_failures": site_failures,
            "aegir_site_changes": site_changes,
            "aegir_site_failed_hosts": site_failed_hosts,
            "aegir_site_secrets": site_secrets,
            "aegir_site_report": site_report,
            "aegir_site_last_cron": site_last_cron,
            "aegir_http_commands": http_commands,
        }
