"""The frontend's side of an outcome: the entity updates hostmaster's
`hook_post_hosting_TYPE_task()` / `hook_hosting_TYPE_task_rollback()` would make, written in
the outcome's transaction (outcome.py).

A table-driven registry: `@on(object_type, task_type, when)` adds a hook; `when` is "success"
(the task succeeded, with or without warnings) or "failure". A hook changes only its own
target's rows (and what it queues).

A clone that cannot be recorded is marked for removal (`TaskResult.rollback`): the task is
failed in the database here, and the worker runs playbooks/clone-rollback.yml.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from aegir_ansible import packages as pk
from aegir_ansible.db import models as m
from aegir_ansible.db.models import TaskStatus
from aegir_ansible.tasks import DRUSH_TASK_TYPES

from .database import is_transient
from .revisions import add_log, log_row
from .types import TaskResult, TaskRow

log = logging.getLogger("aegir.queue")

HOOKS: dict[tuple[str, str, str], list] = defaultdict(list)


def on(object_type: str, task_type: str, when: str = "success"):
    def register(fn):
        HOOKS[(object_type, task_type, when)].append(fn)
        return fn

    return register


class TargetCache:
    """The targets of a chunk of outcomes, read for all of them at once on first use: their
    current revision, and any column a hook reads (`HookContext.current`). A batch's tasks
    have one target each, and a hook changes only its own target's rows."""

    def __init__(self, conn, rids: list[int]):
        self.conn, self.rids = conn, rids
        self._vids: dict[int, int] | None = None
        self._columns: dict[tuple, dict] = {}

    def vid(self, rid: int) -> int | None:
        if self._vids is None:
            self._vids = dict(self.conn.execute(
                select(m.Node.nid, m.Node.vid).where(m.Node.nid.in_(self.rids))).all())
        return self._vids.get(rid)

    def current(self, column, rid: int):
        key = (column.class_, column.key)
        if key not in self._columns:
            vids = [v for v in (self.vid(r) for r in self.rids) if v is not None]
            self._columns[key] = dict(self.conn.execute(
                select(column.class_.vid, column).where(column.class_.vid.in_(vids))).all())
        return self._columns[key].get(self.vid(rid))


@dataclass
class HookContext:
    conn: Connection
    task: TaskRow
    result: TaskResult
    now: int
    cache: TargetCache | None = None

    @property
    def target_vid(self) -> int | None:
        if self.cache is not None:
            return self.cache.vid(self.task.rid)
        return self.conn.execute(select(m.Node.vid).where(m.Node.nid == self.task.rid)).scalar()

    def update_target(self, model, **values) -> None:
        """Update the target's current revision row (one statement: the revision is read
        in the update, as it may have changed while the task ran)."""
        current = select(m.Node.vid).where(m.Node.nid == self.task.rid).scalar_subquery()
        self.conn.execute(update(model).where(model.vid == current).values(**values))

    def current(self, column):
        if self.cache is not None:
            return self.cache.current(column, self.task.rid)
        vid = self.target_vid
        return self.conn.execute(select(column).where(column.class_.vid == vid)).scalar()

    def remove_context(self) -> None:
        self.conn.execute(delete(m.HostingContext).where(m.HostingContext.nid == self.task.rid))


# -- sites -------------------------------------------------------------------------------

def _db_name(ctx: HookContext) -> dict:
    """The db name the run used, when the site has none recorded yet."""
    used = ctx.result.result.get("db_name") or ctx.result.facts.get("aegir_site_db_name")
    if used and not ctx.current(m.HostingSite.db_name):
        return {"db_name": str(used)[:64]}
    return {}


