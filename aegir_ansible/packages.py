"""Store the packages a verify reports into hostmaster's package tables, as hostmaster does.

The data is what the aegir_packages module returns (the shape of provision's `packages`
context, see plugins/module_utils/aegir_packages.py). The functions here restate hosting's
package code (H:package/hosting_package.module, hosting_package.instance.inc and the post
verify/install/import/delete hooks of hosting_platform and hosting_site) so the rows are the
ones hostmaster's own code would have written:

- `sync_packages(session, data)` = hosting_package_sync(): one `package` node per
  (package_type, short_name); created when missing, its title (info name, else short name),
  description and old_short_name updated in place when they changed. Every package dict of
  `data` gets its `package_id` (hostmaster does the same to its `$data`).
- `sync_instances(session, rid, rtype, *sets)` = hosting_package_instance_sync(): every
  instance row of `rid` is marked status -1, the sets are merged per plural (later sets win
  for a name), each package's instance (rid, package_id) is updated or created (filename,
  version or 'Unknown', schema_version, version_code, status, platform) with its languages,
  then the rows of `rid` still at -1 are deleted.
- `sync_platform(...)`, `sync_site(...)`, `clear_instances(...)`: what the post-task hooks
  do with these two functions for platform verify, site install/verify/import, and deletes.

Profiles hostmaster offers for a new site on a platform are the `profile` instances with
rid = the platform's nid (`platform_profiles()`), so platform verify must run this before
hostmaster can offer any profile.
"""

from __future__ import annotations

import re
import time

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend

# _hosting_package_plural_map(), in hostmaster's order.
PLURAL_MAP = {"modules": "module", "themes": "theme", "profiles": "profile",
              "engines": "engine", "platforms": "platform"}
SYNCING = -1  # instance status while a sync runs (hostmaster's magic number)
INSTANCE_EXCLUDE = -1  # `platform` of code in a site's own directory

_RELEASE_TYPES = {"": 0, "dev": 0, "unstable": 1, "alpha": 2, "beta": 3, "rc": 4, "release": 5}
_CORE = re.compile(r"^(?P<platform_major>\d?)\.(?P<platform_minor>[x\d]*)?"
                   r"(-(?P<package_version_type>dev|unstable|alpha|beta|rc)?(?P<package_patch_level>\d)*)?$")
_CONTRIB = re.compile(r"(?P<platform_major>\d?)\.(?P<platform_minor>[x\d]*)?"
                      r"(-(?P<package_major>\d*)?\.(?P<package_minor>[x\d]*)?"
                      r"(-(?P<package_version_type>alpha|unstable|beta|rc|dev)?(?P<package_patch_level>[\d]*)?)?)?")
_DEFAULTS = {"platform_major": "0", "platform_minor": "0", "package_major": "0", "package_minor": "0",
             "package_version_type": "release", "package_patch_level": "0"}


def _php_groups(match: re.Match) -> dict[str, str]:
    """The named groups as PHP's preg_match() fills them: groups after the last one that
    took part are absent (the defaults apply), earlier ones that did not are ''."""
    last = max((i for i in range(1, match.re.groups + 1) if match.start(i) != -1), default=0)
    out = {}
    for name, index in match.re.groupindex.items():
        if index <= last:
            out[name] = match.group(index) or ""
    return out


def _php_int(value: str) -> int:
    digits = re.match(r"\d*", value).group(0)  # type: ignore[union-attr]  # \d* always matches
    return int(digits) if digits else 0


def version_code(version: str) -> int:
    """hosting_package_instance_version_code(): a version string as a comparable number."""
    match = _CORE.search(version) or _CONTRIB.search(version)
    if not match:
        return 0
    g = {**_DEFAULTS, **_php_groups(match)}
    text = "{:d}{:02d}{:02d}{:02d}{:02d}{:02d}".format(
        _php_int(g["platform_major"]), _php_int(g["platform_minor"]), _php_int(g["package_major"]),
        _php_int(g["package_minor"]), _RELEASE_TYPES.get(g["package_version_type"], 0),
        _php_int(g["package_patch_level"]))
    return int(text)


# -- hosting_package_sync() ---------------------------------------------------------------------

def _find_package(session: Session, short_name: str, package_type: str):
    """hosting_get_package(): (node, hosting_package row of its current revision) or None."""
    nid = session.execute(select(m.HostingPackage.nid).where(
        m.HostingPackage.short_name == short_name, m.HostingPackage.package_type == package_type)
    ).scalars().first()
    if nid is None:
        return None
    node = session.get(m.Node, nid)
    row = session.get(m.HostingPackage, node.vid) if node is not None else None
    return (node, row) if row is not None else None


def sync_packages(session: Session, data: dict | None, now: int | None = None) -> None:
    """hosting_package_sync($data): package nodes for every package in data (by plural)."""
    if not data or not isinstance(data, dict):
        return
    now = int(now or time.time())
    fe = Frontend(session)
    for plural, packages in data.items():
        package_type = PLURAL_MAP.get(plural, plural)
        if not isinstance(packages, dict):
            continue  # hostmaster's PHP would iterate an empty array()
        for short_name, file in packages.items():
            info = file.get("info") if isinstance(file.get("info"), dict) else {}
            name = str(info.get("name", short_name))
            found = _find_package(session, short_name, package_type)
            description = str(info.get("description", ""))
            old_short = str(info.get("old_short_name", ""))
            if found is None:
                nid, vid = fe._new_node("package", name, now)
                session.add(m.HostingPackage(vid=vid, nid=nid, package_type=package_type,
                                             short_name=short_name, old_short_name=old_short,
                                             description=description))
                session.flush()
            else:
                node, row = found
                nid = node.nid
                if (node.title != name or ("description" in info and row.description != description)
                        or ("old_short_name" in info and row.old_short_name != old_short)):
                    # node_save() of an existing package: the current revision in place.
                    node.title, node.changed = name, now
                    rev = session.get(m.NodeRevision, node.vid)
                    if rev is not None:
                        rev.title, rev.timestamp = name, now
                    row.description, row.old_short_name = description, old_short
                    session.flush()
            file["package_id"] = nid


