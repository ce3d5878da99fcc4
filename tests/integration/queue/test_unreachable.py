"""Servers that cannot be reached: bounded connection time, and a per-server back-off so
that a server found unreachable stops taking slots for a while (the healthy servers' share
of the runner is measured in benchmarks/, scenario bad-servers)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import update

from aegir_ansible.db import models as m
from aegir_ansible.db.queue_tables import ServerHealth
from aegir_ansible.queue.manager import JobManager

from .conftest import ThreadWorker, configure, run_once, wait_for


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Silent:
    """A TCP port that accepts connections and never says a word (a hung sshd)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def remote_server(world, name: str, port: int, sites: list[str]) -> int:
    """A server reached over SSH at 127.0.0.1:port, a platform on it, these sites. (Their
    tasks get x=... so that the test playbook runs a module on the host: it connects.)"""
    world.server(f"{name}.local", local=False, address="127.0.0.1", ssh_port=port, with_db=False)
    world.platform(f"P{name}", f"server_{name}local")
    for uri in sites:
        world.site(uri, f"platform_P{name}")
    return world.write(lambda fe: fe.find(f"server_{name}local").nid)


def health(world, server: int):
    with world.Session() as s:
        return s.get(ServerHealth, server)


def test_an_unreachable_server_is_not_claimed_during_its_backoff(world):
    w = world
    configure(w.url, unreachable_backoff=600)
    w.server("web.local")
    down = remote_server(w, "down", refused_port(), ["d1.test", "d2.test"])
    w.platform("P1", "server_weblocal")
    w.site("a.test", "platform_P1")
    t1 = w.task("install", "d1.test", x="connect")
    run_once(w.url)
    assert w.status(t1) == m.TASK_ERROR
    assert "UNREACHABLE" in w.log_text(t1).upper()
    row = health(w, down)
    assert row.failures == 1 and row.backoff_until > time.time() + 500
    assert "d1.test" in row.last_error
    t2, t3 = w.task("install", "d2.test", x="connect"), w.task("install", "a.test")
    run_once(w.url)
    assert w.status(t3) == m.TASK_SUCCESS
    assert w.status(t2) == m.TASK_QUEUED  # not claimed while the server backs off
    # The back-off over (as if 600 s had passed): the server takes its slot again.
    with w.Session() as s, s.begin():
        s.execute(update(ServerHealth).where(ServerHealth.server_nid == down).values(backoff_until=0))
    jm = JobManager(w.engine)
    runs = jm.claim("r1", 4, jm.settings())
    assert [t.nid for r in runs for t in r.tasks] == [t2]


def test_backoff_doubles_and_ends_when_the_server_answers(world):
    w = world
    configure(w.url, unreachable_backoff=10, unreachable_backoff_max=25)
    w.server("web.local")
    server = w.write(lambda fe: fe.find("server_weblocal").nid)
    jm = JobManager(w.engine)
    settings = jm.settings()
    spans = []
    for _ in range(3):
        t0 = time.time()
        spans.append(round(jm.server_reached(server, "unreachable: x", settings) - t0))
    assert spans == [10, 20, 25]
    assert health(w, server).failures == 3
    assert jm.server_reached(server, None, settings) == 0
    row = health(w, server)
    assert row.failures == 0 and row.backoff_until == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_hung_server_holds_one_slot_for_the_connect_timeout_then_backs_off(world):
    """SSH accepts and never answers: its task is unreachable after `connect_timeout`, it
    held only its server's slot meanwhile (the healthy server's tasks ran), and the hung
    server's next task waits for the end of the back-off instead of hanging again."""
    w = world
    configure(w.url, connect_timeout=2, unreachable_backoff=600)
    silent = Silent()
    try:
        w.server("web.local")
        hung = remote_server(w, "hung", silent.port, ["h1.test", "h2.test"])
        w.platform("P1", "server_weblocal")
        w.site("a.test", "platform_P1")
        w.site("b.test", "platform_P1")
        h1, h2 = w.task("install", "h1.test", x="connect"), w.task("install", "h2.test", x="connect")
        ok = [w.task("install", "a.test"), w.task("install", "b.test")]
        with ThreadWorker(w.url, concurrency=4):
            wait_for(lambda: silent.held, 60, "the hung server's connection")
            for t in ok:
                w.wait_status(t, (m.TASK_SUCCESS,), 60)
            w.wait_status(h1, (m.TASK_ERROR,), 60)
            assert w.status(h2) == m.TASK_QUEUED
            time.sleep(1)  # a few claim rounds: the server backs off
            assert w.status(h2) == m.TASK_QUEUED
        assert "UNREACHABLE" in w.log_text(h1).upper()
        assert health(w, hung).failures == 1
    finally:
        silent.close()
