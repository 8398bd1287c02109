"""The fault matrix on the real stack: a run killed (kill -9, as a power loss would) or stopped (SIGTERM,
as systemd stops it) at each step of an update, `.env` writes that fail, and a user's edit made while
cipug runs.

Every case ends with the service fully on its old digests or fully on its new ones (its `.env` pin is
the digest its container runs), the user's edit kept, history saying what happened, and the next run
repairing what the fault left. A step is held with a gate: a wrapper around the real program that,
when called for that step, writes its PID and waits until the test lets it go (or makes it fail).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import realstack
from tests.support.realstack import Deployed, deploy, explain, repository, var, without_notes

pytestmark = pytest.mark.integration

# The scenarios about cipug's own behaviour run on every compose tool, with the matching CONTAINER_TOOL.
EVERY_TOOL = pytest.mark.parametrize("engine", realstack.COMPOSE_TOOLS, indirect=True)
# The kill and SIGTERM cells (ten per tool) run on podman-compose and docker compose v2: v1 drives the
# same daemon as v2, with the same steps, and the whole suite must stay well under 15 minutes.
KILL_CELLS = pytest.mark.parametrize("engine", ["podman-compose", "docker compose"], indirect=True)

INTERRUPTED, ENV_WRITE_FAILED, PULL_FAILED = 130, 32, 33


class Gate:
    """A wrapper for a program whose first call for one step waits until `release()` (or fails on
    `fail()`); later calls, such as a put-back's, go straight through."""

    def __init__(self, folder: Path, name: str, real: list[str], step: str, *, first_argument: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / name
        self.pid_file, self.go, self.failing, self.held = (
            folder / f"{name}.{suffix}" for suffix in ("pid", "go", "fail", "held"))
        # The step is any argument (compose: `-f compose.yml pull`), or only the first (podman inspect).
        test = f'[ "$1" = {shlex.quote(step)} ]' if first_argument else \
            f'case " $* " in *" {step} "*) true;; *) false;; esac'
        self.path.write_text(
            "#!/bin/sh\n"
            f"if {test} && mkdir {self.held} 2>/dev/null; then\n"
            f"  echo $$ > {self.pid_file}\n"
            f"  while [ ! -e {self.go} ]; do sleep 0.05; done\n"
            f"  [ -e {self.failing} ] && exit 1\n"
            "fi\n"
            f"exec {shlex.join(real)} \"$@\"\n")
        self.path.chmod(0o755)

    def wait(self, process: subprocess.Popen[str], timeout: float = 120) -> int:
        """The PID of the held call, once cipug has reached the step."""
        deadline = time.monotonic() + timeout
        while not self.pid_file.exists():
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"cipug ended (exit {process.returncode}) before the gate:\n{out}\n{err}")
            assert time.monotonic() < deadline, "cipug did not reach the gate"
            time.sleep(0.05)
        time.sleep(0.1)  # the PID is written before the number is complete only in theory; be sure
        return int(self.pid_file.read_text())

    def release(self) -> None:
        self.go.touch()

    def fail(self) -> None:
        self.failing.touch()
        self.go.touch()


def pinned(deployed: Deployed) -> str:
    """The digest the service's .env pins for its `web` image."""
    for line in without_notes(deployed.service.env_file.read_text()).splitlines():
        if line.startswith(var("web", "HASHED") + "="):
            return line.rpartition("@")[2]
    raise AssertionError(f"{deployed.service.env_file} pins no web image")


def running(engine, deployed: Deployed) -> str:
    web = engine.containers(deployed.service.name)["web"]
    assert web["State"]["Running"], web["State"]
    return web["ImageDigest"]


