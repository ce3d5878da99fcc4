"""A TCP proxy in front of MariaDB for the fault tests: it can refuse connections, drop them,
hang (stop forwarding, connections stay open), delay replies (all, or those of statements
matching a pattern), cut the link when a query
matching a pattern is sent (an outage starting at that query), and lose the acknowledgement
of a commit (the server commits, the client never hears it).

It reads the MySQL protocol only as far as needed: command packets (sequence id 0) of type
COM_QUERY, to see each connection's statements since its last COMMIT/ROLLBACK.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field

COM_QUERY = 0x03


@dataclass
class _Rule:
    """Lose the reply to the next COMMIT of a transaction with a statement matching `pattern`."""

    pattern: re.Pattern
    times: int = 1
    fired: int = 0
    at: float = 0.0  # when it last fired
    event: threading.Event = field(default_factory=threading.Event)


class _Link:
    def __init__(self, proxy: DBProxy, client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server = socket.create_connection((proxy.target_host, proxy.target_port))
        self.statements: list[bytes] = []
        self.drop_reply = False
        self.delay_reply = 0.0
        self.closed = False
        self._buf = b""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.proxy._links.discard(self)

    def _packets(self, data: bytes):
        self._buf += data
        while len(self._buf) >= 4:
            length = int.from_bytes(self._buf[:3], "little")
            if len(self._buf) < 4 + length:
                return
            seq, payload = self._buf[3], self._buf[4:4 + length]
            self._buf = self._buf[4 + length:]
            if seq == 0 and payload[:1] == bytes([COM_QUERY]):
                yield payload[1:]

    def _hold(self) -> None:
        while self.proxy.hanging and not self.closed:
            time.sleep(0.02)

    def upstream(self) -> None:
        try:
            while not self.closed:
                data = self.client.recv(65536)
                if not data:
                    break
                self._hold()
                for sql in self._packets(data):
                    if self._inspect(sql):
                        return
                self.server.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def _inspect(self, sql: bytes) -> bool:
        """True: the link was cut instead of forwarding this statement."""
        p = self.proxy
        with p._lock:
            cut = p._cut_at
            if cut is not None and cut[0].search(sql):
                p._cut_at = None
                threading.Thread(target=p.outage, args=(cut[1],), daemon=True).start()
                self.close()
                return True
        for pattern, seconds in p._slow:
            if pattern.search(sql):
                self.delay_reply = seconds
        head = sql.lstrip()[:10].upper()
        if head.startswith(b"COMMIT"):
            with p._lock:
                for rule in p._rules:
                    if rule.fired < rule.times and any(rule.pattern.search(s) for s in self.statements):
                        rule.fired += 1
                        rule.at = time.time()
                        rule.event.set()
                        self.drop_reply = True
                        break
            self.statements = []
        elif head.startswith(b"ROLLBACK"):
            self.statements = []
        else:
            self.statements.append(sql)
        return False

    def downstream(self) -> None:
        try:
            while not self.closed:
                data = self.server.recv(65536)
                if not data:
                    break
                if self.drop_reply:
                    break  # committed on the server; the client never hears it
                self._hold()
                if self.delay_reply:
                    time.sleep(self.delay_reply)
                    self.delay_reply = 0.0
                if self.proxy.latency:
                    time.sleep(self.proxy.latency)
                self.client.sendall(data)
        except OSError:
            pass
        finally:
            self.close()


class DBProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 3306):
        self.target_host, self.target_port = target_host, target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.refusing = False
        self.hanging = False
        self.latency = 0.0
        self._links: set[_Link] = set()
        self._rules: list[_Rule] = []
        self._cut_at: tuple[re.Pattern, float] | None = None
        self._slow: list[tuple[re.Pattern, float]] = []
        self.outages: list[tuple[float, float]] = []  # (start, end) of each outage
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True, name="dbproxy").start()

    def url(self, server_url: str) -> str:
        """The same database URL, through the proxy."""
        return re.sub(r"@[^/]+", f"@127.0.0.1:{self.port}", server_url, count=1)

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _addr = self.sock.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                link = _Link(self, client)
            except OSError:
                client.close()
                continue
            self._links.add(link)
            threading.Thread(target=link.upstream, daemon=True).start()
            threading.Thread(target=link.downstream, daemon=True).start()

    def drop_all(self) -> None:
        for link in list(self._links):
            link.close()

    def outage(self, seconds: float) -> None:
        """The database is gone for `seconds`: connections dropped, new ones refused."""
        self.refusing = True
        self.drop_all()
        started = time.time()
        time.sleep(seconds)
        self.refusing = False
        self.outages.append((started, time.time()))

    def cut_at(self, pattern: str, seconds: float) -> None:
        """An outage of `seconds` starting when a statement matching `pattern` is sent."""
        with self._lock:
            self._cut_at = (re.compile(pattern.encode(), re.S), seconds)

    def slow(self, pattern: str, seconds: float) -> None:
        """Delay the reply to every statement matching `pattern` by `seconds`."""
        with self._lock:
            self._slow.append((re.compile(pattern.encode(), re.S), seconds))

    def lose_commit_ack(self, pattern: str, times: int = 1) -> threading.Event:
        """Lose the reply to the next `times` COMMITs of transactions with a statement
        matching `pattern`; the event is set when it happened."""
        rule = _Rule(re.compile(pattern.encode(), re.S), times)
        with self._lock:
            self._rules.append(rule)
        rule.event.at = lambda: rule.at
        return rule.event

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.drop_all()
