"""Fixtures of the lookup tests."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lookup.fake_registry import FakeRegistry


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the machine's auth files out of reach."""
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    home.mkdir()
    runtime.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    for name in ("REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def out() -> io.StringIO:
    """What a Log writes to standard output."""
    return io.StringIO()


@pytest.fixture
def registries() -> Iterator[Callable[[], FakeRegistry]]:
    """Starts fake registries on loopback; every one is stopped afterwards."""
    started: list[FakeRegistry] = []

    def start() -> FakeRegistry:
        started.append(FakeRegistry())
        return started[-1]

    yield start
    for registry in started:
        registry.stop()
