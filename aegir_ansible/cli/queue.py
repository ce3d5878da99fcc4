"""`aegir queue run|status|settings` and the queue's task commands (`aegir task cancel|log|
defer`)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import click
from sqlalchemy.exc import SQLAlchemyError

from aegir_ansible import logs, queries
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.queue import exporter
from aegir_ansible.queue.admin import (
    cancel,
    defer,
    get_settings,
    set_server,
    set_setting,
    status,
    task_status,
)
from aegir_ansible.queue.database import QueueError
from aegir_ansible.queue.worker import Worker, until_reachable
from aegir_ansible.validation import InputError

from .base import (
    BadUsage,
    complete_servers,
    complete_task_ids,
    db_option,
    echo_json,
    fail,
    iso_time,
    json_option,
    main,
    obj,
    print_rows,
    report,
)
from .hosting import task


@main.group()
def queue():
    """The task queue runner (dispatcher)."""

@queue.command("run")
@click.option("--once", is_flag=True,
              help="Run until no task is ready, then exit (status 1 if a task it ran failed).")
@click.option("--server", "servers", multiple=True, metavar="NAME",
              help="Serve only this server's queue (repeat for several).")
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True,
              help="Most runs this runner executes at once.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Most verify tasks of one server run as one playbook "
                   "(default: the batch_size setting).")
@click.option("--playbooks", "playbooks_dir", type=click.Path(file_okay=False, exists=True),
              default=None, help="Folder of <task_type>.yml playbooks "
                                 "(default: $AEGIR_PLAYBOOKS_DIR, else the shipped ones).")
@click.option("--grace", type=float, default=None,
              help="Seconds running tasks get on SIGTERM (default: shutdown_grace setting).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (/metrics).")
@click.option("--metrics-address", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on.")
@click.option("-v", "--verbose", count=True, help="More logging on stderr.")
@click.option("--log-format", type=click.Choice(sorted(logs.FORMATS)), default="logfmt",
              envvar="AEGIR_LOG_FORMAT", show_default=True,
              help="Log lines on stderr: logfmt, or one JSON object per line "
                   "(default: $AEGIR_LOG_FORMAT, else logfmt).")
@db_option
def queue_run(once, servers, concurrency, batch_size, playbooks_dir, grace, metrics_port,
              metrics_address, verbose, log_format):
    """Run queued tasks as playbooks (a long-running daemon unless --once)."""
    logs.setup(verbose, log_format)
    c = obj()
    try:
        until_reachable(c.require_schema)  # a runner started before its database waits
    except SQLAlchemyError as exc:  # one it cannot wait out (e.g. access denied)
        fail(f"database: {str(exc).splitlines()[0]}")
    if metrics_port is not None:
        try:
            exporter.serve(c.engine, metrics_port, metrics_address)
        except OSError as exc:
            fail(f"cannot serve metrics on {metrics_address}:{metrics_port}: {exc.strerror}")
    try:
        rc = Worker(c.engine, servers=list(servers), concurrency=concurrency, once=once,
                    playbooks_dir=playbooks_dir, batch_size=batch_size, grace=grace).run()
    except QueueError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:  # one the runner cannot wait out (e.g. access denied)
        fail(f"database: {str(exc).splitlines()[0]}")
    if rc:
        click.get_current_context().exit(rc)

@queue.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@db_option
def queue_status(as_json):
    """Each server queue's depth, running tasks and last failures; the runners."""
    c = obj()
    c.require_schema()
    st = status(c.engine)
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
        return
    click.echo(f"queue {'enabled' if st['enabled'] else 'DISABLED (enabled=0)'}")
    rows = []
    for q in st["queues"]:
        rows.append({
            "server": q["server"], "paused": "yes" if q["paused"] else "",
            "concurrency": q["concurrency"], "queued": q["queued"],
            "later": q["waiting"],
            "backoff": f"{q['backoff']:.0f}s" if q["backoff"] else "",
            "running": " ".join(f"{r['nid']}:{r['type']}@{r['target']}({r['seconds']}s)"
                                for r in q["running"]),
            "last_failures": " ".join(f"{f['nid']}:{f['type']}@{f['target']}"
                                      for f in q["last_failures"]),
        })
    print_rows(rows, False)
    click.echo("runners:")
    print_rows([{"id": r["id"], "state": r["state"], "heartbeat_age": r["heartbeat_age"],
                 "concurrency": r["concurrency"], "servers": r["servers"] or "all"}
                for r in st["runners"]], False)

@queue.command("settings")
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
              help="Change a global setting (repeat).")
@click.option("--server", "server_name", metavar="NAME", shell_complete=complete_servers,
              help="Change this server's queue (with --pause/--resume/--server-concurrency).")