def history(cipug) -> list[dict]:
    path = Path(cipug.settings["HISTORY_FILE"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def intent_records(cipug) -> list[Path]:
    return sorted((Path(cipug.settings["HISTORY_FILE"]).parent / "intents").glob("*.json"))


@pytest.fixture
def moved(engine, services, tag) -> tuple[Deployed, str]:
    """A running service pinned to its image, whose tag has since moved to a new digest."""
    deployed = deploy(engine, services, "faulty", {"web": tag("web")})
    return deployed, engine.push_image(deployed.tags["web"])


def gate_for(step: str, engine, workdir: Path) -> tuple[Gate, dict[str, str]]:
    """A gate at `step` of an update, and the settings that route the program through it."""
    gates = workdir / "gates"
    if step == "create":
        gate = Gate(gates, "snapper", list(realstack.SNAPPER), "create")
        return gate, {"SNAPPER_TOOL": str(gate.path)}
    # Named like the program it wraps: cipug tells podman from docker, and the compose tools apart, by name.
    if step == "inspect":
        gate = Gate(gates, engine.container_tool[0], list(engine.container_tool), "inspect", first_argument=True)
        # The drift check's inspect comes first, before anything is changed: the gate is for the health wait's.
        return gate, {"CONTAINER_TOOL": str(gate.path), "CHECK_DRIFT": "false"}
    gate = Gate(gates, "-".join(os.path.basename(word) for word in engine.compose_tool), list(engine.compose_tool), step)
    return gate, {"COMPOSE_TOOL": str(gate.path)}


# kill -9 at each step: .env, containers and history as the kill left them, then the next run repairs.
STEPS = {"snapshot": "create", "pull (after the .env write)": "pull", "down": "down", "up": "up",
         "health wait": "inspect"}


@KILL_CELLS
@pytest.mark.parametrize("step", STEPS.values(), ids=STEPS.keys())
def test_a_run_killed_part_way_is_repaired_by_the_next_run(engine, cipug, moved, workdir, step):
    deployed, new = moved
    old = deployed.digests["web"]
    gate, settings = gate_for(step, engine, workdir)

    process = cipug.start(**settings)
    held = gate.wait(process)
    # A power loss: cipug and the program it was waiting for die at once.
    process.kill()
    os.kill(held, signal.SIGKILL)
    process.communicate()
    gate.release()

    assert len(intent_records(cipug)) == 1
    repair = cipug.run()

    assert repair.returncode == 0, explain(repair)
    assert pinned(deployed) == running(engine, deployed) == new
    assert intent_records(cipug) == []
    outcomes = [(record["outcome"], record["old"], record["new"]) for record in history(cipug)]
    pins = (f"{repository(deployed.tags['web'])}@{old}", f"{repository(deployed.tags['web'])}@{new}")
    # What the killed run did not finish is recorded as failed, the repair's fresh update as updated.
    assert outcomes == [("failed", *pins), ("updated", *pins)]
    assert "interrupted" in history(cipug)[0]["detail"]


@KILL_CELLS
@pytest.mark.parametrize("step", STEPS.values(), ids=STEPS.keys())
def test_a_run_stopped_by_sigterm_puts_the_service_back_first(engine, cipug, moved, workdir, step):
    deployed, new = moved
    old = deployed.digests["web"]
    env_before = deployed.service.env_file.read_bytes()
    gate, settings = gate_for(step, engine, workdir)

    process = cipug.start(**settings)
    gate.wait(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    gate.release()

    assert process.returncode == INTERRUPTED, f"{out}\n{err}"
    assert deployed.service.env_file.read_bytes() == env_before
    assert running(engine, deployed) == old
    assert intent_records(cipug) == []
    # Stopped, not failed: even when putting it back meant restarting on the old images, the images are not
    # to blame, so the update is recorded as failed and its digest is not remembered as one that failed.
    [record] = history(cipug)
    assert record["outcome"] == "failed" and "stopped by SIGTERM" in record["detail"]
    after = cipug.run()
    assert after.returncode == 0, explain(after)
    assert pinned(deployed) == running(engine, deployed) == new


# A user's edit while cipug runs

def edit_during_the_pull(cipug, deployed: Deployed, engine, workdir: Path, edit, *, pull_fails: bool):
    """A run whose pull waits while `edit(env_file)` changes .env, then goes on or fails; its exit, out, err."""
    gate, settings = gate_for("pull", engine, workdir)
    process = cipug.start(**settings)
    gate.wait(process)
    edit(deployed.service.env_file)
    if pull_fails:
        gate.fail()
    else:
        gate.release()
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def add_a_line(env_file: Path) -> None:
    with env_file.open("a") as env:
        env.write("ADDED_BY_HAND=1\n")


@EVERY_TOOL
def test_a_line_added_during_the_pull_survives_the_update(engine, cipug, moved, workdir):
    deployed, new = moved
    code, out, err = edit_during_the_pull(cipug, deployed, engine, workdir, add_a_line, pull_fails=False)

    assert code == 0, f"{out}\n{err}"
    assert deployed.service.env_file.read_text().endswith("ADDED_BY_HAND=1\n")
    assert pinned(deployed) == running(engine, deployed) == new


@EVERY_TOOL
def test_a_line_added_during_a_pull_that_fails_survives_the_put_back(engine, cipug, moved, workdir):
    deployed, _new = moved
    env_before = deployed.service.env_file.read_text()
    code, out, err = edit_during_the_pull(cipug, deployed, engine, workdir, add_a_line, pull_fails=True)

    assert code == PULL_FAILED, f"{out}\n{err}"
    # Only the pin cipug wrote was put back; the user's line stays.
    assert deployed.service.env_file.read_text() == env_before + "ADDED_BY_HAND=1\n"
    assert pinned(deployed) == running(engine, deployed) == deployed.digests["web"]
    assert [record["outcome"] for record in history(cipug)] == ["failed"]


@EVERY_TOOL
def test_a_pin_edited_during_a_pull_that_fails_is_left_as_the_user_wrote_it(engine, cipug, moved, workdir):
    deployed, _new = moved
    by_hand = f"{var('web', 'HASHED')}={repository(deployed.tags['web'])}@{deployed.digests['web']} # by hand\n"

    def pin_by_hand(env_file: Path) -> None:
        env_file.write_text("".join(by_hand if line.startswith(var("web", "HASHED")) else line
                                    for line in env_file.read_text().splitlines(keepends=True)))

    code, out, err = edit_during_the_pull(cipug, deployed, engine, workdir, pin_by_hand, pull_fails=True)

    assert code == PULL_FAILED, f"{out}\n{err}"
    assert by_hand in deployed.service.env_file.read_text()
    assert "edited since" in err


# .env writes that fail: the service stays fully old, nothing half-written is left

@pytest.fixture
def small_filesystem(workdir):
    """A 1 MiB tmpfs of the test's own; unmounted afterwards."""
    mount = workdir / "small"
    mount.mkdir()
    realstack.run(["mount", "-t", "tmpfs", "-o", "size=1m", "cipug-test", mount])
    yield mount
    realstack.run(["umount", "-l", mount], check=False)


@EVERY_TOOL
@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
def test_an_env_that_cannot_be_written_leaves_the_service_as_it_was(engine, cipug, moved, small_filesystem,
                                                                    fault):
    deployed, new = moved
    # The service's .env lives on the small file system, through a symlink cipug writes through.
    target = small_filesystem / ".env"
    target.write_bytes(deployed.service.env_file.read_bytes())
    deployed.service.env_file.unlink()
    deployed.service.env_file.symlink_to(target)
    env_before = target.read_bytes()
    if fault == "ENOSPC":
        filler = small_filesystem / "filler"
        realstack.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], check=False)
    else:
        realstack.run(["mount", "-o", "remount,ro", small_filesystem])

    result = cipug.run()

    assert result.returncode == ENV_WRITE_FAILED, explain(result)
    assert target.read_bytes() == env_before
    assert sorted(path.name for path in small_filesystem.iterdir()) == sorted(
        [".env"] + (["filler"] if fault == "ENOSPC" else []))
    assert running(engine, deployed) == deployed.digests["web"]
    assert [record["outcome"] for record in history(cipug)] == ["failed"]
    assert intent_records(cipug) == []
    if fault == "ENOSPC":
        filler.unlink()
    else:
        realstack.run(["mount", "-o", "remount,rw", small_filesystem])
    after = cipug.run()
    assert after.returncode == 0, explain(after)
    assert pinned(deployed) == running(engine, deployed) == new


# A first pin that does not come up: nothing to roll back to

@EVERY_TOOL
def test_a_first_pin_that_does_not_come_up_is_stopped_and_recorded_as_failed(engine, services, cipug, tag):
    web = tag("web")
    engine.push_image(web, realstack.EXIT_COMMAND)
    env = f"{var('web', 'TAGGED')}={web}\n"
    service = services.add("firstpin", env, realstack.compose_text("web"))

    result = cipug.run()

    assert result.returncode == 34, explain(result)
    # .env as it was (no pin of an image that never came up), the service stopped, history says failed.
    assert service.env_file.read_text() == env
    assert not any(item["State"]["Running"] for item in engine.containers(service.name).values())
    [record] = history(cipug)
    assert (record["outcome"], record["old"]) == ("failed", None)
    assert "rolled back" not in result.stderr and "had no earlier pin to go back to" in result.stderr
