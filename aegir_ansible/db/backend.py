"""Tables only the backend needs, kept apart from Aegir's (all prefixed `aegir_ansible_`).

Aegir's frontend has no place for how to reach a server (ssh user, port, python, local
connection, where its aegir home is, how to test and reload its web server) nor for a
per-site cron interval; these live here, keyed by the frontend's node ids, so the
frontend tables stay exactly as hostmaster defines them.
"""

from __future__ import annotations

import json

from sqlalchemy import Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aegir_ansible import defaults


class BackendBase(DeclarativeBase):
    """Declarative base of the backend's own tables."""


class ServerSettings(BackendBase):
    """Connection and layout settings of one server (keyed by the server's node id)."""

    __tablename__ = "aegir_ansible_server"
    nid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    connection: Mapped[str] = mapped_column(String(16), nullable=False, default="ssh")
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ssh_user: Mapped[str] = mapped_column(String(64), nullable=False, default=defaults.SSH_USER)
    ssh_port: Mapped[int] = mapped_column(Integer, nullable=False, default=defaults.SSH_PORT)
    ssh_private_key_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    python_interpreter: Mapped[str] = mapped_column(
        String(255), nullable=False, default=defaults.PYTHON_INTERPRETER
    )
    aegir_root: Mapped[str] = mapped_column(Text, nullable=False, default=defaults.AEGIR_ROOT)
    script_user: Mapped[str] = mapped_column(String(64), nullable=False, default=defaults.SCRIPT_USER)
    web_group: Mapped[str] = mapped_column(String(64), nullable=False, default=defaults.WEB_GROUP)
    http_listen_address: Mapped[str] = mapped_column(String(255), nullable=False,
                                                     default=defaults.HTTP_LISTEN_ADDRESS)
    # JSON argv lists; NULL means the default of the server's http service type.
    http_test_cmd: Mapped[str | None] = mapped_column(Text, nullable=True)
    http_reload_cmd: Mapped[str | None] = mapped_column(Text, nullable=True)
    php_fastcgi: Mapped[str] = mapped_column(
        Text, nullable=False, default=defaults.PHP_FASTCGI
    )
    db_grant_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Where this server's db service listens, as web servers reach it (default: address).
    db_host: Mapped[str | None] = mapped_column(String(255), nullable=True)

    def http_commands(self, http_type: str) -> tuple[list[str], list[str]]:
        test_default, reload_default = defaults.HTTP_COMMANDS.get(http_type, ([], []))
        test = json.loads(self.http_test_cmd) if self.http_test_cmd else test_default
        reload_ = json.loads(self.http_reload_cmd) if self.http_reload_cmd else reload_default
        return list(test), list(reload_)


class SiteSettings(BackendBase):
    """Per-site settings Aegir 3 has no column for (its cron runs every site hourly)."""

    __tablename__ = "aegir_ansible_site"
    nid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    cron_interval: Mapped[int] = mapped_column(
        Integer, nullable=False, default=defaults.CRON_INTERVAL,
        server_default=text(str(defaults.CRON_INTERVAL))
    )


# -- site database ownership (issue 12) -----------------------------------------------------

class SiteDatabase(BackendBase):
    """The database and user a site owns on its db server: created by this backend (install,
    migrate, clone), or taken over after the site's own credentials logged in to them. Only
    these are ever altered, dumped or dropped for the site, and the user only at `hosts`."""

    __tablename__ = "aegir_ansible_site_db"
    __table_args__ = (UniqueConstraint("db_server", "db_name", name="aegir_ansible_site_db_name"),)
    nid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    db_server: Mapped[int] = mapped_column(Integer, nullable=False)
    db_name: Mapped[str] = mapped_column(String(64), nullable=False)
    db_user: Mapped[str] = mapped_column(String(80), nullable=False)
    # JSON list of the hosts the user was created at.
    hosts: Mapped[str] = mapped_column(Text, nullable=False, default="[]")
    created: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    def host_list(self) -> list[str]:
        hosts = json.loads(self.hosts or "[]")
        return [str(h) for h in hosts] if isinstance(hosts, list) else []


class SiteHostName(BackendBase):
    """A host name (uri or alias) a site was last served under by a successful task: the site
    keeps it when another live site's row claims it too."""

    __tablename__ = "aegir_ansible_site_name"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    nid: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