def record_site_db(conn, site_nid: int, db_server: int | None, result: dict, now: int) -> None:
    """Record the database and user a run ensured for a site (aegir_db reports db_name,
    db_user, db_hosts) as the site's own: what a later delete may drop, and where."""
    import json

    from aegir_ansible.db.backend import SiteDatabase

    name, hosts = result.get("db_name"), result.get("db_hosts")
    if not name or not db_server or not isinstance(hosts, list):
        return
    other = conn.execute(select(SiteDatabase.nid).where(
        SiteDatabase.db_server == db_server, SiteDatabase.db_name == str(name),
        SiteDatabase.nid != site_nid)).scalar()
    if other is not None:  # refused before the run; never move another site's record
        log.warning("database %s is recorded for site %s: not recorded for %s", name, other, site_nid)
        return
    conn.execute(delete(SiteDatabase).where(SiteDatabase.nid == site_nid))
    conn.execute(insert(SiteDatabase).values(
        nid=site_nid, db_server=db_server, db_name=str(name)[:64],
        db_user=str(result.get("db_user") or name)[:80],
        hosts=json.dumps(sorted({str(h) for h in hosts})), created=now))


def record_site_names(conn, site_nid: int, names) -> None:
    """Record the host names a site was just served under (its uri and aliases as the run had
    them): it keeps them if another site's row claims one later."""
    from aegir_ansible.db.backend import SiteHostName

    names = sorted({str(n).lower() for n in names if n})
    conn.execute(delete(SiteHostName).where(SiteHostName.nid == site_nid))
    if not names:
        return
    others = set(conn.execute(select(SiteHostName.name).where(
        SiteHostName.name.in_(names), SiteHostName.nid != site_nid)).scalars())
    rows = [{"name": n, "nid": site_nid} for n in names if n not in others]
    if rows:
        conn.execute(insert(SiteHostName), rows)


def _served_names(ctx) -> list:
    facts = ctx.result.facts
    return [facts.get("aegir_site_uri"), *(facts.get("aegir_site_aliases") or [])]


@on("site", "install")
def _site_installed(ctx):
    record_site_db(ctx.conn, ctx.task.rid, ctx.current(m.HostingSite.db_server), ctx.result.result, ctx.now)
    record_site_names(ctx.conn, ctx.task.rid, _served_names(ctx))
    ctx.update_target(m.HostingSite, status=m.SITE_ENABLED, verified=ctx.now, **_db_name(ctx),
                      **_cron_key(ctx))


@on("site", "install", "failure")
def _site_install_failed(ctx):
    """A database the run created before failing is the site's: recorded, so that a retry uses
    it again and a delete drops it. An install refused because the site is already installed
    queues an import of it instead (hosting_site_hosting_install_task_rollback())."""
    if ctx.result.result.get("db_hosts") is not None:
        record_site_db(ctx.conn, ctx.task.rid, ctx.current(m.HostingSite.db_server),
                       ctx.result.result, ctx.now)
        ctx.update_target(m.HostingSite, **_db_name(ctx))
    if _already_installed(ctx):
        add_log(ctx.conn, [log_row(ctx.task, "message", "This site appears to be installed already. "
                                                        "Generating an import task.", ctx.now)])
        _queue_once(ctx, "import")


@on("site", "verify")
def _site_verified(ctx):
    record_site_names(ctx.conn, ctx.task.rid, _served_names(ctx))
    ctx.update_target(m.HostingSite, verified=ctx.now, **_db_name(ctx))


@on("site", "verify", "failure")
def _site_verify_failed(ctx):
    ctx.update_target(m.HostingSite, verified=0)


@on("site", "import")
def _site_imported(ctx):
    """hosting_import_site(): the site's rows from what the import read on disk (db_name,
    profile, language, cron key when it had none, the aliases sites.php maps to it), enabled
    and verified. An alias another site already has is not recorded (a warning says so) and a
    verify is queued, which then stops serving it for this site."""
    from aegir_ansible.validation import InputError, normalize_hostname

    info = ctx.result.result.get("import")
    info = info if isinstance(info, dict) else {}
    values: dict = {"status": m.SITE_ENABLED, "verified": ctx.now, **_cron_key(ctx, info)}
    if info.get("db_name"):
        values["db_name"] = str(info["db_name"])[:64]
    if info.get("language"):
        values["language"] = str(info["language"])[:10]
    profile = _profile_package(ctx, str(info.get("profile") or ""))
    if profile:
        values["profile"] = profile
    ctx.update_target(m.HostingSite, **values)
    vid = ctx.target_vid
    uri = ctx.conn.execute(select(m.Node.title).where(m.Node.nid == ctx.task.rid)).scalar()
    mine = set(ctx.conn.execute(select(m.HostingSiteAlias.alias)
                                .where(m.HostingSiteAlias.vid == vid)).scalars())
    refused = []
    for raw in info.get("aliases") or []:
        try:
            alias = normalize_hostname(str(raw), "alias")
        except InputError:
            refused.append(str(raw)[:100])
            continue
        if alias == uri or alias in mine:
            continue
        if _host_owner(ctx, alias) is not None:
            refused.append(alias)
            continue
        ctx.conn.execute(insert(m.HostingSiteAlias).values(
            vid=vid, nid=ctx.task.rid, alias=alias, automatic=0, redirection=""))
        mine.add(alias)
    record_site_names(ctx.conn, ctx.task.rid, [uri, *[a for a in mine]])
    if refused:
        add_log(ctx.conn, [log_row(ctx.task, "warning", "Not recorded as aliases of this site (invalid, "
                                                        "or another site's): " + ", ".join(refused)
                                   + ". A verify is queued to stop serving them here.", ctx.now)])
        _queue_once(ctx, "verify")


