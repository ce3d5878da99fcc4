"""The roles' conventions, checked on their files (no servers needed):

- defaults/main.yml and meta/argument_specs.yml are the one source of a role's variables: every
  public variable of defaults/main.yml is documented in argument_specs, and a default written
  in argument_specs is the value of defaults/main.yml (they cannot drift apart);
- one convention for variable names: `<role>_<name>` is public (documented), `_<role>_<name>`
  internal (registered results, set_fact, task and block vars, derived defaults). The vars
  given to another role's entry point are that role's (`<other>_<name>`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def load(path: Path):
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass


def specs(role):
    path = REPO / "roles" / role / "meta" / "argument_specs.yml"
    return (load(path) or {}).get("argument_specs", {}) if path.is_file() else {}


def defaults(role):
    path = REPO / "roles" / role / "defaults" / "main.yml"
    return (load(path) or {}) if path.is_file() else {}


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_defaults_are_the_role_defaults(role):
    dflt = defaults(role)
    drift = []
    for entry, spec in specs(role).items():
        for name, option in (spec.get("options") or {}).items():
            if "default" in option and name in dflt and option["default"] != dflt[name]:
                drift.append(f"{entry}.{name}: spec {option['default']!r} != defaults {dflt[name]!r}")
    assert not drift, "\n".join(drift)


@pytest.mark.parametrize("role", [r for r in ROLES if specs(r)])
def test_every_public_default_is_documented(role):
    documented = {name for spec in specs(role).values() for name in (spec.get("options") or {})}
    missing = [name for name in defaults(role) if not name.startswith("_") and name not in documented]
    assert not missing, f"{role}: public defaults missing from meta/argument_specs.yml: {missing}"


def _tasks(node):
    """Every task of a task file, blocks included, with the block's own vars as a task."""
    for task in node or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _role_of_include(task):
    for key in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
        if key in task:
            return str(task[key]["name"]).rsplit(".", 1)[-1]
    return None


def _names(role):
    """(file, variable name, role whose convention it follows) of every variable a role sets."""
    out = []
    for name in defaults(role):
        out.append(("defaults/main.yml", name, role))
    vars_file = REPO / "roles" / role / "vars" / "main.yml"
    for name in (load(vars_file) or {}) if vars_file.is_file() else {}:
        out.append(("vars/main.yml", name, role))
    for path in sorted((REPO / "roles" / role / "tasks").glob("*.yml")):
        for task in _tasks(load(path)):
            where = path.name
            if "register" in task:
                out.append((where, task["register"], role))
            for key in ("ansible.builtin.set_fact", "set_fact"):
                for name in (task.get(key) or {}):
                    if name != "cacheable":
                        out.append((where, name, role))
            loop_var = (task.get("loop_control") or {}).get("loop_var")
            if loop_var:
                out.append((where, loop_var, role))
            target = _role_of_include(task) or role
            for name in task.get("vars") or {}:
                # vars given to another role's entry point are that role's (or our own internals)
                out.append((where, name, target if not name.startswith("_" + role + "_") else role))
    return out


@pytest.mark.parametrize("role", ROLES)
def test_one_naming_convention(role):
    bad = [f"{where}: {name}" for where, name, owner in _names(role)
           if not (name.startswith(owner + "_") or name.startswith("_" + owner + "_"))]
    assert not bad, f"{role}: not <role>_<name> or _<role>_<name>:\n" + "\n".join(bad)
