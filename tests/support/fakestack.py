"""A faked machine for unit tests: a services root, cipug's settings for it, and pytest-subprocess
registrations standing in for skopeo, snapper, the compose tool and podman."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from cipug.files import history
from cipug.settings import load_settings
from cipug.log import Log
from cipug.commands.update import run_update
from cipug.main import main
from cipug.commands.rollback import roll_back
from cipug.plan import ImageEntry

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64
WEB_ENV = "# web service\nFOO=bar\n\nSERVICE_WEB_IMAGE_TAGGED=nginx:latest   # follows latest\nOTHER='x y'\n"


class FakeTime:
    """A clock that moves only when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Stack:
    """A services root, the settings for it, and helpers to fake the programs cipug calls."""

    def __init__(self, root: Path, fp, tmp_path: Path, monkeypatch, capsys) -> None:
        self.root, self.fp, self.tmp_path = root, fp, tmp_path
        self.monkeypatch, self.capsys = monkeypatch, capsys
        self.out, self.err = io.StringIO(), io.StringIO()
        self.time = FakeTime()
        self.env = {
            "HOME": str(tmp_path / "home"),
            "CIPUG_SERVICES_ROOT": str(root),
            "CIPUG_CACHE_LOCATION": str(tmp_path / "cache" / "cache.json"),
            "CIPUG_HISTORY_FILE": str(tmp_path / "state" / "history.jsonl"),
            "CIPUG_HEALTH_TIMEOUT": "0",
            # Drift is looked for with its own registrations (tests/test_drift.py).
            "CIPUG_CHECK_DRIFT": "false",
            # Versions in `check` come from history alone: no `image inspect`, no manifest GET.
            "CIPUG_CHECK_VERSIONS": "false",
            # The fakes are skopeo's; the registry resolver has its own fake registry (tests/lookup).
            "CIPUG_RESOLVER": "skopeo",
        }

    def service(self, name: str, env_text: str) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True)
        (folder / "compose.yml").write_text("services: {}\n")
        (folder / ".env").write_text(env_text)
        return folder / ".env"

    def run(self, **settings: str) -> int:
        """A whole run through the entry point, as the timer starts it."""
        for key in [key for key in os.environ if key.startswith("CIPUG_")]:
            self.monkeypatch.delenv(key)
        environ = {**self.env, **{f"CIPUG_{key.upper()}": value for key, value in settings.items()}}
        for key, value in environ.items():
            self.monkeypatch.setenv(key, value)
        try:
            return main([])
        finally:
            captured = self.capsys.readouterr()
            self.out.write(captured.out)
            self.err.write(captured.err)

    def update(self, **settings: str) -> int:
        """An update run with time faked: waiting for a service takes no real time."""
        environ = {**self.env, **{f"CIPUG_{key.upper()}": value for key, value in settings.items()}}
        config = load_settings(environ, cwd=self.tmp_path)
        return run_update(config, Log(config.verbosity, self.out, self.err), sleep=self.time.sleep,
                          clock=self.time.clock)

    def skopeo(self, reference: str, name: str, digest: str, occurrences: int = 1) -> None:
        output = json.dumps({"Name": name, "Digest": digest, "RepoTags": []})
        self.fp.register(["skopeo", "inspect", "--no-tags", f"docker://{reference}"], stdout=output,
                         occurrences=occurrences)

    def compose(self, service: str, *arguments: str, returncode: int = 0, **kwargs) -> None:
        # The check that the tool works runs as `env SERVICE_…_HASHED=<pin> …` for pins not written yet.
        prefix = [self.fp.any(min=0)] if arguments == ("ps",) else []
        self.fp.register([*prefix, "podman-compose", "-f", "compose.yml", *arguments], returncode=returncode,
                         stderr="compose said no" if returncode else "", **kwargs)
        if arguments == ("pull",) and returncode == 0:
            # cipug checks that a successful pull really brought the images.
            self.fp.register(["podman", "image", "inspect", self.fp.any(min=1)], occurrences=10)

    def snapper(self, configs: dict[str, str], number: int = 7) -> None:
        listing = {"configs": [{"config": name, "subvolume": str(self.root / folder)} for name, folder in configs.items()]}
        self.fp.register(["snapper", "--jsonout", "list-configs"], stdout=json.dumps(listing))
        for name in configs:
            self.fp.register(["snapper", "-c", name, "create", "--cleanup-algorithm", "number", "--description",
                              self.fp.any(min=1, max=1), "--print-number"], stdout=f"{number}\n", occurrences=5)

    def prune(self, listed: str = "") -> None:
        """The prune at the end of a run that changed something: the images listed, their keep tags, the prune."""
        self.fp.register(["podman", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], stdout=listed)
        for command in ("tag", "rmi"):
            self.fp.register(["podman", command, self.fp.any(min=1)], occurrences=10)
        self.fp.register(["podman", "image", "prune", "-f"])

    def full_update(self, service: str) -> None:
        for step in (("ps",), ("pull",), ("down",), ("up", "-d")):
            self.compose(service, *step)

    def listing(self, *containers: dict) -> None:
        """`podman ps` and `podman inspect` as cipug's one drift listing sees them."""
        ids = [f"id{index}" for index, _ in enumerate(containers)]
        self.fp.register(["podman", "ps", "-a", "-q", "--filter", "label=com.docker.compose.project.working_dir"],
                          stdout="\n".join(ids) + "\n")
        folder = str((self.root / "web").resolve())
        inspected = [{**container, "Id": ids[index], "Config": {**container.get("Config", {}), "Labels": {
            "com.docker.compose.project.working_dir": folder, "com.docker.compose.service": "web"}}}
            for index, container in enumerate(containers)]
        self.fp.register(["podman", "inspect", *ids], stdout=json.dumps(inspected))

    def calls(self) -> list[list[str]]:
        return [list(call) for call in self.fp.calls]

    def history(self) -> list[history.Record]:
        return history.read(Path(self.env["CIPUG_HISTORY_FILE"]), Log(0, io.StringIO(), io.StringIO()))


