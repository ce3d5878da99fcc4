"""SQLAlchemy models of Aegir 3's frontend tables, exactly as hostmaster defines them.

Table names, column names, types and defaults follow the hosting module's hook_schema
(and Drupal 7 core for node/node_revision), so an existing hostmaster database works
unchanged: this module never adds a column to these tables. Backend-only state lives in
`aegir_ansible.db.backend`.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import BigInteger, Index, Integer, SmallInteger, String, Text, TypeDecorator, text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class AegirBase(DeclarativeBase):
    """Declarative base of Aegir's own (frontend) tables."""


# Drupal's schema types, as MySQL renders them; SQLite gets the generic type.
UnsignedInt = Integer().with_variant(mysql.INTEGER(unsigned=True), "mysql", "mariadb")
TinyInt = SmallInteger().with_variant(mysql.TINYINT(), "mysql", "mariadb")
TinyText = Text().with_variant(mysql.TINYTEXT(), "mysql", "mariadb")
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
MediumText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

class _Status(IntEnum):
    """A status column's values; `label` is the name the CLI, the logs and the metrics show."""

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def label_of(cls, value) -> str:
        """The label of a stored value, or the value itself if it is none of the enum's."""
        try:
            return cls(value).label
        except ValueError:
            return str(value)


class TaskStatus(_Status):
    """hosting_task.task_status (HOSTING_TASK_* in hosting_task.module)."""

    PROCESSING = -1
    QUEUED = 0
    SUCCESS = 1
    ERROR = 2
    WARNING = 3


class SiteStatus(_Status):
    """hosting_site.status (HOSTING_SITE_*)."""

    DELETED = -2
    DISABLED = -1
    QUEUED = 0
    ENABLED = 1


class PlatformStatus(_Status):
    """hosting_platform.status (HOSTING_PLATFORM_*)."""

    DELETED = -2
    LOCKED = -1
    QUEUED = 0
    ENABLED = 1


class ServerStatus(_Status):
    """hosting_server.status (HOSTING_SERVER_*)."""

    DELETED = -2
    LOCKED = -1
    QUEUED = 0
    ENABLED = 1


class StatusValue(TypeDecorator):
    """A status column as stored (Integer, or Drupal's TinyInt), bound as a plain int: a
    driver may quote an int subclass (an enum member) as a string."""

    impl = Integer
    cache_ok = True

    def __init__(self, stored=Integer):
        super().__init__()
        self.impl = self.impl_instance = stored() if isinstance(stored, type) else stored

    def process_bind_param(self, value, dialect):
        return None if value is None else int(value)


# The enums' members under hostmaster's constant names (HOSTING_TASK_QUEUED ...).
SERVER_DELETED, SERVER_LOCKED, SERVER_QUEUED, SERVER_ENABLED = ServerStatus
PLATFORM_DELETED, PLATFORM_LOCKED, PLATFORM_QUEUED, PLATFORM_ENABLED = PlatformStatus
SITE_DELETED, SITE_DISABLED, SITE_QUEUED, SITE_ENABLED = SiteStatus
TASK_PROCESSING, TASK_QUEUED, TASK_SUCCESS, TASK_ERROR, TASK_WARNING = TaskStatus


def _uint(**kw):
    return mapped_column(UnsignedInt, nullable=False, server_default=text("0"), **kw)


def _int(**kw):
    return mapped_column(Integer, nullable=False, server_default=text("0"), **kw)


class Node(AegirBase):
    __tablename__ = "node"
    nid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=True)
    vid: Mapped[int | None] = mapped_column(UnsignedInt, unique=True, nullable=True)
    type: Mapped[str] = mapped_column(String(32), nullable=False, server_default="")
    language: Mapped[str] = mapped_column(String(12), nullable=False, server_default="")
    title: Mapped[str] = mapped_column(String(255), nullable=False, server_default="")
    uid: Mapped[int] = _int()
    status: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    created: Mapped[int] = _int()
    changed: Mapped[int] = _int()
    comment: Mapped[int] = _int()
    promote: Mapped[int] = _int()
    sticky: Mapped[int] = _int()
    tnid: Mapped[int] = _uint()
    translate: Mapped[int] = _int()
    __table_args__ = (
        Index("node_type", "type"),
        Index("node_changed", "changed"),
    )


class NodeRevision(AegirBase):
    __tablename__ = "node_revision"
    nid: Mapped[int] = _uint()
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=True)
    uid: Mapped[int] = _int()
    title: Mapped[str] = mapped_column(String(255), nullable=False, server_default="")
    log: Mapped[str] = mapped_column(LongText, nullable=False, default="")
    timestamp: Mapped[int] = _int()
    status: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    comment: Mapped[int] = _int()
    promote: Mapped[int] = _int()
    sticky: Mapped[int] = _int()
    __table_args__ = (Index("node_revision_nid", "nid"),)