@on("site", "import", "failure")
def _site_import_failed(ctx):
    """hosting_site_hosting_import_task_rollback()."""
    ctx.update_target(m.HostingSite, verified=0, status=m.SITE_DISABLED)


@on("site", "run_cron")
def _site_cron_ran(ctx):
    """The site's cron ran (hosting_cron records it in hosting_site.last_cron)."""
    ctx.update_target(m.HostingSite, last_cron=ctx.now)


# -- packages: what hosting_package_sync() / hosting_package_instance_sync() write -------

def _sync_safely(ctx, what: str, fn) -> bool:
    """Run fn(session) in its own savepoint: data that cannot be stored costs a warning in the
    task's log, never the task's outcome. A transient database error is raised (the whole
    outcome is written again)."""
    try:
        with Session(bind=ctx.conn, join_transaction_mode="create_savepoint") as session:
            fn(session)
            session.commit()
        return True
    except (ValueError, TypeError, AttributeError, KeyError, SQLAlchemyError) as exc:
        if isinstance(exc, SQLAlchemyError) and is_transient(exc):
            raise
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        add_log(ctx.conn, [log_row(ctx.task, "warning", f"The {what} could not be recorded: {why}",
                                   ctx.now)])
        return False


def _site_packages(ctx):
    r = ctx.result.result
    packages = r.get("packages")
    if isinstance(packages, dict):
        _sync_safely(ctx, "site's packages",
                     lambda s: pk.sync_site(s, ctx.task.rid, packages, ctx.now))
    elif r.get("packages_failed"):
        add_log(ctx.conn, [log_row(ctx.task, "warning", "The site's packages could not be read: "
                                   f"{str(r['packages_failed'])[:500]}", ctx.now)])


for _type in ("install", "verify", "import"):
    on("site", _type)(_site_packages)


def _site_last_cron(ctx):
    """The site's cron job ran from the crontab since the last write-back: the time its last
    successful run touched its stamp (the site role's verify reports it), as hosting_cron's
    hosting_site.last_cron. Never moved back in time."""
    when = ctx.result.result.get("last_cron")
    if isinstance(when, int) and not isinstance(when, bool) and 0 < when <= ctx.now + 300:
        if when > (ctx.current(m.HostingSite.last_cron) or 0):
            ctx.update_target(m.HostingSite, last_cron=when)


for _type in ("install", "verify", "import", "enable", "restore", "migrate"):
    on("site", _type)(_site_last_cron)


def _cron_key(ctx, reported: dict | None = None) -> dict:
    """The cron key the run used, when the site has none recorded yet."""
    key = (reported if reported is not None else ctx.result.result).get("cron_key")
    if isinstance(key, str) and key and not ctx.current(m.HostingSite.cron_key):
        return {"cron_key": key[:80]}
    return {}


