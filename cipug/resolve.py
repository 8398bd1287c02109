"""Turning tagged references into digests: in parallel, each once, through the cache."""

from __future__ import annotations

from .cache import ResolutionCache
from .errors import CipugError
from .imageref import Resolution
from .log import Log

# Names only annotations use: collections.abc would import collections on every timer run.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    Resolver = Callable[[str], Resolution]


def resolve_all(references: Iterable[str], make_resolver: Callable[[], Resolver], workers: int,
                cache: ResolutionCache, log: Log) -> dict[str, Resolution | CipugError]:
    """Resolve each unique reference once, `workers` at a time; failures are returned, not raised.

    The resolver is made only when the cache cannot answer everything: making it checks that its
    tools exist, which a run with nothing to look up does not need.
    """
    results: dict[str, Resolution | CipugError] = {}
    pending: list[str] = []
    for reference in dict.fromkeys(references):
        cached = cache.get(reference)
        if cached is not None:
            log.debug(f"{reference}: {cached.digest} (cached)")
            results[reference] = cached
        else:
            pending.append(reference)

    def attempt(reference: str) -> Resolution | CipugError:
        try:
            resolution = resolver(reference)
        except CipugError as error:
            return error
        log.verbose(f"{reference}: {resolution.pinned}")
        return resolution

    if pending:
        # Imported only when there is something to look up: it is slow to import.
        from concurrent.futures import ThreadPoolExecutor

        resolver = make_resolver()
        with ThreadPoolExecutor(max_workers=min(workers, len(pending))) as pool:
            for reference, outcome in zip(pending, pool.map(attempt, pending)):
                results[reference] = outcome
                if isinstance(outcome, Resolution):
                    cache.put(reference, outcome)
    return results
