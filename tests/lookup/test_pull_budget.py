"""The pull budget: before pulling, the services whose pulls fit what the rate limits leave (cipug.commands.update)."""

from __future__ import annotations

from pathlib import Path

from cipug.commands.update import fit_pull_budget
from cipug.lookup.ratelimits import RateLimit
from cipug.lookup.references import Resolution
from cipug.plan import Change, ImageEntry, ServicePlan
from cipug.services import Service

DIGEST = "sha256:" + "c" * 64


def plan(name: str, *references: str) -> ServicePlan:
    folder = Path("/srv") / name
    entries = [ImageEntry(f"SERVICE_I{number}_IMAGE_TAGGED", f"SERVICE_I{number}_IMAGE_HASHED", reference, None)
               for number, reference in enumerate(references)]
    return ServicePlan(Service(name, folder, folder / ".env", folder / "compose.yml"), entries=entries,
                       changes=[Change(entry, Resolution("docker.io/library/x", DIGEST)) for entry in entries])


def names(plans: list[ServicePlan]) -> list[str]:
    return [plan.service.name for plan in plans]


def test_services_that_fit_go_ahead_in_order_and_the_rest_wait_with_a_reason():
    plans = [plan("a", "nginx", "redis"), plan("b", "postgres:16", "ghcr.io/org/app"), plan("c", "alpine"),
             plan("d", "ghcr.io/org/other")]
    fitting, postponed = fit_pull_budget(plans, {"docker.io": RateLimit(100, 2, 21600)})
    assert names(fitting) == ["a", "d"]
    assert [(item.service.name, why) for item, why in postponed] == [
        ("b", "it needs 1 pull from docker.io, and the rate limit leaves 0 for this run (2 of 100 pulls left per 6 h)"),
        ("c", "it needs 1 pull from docker.io, and the rate limit leaves 0 for this run (2 of 100 pulls left per 6 h)"),
    ]


def test_a_smaller_service_later_may_still_fit():
    fitting, postponed = fit_pull_budget([plan("big", "a", "b", "c"), plan("small", "d")],
                                         {"docker.io": RateLimit(100, 2, None)})
    assert names(fitting) == ["small"] and names([item for item, _ in postponed]) == ["big"]


def test_without_a_remaining_budget_nothing_waits():
    plans = [plan("a", "nginx"), plan("b", "redis")]
    assert fit_pull_budget(plans, {}) == (plans, [])
    assert fit_pull_budget(plans, {"docker.io": RateLimit(100, None, 21600)}) == (plans, [])
    assert fit_pull_budget(plans, {"docker.io": RateLimit(100, 2, 21600)}) == (plans, [])


def test_an_update_run_postpones_what_the_budget_does_not_cover_with_one_line_each(tmp_path, monkeypatch):
    import io

    from cipug.commands.update import run_update
    from cipug.log import Log
    from cipug.lookup import resolve
    from cipug.lookup.ratelimits import LookupReport
    from cipug.settings import load_settings

    for name, images in (("a", ["nginx:1"]), ("b", ["redis:7", "postgres:16"]), ("c", ["ghcr.io/org/app:1"])):
        folder = tmp_path / "services" / name
        folder.mkdir(parents=True)
        (folder / "compose.yml").write_text("services: {}\n")
        (folder / ".env").write_text("".join(f"SERVICE_I{n}_IMAGE_TAGGED={image}\n" for n, image in enumerate(images)))
    told = LookupReport({"docker.io": RateLimit(100, 2, 21600)})
    monkeypatch.setattr(resolve, "make_lookups", lambda settings, log: resolve.Lookups(
        lambda reference: Resolution("docker.io/library/x", DIGEST), 4, report=lambda: told))
    settings = load_settings({"CIPUG_SERVICES_ROOT": str(tmp_path / "services"), "CIPUG_CACHE_DURATION": "0",
                              "CIPUG_CHECK_DRIFT": "false", "CIPUG_HISTORY_FILE": str(tmp_path / "h.jsonl"),
                              "CIPUG_CACHE_LOCATION": str(tmp_path / "c.json")}, cwd=tmp_path)
    out = io.StringIO()
    assert run_update(settings, Log(1, out, out), dry_run=True) == 0
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "postponed" in line] == [
        "b: would be postponed: it needs 2 pulls from docker.io, and the rate limit leaves 1 for this run "
        "(2 of 100 pulls left per 6 h); it is updated on a later run"]
    assert any(line.startswith("a: would ") and "pull" in line for line in lines)
    assert any(line.startswith("c: would ") for line in lines)
    assert not any(line.startswith("b: would ") and "pull" in line and "postponed" not in line for line in lines)