def _profile_package(ctx, short_name: str) -> int | None:
    """The package nid of a profile, as hosting_import_site() finds it: the profile instance
    of the site's platform, else any profile package of that name."""
    if not short_name:
        return None
    hp, hpi = m.HostingPackage, m.HostingPackageInstance
    platform = ctx.current(m.HostingSite.platform)
    found = ctx.conn.execute(
        select(hp.nid).join(hpi, hpi.package_id == hp.nid)
        .where(hp.package_type == "profile", hp.short_name == short_name, hpi.rid == platform)
        .order_by(hpi.iid)).scalar()
    if found is None:
        found = ctx.conn.execute(select(hp.nid).join(m.Node, m.Node.vid == hp.vid).where(
            hp.package_type == "profile", hp.short_name == short_name).order_by(hp.nid)).scalar()
    return found


def _host_owner(ctx, name: str) -> int | None:
    """The live site (nid) other than the target that has this name as uri or alias, or the
    context that has it as name."""
    hs = m.HostingSite
    owner = ctx.conn.execute(
        select(m.Node.nid).join(hs, hs.vid == m.Node.vid)
        .where(m.Node.type == "site", m.Node.title == name, hs.status != m.SITE_DELETED,
               m.Node.nid != ctx.task.rid)).scalar()
    if owner is None:
        owner = ctx.conn.execute(
            select(m.Node.nid).join(m.HostingSiteAlias, m.HostingSiteAlias.vid == m.Node.vid)
            .join(hs, hs.vid == m.Node.vid)
            .where(m.HostingSiteAlias.alias == name, hs.status != m.SITE_DELETED,
                   m.Node.nid != ctx.task.rid)).scalar()
    if owner is None:
        owner = ctx.conn.execute(select(m.HostingContext.nid).where(
            m.HostingContext.name == name, m.HostingContext.nid != ctx.task.rid)).scalar()
    return owner


def _already_installed(ctx) -> bool:
    """The install failed because the site is installed already (provision's
    PROVISION_DRUPAL_SITE_INSTALLED): an error line of the task says so."""
    return ctx.conn.execute(select(m.HostingTaskLog.lid).where(
        m.HostingTaskLog.vid == ctx.task.vid, m.HostingTaskLog.type == "error",
        m.HostingTaskLog.message.like("%already installed%")).limit(1)).first() is not None


def _queue_once(ctx, task_type: str, target: int | None = None) -> bool:
    """Queue a task on the target (or another node) unless one of that type is already
    waiting (hosting_task_outstanding())."""
    from aegir_ansible.frontend import Frontend

    rid = ctx.task.rid if target is None else target
    waiting = ctx.conn.execute(
        select(m.HostingTask.nid).join(m.Node, m.Node.vid == m.HostingTask.vid)
        .where(m.HostingTask.rid == rid, m.HostingTask.task_type == task_type,
               m.HostingTask.task_status == TaskStatus.QUEUED).limit(1)).first()
    if waiting is not None:
        return False
    with Session(bind=ctx.conn) as session:
        Frontend(session, uid=0).add_task(task_type, rid)
        session.flush()
    return True


@on("site", "disable")
def _site_disabled(ctx):
    record_site_names(ctx.conn, ctx.task.rid, _served_names(ctx))
    ctx.update_target(m.HostingSite, status=m.SITE_DISABLED)


@on("site", "enable")
def _site_enabled(ctx):
    record_site_names(ctx.conn, ctx.task.rid, _served_names(ctx))
    ctx.update_target(m.HostingSite, status=m.SITE_ENABLED)


@on("site", "delete")
def _site_deleted(ctx):
    from aegir_ansible.db.backend import SiteDatabase, SiteHostName

    ctx.update_target(m.HostingSite, status=m.SITE_DELETED)
    ctx.conn.execute(delete(SiteDatabase).where(SiteDatabase.nid == ctx.task.rid))
    ctx.conn.execute(delete(SiteHostName).where(SiteHostName.nid == ctx.task.rid))
    ctx.conn.execute(delete(m.HostingPackageInstance).where(
        m.HostingPackageInstance.rid == ctx.task.rid))
    ctx.remove_context()


@on("site", "backup")
def _site_backup(ctx):
    """A backup playbook reports {backup_file, backup_size} through set_stats."""
    r = ctx.result.result
    if r.get("backup_file"):
        ctx.conn.execute(insert(m.HostingSiteBackup).values(
            site=ctx.task.rid, web_server=ctx.task.server or 0,
            description=str(r.get("description") or "Generated on request"),
            filename=str(r["backup_file"]), size=int(r.get("backup_size") or 0),
            timestamp=ctx.now))