class HostingContext(AegirBase):
    __tablename__ = "hosting_context"
    nid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(235), nullable=False, unique=True)


class HostingServer(AegirBase):
    __tablename__ = "hosting_server"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False)
    nid: Mapped[int] = _uint()
    human_name: Mapped[str | None] = mapped_column(TinyText, nullable=True)
    verified: Mapped[int] = _int()
    status: Mapped[int] = mapped_column(StatusValue(TinyInt), nullable=False, server_default=text("0"))


class HostingService(AegirBase):
    """One row per (server revision, service). Drupal gives it no primary key; the ORM
    needs one, so (vid, service) is declared here only on the mapper, not in the table."""

    __tablename__ = "hosting_service"
    vid: Mapped[int] = _uint()
    nid: Mapped[int] = _uint()
    service: Mapped[str] = mapped_column(TinyText, nullable=False)
    type: Mapped[str] = mapped_column(TinyText, nullable=False)
    restart_cmd: Mapped[str | None] = mapped_column(LongText, nullable=True)
    port: Mapped[int | None] = mapped_column(UnsignedInt, nullable=True, server_default=text("0"))
    available: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("1"))
    __table_args__ = (Index("hosting_service_vid", "vid"),)
    __mapper_args__ = {"primary_key": [vid, service]}


class HostingIpAddress(AegirBase):
    __tablename__ = "hosting_ip_addresses"
    id: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=True)
    nid: Mapped[int] = _uint(index=True)
    ip_address: Mapped[str] = mapped_column(TinyText, nullable=False)


class HostingDbServer(AegirBase):
    __tablename__ = "hosting_db_server"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False)
    nid: Mapped[int] = _uint()
    db_user: Mapped[str] = mapped_column(LongText, nullable=False)
    db_passwd: Mapped[str] = mapped_column(LongText, nullable=False)


class HostingPlatform(AegirBase):
    __tablename__ = "hosting_platform"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False)
    nid: Mapped[int] = _uint()
    publish_path: Mapped[str | None] = mapped_column(LongText, nullable=True)
    makefile: Mapped[str | None] = mapped_column(LongText, nullable=True)
    web_server: Mapped[int] = _int()
    verified: Mapped[int] = _int()
    status: Mapped[int] = mapped_column(StatusValue(TinyInt), nullable=False, server_default=text("0"))
    make_working_copy: Mapped[int] = _uint()


class HostingSite(AegirBase):
    __tablename__ = "hosting_site"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False)
    nid: Mapped[int] = _uint()
    client: Mapped[int] = _int()
    db_server: Mapped[int] = _int()
    db_name: Mapped[str | None] = mapped_column(String(64), nullable=True, server_default="")
    platform: Mapped[int] = _int()
    profile: Mapped[int] = _int()
    language: Mapped[str] = mapped_column(String(10), nullable=False, server_default="en")
    last_cron: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cron_key: Mapped[str | None] = mapped_column(String(80), nullable=True, server_default="")
    verified: Mapped[int] = _int()
    status: Mapped[int] = mapped_column(StatusValue(TinyInt), nullable=False, server_default=text("0"))


class HostingSiteAlias(AegirBase):
    """One row per alias per site revision; no primary key in Drupal's schema."""

    __tablename__ = "hosting_site_alias"
    vid: Mapped[int] = _int()
    nid: Mapped[int] = _uint()
    alias: Mapped[str] = mapped_column(String(128), nullable=False)
    automatic: Mapped[int] = _int()
    redirection: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    __table_args__ = (
        Index("hosting_site_alias_vid", "vid"),
        Index("hosting_site_alias_alias", "alias"),
    )
    __mapper_args__ = {"primary_key": [vid, alias]}


class HostingSiteBackup(AegirBase):
    __tablename__ = "hosting_site_backups"
    bid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[int] = _int()
    web_server: Mapped[int] = _int()
    description: Mapped[str | None] = mapped_column(LongText, nullable=True)
    filename: Mapped[str | None] = mapped_column(LongText, nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    timestamp: Mapped[int | None] = mapped_column(Integer, nullable=True)


class HostingPackage(AegirBase):
    __tablename__ = "hosting_package"
    vid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    nid: Mapped[int] = _uint()
    package_type: Mapped[str] = mapped_column(String(16), nullable=False, server_default="")
    short_name: Mapped[str] = mapped_column(String(255), nullable=False, server_default="")
    old_short_name: Mapped[str] = mapped_column(String(255), nullable=False, server_default="")
    description: Mapped[str] = mapped_column(LongText, nullable=False, default="")
    __table_args__ = (Index("hosting_package_nid_idx", "nid"),)


class HostingPackageInstance(AegirBase):
    __tablename__ = "hosting_package_instance"
    iid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _int()
    package_id: Mapped[int] = _int()
    filename: Mapped[str] = mapped_column(Text, nullable=False, default="")
    schema_version: Mapped[int] = _int()
    version: Mapped[str] = mapped_column(String(255), nullable=False, server_default="")
    version_code: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    status: Mapped[int] = _int()
    platform: Mapped[int] = _int()
    __table_args__ = (
        Index("hosting_package_rid_idx", "rid"),
        Index("hosting_package_id_idx", "package_id"),
    )


class HostingClient(AegirBase):
    __tablename__ = "hosting_client"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False)
    nid: Mapped[int] = _uint()
    uname: Mapped[str] = mapped_column(String(255), nullable=False, server_default="", unique=True)


