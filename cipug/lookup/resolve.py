"""Turning tagged references into digests: each once, through the cache, the rest in parallel."""

from __future__ import annotations

import time
from collections.abc import Iterable

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


def resolve_all(references: Iterable[str], settings: Settings, log: Log) -> dict[str, Resolution | CipugError]:
    """Resolve each unique reference once: from the cache, else `RESOLVE_WORKERS` at a time.

    Failures are returned, not raised. The resolver (and its tools) is needed only when the cache
    cannot answer everything; the cache is saved once, at the end.
    """
    cache = ResolutionCache.load(settings.cache_location, settings.cache_duration, log, time.time())
    results: dict[str, Resolution | CipugError] = {}
    pending: list[str] = []
    for reference in dict.fromkeys(references):
        cached = cache.get(reference)
        if cached is not None:
            log.debug(f"{reference}: {cached.digest} (cached)")
            results[reference] = cached
        else:
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
