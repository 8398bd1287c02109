"""cipug under real systemd: one VM boot runs every scenario (guest.py); each test asserts on one record.

Scenario 1 runs the same update under three units: README's unit and timer as documented
(`readme`), the NixOS module's unit settings without `UnsetEnvironment` (`bare`: only cipug
itself can keep podman's conmon out of the oneshot's cgroup), and the module's settings with
`UnsetEnvironment=INVOCATION_ID` (`module`). Every container's PID 1 exits on SIGTERM, so a
container that conmon took down with the unit shows as exited, not as a hung stop.
"""

from __future__ import annotations

import json

import pytest

ENTRY = "SERVICE_APP_IMAGE_HASHED"


def short(reference: str) -> str:
    """`sha256:` and 12 hex digits, as cipug's log lines show a digest."""
    return reference.split("@", 1)[1][:19]


def describe(containers: list[dict]) -> str:
    return "; ".join(f"{c['name']} {c['status']} (exit {c['exit_code']}) on {c['image_name']}, conmon "
                     f"{c['conmon_cgroup'] or 'gone'}" for c in containers) or "no containers"


def journal_result(lines: list[dict]) -> str | None:
    """How systemd says the run ended: UNIT_RESULT of its failure message, else success."""
    for line in reversed(lines):
        if line["from_systemd"] and line["unit_result"]:
            return line["unit_result"]
        if line["from_systemd"] and "Deactivated successfully" in (line["message"] or ""):
            return "success"
    return None


def cipug_lines(lines: list[dict]) -> list[str]:
    return [line["message"] for line in lines if not line["from_systemd"] and line["comm"] != "podman"]


def assert_runs_on(state: dict, reference: str, image_id: str, what: str, count: int = 2) -> None:
    containers = state["containers"]
    assert state["env"].get(ENTRY) == reference, f"{what}: .env pins {state['env'].get(ENTRY)}, expected {reference}"
    assert len(containers) == count, f"{what}: expected the service's {count} containers: {describe(containers)}"
    not_running = [c for c in containers if c["status"] != "running"]
    assert not not_running, f"{what}: containers not running: {describe(containers)}"
    assert {c["image_name"] for c in containers} == {reference}, f"{what}: {describe(containers)}"
    assert {c["image_id"] for c in containers} == {image_id}, f"{what}: image ids differ from {reference}'s"


def assert_in_order(lines: list[str], patterns: list[tuple[str, ...]], what: str) -> None:
    """Each pattern (all its parts in one line) appears after the previous one."""
    position = -1
    for parts in patterns:
        for index in range(position + 1, len(lines)):
            if all(part in lines[index] for part in parts):
                position = index
                break
        else:
            pytest.fail(f"{what}: no line with {parts} after line {position} in:\n" + "\n".join(lines), pytrace=False)


# --- 1: the oneshot unit, a moved tag, containers that outlive the unit ----------------------

@pytest.mark.parametrize("variant", ["readme", "bare", "module"])
def test_oneshot_unit_updates_and_containers_outlive_it(vm, variant):
    facts = vm.scenario(f"s1_{variant}")
    name, old, new = facts["service"], facts["old"], facts["new"]
    assert_runs_on(facts["before"], old, facts["old_image_id"], "before the run")
    run = facts["run"]
    assert run["systemctl_rc"] == 0, f"systemctl start cipug.service failed: {run['systemctl_stderr']}"
    lines = [line["message"] for line in run["journal"]]
    assert journal_result(run["journal"]) == "success", "\n".join(lines)
    assert facts["unit_10s_later"]["ActiveState"] == "inactive"
    # `systemctl show -P Result`: the active timer keeps systemd from unloading the service.
    assert facts["unit_10s_later"]["Result"] == "success"
    assert facts["unit_10s_later"]["ExecMainStatus"] == "0"

    # The defect of issue 15: conmon in the oneshot's cgroup, killed when the unit ends.
    assert_runs_on(facts["after_10s"], new, facts["new_image_id"], "10 s after cipug.service ended")
    for container in facts["after_10s"]["containers"]:
        assert "cipug.service" not in container["conmon_cgroup"], container
    assert facts["cgroup_processes"] == [], "processes left in cipug.service's cgroup"

    assert_in_order(
        lines,
        [("Starting cipug",), (name, short(new)), (name, "updated"), ("cipug.service: Deactivated successfully",)],
        "journal of the run")
    assert [line for line in cipug_lines(run["journal"]) if "error" in line.lower()] == []

    records = facts["history"]
    assert [(r["outcome"], r["old"], r["new"], r["entry"]) for r in records] == [("updated", old, new, ENTRY)]
    snapshot = records[0]["snapshot"]
    assert snapshot in [s["number"] for s in facts["snapshots"]], "the history names a snapper snapshot that exists"


