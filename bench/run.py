"""The cipug benchmark: lookups one after another, in parallel, with HEAD requests, and from the cache.

    python3 -m bench.run [--services 50] [--large-services 500] [--repeat 3] [--latency-ms 25] [--quick] [--json]

Run from the repository root: it uses the tests' helpers (`tests.support`).

Starts a loopback docker-registry, pushes one tiny image (made offline) and
mounts it into one repository per service, puts a token server that behaves
like Docker Hub's in front of it (bench/token_hub.py: bearer tokens, rate-limit
headers, the pull-limit 429) and a latency proxy in front of that. Every service's .env names its own repository through
the proxy. cipug runs as the timer runs it (`python -m cipug`, as the tests
start it) with its modules compiled to bytecode as an installed package has
them, with restarts, snapshots, pulls and pruning off.

Every measured run starts from the state an hourly timer nearly always meets:
each .env already holds the HASHED line its tag resolves to (written by a
priming run of cipug itself), so a run looks everything up and writes nothing,
and cipug remembers the token service from the run before (challenges.json);
"defaults, first run" forgets it before each run, as on a new machine. Every
run of a configuration does the same work; a run that changes a .env file
counts as failed.

Needs root and what tests/run installs (docker-registry, skopeo, podman,
busybox-static); Linux >= 5.3 for pidfd. Exits 0 when every configuration ran
(whether or not the targets were met), 1 when one failed, 2 when the set-up did.
"""

from __future__ import annotations

import argparse
import http.client
import json
import operator
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.latency_proxy import LatencyProxy
from bench.token_hub import TokenHub
from cipug.settings import SETTINGS_BY_NAME
from tests.support import realstack
from tests.support.invoke import COMMAND, REPO

DEFAULT_WORKERS = SETTINGS_BY_NAME["RESOLVE_WORKERS"].default
DEFAULT_REGISTRY_WORKERS = SETTINGS_BY_NAME["REGISTRY_WORKERS"].default
TAG = "latest"
DEFAULTS = (50, 25, 500)  # --services, --latency-ms, --large-services: what the targets are set for
# Long enough that nothing primed expires during a benchmark.
CACHE_YEAR = str(365 * 24 * 3600)
RUN_TIMEOUT = 600.0
HTTP_TIMEOUT = 30.0
MB = 1_000_000
TIME = "/usr/bin/time"  # GNU time, Debian package `time`
SPEED_UPS = ("baseline", "skopeo", "defaults", "first", "registry8", "registry32", "single", "limited")
COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt}
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
# The update run's side effects, all off: only the lookups are measured.
QUIET_SETTINGS = {
    "SERVICE_STOP_START": "false",
    "SERVICE_SNAPSHOT": "false",
    "SERVICE_PULL": "false",
    "PRUNE_IMAGES": "false",
    # Drift detection runs `podman ps` and `podman inspect` on every run, whatever the resolver.
    "CHECK_DRIFT": "false",
    "VERBOSITY": "1",
}


