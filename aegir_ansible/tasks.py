"""The catalogue of Aegir task types the backend knows: which objects each applies to,
and how the queue may treat it (a task of type T runs playbooks/T.yml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskType:
    name: str
    objects: frozenset[str]  # context types the task applies to: site, platform, server
    title: str
    # Safe to run again after a lost runner or a failure (re-queued / retried).
    safe_to_repeat: bool = False
    # Runs on a whole platform: no site task of that platform may run at the same time.
    platform_wide: bool = False
    # Lower runs first among ready tasks (documented priority order).
    priority: int = 50
    # Many queued tasks of this type on one server may run as one playbook run (a batch):
    # through playbooks/<name>_batch.yml on the server host when it exists, else as one run
    # of <name>.yml over all their sites (queue.claim.BATCHABLE_TYPES).
    batchable: bool = False


def playbook_name(task_type: str) -> str:
    """The playbook of a task type, without .yml: hostmaster's names have hyphens
    (backup-delete, login-reset), playbook names must not (a collection playbook is called by
    FQCN, aegir.hosting.backup_delete)."""
    return task_type.replace("-", "_")


def _t(name, objects, title, **kw) -> TaskType:
    return TaskType(name, frozenset(objects.split()), title, **kw)


TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in [
        _t("verify", "server platform site", "Verify", safe_to_repeat=True, priority=40),
        _t("install", "site", "Install", priority=20),
        # hostmaster's hidden import: take over a site found on disk (platform verify, or an
        # install refused as "already installed"), as a verify that first reads the site.
        _t("import", "site", "Import", safe_to_repeat=True, priority=20),
        _t("enable", "site", "Enable", priority=30),
        _t("disable", "site", "Disable", priority=30),
        _t("delete", "server platform site", "Delete", platform_wide=True, priority=60),
        _t("lock", "platform", "Lock", platform_wide=True, safe_to_repeat=True, priority=30),
        _t("unlock", "platform", "Unlock", platform_wide=True, safe_to_repeat=True, priority=30),
        _t("backup", "site", "Backup", priority=50),
        _t("restore", "site", "Restore", priority=30),
        _t("backup-delete", "site", "Delete backups", priority=70),
        _t("migrate", "site platform", "Migrate", platform_wide=True, priority=50),
        _t("clone", "site", "Clone", priority=50),
        _t("login-reset", "site", "Reset password", priority=10),
        # hosting_tasks_extra (omega8cc/hosting_tasks_extra): the site's platform's drush.
        _t("flush_cache", "site", "Flush all caches", batchable=True, safe_to_repeat=True, priority=45),
        _t("rebuild_registry", "site", "Rebuild registry", batchable=True, safe_to_repeat=True, priority=45),
        _t("run_cron", "site", "Run drush cron", batchable=True, safe_to_repeat=True, priority=55),
        _t("update", "site", "Run db updates", batchable=True, priority=50),
        _t("update_translations", "site", "Update translations", batchable=True, safe_to_repeat=True, priority=55),
        _t("features_revert_all", "site", "Revert features", batchable=True, safe_to_repeat=True, priority=50),
        _t("features_update_all", "site", "Update features", batchable=True, priority=50),
        _t("site_health_check", "site", "Run health check", batchable=True, safe_to_repeat=True, priority=60),
        _t("fix_ownership", "site", "Fix ownership", batchable=True, safe_to_repeat=True, priority=45),
        _t("fix_permissions", "site", "Fix permissions", batchable=True, safe_to_repeat=True, priority=45),
        _t("flush_drush_cache", "server", "Flush Drush cache", safe_to_repeat=True, priority=45),
        # hosting_sync: the database and/or files of another site into this one.
        _t("sync", "site", "Sync data", priority=50),  # not batched: it reads another site
    ]
}

# Site tasks that run one platform drush command (roles/aegir_site_extra/tasks/drush.yml).
DRUSH_TASK_TYPES = frozenset({
    "flush_cache", "rebuild_registry", "run_cron", "update_translations",
    "features_revert_all", "features_update_all"})

# A platform-wide task blocks site tasks of that platform (delete, lock, migrate on the
# platform itself; 'platform_wide' only counts when the task targets a platform).
PLATFORM_WIDE_TYPES = frozenset(t.name for t in TASK_TYPES.values() if t.platform_wide)
