"""What registries say about their rate limits, as plain values for reports, `check --json` and metrics.

Docker Hub sends `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`
with its manifest answers, HEAD included: 76 of 100 pulls are left in a window of
21600 seconds. A registry that refused a lookup with its pull-limit 429 is asked
nothing more in that run: `LookupReport.stopped` says until when (or None when it
did not say).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

_VALUE = re.compile(r"\s*(\d+)\s*(?:;(.*))?")
_WINDOW = re.compile(r"(?:^|;)\s*w\s*=\s*(\d+)")


class RateLimit(NamedTuple):
    """One registry's rate limit as its last answer gave it; a field the registry did not send is None."""

    limit: int | None
    remaining: int | None
    window: int | None  # seconds

    def as_json(self) -> dict[str, int | None]:
        return {"limit": self.limit, "remaining": self.remaining, "window_seconds": self.window}

    def describe(self) -> str:
        """`76 of 100 pulls left per 6 h`."""
        left = "?" if self.remaining is None else str(self.remaining)
        text = f"{left} of {self.limit} pulls left" if self.limit is not None else f"{left} pulls left"
        return text + (f" per {_duration(self.window)}" if self.window else "")


def parse_rate_limit(headers: Mapping[str, str] | object) -> RateLimit | None:
    """The `ratelimit-limit` / `ratelimit-remaining` headers of an answer; None when it sent neither."""
    get = getattr(headers, "get")
    limit, limit_window = _parse_value(get("ratelimit-limit"))
    remaining, remaining_window = _parse_value(get("ratelimit-remaining"))
    if limit is None and remaining is None:
        return None
    return RateLimit(limit, remaining, remaining_window or limit_window)


def _parse_value(value: object) -> tuple[int | None, int | None]:
    if not isinstance(value, str):
        return None, None
    match = _VALUE.fullmatch(value.strip())
    if not match:
        return None, None
    window = _WINDOW.search(match.group(2) or "")
    return int(match.group(1)), int(window.group(1)) if window else None


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


@dataclass
class LookupReport:
    """What the lookups of one run learnt about the registries, by registry (`docker.io`, `ghcr.io`, `host:port`).

    `rate_limits`: the lowest remaining budget each registry told (its last limit and window);
    `stopped`: registries that answered a pull-limit 429, with when (epoch seconds) they may be asked
    again, None when unknown; `fallbacks`: reference -> why skopeo answered it.
    """

    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    stopped: dict[str, float | None] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)

    def budgets(self) -> dict[str, RateLimit]:
        """The registries that told how many pulls are left."""
        return {registry: limit for registry, limit in self.rate_limits.items() if limit.remaining is not None}

    def merge(self, other: LookupReport) -> None:
        for registry, limit in other.rate_limits.items():
            self.rate_limits[registry] = lower(self.rate_limits.get(registry), limit)
        self.stopped.update(other.stopped)
        self.fallbacks.update(other.fallbacks)

    def as_json(self) -> dict[str, object]:
        return {
            "rate_limits": {registry: limit.as_json() for registry, limit in sorted(self.rate_limits.items())},
            "stopped": dict(sorted(self.stopped.items())),
        }


def lower(known: RateLimit | None, new: RateLimit) -> RateLimit:
    """The later answer, keeping the lower remaining budget: answers to parallel requests arrive in any order."""
    if known is None or known.remaining is None:
        return new
    if new.remaining is None or known.remaining < new.remaining:
        return RateLimit(new.limit if new.limit is not None else known.limit, known.remaining,
                         new.window or known.window)
    return new
