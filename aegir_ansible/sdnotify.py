"""systemd's notification protocol (sd_notify(3)), for `Type=notify` units: readiness,
status text, stopping, and watchdog keep-alives, as datagrams on $NOTIFY_SOCKET.

Without $NOTIFY_SOCKET (not started by systemd, or a unit without notify access) every
call does nothing. The watchdog interval comes from $WATCHDOG_USEC (set by `WatchdogSec=`),
for this process only ($WATCHDOG_PID); keep-alives are sent at half of it at most.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger("aegir.sdnotify")


def _address(value: str) -> str | None:
    if value.startswith("@"):  # an abstract socket
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock:... and others are not supported here


def watchdog_usec(env: Mapping[str, str] = os.environ) -> int | None:
    """The watchdog timeout systemd expects keep-alives within (microseconds), or None."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


class Notifier:
    """One process's channel to systemd (thread-safe). `watchdog()` may be called as often
    as the caller's loop turns: it sends a keep-alive every quarter of the timeout at most,
    so a loop that stalls for three quarters of it is what makes systemd act."""

    def __init__(self, env: Mapping[str, str] = os.environ):
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%s: unsupported address; no notifications to systemd", raw)
        usec = watchdog_usec(env) if self.address else None
        # Keep-alives at least every half of the timeout (sd_watchdog_enabled(3)'s advice).
        self.watchdog_interval = usec / 2e6 if usec else None
        self._last_ping = 0.0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `FIELD=value` lines in one datagram; False if not sent."""
        if self.address is None:
            return False
        payload = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self.address)
                return True
            except OSError as exc:
                log.debug("sd_notify %s: %s", fields, exc)
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                return False

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            fields.append(f"STATUS={status}")
        return self.send(*fields)

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self, now: float | None = None) -> bool:
        """A keep-alive, unless one was sent within half the watchdog timeout."""
        if self.watchdog_interval is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_interval / 2 and self._last_ping:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


_process: Notifier | None = None


def notifier() -> Notifier:
    """This process's notifier (from the environment at first use)."""
    global _process
    if _process is None:
        _process = Notifier()
    return _process
