"""Notifications: which events are new (pure), the state file, and whole runs telling a command and Apprise."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cipug.errors import ExitCode
from cipug.files import history
from cipug.log import Log
from cipug.metrics import EntryStatus
from cipug.settings import SETTINGS_BY_NAME
from cipug.notify import (DRIFT, HELD, SKIPPED, Event, events_from_records, events_from_statuses, read_notified,
                          state_key, to_notify, write_notified)
from tests.support.fakestack import DIGEST_A, DIGEST_B, ENV_A, PIN_A, PIN_B, PIN_C, record
from tests.support.invoke import REPO, run_cipug

# Every whole run here: the skopeo resolver (faked), no cache.
RUN = {"resolver": "skopeo", "cache_duration": "0"}


def quiet() -> tuple[Log, io.StringIO]:
    err = io.StringIO()
    return Log(1, io.StringIO(), err), err


# --- events ----------------------------------------------------------------------------------


def test_records_of_one_transaction_are_one_event():
    first = record(PIN_A, PIN_B, time="2026-01-01T00:00:00+00:00")
    second = record(None, PIN_C, entry="SERVICE_WEB_DB_IMAGE_HASHED", time="2026-01-01T00:00:00+00:00")
    other = record(PIN_A, PIN_B, service="db", outcome=history.ROLLED_BACK, time="2026-01-01T00:00:01+00:00")
    events = events_from_records([first, second, other])
    assert [(event.service, event.kind, len(event.entries)) for event in events] == [("web", "updated", 2),
                                                                                     ("db", "rolled back", 1)]
    assert all(event.key is None for event in events)  # they happen once by nature
    assert "SERVICE_WEB_IMAGE_HASHED (nginx:latest): sha256:aaaa" in events[0].message()
    assert "snapshot 12 of snapper config web-snap" in events[0].message()
    data = events[0].as_json("host1")
    assert data["event"] == "updated" and data["service"] == "web" and data["host"] == "host1"
    assert data["entries"][0] == {"entry": "SERVICE_WEB_IMAGE_HASHED", "tagged": "nginx:latest",
                                  "old": PIN_A, "new": PIN_B, "old_version": None, "new_version": None}
    json.dumps(data)


def test_a_drift_repair_is_a_lasting_state():
    [event] = events_from_records([record(PIN_C, PIN_A, outcome="repaired")])
    assert event.kind == DRIFT and event.key is not None


def test_held_and_failed_before_statuses_are_lasting_states():
    statuses = [EntryStatus("web", "SERVICE_WEB_IMAGE_HASHED", "nginx:latest", PIN_A, PIN_B, True, held="by hand"),
                EntryStatus("db", "SERVICE_DB_IMAGE_HASHED", "postgres:16", PIN_A, PIN_B, True, failed=PIN_B),
                EntryStatus("ok", "SERVICE_OK_IMAGE_HASHED", "nginx:latest", PIN_A, PIN_A, False)]
    events = events_from_statuses(statuses, "2026-01-01T00:00:00+00:00")
    assert [(event.service, event.kind) for event in events] == [("web", HELD), ("db", SKIPPED)]
    assert "held: by hand" in events[0].message() and "failed before" in events[1].message()
    assert all(event.key for event in events)


def _state(kind: str, service: str = "web", identity: str = DIGEST_B) -> Event:
    return Event(kind, service, "t", key=state_key(kind, service, "SERVICE_WEB_IMAGE_HASHED", identity))


def test_a_lasting_state_is_told_once_until_it_clears_then_again():
    held = _state(HELD)
    updated = Event("updated", "db", "t")
    send, keep = to_notify([held, updated], set(), {"web", "db"})
    assert send == [held, updated] and keep == set()
    told = keep | {held.key}
    # The next runs: still held, told already; what happens once is told every time it happens.
    send, keep = to_notify([held, updated], told, {"web", "db"})
    assert send == [updated] and keep == told
    # It cleared: forgotten, and told again when it is back.
    send, keep = to_notify([], told, {"web", "db"})
    assert send == [] and keep == set()
    send, _ = to_notify([held], keep, {"web", "db"})
    assert send == [held]


def test_states_of_services_the_run_did_not_see_whole_stay_told():
    held = _state(HELD)
    send, keep = to_notify([], {held.key}, {"db"})  # web was filtered out, or could not be read
    assert send == [] and keep == {held.key}


def test_the_same_state_twice_in_one_run_is_told_once():
    held = _state(HELD)
    send, _ = to_notify([held, held], set(), {"web"})
    assert send == [held]


# --- the state file --------------------------------------------------------------------------


def test_the_state_file_is_private_and_reads_back(tmp_path):
    log, err = quiet()
    path = tmp_path / "state" / "notified.json"
    write_notified(path, {"b", "a"}, log)
    assert read_notified(path, log) == {"a", "b"}
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert err.getvalue() == ""


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "notified": [1]}', "[]", '{"version": 9}',
                                     "\udcff"])
def test_a_damaged_state_file_is_a_warning_and_counts_as_empty(tmp_path, content):
    log, err = quiet()
    path = tmp_path / "notified.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    path.chmod(0o600)
    assert read_notified(path, log) == set()
    assert err.getvalue().count("\n") == 1 and "notification state" in err.getvalue()


def test_a_state_file_others_could_write_is_not_trusted_and_replaced(tmp_path):
    log, err = quiet()
    path = tmp_path / "notified.json"
    path.write_text(json.dumps({"version": 1, "notified": ["planted"]}))
    path.chmod(0o666)
    assert read_notified(path, log) == set()
    assert "writable by others" in err.getvalue()
    write_notified(path, {"mine"}, log)
    assert path.stat().st_mode & 0o777 == 0o600 and read_notified(path, log) == {"mine"}


# --- whole runs with faked programs --------------------------------------------------------


def updating(stack, digest: str = DIGEST_B) -> None:
    """`web` pinned to A, its tag now at `digest`: one update with every step."""
    stack.skopeo("nginx:latest", "docker.io/library/nginx", digest)
    stack.full_update("web")
    stack.snapper({"web-config": "web"}, number=12)
    stack.prune()


class Received:
    """A stand-in NOTIFY_COMMAND: what it got on standard input, one list per call."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def __call__(self, text) -> None:
        text = text.decode() if isinstance(text, bytes) else text
        self.calls.append([json.loads(line) for line in text.splitlines()])


