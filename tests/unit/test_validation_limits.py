"""The frontend's input rules (aegir_ansible.validation) against the managed side's
(plugins/module_utils/aegir_site_common.py, loaded by path here only: the package does not
import the collection). A value the frontend accepts and the module refuses fails every run
on it; this test fails instead when the two drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aegir_ansible import defaults, validation
from aegir_ansible.validation import InputError

COMMON = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "aegir_site_common.py"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("aegir_site_common_under_test", COMMON)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
