"""ansible-test sanity on the built collection passes, with no ignore file.

ansible-test runs each sanity test in a virtual environment of its own, with its pinned
requirements, installed from the package index. It creates those environments without pip and
bootstraps pip with a script it downloads from a host that is not reachable here; it uses a
cached copy of that script when there is one (~/.ansible/test/cache/get_pip_<version>.py, the
workaround its maintainers give in ansible/ansible#77304). pip_bootstrap.py does that script's
job with ensurepip, so the run needs nothing but the package index. The environments stay in
~/.ansible/test/venv (ansible-test's own cache, keyed by their requirements), so only the first
run installs them.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import sys
from pathlib import Path

import ansible_test

from .helpers import BIN, run

HERE = Path(__file__).resolve().parent
ANSIBLE_TEST_CACHE = Path.home() / ".ansible" / "test"


def bootstrap_pip_version() -> str:
    """The pip version ansible-test bootstraps into its sanity environments."""
    source = (Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
    found = re.findall(r"pip='([0-9.]+)'", source)
    assert found, "ansible-test's pip bootstrap version was not found in python_requirements.py"
    return found[-1]


def test_ansible_test_sanity_passes(collection_root):
    assert not (collection_root / "tests" / "sanity").exists()  # no ignore file
    cache = ANSIBLE_TEST_CACHE / "cache" / f"get_pip_{bootstrap_pip_version().replace('.', '_')}.py"
    cache.parent.mkdir(parents=True, exist_ok=True)
    # several checkouts share ~/.ansible/test: one sanity run at a time builds its environments
    with open(ANSIBLE_TEST_CACHE / "aegir-sanity.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cache.is_file():
            shutil.copyfile(HERE / "pip_bootstrap.py", cache)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        proc = run(BIN / "ansible-test", "sanity", "--python", python, "--local", "--color", "no",
                   cwd=collection_root, check=False, timeout=1800)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert proc.returncode == 0, "\n".join(errors) or output[-6000:]
    assert re.search(r'Running sanity test "validate-modules"', output)
    assert re.search(r'Running sanity test "pylint"', output)
