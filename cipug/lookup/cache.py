"""A cache of tag resolutions, so that timer runs close together ask registries less.

The file maps a tagged reference to {"name", "digest", "resolved_at"}. Its
digests end up in every service's .env, so a file anyone else could have
written is ignored, never trusted; a cache is only an optimisation, so
nothing about it ends a run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ..errors import CipugError
from ..files.trusted import Untrusted, read_trusted, write_private
from ..log import Log
from .references import Resolution, is_valid_digest


class _Unusable(Exception):
    """Why a cache file is ignored, for the one warning line."""


def _parse(data: bytes, log: Log, path: Path) -> dict[str, tuple[Resolution, float]]:
    """Entries of a cache file; _Unusable when it is not what cipug writes."""
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Unusable("not valid JSON (not UTF-8)") from None
    except json.JSONDecodeError as error:
        raise _Unusable(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except (ValueError, RecursionError) as error:
        raise _Unusable(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _Unusable(f"not a JSON object but {type(document).__name__}")
    entries: dict[str, tuple[Resolution, float]] = {}
    for reference, entry in document.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("digest"), str)
            and isinstance(entry.get("resolved_at"), (int, float))
            and not isinstance(entry.get("resolved_at"), bool)
        ):
            raise _Unusable(f'entry "{reference}" is not {{"name": str, "digest": str, "resolved_at": number}}')
        if not entry["name"] or not is_valid_digest(entry["digest"]):
            log.verbose(f"cache {path}: dropping entry {reference}: empty name or invalid digest")
            continue
        entries[reference] = (Resolution(entry["name"], entry["digest"]), float(entry["resolved_at"]))
    return entries


class ResolutionCache:
    """Resolutions younger than `duration` seconds; `duration == 0` disables reading and writing."""

    def __init__(
        self, path: Path, duration: int, log: Log, now: float, entries: dict[str, tuple[Resolution, float]]
    ) -> None:
        self.path = path
        self.duration = duration
        self.log = log
        self.now = now
        self._entries = entries
        self._changed = False
        # Resolutions run in worker threads.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, duration: int, log: Log, now: float) -> ResolutionCache:
        """The cache at `path`; empty (with one warning) when the file is missing, untrusted or malformed."""
        entries: dict[str, tuple[Resolution, float]] = {}
        if duration > 0:
            try:
                data = read_trusted(path)
                if data is not None:
                    entries = _parse(data, log, path)
            except (Untrusted, _Unusable) as reason:
                log.warning(f"ignoring cache {path}: {reason}")
        return cls(path, duration, log, now, entries)

    def _fresh(self, resolved_at: float) -> bool:
        # At exactly `duration` seconds an entry has expired. One from the future (the clock
        # was wrong when it was written) would otherwise live for as long as the clock was off.
        return 0 <= self.now - resolved_at < self.duration

    def get(self, reference: str) -> Resolution | None:
        with self._lock:
            entry = self._entries.get(reference)
        if entry is None or not self._fresh(entry[1]):
            return None
        return entry[0]

    def put(self, reference: str, resolution: Resolution) -> None:
        """Remember a successful resolution; ValueError for an empty name or an invalid digest."""
        if not resolution.name or not is_valid_digest(resolution.digest):
            raise ValueError(f"refusing to cache {reference} -> {resolution.name}@{resolution.digest}")
        if self.duration <= 0:
            return
        with self._lock:
            self._entries[reference] = (resolution, self.now)
            self._changed = True

    def save(self) -> None:
        """Write the fresh entries once, atomically; a failure is a warning, the run goes on."""
        with self._lock:
            if not self._changed:
                return
            document = {
                reference: {"name": resolution.name, "digest": resolution.digest, "resolved_at": resolved_at}
                for reference, (resolution, resolved_at) in sorted(self._entries.items())
                if self._fresh(resolved_at)
            }
            self._changed = False
        try:
            if write_private(self.path, json.dumps(document, indent=2) + "\n"):
                self.log.verbose(f"cache {self.path}: replaced an untrusted file")
        except OSError as error:
            self.log.warning(f"cannot write cache {self.path}: {error.strerror}")
        except Untrusted as problem:
            self.log.warning(f"cannot write cache {self.path}: {problem}")
        except CipugError as error:
            # Its message names the file already.
            self.log.warning(f"cannot write cache: {error.message}")
