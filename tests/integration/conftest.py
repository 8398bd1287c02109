"""Fixtures over tests/realstack.py: one registry, container store and btrfs mount per session, a services root per test."""

from __future__ import annotations

import itertools

import pytest

import realstack


@pytest.fixture(scope="session")
def registry(tmp_path_factory, require_tools):
    require_tools(*realstack.REGISTRY_TOOLS)
    with realstack.Registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def containers(tmp_path_factory, require_tools, registry):
    require_tools(*realstack.CONTAINER_TOOLS)
    with realstack.Containers(tmp_path_factory.mktemp("containers"), [registry.host]) as store:
        yield store


@pytest.fixture(scope="session")
def btrfs(tmp_path_factory, require_tools, require_root_loop, unavailable):
    require_root_loop()
    require_tools(*realstack.BTRFS_TOOLS)
    mount = realstack.BtrfsMount(tmp_path_factory.mktemp("btrfs"))
    try:
        mount.open()
    except realstack.StackError as error:
        unavailable(f"cannot mount btrfs on a loop device: {error}")
    try:
        yield mount
    finally:
        mount.close()


@pytest.fixture
def services(btrfs, containers):
    """A fresh services root on the btrfs mount; its services' containers and snapper configs go away afterwards."""
    with realstack.ServiceRoot(btrfs, containers) as root:
        yield root


@pytest.fixture
def cipug(containers, services, tmp_path):
    """Runs cipug on `services` with private cache, lock and history files."""
    return realstack.Cipug(containers, services.path, tmp_path / "state")


@pytest.fixture
def tag(registry, services):
    """tag("web") -> a fresh repository's `latest` tag in the registry, for this test only."""
    numbers = itertools.count(1)
    return lambda name: f"{registry.host}/{services.token}/{name}{next(numbers)}:latest"
