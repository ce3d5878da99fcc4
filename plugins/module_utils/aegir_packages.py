# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find a Drupal codebase's install profiles, modules and themes the way provision did.

Pure Python (standard library; PyYAML when the node has it): the aegir_packages module runs
it on the managed node, tests load the file directly. The result has the shape of the
`packages` data provision's verify returned to hostmaster (`provision_find_packages()` for a
platform, `_provision_drupal_system_map()` for a site), which `hosting_package_sync()` and
`hosting_package_instance_sync()` store (see aegir_ansible/packages.py):

    platform: {"base": {"modules": {...}, "themes": {...}, "platforms": {"drupal": {...}},
                        "profiles": {...}},
               "sites-all": {"modules": {...}, "themes": {...}},
               "profiles": {<profile>: {"modules": {...}, "themes": {...}}}}
    site:     {"platforms": {...}, "profiles": {<profile>: {..., "status": 1}},
               "modules": {...}, "themes": {...}}

Each package is {"filename", "version", "schema_version", "info": {"name", "description",
...}} plus, for a site, "status" (1 enabled) and "platform" (-1 for code in the site's own
directory, which hostmaster keeps out of platform comparisons).

Rules taken from provision 7.x-3.x (restated, not copied):
- Drupal 8+: extensions are `<name>.info.yml` files (modules must have `type: module`, themes
  `type: theme`), Drupal 7 and older: modules are `<name>.module` next to `<name>.info`,
  themes are `<name>.info` files. Hidden extensions (`hidden: true`) are skipped.
- Platform search paths: `modules`, `core/modules`, `sites/all/modules` (and the same for
  themes) for "base"; `sites/all/...` for "sites-all"; `<profile>/modules|themes` per profile.
  Directories are walked recursively; a later path wins for a name found twice.
- Profiles: `<name>.info.yml` with `type: profile` under `core/profiles` and `profiles`
  (Drupal 8+), `<name>.profile` + `.info` under `profiles` (Drupal 7); languages = 'en' plus
  the code of every `*.po` file in the profile directory or its `translations/`.
- version: the info file's `version`, or the Drupal core version when it is empty or
  'VERSION'. schema_version: the highest `<name>_update_N` in `<name>.install` (and
  `includes/<name>.install.update.inc`), at least major*1000 on Drupal 8+, else 0.
"""

from __future__ import annotations

import os
import re

try:
    import yaml  # PyYAML, present wherever Ansible's own YAML support is
except ImportError:  # pragma: no cover - exercised only on nodes without PyYAML
    yaml = None

PLURALS = ("modules", "themes")
SKIP_DIRS = {".", "..", "CVS", ".svn", ".git", "node_modules"}
_UPDATE = re.compile(r"function\s*&?([A-Za-z0-9_]+)_update_([0-9]+)\s*\(")
_PO = re.compile(r"(?:/|\.)([^./]+)\.po$")
_D7_VERSION = re.compile(r"define\(\s*'VERSION'\s*,\s*'([^']+)'\s*\)")
_D8_VERSION = re.compile(r"const\s+VERSION\s*=\s*'([^']+)'")
_INFO_LINE = re.compile(r"^\s*([^=\s\[;#]+)((?:\[[^\]]*\])*)\s*=\s*(.*?)\s*$")
_YAML_SCALAR = re.compile(r"^([A-Za-z0-9_]+)\s*:\s*(.*?)\s*$")


class PackageError(Exception):
    pass


# -- info files ---------------------------------------------------------------------------------

def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_info_yml(path: str) -> dict:
    """A `.info.yml` file as a dict (PyYAML; without it, the top-level scalar keys only,
    which is all packages need: name, type, description, version, hidden)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    if yaml is not None:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PackageError(f"{path}: not valid YAML ({exc})") from None
        return data if isinstance(data, dict) else {}
    data = {}
    for line in text.splitlines():
        if line[:1] in (" ", "\t", "#", "-") or not line.strip():
            continue
        match = _YAML_SCALAR.match(line)
        if match and match.group(2) and match.group(2)[0] not in "[{|>":
            value = _unquote(match.group(2).split(" #")[0].strip())
            data[match.group(1)] = {"true": True, "false": False}.get(value.lower(), value)
    return data


