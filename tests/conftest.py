"""Marker handling shared by all tests: what integration tests need, and what happens when it is missing.

Outside CI a missing tool, privilege or test dependency skips the tests that
need it, naming what is missing; with CI=true it fails them, so a CI machine
that lost a package cannot pass by skipping.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from tests.support.fakestack import Stack

INTEGRATION_DIR = Path(__file__).parent / "integration"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: such tests fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/integration is an integration test, marked or not,
    # so `-m "not integration"` reliably leaves the real stack alone.
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def unavailable():
    """unavailable(reason): skip the test, or fail it with CI=true, because something it needs is missing."""
    return _unavailable


@pytest.fixture(scope="session")
def require_tools():
    """require_tools(*commands): skip (fail with CI=true) unless every command is on PATH."""

    def require(*names: str) -> None:
        missing = [name for name in names if shutil.which(name) is None]
        if missing:
            _unavailable(f"missing tool{'s' if len(missing) > 1 else ''}: {', '.join(missing)} (tests/run installs them)")

    return require


@pytest.fixture(scope="session")
def require_module():
    """require_module(name): the imported module; skip (fail with CI=true) when the test extra lacks it."""

    def require(name: str) -> ModuleType:
        try:
            return importlib.import_module(name)
        except ImportError as error:
            _unavailable(f"cannot import {name}: {error} (tests/run installs the test, cli and notify extras)")
            raise

    return require


@pytest.fixture(scope="session")
def require_root():
    """require_root(loop_devices=False): skip (fail with CI=true) unless running as root, with loop devices if asked."""

    def require(loop_devices: bool = False) -> None:
        if os.geteuid() != 0:
            _unavailable("needs root: podman with a private store, loop mounts, btrfs subvolumes, snapper configs")
        if loop_devices and not Path("/dev/loop-control").exists():
            _unavailable("no /dev/loop-control: loop devices are not available here")

    return require


@pytest.fixture
def stack(tmp_path, fp, monkeypatch, capsys):
    # require_tools looks the programs up on PATH; fp intercepts the calls themselves.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("skopeo", "snapper", "podman", "podman-compose", "docker", "systemctl"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 99\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return Stack(tmp_path / "services", fp, tmp_path, monkeypatch, capsys)