def test_an_update_is_told_to_the_command_once(stack):
    stack.service("web", ENV_A)
    updating(stack)
    received = Received()
    stack.fp.register(["notify-me", "--to", "ops"], stdin_callable=received)
    assert stack.run(notify_command="notify-me --to ops", **RUN) == ExitCode.OK
    [[event]] = received.calls
    assert (event["event"], event["service"], event["snapshot"]) == ("updated", "web", 12)
    assert event["entries"] == [{"entry": "SERVICE_WEB_IMAGE_HASHED", "tagged": "nginx:latest",
                                 "old": PIN_A, "new": PIN_B, "old_version": None, "new_version": None}]
    # The next run has nothing new: the command is not run at all.
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    assert stack.run(notify_command="notify-me --to ops", **RUN) == ExitCode.OK
    assert len(received.calls) == 1
    assert stack.err.getvalue() == ""


def test_a_failing_command_is_a_warning_and_keeps_the_outcome(stack):
    stack.service("web", ENV_A)
    updating(stack)
    stack.fp.register(["notify-me"], returncode=3, stderr="no route to the pager")
    assert stack.run(notify_command="notify-me", **RUN) == ExitCode.OK
    [line] = stack.err.getvalue().splitlines()
    assert "warning" in line and "web: NOTIFY_COMMAND `notify-me`" in line and "exited 3: no route to the pager" in line


def test_a_failed_update_is_told_and_its_exit_code_stays(stack):
    stack.service("web", ENV_A)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    stack.compose("web", "ps")
    stack.snapper({"web-config": "web"}, number=12)
    stack.compose("web", "pull", returncode=1)
    received = Received()
    stack.fp.register(["notify-me"], stdin_callable=received)
    assert stack.run(notify_command="notify-me", **RUN) == ExitCode.PULL_FAILED
    [[event]] = received.calls
    assert event["event"] == "failed" and event["service"] == "web"


def test_notify_urls_without_the_extra_is_one_line_and_changes_nothing(stack, monkeypatch):
    monkeypatch.setitem(sys.modules, "apprise", None)
    env_file = stack.service("web", ENV_A)
    assert stack.run(notify_urls="json://127.0.0.1:9/", **RUN) == ExitCode.NOTIFY_EXTRA_MISSING == 12
    [line] = stack.err.getvalue().splitlines()
    assert "pip install 'cipug[notify]'" in line
    assert stack.calls() == [] and env_file.read_text() == ENV_A