def parse_info(path: str) -> dict:
    """A Drupal 6/7 `.info` file (`key = value`, `key[] = value`; ';' comments)."""
    data: dict = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = _INFO_LINE.match(line)
            if not match:
                continue
            key, brackets, value = match.groups()
            value = _unquote(value)
            if brackets:
                data.setdefault(key, [])
                if isinstance(data[key], list):
                    data[key].append(value)
            else:
                data[key] = value
    return data


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


# -- the codebase -------------------------------------------------------------------------------

def drupal_version(root: str) -> tuple[str, int]:
    """(version, major) of the Drupal core at root."""
    for rel, pattern in (("core/lib/Drupal.php", _D8_VERSION), ("includes/bootstrap.inc", _D7_VERSION),
                         ("modules/system/system.module", _D7_VERSION)):
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as fh:
                match = pattern.search(fh.read())
            if match:
                version = match.group(1)
                major = int(re.match(r"\d+", version).group(0)) if re.match(r"\d+", version) else 0
                return version, major
    raise PackageError(f"{root} is not a Drupal root (no core/lib/Drupal.php or includes/bootstrap.inc)")


def _walk(path: str, suffix: str) -> list[tuple[str, str]]:
    """(name, file) for every file ending in suffix below path, recursively, sorted."""
    found = []
    if not os.path.isdir(path):
        return found
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for filename in sorted(filenames):
            if filename.endswith(suffix) and len(filename) > len(suffix):
                found.append((filename[: -len(suffix)], os.path.join(dirpath, filename)))
    return found


def schema_version(ext_dir: str, name: str, major: int) -> int:
    floor = major * 1000 if major >= 8 else 0
    sources = []
    for rel in (f"{name}.install", os.path.join("includes", f"{name}.install.update.inc")):
        path = os.path.join(ext_dir, rel)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as fh:
                sources.append(fh.read())
    numbers = [int(n) for src in sources for fn, n in _UPDATE.findall(src) if fn == name]
    return max([floor] + numbers)


def _package(name: str, info: dict, filename: str, version: str, schema: int | None) -> dict:
    info_version = str(info.get("version") or "")
    out = {
        "filename": os.path.realpath(filename),
        "version": version if info_version in ("", "VERSION") else info_version,
        "info": {"name": str(info.get("name") or name),
                 "description": str(info.get("description") or "")},
    }
    if info.get("old_short_name"):
        out["info"]["old_short_name"] = str(info["old_short_name"])
    if schema is not None:
        out["schema_version"] = schema
    return out


def find_extensions(paths: list[str], plural: str, version: str, major: int) -> dict:
    """{short_name: package} of the modules or themes below the given directories."""
    kind = plural[:-1]
    found: dict = {}
    for path in paths:
        if major >= 8:
            for name, filename in _walk(path, ".info.yml"):
                info = parse_info_yml(filename)
                if str(info.get("type", "")) != kind or _truthy(info.get("hidden", False)):
                    continue
                schema = schema_version(os.path.dirname(filename), name, major) if kind == "module" else None
                found[name] = _package(name, info, filename, version, schema)
        else:
            for name, filename in _walk(path, ".module" if kind == "module" else ".info"):
                info_file = filename if kind == "theme" else os.path.join(os.path.dirname(filename), f"{name}.info")
                if not os.path.isfile(info_file):
                    continue
                info = parse_info(info_file)
                if _truthy(info.get("hidden", False)):
                    continue
                if kind == "theme" and os.path.isfile(os.path.join(os.path.dirname(filename), f"{name}.module")):
                    continue  # a module's .info file, not a theme
                schema = schema_version(os.path.dirname(filename), name, major) if kind == "module" else None
                found[name] = _package(name, info, filename, version, schema)
    return found


def profile_languages(path: str) -> list[str]:
    languages = {"en": 1}
    for directory in (os.path.join(path, "translations"), path):
        if os.path.isdir(directory):
            for entry in sorted(os.listdir(directory)):
                match = _PO.search("/" + entry)
                if match and os.path.isfile(os.path.join(directory, entry)):
                    languages[match.group(1)] = 1
    return list(languages)


