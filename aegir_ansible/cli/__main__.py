"""`python -m aegir_ansible.cli`, as the `aegir` command."""

from . import main

main()
