"""Fixtures over tests/realstack.py: one registry, container store and btrfs mount per session, a services root per test."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest

from tests.support import realstack


@pytest.fixture(scope="session")
def stack_dir():
    """The session's files, outside pytest's temporary folders.

    pytest deletes the folders of older sessions even while they run, and
    would delete into their mounts; concurrent sessions are common here.
    """
    path = Path(tempfile.mkdtemp(prefix="cipug-realstack-"))
    yield path
    realstack.remove_tree(path)


@pytest.fixture
def workdir(stack_dir):
    """A folder of this test's own inside stack_dir; use it instead of tmp_path."""
    return Path(tempfile.mkdtemp(prefix="test-", dir=stack_dir))


@pytest.fixture(scope="session")
def registry(stack_dir, require_tools):
    require_tools(*realstack.REGISTRY_TOOLS)
    with realstack.Registry(stack_dir / "registry") as running:
        yield running


@pytest.fixture(scope="session")
def containers(stack_dir, require_tools, require_root, registry):
    require_root()
    require_tools(*realstack.CONTAINER_TOOLS)
    with realstack.Containers(stack_dir / "containers", [registry.host]) as store:
        yield store


@pytest.fixture(scope="session")
def btrfs(stack_dir, require_tools, require_root, unavailable, containers):
    # Depends on `containers` so it is torn down first, and can clear the
    # containers whose conmon processes would keep the mount busy.
    require_root(loop_devices=True)
    require_tools(*realstack.BTRFS_TOOLS)
    mount = realstack.BtrfsMount(stack_dir / "btrfs")
    try:
        mount.open()
    except realstack.StackError as error:
        unavailable(f"cannot mount btrfs on a loop device: {error}")
    try:
        yield mount
    finally:
        realstack.run_all([containers.remove_all, mount.close], "tearing down the btrfs mount")


@pytest.fixture
def services(btrfs, containers):
    """A fresh services root on the btrfs mount; its services' containers and snapper configs go away afterwards."""
    with realstack.ServiceRoot(btrfs, containers) as root:
        yield root


@pytest.fixture
def cipug(containers, services, workdir):
    """Runs cipug on `services` with private cache, lock and history files."""
    return realstack.Cipug(containers, services.path, workdir / "state")


@pytest.fixture
def tag(registry, services):
    """tag("web") -> a fresh repository's `latest` tag in the registry, for this test only."""
    numbers = itertools.count(1)
    return lambda name: f"{registry.host}/{services.token}/{name}{next(numbers)}:latest"