def _record_backup(ctx, result: dict, description: str) -> None:
    """A hosting_site_backups row for an archive a run reported (backup, migrate, clone)."""
    if result.get("backup_file"):
        ctx.conn.execute(insert(m.HostingSiteBackup).values(
            site=ctx.task.rid, web_server=ctx.task.server or 0,
            description=str(result.get("description") or description),
            filename=str(result["backup_file"]), size=int(result.get("backup_size") or 0),
            timestamp=ctx.now))


def _context_nid(ctx, name) -> int | None:
    if not name:
        return None
    return ctx.conn.execute(select(m.HostingContext.nid)
                            .where(m.HostingContext.name == str(name))).scalar()


@on("site", "restore")
def _site_restored(ctx):
    ctx.update_target(m.HostingSite, verified=ctx.now)


@on("site", "backup-delete")
@on("site", "backup-delete", "failure")  # some archives could not be removed: the others were
def _site_backups_deleted(ctx):
    bids = [int(b) for b in ctx.result.result.get("deleted_bids") or [] if str(b).isdigit()]
    if bids:
        ctx.conn.execute(delete(m.HostingSiteBackup).where(
            m.HostingSiteBackup.bid.in_(bids), m.HostingSiteBackup.site == ctx.task.rid))


@on("site", "migrate")
def _site_migrated(ctx):
    """As hosting_migrate's post hook: platform, db server, db name; the uri (node title,
    revision title, context name, aliases) when it changed; the backup made first."""
    r = ctx.result.result
    _record_backup(ctx, r, "Pre-migration backup")
    values = {"verified": ctx.now}
    platform = _context_nid(ctx, r.get("platform"))
    if platform:
        values["platform"] = platform
    db_server = _context_nid(ctx, r.get("db_server"))
    if db_server:
        values["db_server"] = db_server
    if r.get("db_name"):
        values["db_name"] = str(r["db_name"])[:64]
    ctx.update_target(m.HostingSite, **values)
    record_site_db(ctx.conn, ctx.task.rid, db_server or ctx.current(m.HostingSite.db_server), r, ctx.now)
    record_site_names(ctx.conn, ctx.task.rid, [r.get("uri") or ctx.result.facts.get("aegir_site_uri"),
                                               *(r.get("aliases") or ctx.result.facts.get("aegir_site_aliases") or [])])
    vid = ctx.target_vid
    old_uri = ctx.conn.execute(select(m.Node.title).where(m.Node.nid == ctx.task.rid)).scalar()
    new_uri = str(r.get("uri") or "")
    if new_uri and new_uri != old_uri:
        ctx.conn.execute(update(m.Node).where(m.Node.nid == ctx.task.rid)
                         .values(title=new_uri, changed=ctx.now))
        ctx.conn.execute(update(m.NodeRevision).where(m.NodeRevision.vid == vid).values(title=new_uri))
        ctx.conn.execute(update(m.HostingContext).where(m.HostingContext.nid == ctx.task.rid)
                         .values(name=new_uri))
        # The new uri is no longer an alias of its own site; a redirection to the old uri
        # now points at the new one.
        ctx.conn.execute(delete(m.HostingSiteAlias).where(
            m.HostingSiteAlias.vid == vid, m.HostingSiteAlias.alias == new_uri))
        ctx.conn.execute(update(m.HostingSiteAlias).where(
            m.HostingSiteAlias.vid == vid, m.HostingSiteAlias.redirection == old_uri)
            .values(redirection=new_uri))