class BenchError(Exception):
    """The set-up failed; nothing could be measured."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def replicate(registry_host: str, source: str, names: list[str]) -> None:
    """Push `source`:latest as `name`:latest for every name: blobs mounted across repositories, manifest copied.

    One skopeo copy per repository would take minutes for 500; these are three small requests each.
    """
    connection = http.client.HTTPConnection(registry_host, timeout=HTTP_TIMEOUT)

    def request(method: str, path: str, expected: int, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[bytes, str | None]:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        data = response.read()  # keep-alive needs every body read
        if response.status != expected:
            raise BenchError(f"{method} {path} on {registry_host}: HTTP {response.status}, expected {expected}")
        return data, response.getheader("Content-Type")

    try:
        manifest, media_type = request("GET", f"/v2/{source}/manifests/{TAG}", 200,
                                       headers={"Accept": ", ".join(MANIFEST_TYPES)})
        document = json.loads(manifest)
        blobs = [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]
        for name in names:
            for digest in blobs:
                request("POST", f"/v2/{name}/blobs/uploads/?mount={digest}&from={source}", 201)
            request("PUT", f"/v2/{name}/manifests/{TAG}", 201, manifest, {"Content-Type": media_type})
    finally:
        connection.close()


class ServicesRoot:
    """Service folders with one TAGGED image each, and the .env texts every measured run must leave alone."""

    def __init__(self, path: Path, references: list[str]) -> None:
        self.path = path
        self.env_files: list[Path] = []
        for number, reference in enumerate(references):
            folder = path / f"svc{number:03d}"
            folder.mkdir(parents=True)
            (folder / "compose.yml").write_text("services:\n  app:\n    image: ${SERVICE_APP_IMAGE_HASHED}\n")
            env_file = folder / ".env"
            env_file.write_text(f"SERVICE_APP_IMAGE_TAGGED={reference}\n")
            self.env_files.append(env_file)
        self.steady: dict[Path, str] = {}

    def __len__(self) -> int:
        return len(self.env_files)

    def keep_steady(self) -> None:
        """Remember the current .env texts (after priming) as what every run must leave."""
        self.steady = {path: path.read_text() for path in self.env_files}
        unpinned = [path for path, text in self.steady.items() if "_IMAGE_HASHED=" not in text]
        if unpinned:
            raise BenchError(f"priming left {len(unpinned)} .env files without a HASHED line, e.g. {unpinned[0]}")

    def changed(self) -> list[Path]:
        return [path for path, text in self.steady.items() if path.read_text() != text]

    def restore(self) -> None:
        for path in self.changed():
            path.write_text(self.steady[path])


@dataclass
class Sample:
    wall: float
    cpu: float  # user + system of the whole process tree
    max_rss_kib: int  # of the largest single process in the tree, as GNU time reports it
    requests: Counter[str]


@dataclass
class Case:
    key: str
    label: str
    argv: list[str]
    env: dict[str, str]
    root: ServicesRoot | None = None
    samples: list[Sample] = field(default_factory=list)
    failure: str | None = None
    # The token server for this configuration: "multi" grants several scopes per token, "single" one;
    # `budget` the pulls left (None: a full budget).
    hub_mode: str = "multi"
    budget: int | None = None
    exit_code: int = 0
    # A file removed before each run: the registries' token services cipug remembers.
    forget: Path | None = None

    def median(self) -> float | None:
        return statistics.median(sample.wall for sample in self.samples) if self.samples else None

    def most_requests(self, key: str) -> int:
        return max((sample.requests[key] for sample in self.samples), default=0)


def measure(argv: list[str], env: dict[str, str], log_path: Path) -> tuple[int, Sample]:
    """Run argv to completion under /usr/bin/time; its exit code, wall time, CPU time and peak RSS.

    ru_maxrss of a child the benchmark spawns directly would include the benchmark's own RSS
    (Linux carries the pre-exec peak over exec); GNU time forks from a process of 2 MB.
    """
    rss_file = log_path.with_suffix(".rss")
    with log_path.open("ab") as output:
        start = time.perf_counter()
        # Its own process group, so a run that hangs can be killed with its skopeo children.
        process = subprocess.Popen([TIME, "-f", "%M", "-o", str(rss_file), *argv], env=env, cwd=REPO,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        pidfd = os.pidfd_open(process.pid)  # to wait with a timeout
        try:
            ready, _, _ = select.select([pidfd], [], [], RUN_TIMEOUT)
        except BaseException:
            # Interrupted (Ctrl-C does not reach the child's session): leave nothing running.
            os.killpg(process.pid, signal.SIGKILL)
            os.wait4(process.pid, 0)
            raise
        finally:
            os.close(pidfd)
        if not ready:
            # Not reaped yet, so the group id cannot have been reused.
            os.killpg(process.pid, signal.SIGKILL)
        # wait4 rather than Popen.wait: this child's CPU time, not the sum over all children so far.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    # GNU time puts "Command exited with non-zero status N" before the number when there is one.
    rss_lines = rss_file.read_text().split() if rss_file.exists() else []
    max_rss_kib = int(rss_lines[-1]) if rss_lines and rss_lines[-1].isdigit() else 0
    return process.returncode, Sample(wall, usage.ru_utime + usage.ru_stime, max_rss_kib, Counter())


def tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_case(case: Case, proxy: LatencyProxy, hub: TokenHub, logs: Path) -> None:
    log_path = logs / f"{case.key}.log"
    hub.reset(case.hub_mode, case.budget)
    if case.forget is not None:
        case.forget.unlink(missing_ok=True)
    proxy.take_counts()
    code, sample = measure(case.argv, case.env, log_path)
    sample.requests = proxy.take_counts() + Counter({f"hub {key}": count for key, count in hub.take_counts().items()})
    if code == -signal.SIGKILL:
        case.failure = f"killed after {RUN_TIMEOUT:g} s:\n{tail(log_path)}"
    elif code != case.exit_code:
        case.failure = f"exited {code}:\n{tail(log_path)}"
    elif case.root is not None and (changed := case.root.changed()):
        case.failure = f"changed {len(changed)} .env files (resolved other digests than priming)\n{tail(log_path)}"
        case.root.restore()
    else:
        case.samples.append(sample)


def prime(cipug: realstack.Cipug, root: ServicesRoot, cache: Path, proxy: LatencyProxy, hub: TokenHub,
          logs: Path) -> None:
    """Resolve every tag once, latency off: writes the HASHED lines and fills the cache.

    With the registry resolver when it works (500 skopeo calls take a minute on 2 CPUs), else skopeo.
    """
    delay, proxy.delay = proxy.delay, 0.0
    try:
        for resolver in ("registry", "skopeo"):
            hub.reset()
            log_path = logs / f"prime-{len(root)}-{resolver}.log"
            env = cipug.env(CACHE_DURATION=CACHE_YEAR, CACHE_LOCATION=str(cache), RESOLVER=resolver,
                            REGISTRY_INSECURE_HOSTS=proxy.host)
            code, sample = measure(list(COMMAND), env, log_path)
            if code == 0:
                break
            log(f"priming with the {resolver} resolver exited {code}:\n{tail(log_path)}")
        else:
            raise BenchError(f"priming {len(root)} services failed with either resolver")
    finally:
        proxy.delay = delay
    log(f"primed {len(root)} services in {sample.wall:.1f} s with the {resolver} resolver")
    root.keep_steady()


def machine() -> dict[str, object]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for tool in ("skopeo", "docker-registry"):
        result = realstack.run([tool, "--version"], check=False)
        versions[tool] = result.stdout.strip() or result.stderr.strip()
    return {
        "cpus": len(os.sched_getaffinity(0)),  # what nproc prints
        "cpu_model": model,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "kernel": platform.release(),
        # Other work on the machine shows here; on 2 CPUs it moves the numbers.
        "load_average": os.getloadavg(),
        **versions,
    }


def evaluate(cases: dict[str, Case]) -> list[dict[str, object]]:
    """The issue's targets, each with its measured value and whether it passes (None: not measured)."""
    baseline = cases["baseline"].median()

    def speedup(key: str) -> float | None:
        median = cases[key].median()
        return baseline / median if baseline and median else None

    defaults = cases["defaults"]

    def most(case: Case, key: str) -> int | None:
        return max(sample.requests[key] for sample in case.samples) if case.samples else None

    limited = cases["limited"]
    large = cases.get("warm_large")
    peak = max(sample.max_rss_kib for sample in large.samples) * 1024 / MB if large and large.samples else None
    targets = [
        ("skopeo, default workers: >= 5x the sequential baseline", speedup("skopeo"), ">=", 5.0, "x"),
        ("defaults: >= 40x the sequential skopeo baseline", speedup("defaults"), ">=", 40.0, "x"),
        ("defaults, nothing moved: 0 manifest GETs", most(defaults, "GET manifest"), "<=", 0, "GETs"),
        ("defaults: <= 1 token request per registry (1 registry)", most(defaults, "GET token"), "<=", 1, "requests"),
        ("pull limit spent: no manifest request after the first 429", most(limited, "hub manifest requests after a 429"),
         "<=", 0, "requests"),
        ("pull limit spent: one 429, the rest not checked (exit 35)", most(limited, "hub 429 sent"), "<=", 1, "429s"),
    ]
    if large is not None:
        targets.append((f"warm cache, {len(large.root)} services: peak RSS < 40 MB", peak, "<", 40.0, "MB"))
    return [{"target": name, "value": value, "limit": limit, "unit": unit,
             "pass": None if value is None else COMPARE[compare](value, limit)}
            for name, value, compare, limit, unit in targets]