def test_readme_unit_is_what_readme_documents(vm):
    facts = vm.scenario("s1_readme")
    service = facts["unit_files"]["cipug.service"]
    assert "Type=oneshot" in service and "StateDirectory=cipug" in service and "CacheDirectory=cipug" in service
    assert "OnCalendar=" in facts["unit_files"]["cipug.timer"]


# --- 6: state and cache directories, `cipug history` from a shell ----------------------------

def test_history_and_cache_in_state_and_cache_directories(vm):
    facts = vm.scenario("s6_directories")
    state, cache = facts["/var/lib/cipug"], facts["/var/cache/cipug"]
    assert state["exists"] and "history.jsonl" in state["files"], state
    assert cache["exists"] and "cache.json" in cache["files"], cache
    assert facts["elsewhere"] == [], "cipug wrote state or cache outside systemd's directories"
    services = {record["service"] for record in facts["history"]}
    assert {"s1readme", "s1bare", "s1module", "s5timer"} <= services, services
    json.loads(facts["cache_text"])
    assert "s5timer/app" in facts["cache_text"]


def test_cipug_history_from_a_shell_sees_the_timers_runs(vm):
    facts = vm.scenario("s6_directories")
    config = json.loads(facts["shell_config"]["stdout"])
    assert config["HISTORY_FILE"] == "/var/lib/cipug/history.jsonl"
    if not facts["cli_available"]:
        pytest.skip("Typer is not in the VM (the host's Python has no typer to copy; Debian 12's "
                    "python3-typer 0.7 is too old for cipug's CLI): the history file was checked instead")
    result = facts["cli_history"]
    assert result["rc"] == 0, result["stderr"]
    records = json.loads(result["stdout"])
    timer_runs = [r for r in records if r["service"] == "s5timer"]
    assert [r["outcome"] for r in timer_runs] == ["updated"], records
    assert records == facts["history"], "`cipug history --json` shows exactly the history file's records"
    assert "s5timer" in facts["cli_history_text"]["stdout"]


# --- 5: the timer fires -----------------------------------------------------------------------

def test_timer_fires_and_a_run_happens(vm):
    facts = vm.scenario("s5_timer")
    assert "OnActiveSec=5s" in facts["unit_files"]["cipug.timer.d/50-test.conf"]
    assert facts["unit"]["Result"] == "success", facts["unit"]
    assert journal_result(facts["journal"]) == "success"
    assert_in_order([line["message"] for line in facts["journal"]],
                    [("Starting cipug",), (facts["service"], "updated")], "journal of the timer's run")
    assert_runs_on(facts["after"], facts["new"], facts["new_image_id"], "after the timer's run", 1)
    assert [(r["outcome"], r["new"]) for r in facts["history"]] == [("updated", facts["new"])]
    assert "LastTriggerUSecMonotonic=0" not in facts["timer"], facts["timer"]


def test_persistent_timer_catches_up_a_missed_run(vm):
    facts = vm.scenario("s5_persistent")
    assert facts["unit_files"]["cipug.timer"].count("Persistent=true") == 1
    assert not any(name.startswith("cipug.timer.d/") for name in facts["unit_files"]), "README's timer as it is"
    assert facts["unit"]["Result"] == "success", facts["unit"]
    assert journal_result(facts["journal"]) == "success"
    assert_in_order([line["message"] for line in facts["journal"]],
                    [("Starting cipug",), ("s5timer", "up to date")], "journal of the caught-up run")
    assert facts["stamp_mtime_age"] < 300, "the timer's stamp was renewed by the run"
    assert facts["history_after"] == facts["history_before"], "nothing changed, so nothing recorded"


# --- 3: health checks run by systemd ---------------------------------------------------------