def test_held_states_are_told_once_across_runs(stack, monkeypatch):
    """The plumbing for lasting states, with a status that says held (cipug.holds fills it)."""
    stack.service("web", ENV_A)
    held = EntryStatus("web", "SERVICE_WEB_IMAGE_HASHED", "nginx:latest", PIN_A, PIN_B, True, held="by hand")
    import cipug.metrics

    monkeypatch.setattr(cipug.metrics, "entry_statuses", lambda *args: [held])
    received = Received()
    stack.fp.register(["notify-me"], stdin_callable=received, occurrences=5)
    for _ in range(3):
        stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
        assert stack.run(notify_command="notify-me", **RUN) == ExitCode.OK
    assert [[event["event"] for event in call] for call in received.calls] == [["held"]]
    state = json.loads((Path(stack.env["CIPUG_HISTORY_FILE"]).parent / "notified.json").read_text())
    assert len(state["notified"]) == 1


# --- a real cipug process and a real notifier program ------------------------------------------


def process_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A cipug process that resolves `nginx:latest` with a skopeo script and changes only `.env`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    digest = tmp_path / "digest"
    digest.write_text(DIGEST_B)
    skopeo = bin_dir / "skopeo"
    skopeo.write_text('#!/bin/sh\nprintf \'{"Name": "docker.io/library/nginx", "Digest": "%s"}\' "$(cat '
                      f'{digest})"\n')
    skopeo.chmod(0o755)
    services = tmp_path / "services"
    (services / "web").mkdir(parents=True)
    (services / "web" / "compose.yml").write_text("services: {}\n")
    (services / "web" / ".env").write_text(ENV_A)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CIPUG_")}
    environ.update(PATH=f"{bin_dir}:{os.environ['PATH']}", CIPUG_SERVICES_ROOT=str(services),
                   CIPUG_CACHE_DURATION="0", CIPUG_RESOLVER="skopeo", CIPUG_HISTORY_FILE=str(tmp_path / "state" / "h.jsonl"),
                   CIPUG_CACHE_LOCATION=str(tmp_path / "cache.json"), CIPUG_SERVICE_STOP_START="false",
                   CIPUG_SERVICE_SNAPSHOT="false", CIPUG_SERVICE_PULL="false", CIPUG_PRUNE_IMAGES="false",
                   **{f"CIPUG_{key.upper()}": value for key, value in settings.items()})
    if "CHECK_DRIFT" in SETTINGS_BY_NAME:
        environ["CIPUG_CHECK_DRIFT"] = "false"
    return environ


def notifier_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "notifier.py"
    script.write_text(f"import sys\n{body}\n")
    return script


def test_a_real_command_gets_each_event_once_across_runs(tmp_path):
    received = tmp_path / "received.jsonl"
    script = notifier_script(tmp_path, f"open({str(received)!r}, 'a').write(sys.stdin.read())")
    environ = process_environment(tmp_path, notify_command=f"{sys.executable} {script}",
                                  metrics_file=str(tmp_path / "cipug.prom"))
    first = run_cipug([], environ, timeout=60)
    assert first.returncode == 0, first.stderr
    second = run_cipug([], environ, timeout=60)
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in received.read_text().splitlines()]
    assert [(event["event"], event["service"]) for event in events] == [("updated", "web")]
    assert events[0]["entries"][0]["new"] == PIN_B
    assert "cipug_run_exit_code 0" in (tmp_path / "cipug.prom").read_text()


def test_a_real_missing_command_is_a_warning(tmp_path):
    environ = process_environment(tmp_path, notify_command=str(tmp_path / "no-such-notifier"))
    result = run_cipug([], environ, timeout=60)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert "warning" in line and "no-such-notifier" in line and "not found" in line


def test_a_real_hanging_command_is_ended_after_the_timeout_and_not_asked_again(tmp_path):
    pid_file = tmp_path / "pid"
    script = notifier_script(tmp_path, f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                       "time.sleep(120)")
    environ = process_environment(tmp_path, notify_command=f"{sys.executable} {script}", notify_timeout="1")
    second = Path(environ["CIPUG_SERVICES_ROOT"]) / "db"
    second.mkdir()
    (second / "compose.yml").write_text("services: {}\n")
    (second / ".env").write_text(ENV_A)
    started = time.monotonic()
    result = run_cipug([], environ, timeout=60)
    assert time.monotonic() - started < 1 + 3 + 15  # one timeout, the grace to end it, and the run itself
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "NOTIFY_COMMAND" in line]
    assert "did not finish within 1 s; not asked again in this run" in line and "Traceback" not in result.stderr
    assert (second / ".env").read_text() != ENV_A
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- Apprise, to an HTTP server on loopback --------------------------------------------------


