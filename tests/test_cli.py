"""The Typer command line: every command and flag, the confirmation prompt, the --json shapes, and
that the timer's default path never needs Typer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cipug import cli
from cipug.errors import ExitCode
from cipug.files import history
from cipug.log import Log
from tests.support.fakestack import DIGEST_A, DIGEST_B, ENV_A, ENV_B, PIN_A, PIN_B, WEB_ENV, Rollback, record
from tests.support.invoke import REPO, run_cipug, start_cipug
COMMANDS = ("update", "check", "check-snapshots", "config", "history", "rollback")


def invoke(stack, *args: str, input: str | None = None, **settings: str):
    environ = {**stack.env, **{f"CIPUG_{key.upper()}": value for key, value in settings.items()}}
    return CliRunner().invoke(cli.app, list(args), env=environ, input=input)


def assert_one_line_error(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.count("\n") == 1 and text in result.stderr and "Traceback" not in result.output


@pytest.fixture
def terminal(monkeypatch):
    """Make the prompt believe stdin is a terminal, as CliRunner's is not."""
    monkeypatch.setattr(cli, "_stdin_is_terminal", lambda: True)


def test_help_lists_every_command_and_each_has_examples(stack):
    result = invoke(stack, "--help")
    assert result.exit_code == 0
    assert all(f"  {command} " in result.stdout for command in COMMANDS)
    for command in COMMANDS:
        page = invoke(stack, command, "--help")
        assert page.exit_code == 0 and "Example" in page.stdout and f"cipug {command}" in page.stdout


# update