@on("site", "clone")
def _site_cloned(ctx):
    """As hosting_clone's post hook: a new site node with its revision, hosting_site,
    hosting_context and alias rows (Frontend.add_site), enabled and verified, with the
    database name and cron key the run used; the backup made first is recorded. A clone
    that cannot be recorded (its uri taken meanwhile, rows the database refuses) fails the
    task and is marked for removal (`TaskResult.rollback`, run by the worker)."""
    from aegir_ansible.db.backend import SiteSettings
    from aegir_ansible.frontend import Frontend

    r = ctx.result.result
    ctx.result.rollback = None  # this hook may run again (the outcome written again)
    _record_backup(ctx, r, "Pre-clone backup")
    if not r.get("uri"):
        return
    hs = m.HostingSite
    src = ctx.conn.execute(select(hs.profile, hs.client, hs.language, hs.platform, hs.db_server)
                           .where(hs.vid == ctx.target_vid)).first()
    if src is None:
        return
    profile = ctx.conn.execute(select(m.HostingPackage.short_name)
                               .join(m.Node, m.Node.vid == m.HostingPackage.vid)
                               .where(m.HostingPackage.nid == src.profile)).scalar()
    client = ctx.conn.execute(select(m.HostingClient.uname)
                              .join(m.Node, m.Node.vid == m.HostingClient.vid)
                              .where(m.HostingClient.nid == src.client)).scalar() if src.client else None
    interval = ctx.conn.execute(select(SiteSettings.cron_interval)
                                .where(SiteSettings.nid == ctx.task.rid)).scalar()
    platform = str(r.get("platform") or "") or src.platform
    db_server = str(r.get("db_server") or "") or src.db_server
    from aegir_ansible.validation import InputError

    try:
        # Its own savepoint: a refused site rolls back its rows only, not the whole outcome.
        with Session(bind=ctx.conn, join_transaction_mode="create_savepoint") as session:
            fe = Frontend(session, uid=0)
            kw = {"cron_interval": interval} if interval is not None else {}
            nid = fe.add_site(
                str(r["uri"]), platform, db_server=db_server, profile=profile or "standard",
                language=src.language or "en", aliases=[str(a) for a in r.get("aliases") or []],
                redirection=str(r.get("redirection") or "") or None, client=client,
                queue_install=False, status=m.SITE_ENABLED, **kw)
            session.flush()
            node = session.get(m.Node, nid)
            if node is None:  # not reached: add_site() just added it
                raise RuntimeError(f"site {r['uri']}: its node {nid} is not there")
            vid = node.vid
            session.execute(update(m.HostingSite).where(m.HostingSite.vid == vid).values(
                verified=ctx.now, db_name=str(r.get("db_name") or "")[:64],
                **({"cron_key": str(r["cron_key"])[:80]} if r.get("cron_key") else {})))
            session.flush()
            site = session.get(m.HostingSite, vid)
            if site is None:  # not reached: add_site() just added it
                raise RuntimeError(f"site {r['uri']}: its hosting_site row {vid} is not there")
            record_site_db(session.connection(), nid, site.db_server, r, ctx.now)
            record_site_names(session.connection(), nid, [r["uri"], *(r.get("aliases") or [])])
            session.commit()  # releases the savepoint; the outcome's transaction commits it
    except (InputError, SQLAlchemyError) as exc:
        if isinstance(exc, SQLAlchemyError) and is_transient(exc):
            raise  # transient: the whole outcome is written again
        # Made on the server, unknown to the frontend: the worker removes it (clone-rollback)
        # and the task fails.
        why = str(exc).splitlines()[0][:300]
        ctx.conn.execute(update(m.HostingTask).where(m.HostingTask.vid == ctx.task.vid)
                         .values(task_status=TaskStatus.ERROR))
        add_log(ctx.conn, [log_row(
            ctx.task, "error", f"The clone {r['uri']} was made on the server, but its site could "
                               f"not be recorded: {why}. It is rolled back.", ctx.now)])
        ctx.result.rollback = dict(r)


@on("site", "update")
@on("site", "update", "failure")  # the backup was restored, and stays
def _site_updated(ctx):
    """The backup made before the database updates (hosting_tasks_extra's provision-update)."""
    _record_backup(ctx, ctx.result.result, "Before database updates")


@on("site", "sync")
@on("site", "sync", "failure")  # the backup was restored, and stays
def _site_synced(ctx):
    """As hosting_sync's post hook: the backup of this site made before the sync."""
    r = ctx.result.result
    _record_backup(ctx, r, f"Before sync from @{r.get('source') or 'another site'}")


