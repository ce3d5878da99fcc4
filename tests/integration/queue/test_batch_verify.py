"""Coalesced site verify through the runner with the real playbooks (playbooks/verify_batch.yml):
one run for the batch, no task per site host, each task its own outcome and log; one failing
site fails only its own task; a second verify reports every task unchanged."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest
from sqlalchemy import select

from aegir_ansible import paths
from aegir_ansible.db import init_schema, make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend
from aegir_ansible.queue import admin
from aegir_ansible.queue.worker import Worker

REAL = paths.playbooks_dir()

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not (REAL / "verify_batch.yml").is_file(),
                                 reason="playbooks/verify_batch.yml is not there")]


class Front:
    def __init__(self, url):
        self.engine = make_engine(url)
        init_schema(self.engine)
        for k, v in {"poll_interval": "0.2", "heartbeat_interval": "0.5",
                     "retry_max_attempts": "1"}.items():
            admin.set_setting(self.engine, k, v)
        self.Session = make_sessionmaker(self.engine)

    def write(self, fn):
        with self.Session() as s, s.begin():
            return fn(Frontend(s))

    def run_queue(self):
        Worker(self.engine, once=True, install_signals=False, playbooks_dir=REAL).run()

    def status(self, nid):
        with self.Session() as s:
            return s.get(m.HostingTask, s.get(m.Node, nid).vid).task_status

    def log(self, nid) -> str:
        with self.Session() as s:
            vid = s.get(m.Node, nid).vid
            return "\n".join(f"[{t}] {msg}" for t, msg in s.execute(
                select(m.HostingTaskLog.type, m.HostingTaskLog.message)
                .where(m.HostingTaskLog.vid == vid).order_by(m.HostingTaskLog.lid)))

    def site_row(self, name):
        with self.Session() as s:
            node = s.get(m.Node, Frontend(s).find(name, types=("site",)).nid)
            row = s.get(m.HostingSite, node.vid)
            s.expunge_all()
            return row


def test_batched_verify_one_run_own_outcomes(fresh_servers, test_db_server, make_platform,
                                             run_playbook, tmp_path):
    server, db = fresh_servers["nginx"], test_db_server
    fe = Front(f"sqlite:///{tmp_path / 'aegir.sqlite'}")
    tag = secrets.token_hex(3)
    sites = [f"b{tag}-{i}.batch.example.test" for i in range(3)]
    try:
        fe.write(lambda f: f.add_server(
            "batch.example.test", name="server_batch", http=server.http_service, db="mysql",
            db_user=db.admin_user, db_password=db.admin_password, address=server.address,
            ssh_user="root", ssh_private_key_file=str(server.ssh_private_key),
            aegir_root=server.aegir_root, script_user=server.script_user,
            web_group=server.web_group, http_listen_address=server.address,
            http_test_cmd=list(server.http_test_cmd), http_reload_cmd=list(server.http_reload_cmd),
            php_fastcgi=server.php_fastcgi, db_grant_host=server.db_grant_host, db_host=db.host,
            queue_verify=True))
        root = make_platform(server, "batch")
        fe.write(lambda f: f.add_platform("batch", root, "server_batch", name="platform_batch",
                                          queue_verify=True))
        fe.run_queue()  # server verify, then the platform verify it queues
        fe.run_queue()
        for uri in sites:
            fe.write(lambda f, uri=uri: f.add_site(uri, "platform_batch", queue_install=False,
                                                   status=m.SITE_ENABLED))
        # The sites exist on the server without an install (no database): one batch verify
        # allowed to create the settings.php secret.
        url = f"sqlite:///{tmp_path / 'aegir.sqlite'}"
        run_playbook("playbooks/verify_batch.yml", REAL / "aegir_inventory.py", limit="server_batch",
                     extra_vars={"_aegir_site_install": True, "aegir_batch_sites": sites},
                     env={"AEGIR_DB_URL": url}).assert_ok()
        for uri in sites:
            assert f"# aegir-cron: {uri}" in server.crontab()

        # Break the last site: without its settings.php it is not installed.
        broken = os.path.join(root, "sites", sites[2], "settings.php")
        os.chmod(broken, 0o600)
        os.unlink(broken)
        tasks = [fe.write(lambda f, uri=uri: f.add_task("verify", uri)) for uri in sites]
        fe.run_queue()
        for nid, uri in zip(tasks[:2], sites[:2]):
            log = fe.log(nid)
            assert fe.status(nid) == m.TASK_SUCCESS, log
            assert "Running playbook verify_batch.yml" in log and "together with 2 other" in log
            assert f"Summary for {uri}: ok=1" in log, log
            assert sites[2] not in log.replace(f"Summary for {sites[2]}", ""), log
        bad_log = fe.log(tasks[2])
        assert fe.status(tasks[2]) == m.TASK_ERROR, bad_log
        assert "no db_password found for" in bad_log and f"failed: [{sites[2]}]" in bad_log
        assert fe.site_row(sites[2]).verified == 0
        assert fe.site_row(sites[0]).verified > 0

        # Lost cron jobs: the next batch restores them and says so, per task.
        subprocess.run(["crontab", "-r", "-u", server.script_user], check=True)
        fixed = [fe.write(lambda f, uri=uri: f.add_task("verify", uri)) for uri in sites[:2]]
        fe.run_queue()
        for nid, uri in zip(fixed, sites):
            log = fe.log(nid)
            assert fe.status(nid) == m.TASK_SUCCESS, log
            assert f"Summary for {uri}: ok=1 changed=1 failures=0" in log, log
            assert f"# aegir-cron: {uri}" in server.crontab()
        assert f"# aegir-cron: {sites[2]}" not in server.crontab()

        # Then a verify of the healthy sites: every task unchanged.
        again = [fe.write(lambda f, uri=uri: f.add_task("verify", uri)) for uri in sites[:2]]
        fe.run_queue()
        for nid, uri in zip(again, sites):
            log = fe.log(nid)
            assert fe.status(nid) == m.TASK_SUCCESS, log
            assert f"Summary for {uri}: ok=1 changed=0 failures=0" in log, log
            assert f"ok: [{uri}]" in log
    finally:
        with fe.Session() as s:
            names = [r.db_name for r in s.execute(select(m.HostingSite)).scalars() if r.db_name]
        for name in names:
            try:
                db.drop_database(name)
            except Exception:  # noqa: BLE001
                pass
            for host in db.user_hosts(name):
                try:
                    db.drop_user(name, host)
                except Exception:  # noqa: BLE001
                    pass
        fe.engine.dispose()