# -- hosting_package_instance_sync() ------------------------------------------------------------

def _platform_of(session: Session, rid: int, rtype: str) -> int | None:
    if rtype == "platform":
        return rid
    if rtype == "site":
        node = session.get(m.Node, rid)
        site = session.get(m.HostingSite, node.vid) if node is not None else None
        return site.platform if site is not None else None
    if rtype == "profile":
        return session.execute(select(m.HostingPackageInstance.rid)
                               .where(m.HostingPackageInstance.iid == rid)).scalar()
    raise ValueError(f"unrecognized entity type {rtype!r}")


def sync_instances(session: Session, rid: int, rtype: str, *package_sets: dict | None) -> None:
    """hosting_package_instance_sync($rid, $type, ...): the instances of rid become exactly
    the packages of the sets (which sync_packages() gave their package_id)."""
    session.execute(update(m.HostingPackageInstance).where(m.HostingPackageInstance.rid == rid)
                    .values(status=SYNCING).execution_options(synchronize_session=False))
    platform = _platform_of(session, rid, rtype)
    for plural in PLURAL_MAP:
        merged: dict = {}
        for package_set in package_sets:
            if isinstance(package_set, dict) and isinstance(package_set.get(plural), dict):
                merged.update(package_set[plural])
        for short_name, package in merged.items():
            if "package_id" not in package:
                raise ValueError(f"{plural} {short_name!r} was not synced (sync_packages first)")
            instance = session.execute(
                select(m.HostingPackageInstance).where(
                    m.HostingPackageInstance.rid == rid,
                    m.HostingPackageInstance.package_id == package["package_id"])
                .order_by(m.HostingPackageInstance.iid)).scalars().first()
            if instance is None:
                instance = m.HostingPackageInstance(rid=rid, package_id=package["package_id"])
                session.add(instance)
            info = package.get("info") if isinstance(package.get("info"), dict) else {}
            instance.filename = str(package.get("filename") or "")
            instance.version = str(package.get("version") or "Unknown")
            instance.schema_version = int(package.get("schema_version") or 0)
            instance.version_code = version_code(instance.version)
            instance.status = int(package["status"]) if "status" in package else 0
            instance.platform = int(package["platform"]) if package.get("platform") is not None else (platform or 0)
            session.flush()
            languages = info.get("languages") or []
            if languages:
                session.execute(delete(m.HostingPackageLanguage)
                                .where(m.HostingPackageLanguage.iid == instance.iid))
                for language in dict.fromkeys(str(code) for code in languages):
                    session.add(m.HostingPackageLanguage(iid=instance.iid, language=language))
                session.flush()
    session.execute(delete(m.HostingPackageInstance).where(
        m.HostingPackageInstance.rid == rid, m.HostingPackageInstance.status == SYNCING)
        .execution_options(synchronize_session=False))
    session.flush()


# -- the post-task hooks ------------------------------------------------------------------------

def sync_platform(session: Session, platform_nid: int, packages: dict, profiles: list[str],
                  now: int | None = None) -> None:
    """hosting_platform_post_hosting_verify_task()'s package part: base and sites/all
    packages as the platform's instances, then per install profile its own packages as
    instances of the profile's instance."""
    base = packages.get("base") or {}
    sites_all = packages.get("sites-all") or {}
    sync_packages(session, base, now)
    sync_packages(session, sites_all, now)
    sync_instances(session, platform_nid, "platform", base, sites_all)
    per_profile = packages.get("profiles") or {}
    for profile in profiles:
        own = per_profile.get(profile) or {}
        sync_packages(session, own, now)
        instance_iid = session.execute(
            select(m.HostingPackageInstance.iid)
            .join(m.HostingPackage, m.HostingPackage.nid == m.HostingPackageInstance.package_id)
            .where(m.HostingPackage.short_name == profile, m.HostingPackageInstance.rid == platform_nid,
                   m.HostingPackage.package_type == "profile")
            .order_by(m.HostingPackageInstance.iid)).scalars().first()
        if instance_iid is not None:
            sync_instances(session, instance_iid, "profile", base, own, sites_all)


def sync_site(session: Session, site_nid: int, packages: dict, now: int | None = None) -> None:
    """hosting_site_post_hosting_{install,verify,import}_task()'s package part."""
    sync_packages(session, packages, now)
    sync_instances(session, site_nid, "site", packages)


def clear_instances(session: Session, rid: int, rtype: str) -> None:
    """Post delete of a site or platform: hosting_package_instance_sync(rid, type)."""
    sync_instances(session, rid, rtype)


def platform_profiles(session: Session, platform_nid: int,
                      blocked=("hostslave", "hostmaster")) -> list[str]:
    """The install profiles hostmaster offers on a platform (hosting_get_profiles(): its
    profile instances whose package node is published, minus variable
    hosting_blocked_profiles, whose default is given here)."""
    return [name for name in session.execute(
        select(m.HostingPackage.short_name)
        .join(m.HostingPackageInstance, m.HostingPackageInstance.package_id == m.HostingPackage.nid)
        .join(m.Node, m.Node.nid == m.HostingPackage.nid)
        .where(m.HostingPackageInstance.rid == platform_nid, m.HostingPackage.package_type == "profile",
               m.Node.status == 1, m.Node.vid == m.HostingPackage.vid)
        .order_by(m.HostingPackage.short_name)).scalars() if name not in blocked]
