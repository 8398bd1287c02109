"""Rate-limit headers as plain values."""

from __future__ import annotations

import pytest

from cipug.lookup.ratelimits import LookupReport, RateLimit, lower, parse_rate_limit


@pytest.mark.parametrize("headers, expected", [
    ({"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"}, RateLimit(100, 76, 21600)),
    ({"ratelimit-limit": "200", "ratelimit-remaining": " 3 "}, RateLimit(200, 3, None)),
    ({"ratelimit-remaining": "0;w=60;comment=x"}, RateLimit(None, 0, 60)),
    ({"ratelimit-limit": "lots"}, None),
    ({}, None),
])
def test_parse(headers, expected):
    assert parse_rate_limit(headers) == expected


def test_lower_keeps_the_lowest_remaining_and_the_latest_limit():
    assert lower(None, RateLimit(100, 50, 21600)) == RateLimit(100, 50, 21600)
    assert lower(RateLimit(100, 40, 21600), RateLimit(100, 50, 21600)) == RateLimit(100, 40, 21600)
    assert lower(RateLimit(100, 40, 21600), RateLimit(100, 30, 21600)) == RateLimit(100, 30, 21600)


def test_report_shapes():
    report = LookupReport({"docker.io": RateLimit(100, 76, 21600), "ghcr.io": RateLimit(5000, None, None)},
                          {"quay.io": None})
    assert report.budgets() == {"docker.io": RateLimit(100, 76, 21600)}
    assert report.as_json() == {
        "rate_limits": {"docker.io": {"limit": 100, "remaining": 76, "window_seconds": 21600},
                        "ghcr.io": {"limit": 5000, "remaining": None, "window_seconds": None}},
        "stopped": {"quay.io": None},
    }
    assert RateLimit(100, 76, 21600).describe() == "76 of 100 pulls left per 6 h"


def test_check_json_reports_the_rate_limits_of_the_services_registries():
    from pathlib import Path

    from cipug.commands.check import check_json
    from cipug.plan import ImageEntry, ServicePlan
    from cipug.services import Service

    folder = Path("/srv/web")
    entries = [ImageEntry("SERVICE_A_IMAGE_TAGGED", "SERVICE_A_IMAGE_HASHED", "nginx:1", None),
               ImageEntry("SERVICE_B_IMAGE_TAGGED", "SERVICE_B_IMAGE_HASHED", "quay.io/org/app:2", None)]
    plan = ServicePlan(Service("web", folder, folder / ".env", folder / "compose.yml"), entries=entries)
    lookups = LookupReport({"docker.io": RateLimit(100, 76, 21600), "ghcr.io": RateLimit(5000, 1, 3600)},
                           {"quay.io": 1_800_000_000.0})
    assert check_json(plan, [], lookups)["rate_limits"] == {
        "docker.io": {"limit": 100, "remaining": 76, "window_seconds": 21600, "stopped": False, "until": None},
        "quay.io": {"limit": None, "remaining": None, "window_seconds": None, "stopped": True,
                    "until": "2027-01-15T08:00:00Z"},
    }