def containers(*states: tuple[str, str]) -> str:
    return json.dumps([{"Id": f"id{i}", "Name": f"web_app_{i}", "State": {"Status": status, "Health": {"Status": health}}}
                       for i, (status, health) in enumerate(states)])


PIN_A, PIN_B, PIN_C = (f"docker.io/library/nginx@{digest}" for digest in (DIGEST_A, DIGEST_B, DIGEST_C))
TAGGED = "SERVICE_WEB_IMAGE_TAGGED=nginx:latest\n"
ENV_A, ENV_B, ENV_C = (f"{TAGGED}SERVICE_WEB_IMAGE_HASHED={pin}\nDATA=1\n" for pin in (PIN_A, PIN_B, PIN_C))
HASHED = "SERVICE_WEB_IMAGE_HASHED"


def record(old: str | None = PIN_A, new: str | None = PIN_B, *, entry: str = HASHED, snapshot: int | None = 12,
           time: str = "2026-01-01T00:00:00+00:00", outcome: str = history.UPDATED, service: str = "web",
           snapper_config: str | None = "web-snap") -> history.Record:
    return history.Record(time, service, entry, "nginx:latest", old, new, snapshot, snapper_config, outcome)


def entry(current: str | None, key: str = HASHED) -> ImageEntry:
    return ImageEntry(key.replace("HASHED", "TAGGED"), key, "nginx:latest", current)


class Rollback:
    """A Stack with one service `web` that an update moved from PIN_A to PIN_B, taking snapshot 12."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.env_file = stack.service("web", ENV_B)
        self.history_file = Path(stack.env["CIPUG_HISTORY_FILE"])
        self.questions: list[str] = []
        self.answer = True
        # The preview reads the versions history does not know from the local images: none here.
        stack.fp.register(["podman", "image", "inspect", stack.fp.any(min=1)], stdout="[]", returncode=125)

    def add_history(self, *records: history.Record) -> None:
        history.append(self.history_file, list(records), Log())

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    def run(self, *, snapshot: int | None = None, image_only: bool = False, **settings: str) -> int:
        environ = {**self.stack.env, **{f"CIPUG_{key.upper()}": value for key, value in settings.items()}}
        config = load_settings(environ, cwd=self.stack.tmp_path)
        log = Log(config.verbosity, self.stack.out, self.stack.err)
        return roll_back(config, log, "web", confirm=self.confirm, snapshot=snapshot, image_only=image_only,
                         sleep=self.stack.time.sleep, clock=self.stack.time.clock)

    def snapper(self, safety: int = 15) -> None:
        """list-configs, the config's snapshots 5 and 12, and the snapshot taken before the folder is restored."""
        self.stack.snapper({"web-snap": "web"}, number=safety)
        listing = {"web-snap": [{"number": number} for number in (0, 5, 12)]}
        self.stack.fp.register(["snapper", "--jsonout", "-c", "web-snap", "list"], stdout=json.dumps(listing),
                               occurrences=5)

    def undochange(self, number: int = 12, returncode: int = 0, restored: str = ENV_A) -> None:
        def restore(process) -> None:
            self.env_file.write_text(restored)
            (self.env_file.parent / "data.txt").write_text("as in the snapshot\n")

        self.stack.fp.register(["snapper", "-c", "web-snap", "undochange", f"{number}..0"], returncode=returncode,
                               stderr="snapper said no" if returncode else "",
                               callback=None if returncode else restore)

    def calls(self) -> list[str]:
        return [" ".join(call) for call in self.stack.calls()]

    def last_records(self) -> list[history.Record]:
        return [item for item in self.stack.history() if item.outcome != history.UPDATED]


