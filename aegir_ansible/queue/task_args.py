"""Task arguments resolved for the playbooks of backup-delete, restore, migrate and clone.

Hostmaster sends node ids and backup ids (hosting_task_arguments); playbooks have no database,
so before a run the queue turns them into the values the aegir_site role reads, as extra host
variables of the task's target:

| task | arguments | host variables |
|---|---|---|
| restore | `bid` | `aegir_task_backup_file`, `aegir_task_backup_server` (context name of the server it is on) |
| backup-delete | `<bid> = <filename>` (value `0` = not selected) | `aegir_task_backup_files`: [{bid, file, server}] |
| migrate | `target_platform` (nid), `new_db_server` (nid), `new_uri` | `aegir_task_target_platform`, `aegir_task_new_db_server` (context names), `aegir_task_new_uri` |
| clone | the same plus `aliases`, `redirection` | the same plus `aegir_task_new_aliases` (list), `aegir_task_new_redirection` |

Backups are looked up among the task's own site's rows only (the filenames in the arguments
are not trusted); uris go through the same rules as the CLI (validation.py). A bad argument
raises ArgumentError, which fails the task with its message before anything runs.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from aegir_ansible.db import models as m
from aegir_ansible.validation import InputError, normalize_hostname

from .types import TaskRow


class ArgumentError(ValueError):
    pass


def _context(session: Session, nid_text: str, what: str, types: tuple[str, ...]) -> str:
    from aegir_ansible.frontend import Frontend

    if not str(nid_text).strip().isdigit():
        raise ArgumentError(f"{what} {nid_text!r} is not a node id")
    try:
        ctx = Frontend(session).find(int(nid_text), types=types)
    except InputError as exc:
        raise ArgumentError(f"{what} {nid_text}: {exc}") from None
    return ctx.name


def _server_name(session: Session, nid: int) -> str:
    return session.execute(select(m.HostingContext.name).where(m.HostingContext.nid == nid)).scalar() or ""


def _uri(value: str, what: str) -> str:
    try:
        return normalize_hostname(value, what)
    except InputError as exc:
        raise ArgumentError(str(exc)) from None


def resolve(session: Session, task: TaskRow, args: dict[str, str]) -> dict:
    """Extra host variables for the task's target; ArgumentError on a bad argument."""
    tt = task.task_type
    if task.target_type != "site" or tt not in ("restore", "backup-delete", "migrate", "clone"):
        return {}
    if tt == "restore":
        bid = (args.get("bid") or "").strip()
        if not bid.isdigit():
            raise ArgumentError("restore needs the backup to restore (argument bid)")
        row = session.execute(select(m.HostingSiteBackup).where(
            m.HostingSiteBackup.bid == int(bid), m.HostingSiteBackup.site == task.rid)).scalar()
        if row is None or not row.filename:
            raise ArgumentError(f"backup {bid} is not a backup of this site")
        return {"aegir_task_backup_file": row.filename,
                "aegir_task_backup_server": _server_name(session, row.web_server)}
    if tt == "backup-delete":
        bids = sorted(int(k) for k, v in args.items()
                      if str(k).isdigit() and (v or "0").strip() not in ("0", ""))
        if not bids:
            raise ArgumentError("no backup was selected for deletion")
        rows = session.execute(select(m.HostingSiteBackup).where(
            m.HostingSiteBackup.bid.in_(bids), m.HostingSiteBackup.site == task.rid)).scalars().all()
        missing = sorted(set(bids) - {r.bid for r in rows})
        if missing:
            raise ArgumentError(f"backups {', '.join(map(str, missing))} are not backups of this site")
        return {"aegir_task_backup_files": [
            {"bid": r.bid, "file": r.filename or "", "server": _server_name(session, r.web_server)}
            for r in rows]}
    # migrate, clone
    out: dict = {}
    platform = (args.get("target_platform") or "").strip()
    if platform:
        out["aegir_task_target_platform"] = _context(session, platform, "target platform", ("platform",))
    elif tt == "migrate":
        raise ArgumentError("migrate needs a target platform (argument target_platform)")
    db_server = (args.get("new_db_server") or "").strip()
    if db_server and db_server != "0":
        name = _context(session, db_server, "database server", ("server",))
        has_db = session.execute(
            select(m.HostingService.service)
            .join(m.Node, m.Node.vid == m.HostingService.vid)
            .join(m.HostingContext, m.HostingContext.nid == m.Node.nid)
            .where(m.HostingContext.name == name, m.HostingService.service == "db")).first()
        if not has_db:
            raise ArgumentError(f"server {name} has no database service")
        out["aegir_task_new_db_server"] = name
    current = session.execute(select(m.Node.title).where(m.Node.nid == task.rid)).scalar() or ""
    new_uri = (args.get("new_uri") or "").strip()
    if tt == "clone" and not new_uri:
        raise ArgumentError("clone needs a new uri (argument new_uri)")
    if new_uri:
        new_uri = _uri(new_uri, "new uri")
        if new_uri != current or tt == "clone":
            from aegir_ansible.frontend import Frontend

            owner = Frontend(session).site_owning([new_uri]).get(new_uri)
            taken = session.execute(select(m.HostingContext.nid)
                                    .where(m.HostingContext.name == new_uri)).first()
            if (owner and (owner != current or tt == "clone")) or taken:
                raise ArgumentError(f"uri {new_uri} is already used by site {owner or new_uri}")
        out["aegir_task_new_uri"] = new_uri
    if tt == "clone":
        aliases = []
        for a in re.split(r"[\s,]+", args.get("aliases") or ""):
            if a:
                a = _uri(a, "alias")
                if a != out.get("aegir_task_new_uri") and a not in aliases:
                    aliases.append(a)
        if aliases:  # a clone's names are its own: no live site (the source either) has them
            from aegir_ansible.frontend import Frontend

            owners = Frontend(session).site_owning(aliases)
            if owners:
                raise ArgumentError("; ".join(f"alias {a} is already used by site {owners[a]}"
                                              for a in aliases if a in owners))
        redirection = (args.get("redirection") or "").strip()
        if redirection in ("0",):
            redirection = ""
        if redirection:
            redirection = _uri(redirection, "redirection")
            if redirection != out["aegir_task_new_uri"] and redirection not in aliases:
                raise ArgumentError(f"redirection target {redirection} is neither the new uri nor an alias")
        out["aegir_task_new_aliases"] = aliases
        out["aegir_task_new_redirection"] = redirection
    return out
