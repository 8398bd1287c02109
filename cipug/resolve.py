"""Turning tagged references into digests: skopeo, in parallel, through the cache."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence

from . import errors
from .commands import last_line, run
from .cache import ResolutionCache
from .errors import CipugError
from .imageref import Resolution, is_valid_digest
from .log import Log

Resolver = Callable[[str], Resolution]

# skopeo logs fatal errors as `time="…" level=fatal msg="…"`; the msg part is what a user needs.
_SKOPEO_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
# skopeo's Name is written into .env unquoted: allow only what a repository name can hold.
_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)+")


def _skopeo_error(reference: str, stderr: str) -> str:
    line = last_line(stderr)
    match = _SKOPEO_MESSAGE.search(line)
    return f"{reference} could not be resolved: {match.group(1) if match else line}"


def parse_inspect_output(reference: str, stdout: str) -> Resolution:
    """Name and Digest from `skopeo inspect` JSON, both checked before anything uses them."""
    try:
        data = json.loads(stdout)
        name, digest = data["Name"], data["Digest"]
    except (ValueError, KeyError, TypeError):
        raise CipugError(f"{reference}: skopeo printed no Name and Digest", errors.RESOLVE_FAILED) from None
    if not is_valid_digest(digest):
        raise CipugError(f"{reference}: skopeo reported an invalid digest {digest!r}", errors.RESOLVE_FAILED)
    if not isinstance(name, str) or not _REPOSITORY_NAME.fullmatch(name):
        raise CipugError(f"{reference}: skopeo reported an invalid repository name {name!r}", errors.RESOLVE_FAILED)
    return Resolution(name, digest)


def skopeo_resolver(skopeo: Sequence[str], timeout: float) -> Resolver:
    def resolve(reference: str) -> Resolution:
        import subprocess

        argv = [*skopeo, "inspect", "--no-tags", f"docker://{reference}"]
        try:
            result = run(argv, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CipugError(f"{reference} could not be resolved: skopeo took longer than {timeout:g} s",
                             errors.RESOLVE_FAILED) from None
        if result.returncode != 0:
            raise CipugError(_skopeo_error(reference, result.stderr), errors.RESOLVE_FAILED)
        return parse_inspect_output(reference, result.stdout)

    return resolve


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
