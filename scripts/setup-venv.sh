#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with Python >= 3.12, and install
# aegir-ansible with the bundled Ansible collections and the test tools.
# ansible-core 2.21 needs Python 3.12+; Debian 12's python3 is 3.11, so look for a newer one.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local c
    for c in "${AEGIR_PYTHON:-}" python3.13 python3.12 python3.14 \
             "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3 \
             /root/.pyenv/versions/3.13*/bin/python3 /root/.pyenv/versions/3.12*/bin/python3; do
        [ -n "$c" ] || continue
        if command -v "$c" >/dev/null 2>&1 &&
           "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    py=$(find_python) || { echo "setup-venv: Python >= 3.12 not found (set AEGIR_PYTHON)" >&2; exit 1; }
    echo "setup-venv: creating .venv with $py"
    PYENV_VERSION=system "$py" -m venv .venv 2>/dev/null || "$py" -m venv .venv
fi
stamp=.venv/.aegir-ansible-installed
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup-venv: installing aegir-ansible and its dependencies (the ansible package is ~440 MB)"
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q -e '.[collections,test]' 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c 'import aegir_ansible, ansible_runner, sqlalchemy, pymysql' 
    .venv/bin/ansible-galaxy collection list community.mysql >/dev/null
    echo "$want" > "$stamp"
fi