def find_profiles(root: str, version: str, major: int) -> dict:
    """{short_name: package} of the install profiles, each with 'path' and info.languages."""
    profiles: dict = {}
    dirs = ("core/profiles", "profiles") if major >= 8 else ("profiles",)
    for rel in dirs:
        base = os.path.join(root, rel)
        if major >= 8:
            candidates = list(_walk(base, ".info.yml"))
        else:
            candidates = [(n, f[: -len(".profile")] + ".info") for n, f in _walk(base, ".profile")]
        for name, filename in candidates:
            if not os.path.isfile(filename):
                continue
            info = parse_info_yml(filename) if major >= 8 else parse_info(filename)
            if major >= 8 and str(info.get("type", "")) != "profile":
                continue
            if _truthy(info.get("hidden", False)):
                continue
            path = os.path.dirname(filename)
            short = os.path.basename(path)
            pkg = _package(short, info, filename, version, None)
            pkg["version"] = version  # provision gives profiles the core version
            pkg["info"]["languages"] = profile_languages(path)
            pkg["path"] = os.path.realpath(path)
            profiles[short] = pkg
    return profiles


def _platforms(version: str) -> dict:
    # As provision reports it: no 'info', so hostmaster titles the package 'drupal'.
    return {"drupal": {"short_name": "drupal", "version": version,
                       "description": f"This platform is running Drupal {version}"}}


def find_sites(root: str) -> list[str]:
    """Site directories with a settings.php (not default, not symlinks), as provision lists them."""
    sites_dir = os.path.join(root, "sites")
    out = []
    if os.path.isdir(sites_dir):
        for entry in sorted(os.listdir(sites_dir)):
            path = os.path.join(sites_dir, entry)
            if entry != "default" and not os.path.islink(path) and os.path.isfile(os.path.join(path, "settings.php")):
                out.append(entry)
    return out


def scan_platform(root: str) -> dict:
    """Everything platform verify reports: {"version", "profiles" (names), "sites",
    "packages"} (packages as provision_find_packages() shaped them)."""
    root = os.path.realpath(root)
    version, major = drupal_version(root)

    def paths(*rels):
        return [os.path.join(root, r) for r in rels]

    base = {}
    sites_all = {}
    for plural in PLURALS:
        base[plural] = find_extensions(paths(plural, f"core/{plural}", f"sites/all/{plural}"), plural, version, major)
        sites_all[plural] = find_extensions(paths(f"sites/all/{plural}"), plural, version, major)
    profiles = find_profiles(root, version, major)
    base["platforms"] = _platforms(version)
    base["profiles"] = {name: {k: v for k, v in pkg.items() if k != "path"} for name, pkg in profiles.items()}
    per_profile = {
        name: {plural: find_extensions([os.path.join(pkg["path"], plural)], plural, version, major)
               for plural in PLURALS}
        for name, pkg in profiles.items()
    }
    return {"version": version, "major": major, "profiles": sorted(profiles),
            "sites": find_sites(root),
            "packages": {"base": base, "sites-all": sites_all, "profiles": per_profile}}


def scan_site(root: str, site_dir: str, profile: str, enabled=None, platform_scan: dict | None = None) -> dict:
    """The site's packages (as _provision_drupal_system_map() shaped them): every module and
    theme the site can see (core, sites/all, its profile's, its own sites/<dir>/), with
    status 1 for those in `enabled` (names; None = unknown, all 0), the site's profile with
    status 1, and platform -1 for code in the site's own directory."""
    root = os.path.realpath(root)
    scan = platform_scan or scan_platform(root)
    version, major = scan["version"], scan["major"]
    if "/" in site_dir or site_dir in ("", ".", ".."):
        raise PackageError(f"bad site directory {site_dir!r}")
    own = os.path.join(root, "sites", site_dir)
    enabled = set(enabled or ())
    out = {"platforms": _platforms(version), "profiles": {}}
    base_profiles = scan["packages"]["base"]["profiles"]
    if profile in base_profiles:
        pkg = dict(base_profiles[profile])
        pkg["status"] = 1
        out["profiles"][profile] = pkg
    for plural in PLURALS:
        merged = dict(scan["packages"]["base"][plural])
        merged.update(scan["packages"]["profiles"].get(profile, {}).get(plural, {}))
        for name, pkg in find_extensions([os.path.join(own, plural)], plural, version, major).items():
            pkg = dict(pkg)
            pkg["platform"] = -1
            merged[name] = pkg
        out[plural] = {name: dict(pkg, status=1 if name in enabled else 0) for name, pkg in merged.items()}
    return out
