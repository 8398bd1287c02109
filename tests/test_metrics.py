"""METRICS_FILE: the status as Prometheus text (pure), and the file a whole run writes."""

from __future__ import annotations

import io
import re
from pathlib import Path


from cipug.errors import CipugError, ExitCode
from cipug.files import history
from cipug.log import Log
from cipug.metrics import EntryStatus, RunStatus, entry_statuses, escape_label, last_changes, metrics_text, write_metrics
from cipug.plan import Change, ServicePlan
from cipug.lookup.references import Resolution
from cipug.services import Service
from tests.support.fakestack import DIGEST_A, DIGEST_B, ENV_A, PIN_A, PIN_B, entry, record

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"({NAME})(?:\{{((?:[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE},?)*)\}})? (\S+)")
LABEL = re.compile(rf'([a-zA-Z_][a-zA-Z0-9_]*)=({LABEL_VALUE})')


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The text format read back strictly: every family has HELP then TYPE before its samples, each once,
    names and label values are well formed (escapes undone), and the text ends with a line feed."""
    assert text.endswith("\n") and "\n\n" not in text
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    helped, typed = set(), set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and name not in helped and help_text
            assert not re.search(r"\\[^\\n]", help_text)
            helped.add(name)
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and name not in typed and kind == "gauge"
            typed.add(name)
            families[name] = []
        else:
            match = SAMPLE.fullmatch(line)
            assert match, line
            name, labels, value = match.groups()
            assert name == current and name in typed, line
            parsed = {}
            for key, raw in LABEL.findall(labels or ""):
                assert key not in parsed
                parsed[key] = re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), raw[1:-1])
            families[name].append((parsed, float(value)))
    return families


WEIRD = 'a "quoted" \\ back\nslash'
RUN = RunStatus(
    ended=1767225600.5, exit_code=34,
    entries=[
        EntryStatus("web", "SERVICE_WEB_IMAGE_HASHED", "nginx:latest", PIN_A, PIN_B, True, held=None, failed=PIN_B,
                    version=WEIRD, last_changed=1767225000.0),
        EntryStatus("db", "SERVICE_DB_IMAGE_HASHED", "postgres:16", None, None, None, held="upgrade by hand"),
    ],
    services={"web": None, "db": "db: cannot resolve postgres:16", "broken": "unreadable"},
)


def test_metrics_text_follows_the_text_format_and_reads_back():
    families = parse(metrics_text(RUN))
    assert families["cipug_run_end_timestamp_seconds"] == [({}, 1767225600.5)]
    assert families["cipug_run_exit_code"] == [({}, 34)]
    assert families["cipug_service_error"] == [({"service": "broken"}, 1), ({"service": "db"}, 1),
                                               ({"service": "web"}, 0)]
    web = {"service": "web", "entry": "SERVICE_WEB_IMAGE_HASHED"}
    db = {"service": "db", "entry": "SERVICE_DB_IMAGE_HASHED"}
    # Pending is unknown for a service that could not be checked: no sample rather than a wrong one.
    assert families["cipug_update_pending"] == [({**web, "tagged": "nginx:latest"}, 1)]
    assert families["cipug_update_held"] == [(db, 1), (web, 0)]
    assert families["cipug_update_failed_before"] == [(db, 0), (web, 1)]
    assert families["cipug_pin_change_timestamp_seconds"] == [(web, 1767225000.0)]
    # The label value went through escaping and back unchanged.
    assert families["cipug_image_info"] == [({**web, "tagged": "nginx:latest", "image": PIN_A, "version": WEIRD}, 1)]


def test_label_escaping():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_prometheus_clients_parser_reads_it(require_module):
    parser = require_module("prometheus_client.parser")
    families = {family.name: family for family in parser.text_string_to_metric_families(metrics_text(RUN))}
    assert families["cipug_run_exit_code"].samples[0].value == 34
    [info] = families["cipug_image_info"].samples
    assert info.labels["version"] == WEIRD and info.labels["image"] == PIN_A
    assert all(family.type == "gauge" for family in families.values())


def test_an_empty_run_still_has_its_end_and_exit_code():
    families = parse(metrics_text(RunStatus(ended=5.0, exit_code=21)))
    assert families["cipug_run_exit_code"] == [({}, 21)] and families["cipug_update_pending"] == []


def _plan(tmp_path: Path, *, changes: bool, error: bool = False) -> ServicePlan:
    service = Service("web", tmp_path / "web", tmp_path / "web" / ".env", tmp_path / "web" / "compose.yml")
    plan = ServicePlan(service, entries=[entry(PIN_A)])
    if changes:
        plan.changes = [Change(entry(PIN_A), Resolution("docker.io/library/nginx", DIGEST_B))]
    if error:
        plan.error = CipugError("web: cannot resolve", ExitCode.RESOLVE_FAILED)
    return plan


def test_entry_statuses_follow_plans_and_history(tmp_path):
    older = record(None, PIN_A, time="2026-01-01T00:00:00+00:00")
    updated = record(PIN_A, PIN_B, time="2026-02-01T00:00:00+00:00")
    rolled_back = record(PIN_A, PIN_B, time="2026-02-01T00:00:00+00:00", outcome=history.ROLLED_BACK)

    # Updated now: the pin is the new one, nothing pending, changed when the update was.
    [status] = entry_statuses([_plan(tmp_path, changes=True)], [updated], [older, updated])
    assert (status.pinned, status.available, status.pending) == (PIN_B, PIN_B, False)
    assert status.last_changed == 1769904000.0
    assert (status.held, status.failed, status.version) == (None, None, None)

    # Tried and put back: still pending, the pin last changed when it was first written.
    [status] = entry_statuses([_plan(tmp_path, changes=True)], [rolled_back], [older, rolled_back])
    assert (status.pinned, status.pending, status.last_changed) == (PIN_A, True, 1767225600.0)

    # Nothing moved, no history: current, change time unknown.
    [status] = entry_statuses([_plan(tmp_path, changes=False)], [], [])
    assert (status.pinned, status.pending, status.last_changed) == (PIN_A, False, None)

    # A service that could not be checked: pending unknown.
    [status] = entry_statuses([_plan(tmp_path, changes=False, error=True)], [], [])
    assert status.pending is None and status.available is None


def test_last_changes_skips_failures_and_damaged_times():
    found = last_changes([record(None, PIN_A, time="2026-01-01T00:00:00+00:00"),
                          record(PIN_A, PIN_B, time="2026-03-01T00:00:00+00:00", outcome=history.FAILED),
                          record(PIN_A, PIN_B, time="not a time")])
    assert found == {("web", "SERVICE_WEB_IMAGE_HASHED"): {PIN_A: 1767225600.0}}


def test_write_metrics_is_atomic_readable_by_others_and_a_failure_only_warns(tmp_path):
    err = io.StringIO()
    log = Log(1, io.StringIO(), err)
    path = tmp_path / "textfile" / "cipug.prom"
    write_metrics(path, RUN, log)
    assert parse(path.read_text())["cipug_run_exit_code"] == [({}, 34)]
    assert path.stat().st_mode & 0o777 == 0o644
    assert [item.name for item in path.parent.iterdir()] == ["cipug.prom"]  # no temporary file left
    (tmp_path / "a-file").write_text("")
    write_metrics(tmp_path / "a-file" / "cipug.prom", RUN, log)
    assert err.getvalue().count("\n") == 1 and "metrics file" in err.getvalue()


# --- whole runs ---------------------------------------------------------------------------


def test_a_run_writes_the_metrics_file_at_its_end(stack):
    stack.service("web", ENV_A)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    metrics = stack.tmp_path / "textfile" / "cipug.prom"
    assert stack.run(metrics_file=str(metrics), cache_duration="0", resolver="skopeo") == 0
    families = parse(metrics.read_text())
    assert families["cipug_run_exit_code"] == [({}, 0)]
    assert families["cipug_update_pending"] == [({"service": "web", "entry": "SERVICE_WEB_IMAGE_HASHED",
                                                  "tagged": "nginx:latest"}, 0)]
    assert families["cipug_service_error"] == [({"service": "web"}, 0)]


def test_a_failed_run_writes_its_exit_code_too(stack):
    stack.service("web", ENV_A)
    stack.fp.register(["skopeo", "inspect", "--no-tags", "docker://nginx:latest"], returncode=1,
                      stderr="manifest unknown")
    metrics = stack.tmp_path / "cipug.prom"
    code = stack.run(metrics_file=str(metrics), cache_duration="0", resolver="skopeo")
    assert code == 35
    families = parse(metrics.read_text())
    assert families["cipug_run_exit_code"] == [({}, 35)]
    assert families["cipug_service_error"] == [({"service": "web"}, 1)]
    assert families["cipug_update_pending"] == []


def test_a_run_that_stops_early_writes_its_exit_code(stack):
    metrics = stack.tmp_path / "cipug.prom"
    code = stack.run(metrics_file=str(metrics), services_root=str(stack.tmp_path / "missing"))
    assert code == 21
    assert parse(metrics.read_text())["cipug_run_exit_code"] == [({}, 21)]


def test_an_unwritable_metrics_file_is_a_warning_and_keeps_the_exit_code(stack):
    stack.service("web", ENV_A)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    (stack.tmp_path / "a-file").write_text("")
    assert stack.run(metrics_file=str(stack.tmp_path / "a-file" / "cipug.prom"), cache_duration="0", resolver="skopeo") == 0
    assert "metrics file" in stack.err.getvalue()


def test_the_version_of_a_pin_comes_from_the_history_that_recorded_it():
    from cipug.files.history import Record
    from cipug.files.history import known_versions

    old, new = "docker.io/library/nextcloud@sha256:" + "a" * 64, "docker.io/library/nextcloud@sha256:" + "b" * 64
    records = [Record("t", "web", "K", "nextcloud:29", old, new, None, None, "updated", "", "29.0.3", "29.0.4"),
               Record("t", "web", "K", "nextcloud:29", new, old, None, None, "rolled back", "", None, None)]
    assert known_versions(records) == {old: "29.0.3", new: "29.0.4"}


def test_the_registries_rate_limits_and_stops_are_gauges_prometheus_reads(require_module):
    parser = require_module("prometheus_client.parser")
    from cipug.lookup.ratelimits import LookupReport, RateLimit

    lookups = LookupReport({"docker.io": RateLimit(100, 76, 21600), "ghcr.io": RateLimit(None, 3, None)},
                           {"quay.io": 1_800_000_000.0, "gone.example": None})
    families = {family.name: family for family in parser.text_string_to_metric_families(
        metrics_text(RunStatus(ended=5.0, exit_code=35, lookups=lookups)))}

    def values(name: str) -> dict[str, float]:
        return {sample.labels["registry"]: sample.value for sample in families[name].samples}

    assert values("cipug_registry_rate_limit") == {"docker.io": 100}
    assert values("cipug_registry_rate_limit_remaining") == {"docker.io": 76, "ghcr.io": 3}
    assert values("cipug_registry_rate_limit_window_seconds") == {"docker.io": 21600}
    assert values("cipug_registry_stopped") == {"docker.io": 0, "ghcr.io": 0, "quay.io": 1, "gone.example": 1}
    assert values("cipug_registry_stopped_until_timestamp_seconds") == {"quay.io": 1_800_000_000}