def test_healthy_image_passes_the_health_wait(vm):
    facts = vm.scenario("s3_health")
    run = facts["healthy_run"]
    assert run["systemctl_rc"] == 0 and journal_result(run["journal"]) == "success", \
        "\n".join(line["message"] for line in run["journal"])
    state = facts["after_healthy"]
    assert state["env"][ENTRY] == facts["v2"]
    assert [c["health"] for c in state["containers"]] == ["healthy"], describe(state["containers"])
    # podman runs each container's health check from a transient systemd timer named by its id.
    for container in state["containers"]:
        assert f"{container['id']}.timer" in facts["timers"], facts["timers"]
    assert facts["history"][0]["outcome"] == "updated"


def test_unhealthy_image_is_rolled_back(vm):
    facts = vm.scenario("s3_health")
    run = facts["unhealthy_run"]
    lines = "\n".join(line["message"] for line in run["journal"])
    assert run["systemctl_rc"] != 0, "cipug should report the failed update"
    assert journal_result(run["journal"]) not in (None, "success", "timeout"), lines
    assert_runs_on(facts["after_unhealthy"], facts["v2"], facts["v2_image_id"], "after the rollback", 1)
    last = facts["history"][-1]
    assert (last["outcome"], last["old"], last["new"]) == ("rolled back", facts["v2"], facts["bad"]), facts["history"]


# --- 2: stopping cipug.service in the middle --------------------------------------------------

@pytest.mark.parametrize("phase", ["pull", "restart"])
def test_stop_during_update_leaves_the_service_whole(vm, phase):
    facts = vm.scenario(f"s2_{phase}")
    during = facts["during"]
    assert during["unit"]["ActiveState"] == "activating", during["unit"]
    assert facts["stop"]["rc"] == 0, facts["stop"]
    assert facts["stop"]["seconds"] < 45, "the stop ran into TimeoutStopSec (45 s)"
    unit = facts["unit"]
    assert unit["ActiveState"] in ("inactive", "failed"), unit
    assert unit["Result"] not in ("timeout", "signal", "core-dump"), unit
    assert unit["ExecMainStatus"] in ("0", "130"), "cipug exits 130 when stopped by SIGTERM (or 0 when done)"
    assert journal_result(facts["journal"]) not in ("timeout", "signal", "core-dump")
    lines = "\n".join(line["message"] for line in facts["journal"])
    assert "SIGKILL" not in lines, lines

    for key in ("after", "after_3s"):
        state = facts[key]
        pin = state["env"].get(ENTRY)
        assert pin in (facts["old"], facts["new"]), pin
        image_id = facts["old_image_id"] if pin == facts["old"] else facts["new_image_id"]
        assert_runs_on(state, pin, image_id, f"{key.replace('_', ' ')} the stop ({phase})")
    if phase == "pull":
        assert facts["after"]["env"][ENTRY] == facts["old"], "stopped before the restart: the old pin stays"

    assert facts["cgroup_processes"] == [], "processes left in cipug.service's cgroup"
    leftovers = [p for p in facts["processes"]
                 if any(word in " ".join(p["argv"][:3]) for word in ("podman-compose", "slow-compose", "skopeo"))
                 or (p["argv"][0].endswith("podman") and p["argv"][1:2] != ["healthcheck"])]
    assert leftovers == [], f"orphaned podman processes: {leftovers}"
    conmons = [p for p in facts["processes"] if p["argv"][0].endswith("conmon")
               and facts["service"] in " ".join(p["argv"])]
    assert len(conmons) == 2, f"one conmon per running container of the service: {conmons}"


# --- 4: STOP_START_METHOD=systemd-system with podman-compose@.service -------------------------

def test_systemd_system_method_restarts_the_template_unit(vm):
    facts = vm.scenario("s4_systemd_units")
    run = facts["run"]
    assert run["systemctl_rc"] == 0 and journal_result(run["journal"]) == "success", \
        "\n".join(line["message"] for line in run["journal"])
    before, after = facts["compose_unit_before"], facts["compose_unit_after"]
    assert before["ActiveState"] == "active" and after["ActiveState"] == "active", (before, after)
    assert int(after["ActiveEnterTimestampMonotonic"]) > int(before["ActiveEnterTimestampMonotonic"]), \
        "podman-compose@ unit was not restarted"
    assert_runs_on(facts["after"], facts["new"], facts["new_image_id"], "after the restart", 1)
    assert [(r["outcome"], r["new"]) for r in facts["history"]] == [("updated", facts["new"])]
    messages = [line["message"] for line in facts["compose_journal"] if line["from_systemd"]]
    assert any("Stopped podman-compose@" in m for m in messages), messages
    assert any("Finished podman-compose@" in m for m in messages), messages