@click.option("--pause/--resume", "pause", default=None, help="Pause or resume --server's queue.")
@click.option("--server-concurrency", type=int, default=None,
              help="Concurrency of --server's queue (-1: back to the global setting).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@db_option
def queue_settings(assignments, server_name, pause, server_concurrency, as_json):
    """Show the queue settings (with their defaults), or change them."""
    c = obj()
    c.require_schema()
    for a in assignments:
        if "=" not in a:
            raise BadUsage(f"--set {a!r} is not NAME=VALUE")
        name, value = a.split("=", 1)
        try:
            set_setting(c.engine, name.strip(), value.strip())
        except InputError as exc:  # an unknown name or a bad value: bad usage
            raise BadUsage(str(exc)) from None
    if (pause is not None or server_concurrency is not None) and not server_name:
        raise BadUsage("--pause/--resume/--server-concurrency need --server NAME")
    if server_name:
        set_server(c.engine, server_name, paused=pause,
                   concurrency=server_concurrency if (server_concurrency or 0) >= 0 else None,
                   clear_concurrency=server_concurrency is not None and server_concurrency < 0)
    rows = get_settings(c.engine)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        print_rows([{k: r[k] for k in ("name", "value", "default", "source")} for r in rows],
                   False)

@task.command("cancel")
@click.argument("nid", type=int, shell_complete=complete_task_ids)
@click.option("--wait", "wait", type=float, default=None, metavar="SECONDS",
              help="Wait up to this long until a running task has stopped.")
@click.option("--force", is_flag=True,
              help="Mark a processing task no queue runner holds as cancelled.")
@json_option
@db_option
def task_cancel(nid, wait, force, as_json):
    """Cancel a queued task, or stop a running one (and every process it started).

    Exit status 1 when --wait ran out with the task still running."""
    c = obj()
    c.require_schema()
    what = cancel(c.engine, nid, force=force)
    if what == "cancelled":
        report(as_json, f"task {nid} cancelled", nid=nid, result="cancelled",
               status=TaskStatus.WARNING.label)
        return
    if not as_json:
        click.echo(f"task {nid}: cancel requested; its runner stops it")
    if wait:
        deadline = time.time() + wait
        while time.time() < deadline:
            st = task_status(c.engine, nid)
            if st != TaskStatus.PROCESSING:
                report(as_json, f"task {nid} stopped: {TaskStatus.label_of(st)}", nid=nid,
                       result="stopped", status=TaskStatus.label_of(st))
                return
            time.sleep(0.5)
        fail(f"task {nid} still running after {wait:g} s")
    if as_json:
        echo_json({"nid": nid, "result": "requested", "status": TaskStatus.PROCESSING.label})

@task.command("log")
@click.argument("nid", type=int, shell_complete=complete_task_ids)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task ends.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines for scripts.")
@db_option
def task_log(nid, follow, as_json):
    """Print a task's log (its current revision, as the frontend shows it).

    With --follow, the exit status is 1 when the task ended in error."""
    c = obj()
    c.require_schema()
    if task_status(c.engine, nid) is None:
        raise InputError(f"no task {nid}")
    last = 0
    while True:
        # The status before the lines: the closing lines commit with the final status, so a
        # final status read here means the lines read next include them.
        st = task_status(c.engine, nid)
        with c.session() as s:
            lines = queries.task_log(s, nid, after_lid=last)
        for line in lines:
            last = line["lid"]
            if as_json:
                click.echo(json.dumps({**line, "timestamp": iso_time(line["timestamp"])}))
            else:
                click.echo(f"{_clock(line['timestamp'])} [{line['type']}] {line['message']}")
        if not follow:
            return
        if st not in (TaskStatus.QUEUED, TaskStatus.PROCESSING):
            if st == TaskStatus.ERROR:
                fail(f"task {nid} failed")
            return
        time.sleep(1)


def _clock(ts: int) -> str:
    """A log line's local time: the clock time today, else with its date."""
    when = datetime.fromtimestamp(ts)
    if when.date() == datetime.now().date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M:%S")

@task.command("defer")
@click.argument("nid", type=int, shell_complete=complete_task_ids)
@click.option("--delay", type=float, default=None, help="Seconds from now.")
@click.option("--at", "at", default=None, help="Local time, ISO format (2030-01-31T02:00).")
@json_option
@db_option
def task_defer(nid, delay, at, as_json):
    """Queue a task for later: it is not run before the given time."""
    if (delay is None) == (at is None):
        raise BadUsage("give exactly one of --delay and --at")
    if at is not None:
        try:
            when = datetime.fromisoformat(at).timestamp()
        except ValueError:
            raise BadUsage(f"--at {at!r} is not an ISO date/time") from None
    else:
        when = time.time() + delay
    c = obj()
    c.require_schema()
    defer(c.engine, nid, when)
    report(as_json, f"task {nid} not before {datetime.fromtimestamp(when).isoformat(timespec='seconds')}",
           nid=nid, not_before=when)
