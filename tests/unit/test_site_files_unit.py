"""Fast unit tests of the validators, PHP quoting and secret handling shared by the
aegir_site_files action plugin and module (no servers needed)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("aegir_site_common", REPO / "plugins/module_utils/aegir_site_common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


@pytest.mark.parametrize("name", ["example.com", "a.b-c.example.test", "xn--bcher-kva.example", "1.2.3.4"])
def test_hostname_accepted(name):
    assert common.check_hostname(name) == name


@pytest.mark.parametrize("name", [
    "", "Example.com", "a..b", "-a.com", "a-.com", "a_b.com", "a b.com", "a;b.com", "a'b.com", 'a"b.com',
    "../etc", "a/b", "{{ lookup('pipe','id') }}", "$(id).com", "a\nb.com", "x" * 64 + ".com",
])
def test_hostname_refused(name):
    with pytest.raises(common.AegirValueError):
        common.check_hostname(name)


@pytest.mark.parametrize("path", ["/var/aegir/platforms/../../etc", "relative/path", "/a b", "/a;b", "/a/./b", "/"])
def test_path_refused(path):
    with pytest.raises(common.AegirValueError):
        common.check_path(path)


@pytest.mark.parametrize("value", ["plain", "it's", "back\\slash", "both\\'", "'; system('id'); '", "$x {{ y }}"])
def test_php_string_round_trips_through_php(value):
    literal = common.php_string(value)
    out = subprocess.run(["php", "-r", f"echo {literal};"], capture_output=True, text=True, check=True).stdout
    assert out == value


def test_secrets_read_and_masked():
    text = ("  'password' => " + common.php_string("p'w\\d") + ", // aegir:secret db_password\n"
            "$settings['hash_salt'] = 'salt'; // aegir:secret hash_salt\n  'username' => 'u',\n")
    assert common.read_secrets(text) == {"db_password": "p'w\\d", "hash_salt": "salt"}
    masked = common.mask_secrets(text)
    assert "p'w" not in masked and "salt';" not in masked
    assert "'password' => '********'" in masked and "'username' => 'u'" in masked


@pytest.mark.parametrize("value,ok", [
    ("unix:/run/php/php8.2-fpm.sock", True), ("127.0.0.1:9000", True), ("[::1]:9000", True),
    ("unix:/run/php.sock; evil", False), ("127.0.0.1", False), ("unix:relative.sock", False),
])
def test_fastcgi(value, ok):
    if ok:
        assert common.check_fastcgi(value) == value
    else:
        with pytest.raises(common.AegirValueError):
            common.check_fastcgi(value)
