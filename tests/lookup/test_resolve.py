"""resolve_all: the cache may only say "unchanged"; an answer that would move a pin is looked up again."""

from __future__ import annotations

import dataclasses
import io
import json
import time

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.log import VERBOSE, Log
from cipug.lookup import resolve
from cipug.lookup.references import Resolution
from cipug.settings import load_settings

OLD = Resolution("docker.io/library/nginx", "sha256:" + "a" * 64)
NEW = Resolution("docker.io/library/nginx", "sha256:" + "b" * 64)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Settings with a cache file that says nginx:latest is OLD, and a resolver that answers NEW and counts."""
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"nginx:latest": {"name": OLD.name, "digest": OLD.digest, "resolved_at": time.time()}}))
    cache.chmod(0o600)
    settings = load_settings({"CIPUG_SERVICES_ROOT": str(tmp_path), "CIPUG_CACHE_LOCATION": str(cache)}, cwd=tmp_path)
    asked: list[str] = []

    def resolver(reference: str) -> Resolution:
        asked.append(reference)
        if reference == "gone:1":
            raise CipugError("gone:1 could not be resolved: registry unreachable", ExitCode.RESOLVE_FAILED)
        return NEW

    monkeypatch.setattr(resolve, "make_lookups", lambda settings, log: resolve.Lookups(resolver, 1))
    return settings, asked, cache


def resolve_all(settings, pins, **options):
    return resolve.resolve_all(pins, settings, Log(VERBOSE, io.StringIO(), io.StringIO()), **options)


def test_a_cached_answer_that_confirms_every_pin_is_used(world):
    settings, asked, _ = world
    assert resolve_all(settings, {"nginx:latest": {OLD.pinned}}) == {"nginx:latest": OLD}
    assert asked == []


@pytest.mark.parametrize("pins", [{NEW.pinned}, {None}, {OLD.pinned, NEW.pinned}, {OLD.pinned, None}])
def test_a_cached_answer_that_would_move_a_pin_is_looked_up_again(world, pins):
    # An older cache (another CACHE_LOCATION, another user's) must never move a pin back.
    settings, asked, cache = world
    assert resolve_all(settings, {"nginx:latest": pins}) == {"nginx:latest": NEW}
    assert asked == ["nginx:latest"]
    assert json.loads(cache.read_text())["nginx:latest"]["digest"] == NEW.digest


def test_a_failed_live_lookup_is_not_replaced_by_the_cached_answer(world):
    settings, _, cache = world
    cache.write_text(json.dumps({"gone:1": {"name": OLD.name, "digest": OLD.digest, "resolved_at": time.time()}}))
    [outcome] = resolve_all(settings, {"gone:1": {NEW.pinned}}).values()
    assert isinstance(outcome, CipugError) and outcome.code == ExitCode.RESOLVE_FAILED


def test_refresh_looks_up_what_the_cache_calls_current_and_saves_it(world):
    settings, asked, cache = world
    assert resolve_all(settings, {"nginx:latest": {OLD.pinned}}, refresh=True) == {"nginx:latest": NEW}
    assert asked == ["nginx:latest"]
    assert json.loads(cache.read_text())["nginx:latest"]["digest"] == NEW.digest


def test_refresh_keeps_the_other_cached_entries(world):
    settings, _, cache = world
    resolve_all(settings, {"other:1": {None}}, refresh=True)
    assert set(json.loads(cache.read_text())) == {"nginx:latest", "other:1"}


def test_what_the_registries_said_reaches_the_recording_and_the_verbose_lines(world, monkeypatch):
    from cipug.lookup.ratelimits import LookupReport, RateLimit

    settings, asked, cache = world
    told = LookupReport({"docker.io": RateLimit(100, 7, 21600)}, {"quay.io": None})
    expected: list[list[str]] = []
    monkeypatch.setattr(resolve, "make_lookups", lambda settings, log: resolve.Lookups(
        lambda reference: NEW, 4, expect=expected.append, report=lambda: told))
    out = io.StringIO()
    with resolve.recording() as report:
        resolve.resolve_all({"nginx:latest": {None}, "redis:7": {None}}, settings, Log(VERBOSE, out, out), refresh=True)
    assert expected == [["nginx:latest", "redis:7"]]
    assert report.rate_limits == {"docker.io": RateLimit(100, 7, 21600)} and report.stopped == {"quay.io": None}
    assert "registry docker.io: rate limit: 7 of 100 pulls left per 6 h" in out.getvalue()


def test_the_registry_resolver_runs_registry_workers_and_bounds_skopeo_by_resolve_workers(tmp_path, monkeypatch):
    settings = load_settings({"CIPUG_SERVICES_ROOT": str(tmp_path), "CIPUG_REGISTRY_WORKERS": "17",
                              "CIPUG_RESOLVE_WORKERS": "3", "CIPUG_SKOPEO_TOOL": "true"}, cwd=tmp_path)
    assert settings.resolver == "registry"
    lookups = resolve.make_lookups(settings, Log(VERBOSE, io.StringIO(), io.StringIO()))
    assert lookups.workers == 17
    skopeo_only = resolve.make_lookups(dataclasses.replace(settings, resolver="skopeo"),
                                       Log(VERBOSE, io.StringIO(), io.StringIO()))
    assert skopeo_only.workers == 3


def test_in_parallel_keeps_the_order_bounds_the_threads_and_raises_what_a_call_raised():
    import threading

    running, most = [], [0]
    lock = threading.Lock()

    def call(number: int) -> int:
        with lock:
            running.append(number)
            most[0] = max(most[0], len(running))
        time.sleep(0.01)
        with lock:
            running.remove(number)
        if number == 13:
            raise ValueError("thirteen")
        return number * 2

    assert resolve.in_parallel(list(range(12)), call, 4) == [number * 2 for number in range(12)]
    assert most[0] == 4
    with pytest.raises(ValueError, match="thirteen"):
        resolve.in_parallel(list(range(20)), call, 4)