def report(cases: dict[str, Case], targets: list[dict[str, object]], info: dict[str, object],
           parameters: dict[str, object]) -> dict[str, object]:
    baseline = cases["baseline"].median()
    configurations = {}
    for key, case in cases.items():
        median = case.median()
        configurations[key] = {
            "label": case.label,
            "services": len(case.root) if case.root else None,
            "failure": case.failure,
            "median_wall_s": median,
            "min_wall_s": min((s.wall for s in case.samples), default=None),
            "speedup": baseline / median if baseline and median and key in SPEED_UPS else None,
            "median_cpu_s": statistics.median(s.cpu for s in case.samples) if case.samples else None,
            "peak_rss_mb": max(s.max_rss_kib for s in case.samples) * 1024 / MB if case.samples else None,
            "requests_per_run": {kind: case.most_requests(kind)
                                 for kind in sorted(set().union(*(s.requests for s in case.samples)))},
            "runs": [{"wall_s": s.wall, "cpu_s": s.cpu, "max_rss_kib": s.max_rss_kib, "requests": dict(s.requests)}
                     for s in case.samples],
        }
    return {"machine": info, "parameters": parameters, "configurations": configurations, "targets": targets}


def table(result: dict[str, object]) -> str:
    info, parameters = result["machine"], result["parameters"]
    lines = [
        f"cipug benchmark: {parameters['services']} services, {2 * parameters['latency_ms']:g} ms round trip "
        f"({parameters['latency_ms']:g} ms each way), median of {parameters['repeat']} run(s)",
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Linux {info['kernel']}, Python {info['python']}, "
        f"{info['skopeo']}, {info['docker-registry']}, load average {info['load_average'][0]:.2f} at the end",
        "",
        f"{'configuration':<40} {'wall s':>8} {'min s':>7} {'speed-up':>9} {'CPU s':>7} {'peak MB':>8} "
        f"{'manifest GET/HEAD':>18} {'tokens':>7} {'conns':>6} {'requests':>9}",
    ]
    for entry in result["configurations"].values():
        requests = entry["requests_per_run"]
        if entry["failure"] and not entry["runs"]:
            lines.append(f"{entry['label']:<40} FAILED: {entry['failure'].splitlines()[0]}")
            continue
        speedup = f"{entry['speedup']:.1f}x" if entry["speedup"] else ""
        manifests = f"{requests.get('GET manifest', 0)}/{requests.get('HEAD manifest', 0)}"
        total = sum(count for key, count in requests.items() if key != "connection" and not key.startswith("hub "))
        lines.append(
            f"{entry['label']:<40} {entry['median_wall_s']:>8.3f} {entry['min_wall_s']:>7.3f} {speedup:>9} "
            f"{entry['median_cpu_s']:>7.2f} "
            f"{entry['peak_rss_mb']:>8.1f} {manifests:>18} {requests.get('GET token', 0):>7} "
            f"{requests.get('connection', 0):>6} {total:>9}"
        )
    configurations = result["configurations"]
    if configurations.get("warm", {}).get("median_wall_s") and configurations.get("python", {}).get("median_wall_s"):
        ratio = configurations["warm"]["median_wall_s"] / configurations["python"]["median_wall_s"]
        lines += ["", f"{configurations['warm']['label']}: {ratio:.1f}x a bare interpreter (information, not a target)"]
    lines += ["", "wall s and CPU s (user + system, all processes) are medians; speed-up compares medians;",
              "requests are per run (the most of any run), counted at the proxy; peak MB is the largest single process "
              "(with skopeo, often a skopeo child)", "", "targets:"]
    for target in result["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "FAIL (not measured)"}[target["pass"]]
        value = "" if target["value"] is None else f" (measured {target['value']:.2f} {target['unit']})"
        lines.append(f"  {verdict:<5} {target['target']}{value}")
    if (parameters["services"], parameters["latency_ms"], parameters["large_services"]) != DEFAULTS:
        lines.append("  (the targets are set for --services {} --latency-ms {} --large-services {})".format(*DEFAULTS))
    failures = [f"{entry['label']}: {entry['failure']}" for entry in result["configurations"].values()
                if entry["failure"]]
    if failures:
        lines += ["", "failures:", *failures]
    return "\n".join(lines)


def bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value
    return parse


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=bounded(1, 999), default=DEFAULTS[0],
                        help="services (distinct repositories) for the lookup runs (default 50)")
    parser.add_argument("--large-services", type=bounded(0, 999), default=DEFAULTS[2],
                        help="services for the second warm-cache run, 0 to skip it (default 500)")
    parser.add_argument("--repeat", type=bounded(1, 50), default=3, help="runs per configuration (default 3)")
    parser.add_argument("--latency-ms", type=bounded(0, 1000), default=DEFAULTS[1],
                        help="delay each way at the proxy, in ms (default 25: a 50 ms round trip)")
    parser.add_argument("--quick", action="store_true", help="one run per configuration (--repeat 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parsed = parser.parse_args(argv)
    if parsed.quick:
        parsed.repeat = 1
    return parsed


def require_tools() -> None:
    missing = [tool for tool in (*realstack.REGISTRY_TOOLS, "skopeo", "podman", "busybox") if not shutil.which(tool)]
    if not os.access(TIME, os.X_OK):
        missing.append(f"{TIME} (Debian package time)")
    if missing:
        raise BenchError(f"missing {', '.join(missing)}; tests/run installs the rest as root on Debian 12")


def benchmark(options: argparse.Namespace, workdir: Path) -> tuple[dict[str, Case], dict[str, object]]:
    require_tools()
    # Installed packages carry bytecode; a checkout may not (PYTHONDONTWRITEBYTECODE), and compiling
    # cipug's sources on every start would be measured instead of cipug.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "cipug")], check=True)
    logs = workdir / "logs"
    logs.mkdir()
    state = workdir / "state"
    count = max(options.services, options.large_services)
    with realstack.Registry(workdir / "registry") as registry, \
            realstack.Containers(workdir / "containers", [registry.host]) as containers, \
            TokenHub(registry.port) as hub, \
            LatencyProxy(hub.port, options.latency_ms / 1000) as proxy:
        hub.realm = f"http://{proxy.host}/token"
        containers.allow_registry(proxy.host)
        log(f"registry on {registry.host}, proxy on {proxy.host}; pushing 1 image into {count} repositories")
        containers.push_image(f"{registry.host}/bench/base:{TAG}")
        names = [f"bench/svc{number:03d}" for number in range(count)]
        replicate(registry.host, "bench/base", names)
        references = [f"{proxy.host}/{name}:{TAG}" for name in names]

        small = ServicesRoot(workdir / "services", references[: options.services])
        small_cipug = realstack.Cipug(containers, small.path, state, **QUIET_SETTINGS)
        prime(small_cipug, small, state / "warm-small.json", proxy, hub, logs)
        cipug = list(COMMAND)
        cold = {"CACHE_DURATION": "0", "CACHE_LOCATION": str(state / "cold.json")}
        warm_env = small_cipug.env(CACHE_DURATION=CACHE_YEAR, CACHE_LOCATION=str(state / "warm-small.json"))
        cases = [
            Case("baseline", "skopeo, 1 worker (baseline)", cipug,
                 small_cipug.env(**cold, RESOLVER="skopeo", RESOLVE_WORKERS="1"), small),
            Case("skopeo", f"skopeo, {DEFAULT_WORKERS} workers", cipug, small_cipug.env(**cold, RESOLVER="skopeo"), small),
            Case("defaults", f"defaults: registry, {DEFAULT_REGISTRY_WORKERS} workers", cipug,
                 small_cipug.env(**cold, REGISTRY_INSECURE_HOSTS=proxy.host), small),
            Case("first", "defaults, first run", cipug, small_cipug.env(**cold, REGISTRY_INSECURE_HOSTS=proxy.host),
                 small, forget=state / "challenges.json"),
            Case("registry8", f"registry, {DEFAULT_WORKERS} workers", cipug,
                 small_cipug.env(**cold, REGISTRY_WORKERS=DEFAULT_WORKERS, REGISTRY_INSECURE_HOSTS=proxy.host), small),
            Case("registry32", "registry, 32 workers", cipug,
                 small_cipug.env(**cold, REGISTRY_WORKERS="32", REGISTRY_INSECURE_HOSTS=proxy.host), small),
            Case("single", "defaults, a token per scope", cipug,
                 small_cipug.env(**cold, REGISTRY_INSECURE_HOSTS=proxy.host), small, hub_mode="single"),
            Case("limited", "defaults, pull limit spent (429)", cipug,
                 small_cipug.env(**cold, REGISTRY_INSECURE_HOSTS=proxy.host), small, budget=0, exit_code=35),
            Case("warm", f"warm cache, {len(small)} services", cipug, warm_env, small),
        ]
        if options.large_services:
            large = ServicesRoot(workdir / "services-large", references[: options.large_services])
            large_cipug = realstack.Cipug(containers, large.path, state, **QUIET_SETTINGS)
            prime(large_cipug, large, state / "warm-large.json", proxy, hub, logs)
            cases.append(Case("warm_large", f"warm cache, {len(large)} services", cipug,
                              large_cipug.env(CACHE_DURATION=CACHE_YEAR, CACHE_LOCATION=str(state / "warm-large.json")),
                              large))
        cases.append(Case("python", "bare `python3 -c pass`", [sys.executable, "-c", "pass"], warm_env))

        # Rounds rather than one configuration after another: drift on the machine hits all alike.
        for round_number in range(options.repeat):
            log(f"round {round_number + 1} of {options.repeat}")
            for case in cases:
                if case.failure is None:
                    run_case(case, proxy, hub, logs)
    return {case.key: case for case in cases}, machine()


def main(argv: list[str] | None = None) -> int:
    options = arguments(argv)
    parameters = {"services": options.services, "large_services": options.large_services,
                  "repeat": options.repeat, "latency_ms": options.latency_ms,
                  "default_workers": int(DEFAULT_WORKERS), "default_registry_workers": int(DEFAULT_REGISTRY_WORKERS)}
    try:
        with tempfile.TemporaryDirectory(prefix="cipug-bench-") as workdir:
            cases, info = benchmark(options, Path(workdir))
    except (BenchError, realstack.StackError, OSError, subprocess.TimeoutExpired) as error:
        log(f"failed: {error}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    result = report(cases, evaluate(cases), info, parameters)
    print(json.dumps(result, indent=2) if options.json else table(result))
    return 1 if any(case.failure for case in cases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
