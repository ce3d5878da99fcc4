"""Stand-in for the pip bootstrap script (get-pip) that ansible-test downloads before it
installs a sanity test's pinned requirements into an empty virtual environment.

The download host is not reachable here. ansible-test looks for the script in its cache first
(~/.ansible/test/cache/get_pip_<version>.py, the workaround its maintainers give in
ansible/ansible#77304) and runs it in the new environment with the arguments it gives
get-pip: pip options and packages (`pip==25.2`) plus `--no-setuptools` / `--no-wheel`.
This script does the same job with the standard library's ensurepip, then lets that pip
install the requested packages from the configured package index.
"""

import ensurepip
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")


def main() -> int:
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    return subprocess.call([sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    sys.exit(main())
