"""A real ACME server for the tests: Debian's `pebble` (Let's Encrypt's test CA) on loopback,
with a tiny DNS server so that its validation authority resolves the test sites' names to the
harness' web server addresses and validates HTTP-01 challenges for real on their port 80.

No PEBBLE_VA_ALWAYS_VALID: a challenge passes only if the site's vhost serves the token.
PEBBLE_VA_NOSLEEP and PEBBLE_WFE_NONCEREJECT=0 only remove Pebble's artificial delays and
random nonce rejections. Everything lives under the slot directory, so a leftover of a killed
session is found by its command line and ended by pid (servers.clean_leftovers).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import urllib.request
from pathlib import Path

from . import procs

PEBBLE = "/usr/bin/pebble"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class DnsServer:
    """A minimal authoritative UDP DNS responder: A queries for the names in `names` answer their
    address; other types of those names answer no records; unknown names answer NXDOMAIN."""

    def __init__(self, address: str = "127.0.0.1"):
        self.names: dict[str, str] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.address = f"{address}:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="harness-dns", daemon=True)
        self._stopping = False

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stopping:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer(query)
            except (ValueError, IndexError, struct.error):
                continue
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                return

    def answer(self, query: bytes) -> bytes:
        qid, flags, qdcount = struct.unpack("!HHH", query[:6])
        if qdcount != 1:
            raise ValueError("one question expected")
        labels, pos = [], 12
        while query[pos]:
            length = query[pos]
            labels.append(query[pos + 1:pos + 1 + length].decode("ascii").lower())
            pos += 1 + length
        qtype, _qclass = struct.unpack("!HH", query[pos + 1:pos + 5])
        question = query[12:pos + 5]
        name = ".".join(labels)
        address = self.names.get(name)
        rd = flags & 0x0100
        answers = b""
        if address is None:
            rcode, count = 3, 0
        elif qtype == 1:
            rcode, count = 0, 1
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + socket.inet_aton(address)
        else:
            rcode, count = 0, 0
        header = struct.pack("!HHHHHH", qid, 0x8400 | rd | 0x0080 | rcode, 1, count, 0, 0)
        return header + question + answers


class AcmeServer:
    """Pebble with its own TLS certificate, config and DNS server, under <slot dir>/pebble."""

    def __init__(self, base: Path, http_port: int = 80):
        self.dir = base / "pebble"
        self.http_port = http_port
        self.dns = DnsServer()
        self.port = free_port()
        self.management_port = free_port()
        self.directory_url = f"https://127.0.0.1:{self.port}/dir"
        self.root_file = self.dir / "pebble-root.pem"
        self.log = self.dir / "pebble.log"
        self._proc: subprocess.Popen | None = None

    def start(self) -> AcmeServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        key, cert = self.dir / "wfe-key.pem", self.dir / "wfe-cert.pem"
        procs.run_checked(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)], "pebble TLS certificate")
        config = self.dir / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": 5001,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}))
        self.dns.start()
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [PEBBLE, "-config", str(config), "-dnsserver", self.dns.address],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.dir, start_new_session=True)
        procs.wait_until(lambda: procs.port_open("127.0.0.1", self.port)
                         and procs.port_open("127.0.0.1", self.management_port), 20, "pebble")
        self.root_file.write_text(self.root_pem())
        return self

    def _get(self, url: str) -> str:
        ctx = ssl.create_default_context(cafile=str(self.dir / "wfe-cert.pem"))
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            return resp.read().decode()

    def root_pem(self) -> str:
        """The root certificate of the CA that signs the issued certificates."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            procs.kill_tree(self._proc.pid)
            self._proc.wait(timeout=5)
            self._proc = None
        self.dns.stop()
