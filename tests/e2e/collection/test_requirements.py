"""The collection declares its requirements the collection way, its execution environment
definition is accepted by ansible-builder, and its changelog is antsibull-changelog's."""

from __future__ import annotations

import pytest
import yaml

from .helpers import BIN, REPO, run

needs_builder = pytest.mark.skipif(not (BIN / "ansible-builder").exists(),
                                   reason="ansible-builder is installed with the test extras")


@needs_builder
def test_collection_declares_python_and_system_requirements(collection):
    """ansible-builder reads them from the installed collection's meta/execution-environment.yml."""
    found = yaml.safe_load(run(BIN / "ansible-builder", "introspect", collection).stdout)
    assert any(line.startswith("aegir-ansible") for line in found["python"]), found
    assert any(line.startswith("openssh-clients [platform:rpm]") for line in found["system"]), found


@needs_builder
def test_execution_environment_definition_is_accepted(tmp_path):
    """`ansible-builder create` validates the definition (format 3) and writes the build context;
    building the image needs a container engine, which this test does not use."""
    context = tmp_path / "context"
    run(BIN / "ansible-builder", "create", "-f", REPO / "execution-environment.yml", "-c", context,
        cwd=tmp_path)
    containerfile = next(p for p in (context / "Containerfile", context / "Dockerfile") if p.is_file())
    text = containerfile.read_text()
    assert "ansible-galaxy collection install" in text
    assert "quay.io/fedora/fedora:42" in text
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert {"name": "aegir.hosting", "version": ">=0.1.0"} in galaxy["collections"]


@pytest.mark.skipif(not (BIN / "antsibull-changelog").exists(),
                    reason="antsibull-changelog is installed with the test extras")
def test_changelog_fragments_and_history_lint():
    run(BIN / "antsibull-changelog", "lint")
    run(BIN / "antsibull-changelog", "lint-changelog-yaml", REPO / "changelogs" / "changelog.yaml")
    releases = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text())["releases"]
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["version"] in releases
    assert f"v{galaxy['version']}" in (REPO / "CHANGELOG.rst").read_text()
