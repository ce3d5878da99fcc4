"""The aegir.hosting collection built from this checkout and installed into a fresh path."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import BIN, REPO, run


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    """The collections path (holding ansible_collections/aegir/hosting) of the built collection."""
    tmp = tmp_path_factory.mktemp("collection")
    run(BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp, REPO)
    tarball = next(tmp.glob("aegir-hosting-*.tar.gz"))
    path = tmp / "collections"
    # --force: this checkout's ansible.cfg already shows aegir.hosting (the checkout itself)
    run(BIN / "ansible-galaxy", "collection", "install", "--force", "--no-deps", "-p", path, tarball)
    root = path / "ansible_collections" / "aegir" / "hosting"
    assert (root / "roles" / "aegir_vhost" / "tasks" / "main.yml").is_file()
    assert not (root / "aegir_ansible").exists() and not (root / "tests").exists()
    return path


@pytest.fixture(scope="session")
def collection_root(collection) -> Path:
    return collection / "ansible_collections" / "aegir" / "hosting"
