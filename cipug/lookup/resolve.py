"""Turning tagged references into digests: each once, through the cache, the rest in parallel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..errors import CipugError
from ..log import Log
from ..programs.process import Runner
from ..programs.tools import lookup_tools, require_tools
from ..settings import Settings
from .cache import ResolutionCache
from .ratelimits import LookupReport
from .references import Resolution, Resolver
from .skopeo import skopeo_resolver

if TYPE_CHECKING:
    from .registry import RegistryResolver

T = TypeVar("T")
R = TypeVar("R")

# What the lookups of the commands running in this context learnt (rate limits, registries stopped).
_RECORDING: ContextVar[LookupReport | None] = ContextVar("cipug_lookup_report", default=None)


@contextmanager
def recording() -> Iterator[LookupReport]:
    """Collect what the lookups inside the block learn about the registries: `with recording() as report:`."""
    report = LookupReport()
    token = _RECORDING.set(report)
    try:
        yield report
    finally:
        _RECORDING.reset(token)


@dataclass
class Lookups:
    """A configured resolver: `resolve` run `workers` at a time, told the run's references first by `expect`."""

    resolve: Resolver
    workers: int
    expect: Callable[[list[str]], None] = lambda references: None
    report: Callable[[], LookupReport] = LookupReport
    close: Callable[[], None] = lambda: None


def make_lookups(settings: Settings, log: Log) -> Lookups:
    """The configured resolver; exit 10 when a tool it needs is missing."""
    require_tools(lookup_tools(settings))
    skopeo = skopeo_resolver(settings.skopeo_tool, settings.registry_timeout, Runner(log))
    if settings.resolver == "skopeo":
        return Lookups(skopeo, settings.resolve_workers)
    resolver = registry_resolver(settings, log, skopeo)
    return Lookups(resolver.resolve, settings.registry_workers, resolver.expect, resolver.report, resolver.close)


def registry_resolver(settings: Settings, log: Log, skopeo: Resolver | None) -> RegistryResolver:
    """The registry resolver as configured, handing over to `skopeo` (bounded) where REGISTRY_FALLBACK allows.

    Registries stopped earlier in the run (recording()) stay stopped. The registries' challenges are
    remembered next to the digest cache, whatever CACHE_DURATION; close() saves what was learnt.
    """
    # The HTTP client is loaded only when the registry resolver is asked for.
    from .challenges import CHALLENGES_FILE, Challenges
    from .registries_conf import load_registries_conf
    from .registry import RegistryResolver

    fallback = bounded(skopeo, settings.resolve_workers) if skopeo is not None and settings.registry_fallback else None
    challenges = Challenges.load(settings.cache_location.with_name(CHALLENGES_FILE), log)
    resolver = RegistryResolver(settings.registry_insecure_hosts, settings.registry_timeout, log, fallback,
                                load_registries_conf(settings.skopeo_tool), challenges)
    recorder = _RECORDING.get()
    if recorder is not None:
        resolver.keep_stopped(recorder.stopped)
    return resolver


def bounded(call: Callable[[str], T], slots: int) -> Callable[[str], T]:
    """`call`, at most `slots` at once: the registry's lookups run REGISTRY_WORKERS at a time, skopeo
    where they hand over RESOLVE_WORKERS."""
    semaphore = threading.BoundedSemaphore(slots)

    def limited(reference: str) -> T:
        with semaphore:
            return call(reference)

    return limited


def resolve_all(pins: Mapping[str, Collection[str | None]], settings: Settings, log: Log, *,
                refresh: bool = False) -> dict[str, Resolution | CipugError]:
    """Resolve each reference of `pins` (reference -> the pins its entries hold now) once.

    A cached answer is taken only when it says every one of those pins is current: an answer that
    would change a pin is looked up again, as an older cache (another user's, another
    CACHE_LOCATION) must never move a pin back. `refresh` skips the cache, and saves what it
    finds. The rest runs `REGISTRY_WORKERS` (skopeo: `RESOLVE_WORKERS`) at a time; the resolver
    (and its tools) is needed only when something must be looked up. Failures are returned, not
    raised. What the registries said about their rate limits goes to `recording()`'s report.
    """
    cache = ResolutionCache.load(settings.cache_location, settings.cache_duration, log, time.time())
    results: dict[str, Resolution | CipugError] = {}
    pending: list[str] = []
    for reference, current in pins.items():
        cached = None if refresh else cache.get(reference)
        if cached is not None and all(pin == cached.pinned for pin in current):
            log.debug(f"{reference}: {cached.digest} (cached)")
            results[reference] = cached
        else:
            if cached is not None:
                log.verbose(f"{reference}: the cache says {cached.pinned}, which is not the pin: looking it up again")
            pending.append(reference)
    if pending:
        lookups = make_lookups(settings, log)
        lookups.expect(pending)
        try:
            results |= _look_up(pending, lookups.resolve, lookups.workers, log)
        finally:
            lookups.close()
        report_lookups(lookups.report(), log)
        for reference in pending:
            outcome = results[reference]
            if isinstance(outcome, Resolution):
                cache.put(reference, outcome)
        cache.save()
    return results


def _look_up(references: list[str], resolver: Resolver, workers: int, log: Log) -> dict[str, Resolution | CipugError]:
    def attempt(reference: str) -> Resolution | CipugError:
        try:
            resolution = resolver(reference)
        except CipugError as error:
            return error
        log.verbose(f"{reference}: {resolution.pinned}")
        return resolution

    return dict(zip(references, in_parallel(references, attempt, workers)))


def in_parallel(items: Sequence[T], call: Callable[[T], R], workers: int) -> list[R]:
    """`call` of each item, in order, `workers` threads at a time; an exception one raises is raised here."""
    if not items:
        return []
    # Loaded only when something is looked up: a run the cache answers needs no threads.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(call, items))


def report_lookups(report: LookupReport, log: Log) -> None:
    """Say what the registries told of their rate limits, and add it all to recording()'s report."""
    for registry, limit in sorted(report.rate_limits.items()):
        log.verbose(f"registry {registry}: rate limit: {limit.describe()}")
    recorder = _RECORDING.get()
    if recorder is not None:
        recorder.merge(report)
