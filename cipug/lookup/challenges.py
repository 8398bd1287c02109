"""The realm and service of each registry's Bearer challenge, remembered from one run to the next.

Without them, the first lookup on a registry in every run spends a round trip on a 401 only to
learn where its token service is, which practically never changes. The file, `challenges.json`
next to the digest cache, maps a registry host to {"realm": URL, "service": str}, learnt from a
real challenge whose token service then gave a token. registry.py uses it only for anonymous
lookups: a realm that receives credentials must come from the registry itself, never from a file.

Like the cache it is only an optimisation, independent of CACHE_DURATION (a challenge says nothing
about any image): a file anyone else could have written, or one that is not what cipug writes, is
ignored, and nothing about it ends a run.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from pathlib import Path

from ..errors import CipugError
from ..files.trusted import Untrusted, read_trusted, write_private
from ..log import Log

CHALLENGES_FILE = "challenges.json"
# Far more registries than one host's services use; past that, the earliest learnt are dropped.
REGISTRIES_MAX = 64

# realm, service
Challenge = tuple[str, str]


class _Damaged(Exception):
    """The file is not JSON: one warning line."""


class _Unexpected(Exception):
    """The file is JSON, but not what cipug writes (another version's, say): one verbose line."""


def _valid(realm: str, service: str) -> bool:
    """Whether a challenge may be kept: the realm an http(s) URL without blanks or control characters."""
    if not (realm.isascii() and realm.isprintable() and " " not in realm):
        return False
    try:
        url = urllib.parse.urlsplit(realm)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.netloc) and service.isprintable()


def _parse(data: bytes) -> dict[str, Challenge]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise _Damaged(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _Unexpected(f"not a JSON object but {type(document).__name__}")
    if len(document) > REGISTRIES_MAX:
        raise _Unexpected(f"{len(document)} registries, more than {REGISTRIES_MAX}")
    entries: dict[str, Challenge] = {}
    for registry, entry in document.items():
        if not (registry and isinstance(entry, dict) and set(entry) == {"realm", "service"}
                and isinstance(entry["realm"], str) and isinstance(entry["service"], str)
                and _valid(entry["realm"], entry["service"])):
            raise _Unexpected(f'entry "{registry}" is not {{"realm": http(s) URL, "service": str}}')
        entries[registry] = (entry["realm"], entry["service"])
    return entries


class Challenges:
    """The remembered challenges by registry; safe to use from several threads at once."""

    def __init__(self, path: Path, log: Log, entries: dict[str, Challenge]) -> None:
        self.path = path
        self._log = log
        self._entries = entries
        self._saved = dict(entries)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, log: Log) -> Challenges:
        """The challenges in `path`; none when the file is missing, untrusted or not what cipug writes."""
        entries: dict[str, Challenge] = {}
        try:
            data = read_trusted(path)
            if data is not None:
                entries = _parse(data)
        except (Untrusted, _Damaged) as reason:
            log.warning(f"ignoring {path}: {reason}")
        except _Unexpected as reason:
            log.verbose(f"ignoring {path}: {reason}")
        return cls(path, log, entries)

    def get(self, registry: str) -> Challenge | None:
        with self._lock:
            return self._entries.get(registry)

    def learn(self, registry: str, realm: str, service: str) -> None:
        """Remember what the registry's own challenge said, in place of what was remembered."""
        if not _valid(realm, service):
            self.forget(registry)
            return
        with self._lock:
            # Last in the file: the most recently learnt stay when there are too many.
            self._entries.pop(registry, None)
            self._entries[registry] = (realm, service)
            while len(self._entries) > REGISTRIES_MAX:
                del self._entries[next(iter(self._entries))]

    def forget(self, registry: str) -> None:
        with self._lock:
            self._entries.pop(registry, None)

    def save(self) -> None:
        """Write the file atomically when the challenges changed; a failure is a warning, the run goes on."""
        with self._lock:
            if self._entries == self._saved:
                return
            entries = dict(self._entries)
        document = {registry: {"realm": realm, "service": service} for registry, (realm, service) in entries.items()}
        try:
            replaced = write_private(self.path, json.dumps(document, indent=2) + "\n")
        except OSError as error:
            self._log.warning(f"cannot write {self.path}: {error.strerror}")
            return
        except Untrusted as problem:
            self._log.warning(f"cannot write {self.path}: {problem}")
            return
        except CipugError as error:
            self._log.warning(error.message)  # it names the file already
            return
        with self._lock:
            self._saved = entries
        if replaced:
            self._log.verbose(f"{self.path}: replaced an untrusted file")
