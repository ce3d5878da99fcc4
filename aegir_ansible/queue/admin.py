"""Queue administration used by the CLI (and usable by a frontend): settings, status,
cancel, defer."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.db.queue_tables import QueueRunner, QueueServer, QueueSetting, QueueTask, ServerHealth
from aegir_ansible.validation import InputError

from .manager import JobManager
from .revisions import add_log, release
from .settings import SETTINGS, load_settings, parse_setting
from .sql import target_query, task_rows


def get_settings(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        current = load_settings(conn).as_dict()
        stored = dict(conn.execute(select(QueueSetting.name, QueueSetting.value)).all())
    return [{"name": n, "value": current[n], "default": s.default,
             "source": "table" if n in stored else "default", "help": s.help}
            for n, s in SETTINGS.items()]


def set_setting(engine: Engine, name: str, raw: str) -> object:
    if name not in SETTINGS:
        raise InputError(f"unknown queue setting {name!r} (one of {', '.join(SETTINGS)})")
    try:
        value = parse_setting(name, raw)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    stored = str(int(value)) if isinstance(value, bool) else str(value)
    jm = JobManager(engine)

    def fn(conn):
        done = conn.execute(update(QueueSetting).where(QueueSetting.name == name)
                            .values(value=stored)).rowcount
        if not done:
            conn.execute(insert(QueueSetting).values(name=name, value=stored))

    jm.tx(fn, "set setting")
    return value


def server_nid(engine: Engine, name: str) -> int:
    from aegir_ansible.frontend import Frontend

    with Session(engine) as session:
        return Frontend(session).find(name, types=("server",)).nid


def set_server(engine: Engine, name: str, *, paused: bool | None = None,
               concurrency: int | None = None, clear_concurrency: bool = False) -> None:
    nid = server_nid(engine, name)
    jm = JobManager(engine)
    jm.ensure_server_rows([nid])
    values: dict[str, int | None] = {}
    if paused is not None:
        values["paused"] = int(paused)
    if concurrency is not None:
        if concurrency < 0:
            raise InputError("concurrency must not be negative")
        values["concurrency"] = concurrency
    if clear_concurrency:
        values["concurrency"] = None
    if values:
        jm.tx(lambda conn: conn.execute(update(QueueServer).where(QueueServer.server_nid == nid)
                                        .values(**values)), "server queue")


def status(engine: Engine, failures: int = 3) -> dict:
    """Each server queue: depth (queued, and how many wait for a later time), running
    tasks, last failures; and the runners."""
    now = time.time()
    with engine.connect() as conn:
        settings = load_settings(conn)
        queued = task_rows(conn.execute(target_query(TaskStatus.QUEUED)))
        running = task_rows(conn.execute(target_query(TaskStatus.PROCESSING)))
        claimed = {nid: (runner, at) for nid, runner, at in conn.execute(
            select(QueueTask.nid, QueueTask.runner_id, QueueTask.claimed_at)
            .where(QueueTask.runner_id.is_not(None)))}
        executed = dict(conn.execute(
            select(m.HostingTask.nid, m.HostingTask.executed)
            .join(m.Node, m.Node.vid == m.HostingTask.vid)
            .where(m.HostingTask.task_status == TaskStatus.PROCESSING)).all())
        queues = {nid: (paused, conc) for nid, paused, conc in conn.execute(
            select(QueueServer.server_nid, QueueServer.paused, QueueServer.concurrency))}
        names = dict(conn.execute(select(m.HostingContext.nid, m.HostingContext.name)).all())
        backoff = {nid: (until, error) for nid, until, error in conn.execute(
            select(ServerHealth.server_nid, ServerHealth.backoff_until, ServerHealth.last_error)
            .where(ServerHealth.backoff_until > now))}
        errors = task_rows(conn.execute(
            target_query(TaskStatus.ERROR).order_by(None).order_by(m.HostingTask.nid.desc())
            .limit(200)))
        runners = [dict(r._mapping) for r in conn.execute(
            select(QueueRunner.id, QueueRunner.state, QueueRunner.heartbeat, QueueRunner.servers,
                   QueueRunner.concurrency)
            .where(QueueRunner.state.in_(("running", "stopping", "lost")))
            .order_by(QueueRunner.started))]
    servers = set(queues) | {r.server for r in queued + running if r.server}
    depth = Counter(r.server for r in queued)
    later = Counter(r.server for r in queued if (r.not_before or 0) > now)
    run_by = defaultdict(list)
    for r in running:
        runner, _at = claimed.get(r.nid, (None, None))
        run_by[r.server].append({"nid": r.nid, "type": r.task_type, "target": r.target_name,
                                 "runner": runner or "(not this queue)",
                                 "seconds": int(now - (executed.get(r.nid) or now))})
    fail_by: defaultdict[int | None, list[dict]] = defaultdict(list)
    for r in errors:
        if len(fail_by[r.server]) < failures:
            fail_by[r.server].append({"nid": r.nid, "type": r.task_type, "target": r.target_name})
    rows = []
    for s in sorted(servers, key=lambda x: (x is None, x or 0)):
        paused, conc = queues.get(s, (0, None))
        rows.append({
            "server": names.get(s, f"#{s}") if s is not None else "(no server)",
            "paused": bool(paused), "concurrency": conc if conc is not None else settings.server_concurrency,
            "queued": depth.get(s, 0), "waiting": later.get(s, 0),
            "running": run_by.get(s, []), "last_failures": fail_by.get(s, []),
            # Seconds before an unreachable server's queue is claimed again (0: it is).
            "backoff": round(backoff[s][0] - now, 1) if s in backoff else 0,
            "unreachable": backoff[s][1] if s in backoff else None,
        })
    for runner_row in runners:
        runner_row["heartbeat_age"] = round(now - runner_row.pop("heartbeat"), 1)
    return {"enabled": settings.enabled, "queues": rows, "runners": runners}


def cancel(engine: Engine, nid: int, force: bool = False) -> str:
    """Cancel a task. Queued: marked cancelled at once (warning + "Task was cancelled.",
    as hostmaster does). Running under a runner: the runner is asked to stop it."""
    jm = JobManager(engine)

    def fn(conn):
        row = conn.execute(
            select(m.HostingTask.vid, m.HostingTask.task_status)
            .join(m.Node, m.Node.vid == m.HostingTask.vid)
            .where(m.Node.nid == nid, m.Node.type == "task").with_for_update()
        ).first()
        if row is None:
            raise InputError(f"no task {nid}")
        vid, st = row
        now = int(time.time())
        line = {"vid": vid, "nid": nid, "type": "warning", "message": "Task was cancelled.",
                "error": "", "timestamp": now}
        if st == TaskStatus.QUEUED:
            conn.execute(update(m.HostingTask).where(m.HostingTask.vid == vid)
                         .values(task_status=TaskStatus.WARNING))
            add_log(conn, [line])
            release(conn, nid, "cancelled")
            return "cancelled"
        if st != TaskStatus.PROCESSING:
            raise InputError(f"task {nid} is not queued or running "
                             f"({TaskStatus.label_of(st)})")
        held = conn.execute(select(QueueTask.runner_id).where(QueueTask.nid == nid)).scalar()
        if held:
            conn.execute(update(QueueTask).where(QueueTask.nid == nid).values(cancel_requested=1))
            return "requested"
        if not force:
            raise InputError(f"task {nid} is processing but no queue runner holds it (hostmaster's "
                             "own daemon, or a lost run): use --force to mark it cancelled")
        conn.execute(update(m.HostingTask).where(m.HostingTask.vid == vid)
                     .values(task_status=TaskStatus.WARNING))
        add_log(conn, [line])
        return "cancelled"

    return jm.tx(fn, "cancel")


def task_status(engine: Engine, nid: int) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(m.HostingTask.task_status)
                            .join(m.Node, m.Node.vid == m.HostingTask.vid)
                            .where(m.Node.nid == nid)).scalar()


def defer(engine: Engine, nid: int, not_before: float) -> None:
    """Queue a task for later: it is not claimed before `not_before` (unix time)."""
    jm = JobManager(engine)

    def fn(conn):
        st = conn.execute(select(m.HostingTask.task_status).join(m.Node, m.Node.vid == m.HostingTask.vid)
                          .where(m.Node.nid == nid, m.Node.type == "task")).scalar()
        if st is None:
            raise InputError(f"no task {nid}")
        if st != TaskStatus.QUEUED:
            raise InputError(f"task {nid} is not queued")
        done = conn.execute(update(QueueTask).where(QueueTask.nid == nid)
                            .values(not_before=not_before)).rowcount
        if not done:
            conn.execute(insert(QueueTask).values(nid=nid, not_before=not_before, attempts=0))

    jm.tx(fn, "defer")