class Endpoint:
    """An HTTP server on 127.0.0.1 taking Apprise's json:// posts; `hang` makes it never answer."""

    def __init__(self, hang: bool = False) -> None:
        self.posts: list[dict] = []
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.posts.append(json.loads(body))
                if hang:
                    endpoint.release.wait(30)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(require_module):
    require_module("apprise")
    server = Endpoint()
    yield server
    server.close()


def test_apprise_delivers_each_event_once(stack, endpoint):
    stack.service("web", ENV_A)
    updating(stack)
    assert stack.run(notify_urls=endpoint.url, **RUN) == ExitCode.OK
    [post] = endpoint.posts
    assert post["title"].endswith(": web updated")
    assert "sha256:aaaa" in post["message"] and "sha256:bbbb" in post["message"]
    assert post["type"] == "success"
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    assert stack.run(notify_urls=endpoint.url, **RUN) == ExitCode.OK
    assert len(endpoint.posts) == 1


def test_apprise_unreachable_is_a_warning(stack, require_module):
    require_module("apprise")
    stack.service("web", ENV_A)
    updating(stack)
    # A loopback port nothing listens on: the connection is refused at once.
    assert stack.run(notify_urls="json://127.0.0.1:9/", **RUN) == ExitCode.OK
    [line] = stack.err.getvalue().splitlines()
    assert "web: NOTIFY_URLS could not tell that it updated" in line


def test_apprise_hanging_is_bounded(stack, require_module):
    require_module("apprise")
    server = Endpoint(hang=True)
    try:
        stack.service("web", ENV_A)
        updating(stack)
        started = time.monotonic()
        assert stack.run(notify_urls=server.url, notify_timeout="0.5", **RUN) == ExitCode.OK
        assert time.monotonic() - started < 10
        assert "did not finish within 0.5 s" in stack.err.getvalue()
    finally:
        server.close()


def test_an_url_apprise_does_not_know_is_a_warning_without_its_secrets(stack, require_module):
    require_module("apprise")
    stack.service("web", ENV_A)
    updating(stack)
    assert stack.run(notify_urls="nosuchscheme://user:s3cret@host/", **RUN) == ExitCode.OK
    assert "URL 1 (nosuchscheme://…)" in stack.err.getvalue() and "s3cret" not in stack.err.getvalue()


def test_apprise_is_loaded_only_when_notify_urls_is_set(tmp_path):
    received = tmp_path / "received.jsonl"
    script = notifier_script(tmp_path, f"open({str(received)!r}, 'a').write(sys.stdin.read())")
    environ = process_environment(tmp_path, notify_command=f"{sys.executable} {script}",
                                  metrics_file=str(tmp_path / "cipug.prom"))
    code = ("import sys\nimport cipug.main\nexit_code = cipug.main.main([])\n"
            "print(sorted(name for name in sys.modules if name.partition('.')[0] in ('apprise', 'requests')))\n"
            "sys.exit(exit_code)")
    result = subprocess.run([sys.executable, "-c", code], env=environ, cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n[]\n") and received.read_text()


def test_the_runner_writes_input_to_the_programs_standard_input():
    from cipug.programs.process import Runner

    result = Runner(Log(0, io.StringIO(), io.StringIO())).run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], input="event\n", timeout=30)
    assert (result.returncode, result.stdout) == (0, "EVENT\n\n")
    # Without input, standard input stays /dev/null.
    result = Runner(Log(0, io.StringIO(), io.StringIO())).run(
        [sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"], timeout=30)
    assert result.stdout == "''\n"


def test_a_compose_file_naming_a_tag_is_told_once_while_it_lasts(stack):
    stack.service("web", f"SERVICE_WEB_IMAGE_TAGGED=nginx:latest\nSERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    received = Received()
    stack.fp.register(["notify-me"], stdin_callable=received)
    for _ in range(2):
        stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
        stack.listing({"Name": "web_web_1", "ImageName": "docker.io/library/nginx:latest"})
        assert stack.run(notify_command="notify-me", check_drift="true", **RUN) == ExitCode.OK

    [[event]] = received.calls
    assert (event["event"], event["service"]) == ("drift", "web")
    assert "does not use ${SERVICE_WEB_IMAGE_HASHED}" in event["message"]
    assert event["entries"][0]["old"] == "docker.io/library/nginx:latest" and event["entries"][0]["new"] == PIN_A
