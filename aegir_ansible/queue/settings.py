"""The queue settings: one typed dataclass, its fields' defaults and help the documented
ones. The rows of `aegir_ansible_queue_setting` (editable by the frontend) override the
defaults; a missing row means the default."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import select

from aegir_ansible.db.queue_tables import QueueSetting

log = logging.getLogger("aegir.queue")


def _setting(default, help_: str):
    return field(default=default, metadata={"help": help_})


@dataclass(frozen=True)
class Settings:
    enabled: bool = _setting(
        True, "Runners claim tasks only while this is on (off = whole queue paused).")
    concurrency: int = _setting(
        0, "Most tasks running at once over all runners and servers (0 = no global limit).")
    server_concurrency: int = _setting(
        1, "Most runs at once on one server, unless its queue row overrides it.")
    poll_interval: float = _setting(
        1.0, "Seconds between polls for new tasks and cancel requests.")
    task_timeout: int = _setting(
        3600, "Seconds a run may take before it is killed and its tasks fail (0 = none).")
    heartbeat_interval: float = _setting(10.0, "Seconds between a runner's heartbeats.")
    runner_lost_after: float = _setting(
        60.0, "A runner whose heartbeat is older than this is lost: its tasks fail.")
    retry_max_attempts: int = _setting(
        3, "Runs of a task type declared safe to repeat before a failure is final.")
    retry_backoff: float = _setting(
        30.0, "Seconds before the first retry; doubled on each further attempt.")
    batch_size: int = _setting(
        1000, "Most tasks of a batchable type (verify) on one server run as one playbook.")
    shutdown_grace: float = _setting(
        60.0, "On SIGTERM, seconds running tasks get to finish before they are cancelled.")
    kill_grace: float = _setting(
        5.0, "Seconds between SIGTERM to ansible-playbook and SIGKILL of its processes.")
    connect_timeout: int = _setting(
        10, "Seconds ansible waits for a server's SSH connection (and its banner).")
    unreachable_backoff: float = _setting(
        30.0, "Seconds a server found unreachable is not claimed; doubled per further failure.")
    unreachable_backoff_max: float = _setting(600.0, "Longest back-off of an unreachable server.")

    def replace(self, **values) -> Settings:
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: object
    help: str


_TYPES = {"bool": bool, "int": int, "float": float}

SETTINGS: dict[str, Setting] = {
    # f.type is the annotation's text (from __future__ import annotations).
    f.name: Setting(f.name, _TYPES[cast(str, f.type)], f.default, f.metadata["help"])
    for f in dataclasses.fields(Settings)
}


def parse_setting(name: str, raw) -> object:
    spec = SETTINGS[name]
    if spec.type is bool:
        if isinstance(raw, bool):
            return raw
        value = str(raw).strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name} must be true or false, not {raw!r}")
    try:
        value = spec.type(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {spec.type.__name__}, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def load_settings(conn) -> Settings:
    values: dict[str, Any] = {}
    for name, raw in conn.execute(select(QueueSetting.name, QueueSetting.value)):
        if name in SETTINGS:
            try:
                values[name] = parse_setting(name, raw)
            except ValueError:
                log.warning("ignoring bad queue setting %s=%r", name, raw)
    return Settings(**values)
