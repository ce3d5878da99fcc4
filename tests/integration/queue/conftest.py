"""Helpers for the queue tests: a local-connection world, a worker in a thread or a
subprocess, the queue's own small test playbooks (tests/integration/queue/playbooks)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aegir_ansible.db import make_engine, make_sessionmaker
from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend
from aegir_ansible.queue import admin
from aegir_ansible.queue.worker import Worker

PLAYBOOKS = Path(__file__).parent / "playbooks"
ROOT = Path(__file__).resolve().parents[3]

FAST = {"poll_interval": "0.2", "heartbeat_interval": "0.5", "runner_lost_after": "3",
        "retry_backoff": "1", "kill_grace": "3", "shutdown_grace": "30"}


def configure(url: str, **settings) -> None:
    eng = make_engine(url)
    try:
        for k, v in {**FAST, **{k: str(v) for k, v in settings.items()}}.items():
            admin.set_setting(eng, k, v)
    finally:
        eng.dispose()


class World:
    """Servers (local connection), platforms and sites written as hostmaster would."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.Session = make_sessionmaker(self.engine)

    def write(self, fn):
        # On SQLite the write lock is taken at BEGIN (as a claim does): a deferred transaction
        # that reads, then writes while a runner commits, fails at once ("database is locked").
        with self.Session(bind=self.engine.execution_options(sqlite_immediate=True)) as s, s.begin():
            return fn(Frontend(s))

    def server(self, host="web.local", **kw):
        kw.setdefault("local", True)
        kw.setdefault("http", "nginx")
        kw.setdefault("queue_verify", False)
        if kw.pop("with_db", True):
            kw.setdefault("db", "mysql")
            kw.setdefault("db_user", "aegir_root")
            kw.setdefault("db_password", "s3cret-admin-pw")
        return self.write(lambda fe: fe.add_server(host, **kw))

    def platform(self, title, server="server_weblocal", **kw):
        kw.setdefault("queue_verify", False)
        return self.write(lambda fe: fe.add_platform(title, f"/tmp/aegir-q-{title}", server, **kw))

    def site(self, uri, platform, **kw):
        kw.setdefault("queue_install", False)
        return self.write(lambda fe: fe.add_site(uri, platform, **kw))

    def task(self, task_type, target, **args):
        return self.write(lambda fe: fe.add_task(task_type, target, {k: str(v) for k, v in args.items()}))

    def task_row(self, nid):
        with self.Session() as s:
            node = s.get(m.Node, nid)
            return s.get(m.HostingTask, node.vid)

    def status(self, nid):
        return self.task_row(nid).task_status

    def log(self, nid, vid=None):
        with self.Session() as s:
            vid = vid or s.get(m.Node, nid).vid
            return [(t, msg) for t, msg in s.execute(
                select(m.HostingTaskLog.type, m.HostingTaskLog.message)
                .where(m.HostingTaskLog.nid == nid, m.HostingTaskLog.vid == vid)
                .order_by(m.HostingTaskLog.lid))]

    def log_text(self, nid, vid=None):
        return "\n".join(f"[{t}] {msg}" for t, msg in self.log(nid, vid))

    def row(self, model, nid):
        with self.Session() as s:
            return s.get(model, s.get(m.Node, nid).vid)

    def wait_status(self, nid, statuses, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.status(nid) in statuses:
                return self.status(nid)
            time.sleep(0.1)
        raise AssertionError(f"task {nid} still {self.status(nid)} after {timeout}s:\n{self.log_text(nid)}")

    def close(self):
        self.engine.dispose()


@pytest.fixture
def world(db_url):
    configure(db_url)
    w = World(db_url)
    yield w
    w.close()


def run_once(url, **kw):
    eng = make_engine(url)
    try:
        kw.setdefault("playbooks_dir", PLAYBOOKS)
        Worker(eng, once=True, install_signals=False, **kw).run()
    finally:
        eng.dispose()


class ThreadWorker:
    """A daemon-mode worker in a thread of the test process."""

    def __init__(self, url, **kw):
        self.engine = make_engine(url)
        kw.setdefault("playbooks_dir", PLAYBOOKS)
        self.worker = Worker(self.engine, install_signals=False, **kw)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.request_stop(hard=True)
        self.thread.join(timeout=60)
        self.engine.dispose()
        assert not self.thread.is_alive(), "worker did not stop"


def spawn_runner(url, *args, env=None, log_path=None, playbooks=PLAYBOOKS):
    """`aegir queue run` as its own process (for signals)."""
    aegir = Path(sys.executable).parent / "aegir"
    cmd = [str(aegir), "--db", url, "queue", "run",
           "--playbooks", str(playbooks), *args]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=out, stderr=subprocess.STDOUT)


def procs_with(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if text in cmd and state[state.rfind(")") + 2:].split()[0] not in "ZX":
            found.append(int(entry))
    return found


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