class HostingTask(AegirBase):
    __tablename__ = "hosting_task"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False)
    nid: Mapped[int] = _uint(index=True)
    task_type: Mapped[str | None] = mapped_column(LongText, nullable=True)
    rid: Mapped[int] = _int()
    task_status: Mapped[int | None] = mapped_column(StatusValue(Integer), nullable=True)
    executed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delta: Mapped[int | None] = mapped_column(Integer, nullable=True)


class HostingTaskArgument(AegirBase):
    """Key/value arguments per task revision; no primary key in Drupal's schema."""

    __tablename__ = "hosting_task_arguments"
    vid: Mapped[int] = _uint(index=True)
    nid: Mapped[int] = _uint(index=True)
    name: Mapped[str | None] = mapped_column(LongText, nullable=True)
    value: Mapped[str | None] = mapped_column(LongText, nullable=True)
    __mapper_args__ = {"primary_key": [vid, name]}


class HostingTaskLog(AegirBase):
    __tablename__ = "hosting_task_log"
    lid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vid: Mapped[int] = _int()
    nid: Mapped[int] = _uint(index=True)
    type: Mapped[str] = mapped_column(String(16), nullable=False, server_default="", index=True)
    message: Mapped[str] = mapped_column(LongText, nullable=False, default="")
    error: Mapped[str] = mapped_column(LongText, nullable=False, default="")
    timestamp: Mapped[int] = _int()
    __table_args__ = (Index("hosting_task_log_vid_lid", "vid", "lid"),)


# -- HTTPS (hosting_https, "Aegir HTTPS") and its predecessor hosting_ssl ---------------------
# Optional modules: a hostmaster without them has none of these tables, which means "no
# https" (the inventory checks for the tables before reading them).
HTTPS_DISABLED, HTTPS_ENABLED, HTTPS_REQUIRED = 0, 1, 2
HTTPS_STATE_NAMES = {0: "disabled", 1: "enabled", 2: "required"}


class HostingHttpsServer(AegirBase):
    __tablename__ = "hosting_https_server"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    nid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    https_port: Mapped[int] = _uint()


class HostingHttpsSite(AegirBase):
    __tablename__ = "hosting_https_site"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    nid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    https_enabled: Mapped[int] = _uint()
    client_authentication: Mapped[int] = mapped_column(
        mysql.TINYINT(unsigned=True).with_variant(SmallInteger(), "sqlite"), nullable=False,
        server_default=text("0"))
    client_authentication_path: Mapped[str] = mapped_column(String(255), nullable=False, server_default="")


class HostingSslServer(AegirBase):
    __tablename__ = "hosting_ssl_server"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    nid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    ssl_port: Mapped[int] = _uint()


class HostingSslSite(AegirBase):
    __tablename__ = "hosting_ssl_site"
    vid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    nid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=False, server_default=text("0"))
    ssl_enabled: Mapped[int] = _uint()
    ssl_key: Mapped[int] = _uint()


class HostingSslCert(AegirBase):
    """An operator-provided certificate: ssl_key names its directory under config/ssl.d/."""

    __tablename__ = "hosting_ssl_cert"
    cid: Mapped[int] = mapped_column(UnsignedInt, primary_key=True, autoincrement=True)
    ssl_key: Mapped[str] = mapped_column(MediumText, nullable=False)
    client: Mapped[int] = _uint()
    status: Mapped[int] = _uint()


class HostingSslCertIp(AegirBase):
    """No primary key in Drupal's schema; (cid, ip_address) only on the mapper."""

    __tablename__ = "hosting_ssl_cert_ips"
    cid: Mapped[int] = _uint()
    ip_address: Mapped[int] = _uint()
    __mapper_args__ = {"primary_key": [cid, ip_address]}


# -- hosting_package_languages (H:package/hosting_package.install) ----------------------------
# The languages of a package instance (install profiles' translations). Drupal gives it no
# primary key; (iid, language) is declared only on the mapper.

class HostingPackageLanguage(AegirBase):
    __tablename__ = "hosting_package_languages"
    iid: Mapped[int] = mapped_column(Integer, nullable=False)
    language: Mapped[str] = mapped_column(String(12), nullable=False, server_default="")
    __mapper_args__ = {"primary_key": [iid, language]}


AEGIR_TABLES = [t.name for t in AegirBase.metadata.sorted_tables]
