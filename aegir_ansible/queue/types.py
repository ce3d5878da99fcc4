"""The queue's data: a task as the claim reads it (TaskRow), a run of tasks (Run), and what
a run produced (RunResult, one TaskResult per task). Plain data, no database access."""

from __future__ import annotations

from dataclasses import dataclass, field

from aegir_ansible.db.models import PlatformStatus, SiteStatus, TaskStatus
from aegir_ansible.tasks import TASK_TYPES

# RunResult.status of a run whose playbook never started (else ansible-runner's status).
NOT_STARTED = "not started"

# The levels of a target, in claim order: what a site needs is set up first.
TARGET_LEVELS = {"server": 0, "platform": 1, "site": 2}


@dataclass
class TaskRow:
    """One task revision joined to its target, the target's server and its queue row."""

    vid: int
    nid: int
    task_type: str | None
    rid: int
    target_type: str | None
    target_name: str | None
    site_status: int | None
    platform_status: int | None
    server_status: int | None
    server: int | None
    platform: int | None
    site: int | None
    task_status: int | None = None
    not_before: float | None = None
    attempts: int | None = None
    runner_id: str | None = None
    run_id: str | None = None
    cancel_requested: int | None = None
    has_queue_row: bool = field(default=False, kw_only=True)  # by keyword: task_rows() passes the columns before it

    @property
    def type_info(self):
        return TASK_TYPES.get(self.task_type or "")

    @property
    def priority(self) -> int:
        tt = self.type_info
        return tt.priority if tt else 0

    @property
    def order(self) -> tuple:
        """Claim order among ready tasks of a server: servers' tasks before platforms'
        before sites' (what a site needs is set up first), then the task type's priority
        (lower first), then the oldest."""
        return (TARGET_LEVELS.get(self.target_type or "", 3), self.priority, self.nid)

    @property
    def platform_wide(self) -> bool:
        tt = self.type_info
        return bool(tt and tt.platform_wide and self.target_type == "platform")

    def problem(self) -> str | None:
        """Why this row cannot run at all (a malformed task), or None."""
        tt = self.type_info
        if tt is None:
            return (f"Unknown task type {self.task_type!r}: this backend runs "
                    f"{', '.join(sorted(TASK_TYPES))}.")
        if self.target_type is None:
            return f"The task's target (node {self.rid}) does not exist."
        if self.target_type not in TARGET_LEVELS:
            return f"The task's target (node {self.rid}) is a {self.target_type}, not a site, platform or server."
        if self.target_type not in tt.objects:
            return f"Task type {self.task_type!r} does not apply to a {self.target_type}."
        name = self.target_name or f"#{self.rid}"
        status = {"site": self.site_status, "platform": self.platform_status,
                  "server": self.server_status}[self.target_type]
        if status is None:
            return f"The {self.target_type} {name} has no current {self.target_type} record."
        # Deleted is one value for sites, platforms and servers.
        if status == SiteStatus.DELETED:
            return f"The {self.target_type} {name} is deleted: no task can run on it."
        if self.target_type == "site" and self.platform_status == PlatformStatus.DELETED:
            return f"The platform of site {name} is deleted."
        if self.server is None:
            return f"Cannot find the server of {self.target_type} {name} (its platform or web server is missing)."
        return None


@dataclass
class Run:
    """Tasks that run as one playbook run (one task, or a coalesced batch)."""

    run_id: str
    server: int | None
    task_type: str | None
    tasks: list[TaskRow] = field(default_factory=list)
    # Set for malformed tasks: they are failed with this message instead of being run.
    problem: str | None = None


@dataclass
class TaskResult:
    task: TaskRow
    # While the run goes: ERROR once a line of the run failed the task; after it, the one
    # status outcome.judge() decided (with `closing`, the lines written with it).
    status: int = TaskStatus.SUCCESS
    closing: list[tuple[str, str]] | None = None
    types: set = field(default_factory=set)  # the log types written for this task
    facts: dict = field(default_factory=dict)  # inventory vars the run used for this host
    result: dict = field(default_factory=dict)  # what the playbook reported (set_stats)
    rollback: dict | None = None  # a clone to remove: made on the server, not recorded

    @property
    def succeeded(self) -> bool:
        return self.status in (TaskStatus.SUCCESS, TaskStatus.WARNING)


@dataclass
class RunResult:
    run: Run
    started: float
    ended: float = 0.0
    status: str = ""  # ansible-runner status, or NOT_STARTED
    rc: int | None = None
    stop_reason: str | None = None  # cancel, timeout, shutdown, lost
    cancelled: set = field(default_factory=set)  # task nids whose cancel was requested
    tasks: dict = field(default_factory=dict)  # nid -> TaskResult
    # Set when the run did not start for a reason outside its tasks (the database was lost
    # while it was prepared): why; its tasks go back to the queue instead of failing.
    requeue: str | None = None
    # What the playbook run said: playbook_on_stats per host (ok, changed, failures, dark,
    # processed ...) and its set_stats data (artifact).
    stats: dict = field(default_factory=dict)
    artifact: dict = field(default_factory=dict)
    # The run's inventory hosts and their tasks; the --limit; a batch run's server host
    # (playbooks/<type>-batch.yml, whose events are every task's).
    by_host: dict[str, list[TaskRow]] = field(default_factory=dict)
    limit: list[str] = field(default_factory=list)
    batch_server: str | None = None

    @property
    def seconds(self) -> int:
        return max(0, int(self.ended - self.started))