@on("site", "login-reset")
def _site_login_link(ctx):
    link = ctx.result.result.get("login_link")
    if link:
        add_log(ctx.conn, [log_row(ctx.task, "message", f"One-time login link: {link}", ctx.now)])


def _log_task_output(ctx):
    """hosting_tasks_extra's tasks show what drush (or the health check) said in the task log:
    the `output` lines each site's run reported (a batch's server events are shared)."""
    lines = [str(x) for x in ctx.result.result.get("output") or []]
    if lines:
        add_log(ctx.conn, [log_row(ctx.task, "message", "\n".join(lines)[:60000], ctx.now)])


for _type in sorted(DRUSH_TASK_TYPES | {"update", "site_health_check", "sync"}):
    on("site", _type)(_log_task_output)
    on("site", _type, "failure")(_log_task_output)
on("server", "flush_drush_cache")(_log_task_output)
on("server", "flush_drush_cache", "failure")(_log_task_output)


# -- platforms ---------------------------------------------------------------------------

@on("platform", "verify")
def _platform_verified(ctx):
    locked = ctx.current(m.HostingPlatform.status) == m.PLATFORM_LOCKED
    ctx.update_target(m.HostingPlatform, verified=ctx.now,
                      status=m.PLATFORM_LOCKED if locked else m.PLATFORM_ENABLED)
    r = ctx.result.result
    packages = r.get("packages")
    synced = isinstance(packages, dict) and _sync_safely(
        ctx, "platform's packages", lambda s: pk.sync_platform(
            s, ctx.task.rid, packages, [str(p) for p in r.get("profiles") or []], ctx.now))
    if isinstance(r.get("sites_found"), list):
        _import_found_sites(ctx, [str(x) for x in r["sites_found"]],
                            packages.get("base") if synced and isinstance(packages, dict) else None)


def _import_found_sites(ctx, found: list[str], base: dict | None) -> None:
    """hosting_platform_post_hosting_verify_task()'s import: a site node (queued, on this
    platform, the default client and db server) and an import task for every site directory
    the platform verify found (inside the platform's sites/, checked on the server by
    aegir_packages) whose name is a valid host name that no context, site or alias has
    (hosting_domain_allowed()); its package instances are the platform's base packages."""
    from aegir_ansible.frontend import Frontend
    from aegir_ansible.validation import InputError, normalize_hostname

    imported, refused = [], []
    for name in dict.fromkeys(found):
        try:
            uri = normalize_hostname(name, "site uri")
        except InputError:
            refused.append(name[:100])
            continue
        if uri != name or _host_owner(ctx, uri) is not None:
            continue  # a known site (or one of its aliases), or not its own name

        def add(session, uri=uri):
            fe = Frontend(session, uid=0)
            nid = fe.add_site(uri, str(ctx.task.rid), queue_install=False, status=m.SITE_QUEUED)
            session.flush()
            if base:
                pk.sync_instances(session, nid, "site", base)
            fe.add_task("import", nid)
            session.flush()

        try:
            with Session(bind=ctx.conn, join_transaction_mode="create_savepoint") as session:
                add(session)
                session.commit()
            imported.append(uri)
        except (InputError, ValueError, SQLAlchemyError) as exc:
            if isinstance(exc, SQLAlchemyError) and is_transient(exc):
                raise
            refused.append(f"{uri} ({str(exc).splitlines()[0][:200]})")
    lines = []
    if imported:
        lines.append(log_row(ctx.task, "message", "Imported existing site(s), an import task queued "
                                                  f"for each: {', '.join(imported)}.", ctx.now))
    if refused:
        lines.append(log_row(ctx.task, "warning", "Site directories not imported: "
                                                  f"{', '.join(refused)}.", ctx.now))
    if lines:
        add_log(ctx.conn, lines)


@on("platform", "lock")
def _platform_locked(ctx):
    ctx.update_target(m.HostingPlatform, status=m.PLATFORM_LOCKED)


@on("platform", "unlock")
def _platform_unlocked(ctx):
    ctx.update_target(m.HostingPlatform, status=m.PLATFORM_ENABLED)


