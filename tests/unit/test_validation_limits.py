"""One source for the input rules (plugins/module_utils/aegir_rules.py): the frontend's checks
(aegir_ansible.validation), the modules' (module_utils/aegir_site_common) and the roles'
Jinja tests (plugins/test/aegir_rules.py) must accept exactly the same values. A value the
frontend accepts and a module refuses fails every run on it."""

from __future__ import annotations

import pytest
from ansible_collections.aegir.hosting.plugins.module_utils import aegir_rules as rules
from ansible_collections.aegir.hosting.plugins.module_utils import aegir_site_common
from ansible_collections.aegir.hosting.plugins.test.aegir_rules import TestModule as JinjaTests

from aegir_ansible import defaults, validation
from aegir_ansible.validation import InputError


@pytest.fixture(scope="module")
def common():
    return aegir_site_common


@pytest.fixture(scope="module")
def jinja():
    return JinjaTests().tests()


def accepts(fn, value) -> bool:
    try:
        fn(value)
    except (InputError, ValueError):
        return False
    return True


def longest(fn, make, upto: int = 400) -> int:
    """The longest make(n) fn accepts (0: none)."""
    return max((n for n in range(1, upto) if accepts(fn, make(n))), default=0)


def test_profile_length_is_the_modules(common):
    make = lambda n: "p" * n  # noqa: E731
    assert longest(validation.check_profile, make) == validation.PROFILE_MAX
    assert longest(common.check_profile, make) == validation.PROFILE_MAX


def test_cli_refuses_the_profile_the_module_would_refuse(common):
    too_long = "p" * (validation.PROFILE_MAX + 1)
    assert not accepts(common.check_profile, too_long)
    with pytest.raises(InputError, match="at most 64"):
        validation.check_profile(too_long)


def test_host_name_lengths_are_the_modules(common):
    label = lambda n: "a" * n  # noqa: E731
    assert longest(validation.normalize_hostname, label) == validation.LABEL_MAX
    assert longest(common.check_hostname, label) == validation.LABEL_MAX
    name = lambda n: ".".join(["a" * 9] * (n // 10) + (["a" * (n % 10)] if n % 10 else []))  # noqa: E731
    assert longest(validation.normalize_hostname, name, 300) == validation.HOSTNAME_MAX
    assert longest(common.check_hostname, name, 300) == validation.HOSTNAME_MAX


@pytest.mark.parametrize("value", [
    "site.example.org", "a-b.example", "xn--bcher-kva.example", "-bad.example", "bad-.example",
    "a..b", "under_score.example", "a" * 63 + ".example", "a" * 64 + ".example",
])
def test_host_names_agree(common, value):
    assert accepts(validation.normalize_hostname, value) == accepts(common.check_hostname, value)


@pytest.mark.parametrize("value", ["en", "pt-br", "zh-hans", "e", "english", "pt_br", "de-"])
def test_languages_agree(common, value):
    assert accepts(validation.check_language, value) == accepts(common.check_language, value)


@pytest.mark.parametrize("value", [
    "/var/aegir", "/var/aegir/platforms/d10", "/", "/var/./aegir", "/var/../etc", "var/aegir",
    "/var/aegir platforms", "/var/$HOME", "/srv/a+b@c_d-e.f",
])
def test_paths_agree(common, value):
    assert accepts(validation.check_abs_path, value) == accepts(common.check_path, value)


@pytest.mark.parametrize("value", [
    defaults.PHP_FASTCGI, "127.0.0.1:9000", "php:9000", "[::1]:9000", "unix:relative",
    "9000", "unix:/run/php fpm.sock", "host:port",
])
def test_fastcgi_addresses_agree(common, value):
    assert accepts(validation.check_fastcgi, value) == accepts(common.check_fastcgi, value)


@pytest.mark.parametrize("value", [
    defaults.HTTP_LISTEN_ADDRESS, "10.0.0.1", "[::1]", "web.example", "0.0.0.0:80", "", "a b",
])
def test_listen_addresses_agree(common, value):
    assert (accepts(validation.check_listen_address, value)
            == accepts(common.check_listen_address, value))


@pytest.mark.parametrize("value", [1, 22, 65535, 0, 65536])
def test_ports_agree(common, value):
    assert accepts(validation.check_port, value) == accepts(common.check_port, value)


def test_defaults_pass_the_modules_checks(common):
    common.check_path(defaults.AEGIR_ROOT)
    common.check_fastcgi(defaults.PHP_FASTCGI)
    common.check_listen_address(defaults.HTTP_LISTEN_ADDRESS)
    common.check_profile(defaults.SITE_PROFILE)
    common.check_language(defaults.SITE_LANGUAGE)


def test_every_side_reads_the_limits_from_the_rules():
    assert (validation.HOSTNAME_MAX, validation.LABEL_MAX, validation.PROFILE_MAX) == (
        rules.HOSTNAME_MAX, rules.LABEL_MAX, rules.PROFILE_MAX)


@pytest.mark.parametrize(("test", "check", "values"), [
    ("aegir_safe_path", validation.check_abs_path,
     ["/var/aegir", "/", "//", "/var/../etc", "/var/./a", "var/a", "/a b", "/srv/a+b@c_d-e.f"]),
    ("aegir_profile", validation.check_profile, ["standard", "p" * 64, "p" * 65, "1x", "Std"]),
    ("aegir_fastcgi", validation.check_fastcgi, [defaults.PHP_FASTCGI, "php:9000", "9000", "-h:1"]),
    ("aegir_listen_address", validation.check_listen_address, ["*", "10.0.0.1", "a b", ""]),
    ("aegir_hostname", validation.normalize_hostname, ["a.example", "-a.example", "a" * 64]),
])
def test_role_asserts_agree_with_the_cli(jinja, test, check, values):
    for value in values:
        assert jinja[test](value) == accepts(check, value), (test, value)


def test_role_asserts_use_the_rules_not_copies():
    """The roles spell these rules only through the Jinja tests: a copied regex drifts."""
    import pathlib
    copies = []
    for path in (pathlib.Path(__file__).resolve().parents[2] / "roles").glob("*/tasks/*.yml"):
        text = path.read_text()
        for needle in ("{1,64}$')", "[A-Za-z0-9._+@/-]+$')"):
            if needle in text:
                copies.append(f"{path.parent.parent.name}/{path.name}: {needle}")
    assert not copies, copies