def test_update_runs_the_update(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.full_update("web")

    result = invoke(stack, "update", service_snapshot="false", prune_images="false")

    assert result.exit_code == 0, result.output
    assert f"SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}" in env_file.read_text()
    assert "web: updated and restarted" in result.stdout


def test_update_dry_run_for_chosen_services_changes_nothing(stack):
    web = stack.service("web", WEB_ENV)
    stack.service("db", "SERVICE_DB_IMAGE_TAGGED=postgres:16\n")
    stack.service("other", "SERVICE_O_IMAGE_TAGGED=other:1\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.skopeo("postgres:16", "docker.io/library/postgres", DIGEST_B)

    result = invoke(stack, "update", "--dry-run", "--service", "web", "-s", "db")

    assert result.exit_code == 0, result.output
    assert web.read_text() == WEB_ENV
    assert sorted(call[-1] for call in stack.calls()) == ["docker://nginx:latest", "docker://postgres:16"]
    assert "web: would set SERVICE_WEB_IMAGE_HASHED" in result.stdout and "db: would set" in result.stdout


def test_update_of_an_unknown_service_is_one_line(stack):
    stack.service("web", WEB_ENV)
    assert_one_line_error(invoke(stack, "update", "--service", "nosuch"), ExitCode.DIRECTORY_NOT_FOUND,
                          "cipug: error: no such service: nosuch (services: web)")


@pytest.mark.parametrize("settings, reason", [
    ({"services_filter_exclude": "db,web"}, "web is excluded by SERVICES_FILTER_EXCLUDE "
                                            "(environment variable CIPUG_SERVICES_FILTER_EXCLUDE)"),
    ({"services_filter": "db"}, "web is not in SERVICES_FILTER (environment variable CIPUG_SERVICES_FILTER)"),
])
def test_update_of_a_service_the_filters_leave_out_says_so(stack, settings, reason):
    stack.service("web", WEB_ENV)
    stack.service("db", WEB_ENV)
    result = invoke(stack, "update", "--service", "web", **settings)
    assert_one_line_error(result, ExitCode.USAGE, reason)
    assert stack.calls() == []


def test_bad_setting_is_one_line(stack):
    assert_one_line_error(invoke(stack, "config", verbosity="9"), ExitCode.INVALID_VALUE, "CIPUG_VERBOSITY")


# check

def test_check_exits_0_when_current_and_1_when_pending_changing_nothing(stack):
    env_file = stack.service("web", WEB_ENV + f"SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}\n")
    before = env_file.read_text()
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)

    current = invoke(stack, "check", cache_duration="0")
    pending = invoke(stack, "check", cache_duration="0")

    assert current.exit_code == ExitCode.OK and "every image is current" in current.stdout
    assert pending.exit_code == ExitCode.UPDATES_PENDING and "updates pending: web" in pending.stdout
    assert env_file.read_text() == before
    assert [call[0] for call in stack.calls()] == ["skopeo", "skopeo"]
    assert stack.history() == []


def test_check_errors_win_over_pending_updates(stack):
    stack.service("web", WEB_ENV)
    stack.service("broken", "SERVICE_X_IMAGE_TAGGED=nosuch:tag\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.fp.register(["skopeo", "inspect", "--no-tags", "docker://nosuch:tag"], returncode=1, stderr="manifest unknown")

    result = invoke(stack, "check")

    assert result.exit_code == ExitCode.RESOLVE_FAILED
    assert "broken: nosuch:tag could not be resolved: manifest unknown" in result.stderr


def test_check_json_has_one_object_per_service(stack):
    stack.service("current", f"SERVICE_C_IMAGE_TAGGED=nginx:latest\nSERVICE_C_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}\n")
    stack.service("pending", "SERVICE_P_IMAGE_TAGGED=nginx:1\n")
    stack.service("broken", "SERVICE_X_IMAGE_TAGGED=nosuch:tag\n")
    stack.service("empty", "NOTHING=here\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.skopeo("nginx:1", "docker.io/library/nginx", DIGEST_B)
    stack.fp.register(["skopeo", "inspect", "--no-tags", "docker://nosuch:tag"], returncode=1, stderr="manifest unknown")

    result = invoke(stack, "check", "--json")

    assert result.exit_code == ExitCode.RESOLVE_FAILED
    assert json.loads(result.stdout) == [
        {"service": "broken", "status": "error", "held": None, "drift": [],
         "error": {"message": "nosuch:tag could not be resolved: manifest unknown", "code": ExitCode.RESOLVE_FAILED},
         "rate_limits": {},
         "entries": [{"entry": "SERVICE_X_IMAGE_HASHED", "tagged": "nosuch:tag", "current": None, "current_version": None,
                      "available": None, "available_version": None, "pending": None, "skipped": None}]},
        {"service": "current", "status": "current", "held": None, "drift": [], "error": None, "rate_limits": {},
         "entries": [{"entry": "SERVICE_C_IMAGE_HASHED", "tagged": "nginx:latest",
                      "current": f"docker.io/library/nginx@{DIGEST_A}", "current_version": None,
                      "available": f"docker.io/library/nginx@{DIGEST_A}", "available_version": None, "pending": False, "skipped": None}]},
        {"service": "empty", "status": "current", "held": None, "drift": [], "error": None, "rate_limits": {}, "entries": []},
        {"service": "pending", "status": "pending", "held": None, "drift": [], "error": None, "rate_limits": {},
         "entries": [{"entry": "SERVICE_P_IMAGE_HASHED", "tagged": "nginx:1", "current": None, "current_version": None,
                      "available": f"docker.io/library/nginx@{DIGEST_B}", "available_version": None, "pending": True, "skipped": None}]},
    ]
    assert "broken: nosuch:tag could not be resolved" in result.stderr


def test_check_without_skopeo_is_10(stack):
    stack.service("web", WEB_ENV)
    (stack.tmp_path / "bin" / "skopeo").unlink()
    assert_one_line_error(invoke(stack, "check"), ExitCode.TOOL_MISSING, "skopeo")


def test_check_answered_from_the_cache_needs_no_skopeo(stack):
    stack.service("web", WEB_ENV + f"SERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    assert invoke(stack, "check").exit_code == ExitCode.OK
    (stack.tmp_path / "bin" / "skopeo").unlink()

    cached = invoke(stack, "check")

    assert cached.exit_code == ExitCode.OK, cached.stderr
    assert [call[0] for call in stack.calls()] == ["skopeo"]


def test_check_never_reports_a_cached_change_without_looking_it_up_again(stack):
    # The cache may only say "unchanged": a stale answer (tag moved on since) must not show as pending.
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    assert invoke(stack, "check").exit_code == ExitCode.UPDATES_PENDING
    env_file.write_text(WEB_ENV + f"SERVICE_WEB_IMAGE_HASHED={PIN_B}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)

    result = invoke(stack, "check")

    assert result.exit_code == ExitCode.OK, result.output
    assert [call[0] for call in stack.calls()] == ["skopeo", "skopeo"]


@pytest.mark.parametrize("command", ["check", "update"])
def test_refresh_looks_up_what_the_cache_calls_current_and_saves_the_answer(stack, command):
    env_file = stack.service("web", WEB_ENV + f"SERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    assert invoke(stack, "check").exit_code == ExitCode.OK
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    assert invoke(stack, "check").exit_code == ExitCode.OK  # the cache, unchanged
    if command == "update":
        stack.full_update("web")

    result = invoke(stack, command, "--refresh", service_snapshot="false", prune_images="false")

    assert result.exit_code == (ExitCode.UPDATES_PENDING if command == "check" else ExitCode.OK), result.output
    assert [call[0] for call in stack.calls()].count("skopeo") == 2
    cache = json.loads(Path(stack.env["CIPUG_CACHE_LOCATION"]).read_text())
    assert cache["nginx:latest"]["digest"] == DIGEST_B
    assert (PIN_B in env_file.read_text()) == (command == "update")


# check-snapshots, config

def test_check_snapshots(stack):
    stack.service("web", WEB_ENV)
    snapshot = stack.root / "web" / ".snapshots" / "1"
    snapshot.mkdir(parents=True)
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    (snapshot / "info.xml").write_text(f"<snapshot><num>1</num><date>{taken}</date></snapshot>")

    fresh = invoke(stack, "check-snapshots", snapshots_dir_snapper=".snapshots")
    missing = invoke(stack, "check-snapshots", snapshots_dir_snapper=".nosuch")

    assert fresh.exit_code == ExitCode.OK and "web: newest snapper snapshot 1" in fresh.stdout
    assert missing.exit_code == ExitCode.SNAPSHOTS_STALE
    assert invoke(stack, "check-snapshots").exit_code == ExitCode.INVALID_VALUE


def test_config_as_lines_and_as_json(stack):
    lines = invoke(stack, "config")
    as_json = invoke(stack, "config", "--json")

    assert lines.exit_code == 0 and f"SERVICES_ROOT={stack.root}\n" in lines.stdout
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["HEALTH_TIMEOUT"] == 0


# history

def test_history_lines_filter_and_json(stack):
    history_file = Path(stack.env["CIPUG_HISTORY_FILE"])
    records = [record(None, PIN_A, snapshot=3),
               record(PIN_A, PIN_B, service="db", snapshot=None),
               record(PIN_B, PIN_A, outcome=history.ROLLED_BACK, snapshot=9)._replace(
                       detail="folder restored to snapshot 3")]
    history.append(history_file, records, Log())
    with history_file.open("a") as file:
        file.write("{damaged\n")

    everything = invoke(stack, "history")
    web = invoke(stack, "history", "web")
    as_json = invoke(stack, "history", "db", "--json")

    assert everything.exit_code == 0
    assert everything.stdout.splitlines() == [
        f"2026-01-01T00:00:00+00:00  web  updated      SERVICE_WEB_IMAGE_HASHED  nginx:latest  (none) -> "
        f"{DIGEST_A[:19]}  snapshot 3",
        f"2026-01-01T00:00:00+00:00  db  updated      SERVICE_WEB_IMAGE_HASHED  nginx:latest  {DIGEST_A[:19]} -> "
        f"{DIGEST_B[:19]}",
        f"2026-01-01T00:00:00+00:00  web  rolled back  SERVICE_WEB_IMAGE_HASHED  nginx:latest  {DIGEST_B[:19]} -> "
        f"{DIGEST_A[:19]}  snapshot 9  (folder restored to snapshot 3)",
    ]
    assert f"{history_file}:4: damaged history line skipped" in everything.stderr
    assert [line.split()[1] for line in web.stdout.splitlines()] == ["web", "web"]
    assert json.loads(as_json.stdout) == [{
        "time": "2026-01-01T00:00:00+00:00", "service": "db", "entry": "SERVICE_WEB_IMAGE_HASHED",
        "tagged": "nginx:latest", "old": PIN_A, "new": PIN_B, "snapshot": None, "snapper_config": "web-snap",
        "outcome": "updated", "detail": "", "old_version": None, "new_version": None, "did_not_come_up": False}]


def test_history_when_there_is_none(stack):
    empty = invoke(stack, "history", "web")
    as_json = invoke(stack, "history", "--json")

    assert empty.exit_code == 0 and empty.stdout == f"no history for web in {stack.env['CIPUG_HISTORY_FILE']}\n"
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == []


# rollback

@pytest.fixture
def web(stack):
    rollback = Rollback(stack)
    rollback.add_history(record())
    return rollback


def expect_folder_rollback(web) -> None:
    web.snapper(safety=15)
    web.undochange(12)
    for step in (("down",), ("pull",), ("down",), ("up", "-d")):
        web.stack.compose("web", *step)


def test_rollback_asks_and_goes_ahead_on_yes(web, terminal):
    expect_folder_rollback(web)

    result = invoke(web.stack, "rollback", "web", input="y\n")

    assert result.exit_code == 0, result.output
    assert "Roll back web to snapshot 12? [y/N]: " in result.stdout
    assert result.stdout.index("steps: stop it") < result.stdout.index("Roll back web to snapshot 12?")
    assert web.env_file.read_text() == ENV_A
    assert [item.outcome for item in web.stack.history()] == ["updated", "rolled back"]


@pytest.mark.parametrize("answer", ["n\n", "\n", ""])
def test_rollback_answered_no_or_not_at_all_changes_nothing(web, terminal, answer):
    web.snapper()

    result = invoke(web.stack, "rollback", "web", input=answer)

    assert result.exit_code == 0, result.output
    assert "cancelled: nothing was changed" in result.stdout
    assert web.env_file.read_text() == ENV_B
    assert web.calls() == ["snapper --jsonout list-configs", "snapper --jsonout -c web-snap list",
                           f"podman image inspect {PIN_B} {PIN_A}"]
    assert [item.outcome for item in web.stack.history()] == ["updated"]


def test_rollback_without_terminal_or_yes_refuses(web):
    web.snapper()

    result = invoke(web.stack, "rollback", "web", input="y\n")

    assert_one_line_error(result, ExitCode.USAGE, "stdin is no terminal: add --yes")
    assert "steps: stop it" in result.stdout
    assert web.env_file.read_text() == ENV_B
    assert web.calls() == ["snapper --jsonout list-configs", "snapper --jsonout -c web-snap list",
                           f"podman image inspect {PIN_B} {PIN_A}"]


def test_rollback_yes_does_not_ask(web):
    expect_folder_rollback(web)

    result = invoke(web.stack, "rollback", "web", "--yes")

    assert result.exit_code == 0, result.output
    assert "[y/N]" not in result.stdout and web.env_file.read_text() == ENV_A


def test_rollback_snapshot_and_image_only_options(web, terminal):
    web.snapper(safety=16)
    for step in (("ps",), ("pull",), ("down",), ("up", "-d")):
        web.stack.compose("web", *step)

    result = invoke(web.stack, "rollback", "web", "--image-only", "--snapshot", "12", input="y\n")

    assert result.exit_code == 0, result.output
    assert "Roll back the images of web? [y/N]: " in result.stdout
    assert web.env_file.read_text() == ENV_A
    assert web.stack.history()[-1].detail.startswith("image only")


def test_rollback_errors_are_one_line(web):
    web.env_file.write_text(ENV_A.replace(PIN_A, PIN_B))
    web.add_history(record(None, PIN_A, snapshot=13, time="2026-03-01T00:00:00+00:00"))

    assert_one_line_error(invoke(web.stack, "rollback", "web", "--image-only", "-y"), ExitCode.ROLLBACK_REFUSED,
                          "pinned for the first time")
    assert_one_line_error(invoke(web.stack, "rollback", "nosuch", "-y"), ExitCode.DIRECTORY_NOT_FOUND, "nosuch")


@pytest.mark.parametrize("args", [["rollback"], ["rollback", "web", "--snapshot", "0"],
                                  ["rollback", "web", "--snapshot", "x"], ["update", "--nosuch"]])
def test_bad_command_lines_exit_2(stack, args):
    result = invoke(stack, *args)
    assert result.exit_code == ExitCode.USAGE and "Traceback" not in result.output


def test_run_cli_returns_the_exit_code(stack, monkeypatch, capsys):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)

    assert cli.run_cli(["config", "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["SERVICES_ROOT"] == str(stack.root)
    assert cli.run_cli(["history", "--nosuch"]) == ExitCode.USAGE
    assert cli.run_cli(["update", "--service", "nosuch"]) == ExitCode.DIRECTORY_NOT_FOUND


# The timer's path, with and without Typer

def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Settings for a cipug process under tmp_path, with tools on PATH that fail if they are run."""
    services = tmp_path / "services"
    services.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("skopeo", "snapper", "podman", "podman-compose"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 99\n")
        (bin_dir / tool).chmod(0o755)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CIPUG_")}
    environ.update(PATH=f"{bin_dir}:{os.environ['PATH']}", CIPUG_SERVICES_ROOT=str(services), CIPUG_RESOLVER="skopeo",
                   CIPUG_CACHE_LOCATION=str(tmp_path / "cache.json"), CIPUG_HISTORY_FILE=str(tmp_path / "h.jsonl"),
                   **settings)
    return environ


def python(code: str, tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Python code that sets something up (blocks typer, watches imports) before it runs cipug.main."""
    return subprocess.run([sys.executable, "-c", code, *args], env=environment(tmp_path, **settings), cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def web_service(tmp_path: Path, env: str) -> Path:
    """A service `web` under tmp_path/services with this .env; its folder."""
    folder = tmp_path / "services" / "web"
    folder.mkdir(parents=True)
    (folder / "compose.yml").write_text("services: {}\n")
    (folder / ".env").write_text(env)
    return folder


# What the timer's run with nothing to look up or change must not load: typer and apprise are optional
# extras; the registry client, the thread pool and the machinery that changes services are for runs
# that have lookups or changes to make; notifiers and metrics for runs that have them configured.
NOT_ON_THE_TIMERS_PATH = ("typer", "click", "cipug.cli", "cipug.lookup.registry", "http.client", "ssl",
                          "concurrent.futures", "cipug.transaction", "cipug.programs.compose",
                          "cipug.programs.snapper", "cipug.notify", "cipug.metrics", "apprise",
                          "cipug.commands.adopt")


def test_the_timers_run_on_a_warm_cache_loads_no_extra_lookup_or_change_machinery(tmp_path):
    web_service(tmp_path, f"# web\nSERVICE_WEB_IMAGE_TAGGED=nginx:latest\nSERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"nginx:latest": {"name": PIN_A.split("@")[0], "digest": DIGEST_A,
                                                      "resolved_at": time.time()}}))
    cache.chmod(0o600)
    # The NixOS module always passes a config file.
    config = tmp_path / "cipug.json"
    config.write_text(json.dumps({"VERBOSITY": 2, "SNAPPER_TOOL": "snapper --no-dbus"}))
    code = ("import sys\nimport cipug.main\n"
            "exit_code = cipug.main.main([])\n"
            f"print(sorted(set(sys.modules) & set({NOT_ON_THE_TIMERS_PATH!r})))\n"
            "sys.exit(exit_code)")
    result = python(code, tmp_path, CIPUG_CONFIG_FILE=str(config))
    assert result.returncode == 0, result.stderr
    assert "web: up to date (1 image)" in result.stdout
    assert result.stdout.endswith("\n[]\n"), result.stdout


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_lookups_ends_the_run_with_130_and_one_line(tmp_path, signal_name):
    # systemd signals every process of the unit, a terminal its foreground group: skopeo too.
    env = "SERVICE_WEB_IMAGE_TAGGED=nginx:latest\n"
    service = web_service(tmp_path, env)
    started = tmp_path / "skopeo-started"
    skopeo = tmp_path / "slow-skopeo"
    skopeo.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 60\n")
    skopeo.chmod(0o755)
    process = start_cipug([], environment(tmp_path, CIPUG_SKOPEO_TOOL=str(skopeo)), new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert started.exists(), process.communicate(timeout=30)
        os.killpg(process.pid, getattr(signal, signal_name))
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == ExitCode.INTERRUPTED == 130, err
    assert err.count("\n") == 1 and signal_name in err and "Traceback" not in err
    assert (service / ".env").read_text() == env


BLOCKERS = {
    "none in sys.modules": "sys.modules['typer'] = None\n",
    "import hook": ("class Blocker:\n"
                    "    def find_spec(self, name, path=None, target=None):\n"
                    "        if name.partition('.')[0] == 'typer':\n"
                    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
                    "sys.meta_path.insert(0, Blocker())\n"),
}


@pytest.mark.parametrize("blocker", BLOCKERS.values(), ids=BLOCKERS.keys())
def test_without_typer_subcommands_say_what_to_install_and_the_legacy_flags_work(tmp_path, blocker):
    code = f"import sys\n{blocker}from cipug.main import main\nsys.exit(main(sys.argv[1:]))"

    subcommand = python(code, tmp_path, "rollback", "web")
    legacy = python(code, tmp_path, "--print-config")
    usage = python(code, tmp_path, "--help")
    default = python(code, tmp_path)

    assert subcommand.returncode == ExitCode.USAGE and subcommand.stdout == ""
    assert subcommand.stderr.count("\n") == 1 and "pip install 'cipug[cli]'" in subcommand.stderr
    assert legacy.returncode == 0 and "SERVICES_ROOT=" in legacy.stdout
    assert usage.returncode == 0 and "--check-snapshots" in usage.stdout
    assert default.returncode == 0, default.stderr


@pytest.mark.parametrize("flags, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--update", "--print-config"], "argument --print-config: not allowed with argument --update"),
])
def test_a_bad_flag_is_one_error_line(tmp_path, flags, message):
    result = run_cipug(flags, environment(tmp_path))
    assert result.returncode == ExitCode.USAGE and result.stdout == ""
    assert result.stderr == f"cipug: error: {message} (see cipug --help)\n"


def test_help_of_the_program_is_the_cli_when_typer_is_there(tmp_path):
    result = run_cipug(["--help"], environment(tmp_path))
    assert result.returncode == 0 and "rollback" in result.stdout and "check-snapshots" in result.stdout
