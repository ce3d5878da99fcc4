"""Only here to keep the inventory script executable in the wheel (setuptools copies
package data without its mode; Ansible runs an inventory script only if it is executable).
Everything else is in pyproject.toml."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyKeepExecutable(build_py):
    def run(self):
        super().run()
        for path in self.get_outputs():
            # An editable install lists outputs it does not write: nothing to chmod there
            # (the source file is used, and it is executable in git).
            if path.endswith("aegir_inventory.py") and os.path.exists(path):
                os.chmod(path, 0o755)


setup(cmdclass={"build_py": BuildPyKeepExecutable})
