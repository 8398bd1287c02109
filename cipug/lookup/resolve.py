"""Turning tagged references into digests: each once, through the cache, the rest in parallel."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

from ..errors import CipugError
from ..log import Log
from ..programs.process import Runner
from ..programs.tools import lookup_tools, require_tools
from ..settings import Settings
from .cache import ResolutionCache
from .references import Resolution, Resolver
from .skopeo import skopeo_resolver


def make_resolver(settings: Settings, log: Log) -> Resolver:
    """The configured resolver; exit 10 when a tool it needs is missing."""
    require_tools(lookup_tools(settings))
    skopeo = skopeo_resolver(settings.skopeo_tool, settings.registry_timeout, Runner(log))
    if settings.resolver == "skopeo":
        return skopeo
    # The HTTP client is loaded only when the registry resolver is asked for.
    from .registry import RegistryResolver

    resolver = RegistryResolver(settings.registry_insecure_hosts, settings.registry_timeout, log,
                                skopeo if settings.registry_fallback else None)
    return resolver.resolve


def resolve_all(pins: Mapping[str, Collection[str | None]], settings: Settings, log: Log, *,
                refresh: bool = False) -> dict[str, Resolution | CipugError]:
    """Resolve each reference of `pins` (reference -> the pins its entries hold now) once.

    A cached answer is taken only when it says every one of those pins is current: an answer that
    would change a pin is looked up again, as an older cache (another user's, another
    CACHE_LOCATION) must never move a pin back. `refresh` skips the cache, and saves what it
    finds. The rest runs `RESOLVE_WORKERS` at a time; the resolver (and its tools) is needed only
    when something must be looked up. Failures are returned, not raised.
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
        results |= _look_up(pending, make_resolver(settings, log), settings.resolve_workers, log)
        for reference in pending:
            outcome = results[reference]
            if isinstance(outcome, Resolution):
                cache.put(reference, outcome)
        cache.save()
    return results


def _look_up(references: list[str], resolver: Resolver, workers: int, log: Log) -> dict[str, Resolution | CipugError]:
    # The thread pool is only started, and imported, when something has to be looked up.
    from concurrent.futures import ThreadPoolExecutor

    def attempt(reference: str) -> Resolution | CipugError:
        try:
            resolution = resolver(reference)
        except CipugError as error:
            return error
        log.verbose(f"{reference}: {resolution.pinned}")
        return resolution

    with ThreadPoolExecutor(max_workers=min(workers, len(references))) as pool:
        return dict(zip(references, pool.map(attempt, references)))