@on("platform", "migrate")
def _platform_migrated(ctx):
    """As hosting_migrate's platform form (a frontend batch): one site migrate task per
    enabled site of the platform, to the target platform, each site keeping its uri and
    database server; a site with a migrate already queued is left alone."""
    from aegir_ansible.frontend import Frontend

    target = ctx.conn.execute(select(m.HostingTaskArgument.value).where(
        m.HostingTaskArgument.vid == ctx.task.vid,
        m.HostingTaskArgument.name == "target_platform")).scalar()
    hs = m.HostingSite
    sites = ctx.conn.execute(
        select(m.HostingContext.name, hs.db_server).join(m.Node, m.Node.nid == m.HostingContext.nid)
        .join(hs, hs.vid == m.Node.vid)
        .where(hs.platform == ctx.task.rid, hs.status == m.SITE_ENABLED).order_by(m.Node.nid)).all()
    waiting = set(ctx.conn.execute(
        select(m.HostingContext.name).join(m.HostingTask, m.HostingTask.rid == m.HostingContext.nid)
        .join(m.Node, m.Node.vid == m.HostingTask.vid)
        .where(m.HostingContext.name.in_([n for n, _ in sites]), m.HostingTask.task_type == "migrate",
               m.HostingTask.task_status == TaskStatus.QUEUED)).scalars()) if sites else set()
    queued = []
    with Session(bind=ctx.conn) as session:
        fe = Frontend(session, uid=0)
        for name, db_server in sites:
            if name not in waiting:
                fe.add_task("migrate", name, {"target_platform": str(target or ""), "new_uri": "",
                                              "new_db_server": str(db_server or 0)})
                queued.append(name)
        session.flush()
    add_log(ctx.conn, [log_row(ctx.task, "message", f"Queued a migrate task for {len(queued)} "
                                         f"site(s): {', '.join(queued) or 'none'}.", ctx.now)])


@on("platform", "delete")
def _platform_deleted(ctx):
    ctx.update_target(m.HostingPlatform, status=m.PLATFORM_DELETED)
    ctx.remove_context()
    _sync_safely(ctx, "platform's package instances",
                 lambda s: pk.clear_instances(s, ctx.task.rid, "platform"))


# -- servers -----------------------------------------------------------------------------

@on("server", "verify")
def _server_verified(ctx):
    ctx.update_target(m.HostingServer, status=m.SERVER_ENABLED, verified=ctx.now)
    # As hostmaster: verify every live platform on this web server.
    from aegir_ansible.frontend import Frontend

    names = ctx.conn.execute(
        select(m.HostingContext.name)
        .join(m.Node, m.Node.nid == m.HostingContext.nid)
        .join(m.HostingPlatform, m.HostingPlatform.vid == m.Node.vid)
        .where(m.HostingPlatform.web_server == ctx.task.rid,
               m.HostingPlatform.status != m.PLATFORM_DELETED)
        .order_by(m.Node.nid)
    ).scalars().all()
    # ... unless a verify of that platform is already waiting (hosting_task_outstanding).
    waiting = set(ctx.conn.execute(
        select(m.HostingContext.name)
        .join(m.HostingTask, m.HostingTask.rid == m.HostingContext.nid)
        .join(m.Node, m.Node.vid == m.HostingTask.vid)
        .where(m.HostingContext.name.in_(names), m.HostingTask.task_type == "verify",
               m.HostingTask.task_status == TaskStatus.QUEUED)
    ).scalars()) if names else set()
    names = [n for n in names if n not in waiting]
    if names:
        with Session(bind=ctx.conn) as session:
            fe = Frontend(session, uid=0)
            for name in names:
                fe.add_task("verify", name)
            session.flush()


@on("server", "delete")
def _server_deleted(ctx):
    ctx.update_target(m.HostingServer, status=m.SERVER_DELETED)
    ctx.remove_context()


def run_hooks(conn, tr: TaskResult, succeeded: bool, now: int,
              cache: TargetCache | None = None) -> None:
    """The entity updates that follow the task's recorded status."""
    task = tr.task
    when = "success" if succeeded else "failure"
    for hook in HOOKS.get((task.target_type or "", task.task_type or "", when), []):
        hook(HookContext(conn, task, tr, now, cache))
