"""The programs cipug starts, on the real stack: none outlives a cipug that is stopped, podman's health
checks run without systemd, and a rollback that cannot be done stops nothing."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.support import realstack
from tests.support.invoke import start_cipug
from tests.support.realstack import (compose_text, deploy, env_text, explain, repository, snapper_snapshots,
                                     without_notes)

pytestmark = pytest.mark.integration

ROLLBACK_REFUSED, RESTART_FAILED, INTERRUPTED = 3, 34, 130


def history(cipug) -> list[dict]:
    path = Path(cipug.settings["HISTORY_FILE"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def containers_of(containers, service) -> dict[str, tuple[str, str, bool]]:
    """Per compose service: container id, image digest, whether it runs."""
    return {name: (item["Id"], item["ImageDigest"], item["State"]["Running"])
            for name, item in containers.containers(service.name).items()}


# Orphans

class StallingProxy:
    """An HTTP front of the registry that holds back GETs of chosen blobs until closed: a slow pull."""

    def __init__(self, upstream: str) -> None:
        self.stalled: set[str] = set()
        self.stalling = threading.Event()  # a stalled blob was asked for
        self._release = threading.Event()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._forward()

            def do_GET(self) -> None:
                if any(self.path.endswith(f"/blobs/{digest}") for digest in proxy.stalled):
                    proxy.stalling.set()
                    proxy._release.wait(300)
                    return
                self._forward()

            def _forward(self) -> None:
                headers = {name: ", ".join(self.headers.get_all(name) or []) for name in ("Accept", "Range")
                           if name in self.headers}
                request = urllib.request.Request(f"http://{upstream}{self.path}", headers=headers,
                                                 method=self.command)
                try:
                    response = opener.open(request, timeout=30)
                except urllib.error.HTTPError as error:
                    response = error
                with response:
                    body = response.read()
                    self.send_response(response.status)
                    for name, value in response.headers.items():
                        if name.lower() not in ("connection", "transfer-encoding", "date", "server"):
                            self.send_header(name, value)
                    self.end_headers()
                    if self.command == "GET":
                        self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(registry, containers):
    front = StallingProxy(registry.host)
    containers.allow_registry(front.host)
    yield front
    front.close()


def live_processes_with(marker: str) -> dict[int, str]:
    """pid -> command line of the running processes (zombies aside) whose environment holds `marker`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not readable even by root (the machine's init): not ours
            continue
    return found


def test_sigterm_during_a_slow_pull_leaves_no_program_running(containers, registry, services, cipug, proxy):
    repo = f"{services.token}/slowpull"
    old = containers.push_image(f"{registry.host}/{repo}:latest")
    # The service follows the tag through the proxy; the images are pushed to the registry behind it.
    tagged = f"{proxy.host}/{repo}:latest"
    service = services.add("slowpull", env_text({"web": tagged}, {"web": old}), compose_text("web"), start=True)
    old_env, before = service.env_file.read_bytes(), containers_of(containers, service)
    new = containers.push_image(f"{registry.host}/{repo}:latest")
    proxy.stalled.update(containers.inspect(f"{registry.host}/{repo}:latest")["Layers"])
    # Every program cipug starts inherits its environment, and so this marker.
    marker = f"REALSTACK_RUN={secrets.token_hex(8)}"
    name, _, value = marker.partition("=")
    run = start_cipug([], {**cipug.env(), name: value})
    try:
        assert proxy.stalling.wait(120), "the pull never reached the stalled layer"
        pulling = live_processes_with(marker)
        assert any("podman pull" in command for command in pulling.values()), pulling

        run.send_signal(signal.SIGTERM)  # to cipug alone, as `kill PID` from a shell does
        out, err = run.communicate(timeout=60)

        assert run.returncode == INTERRUPTED, f"exit {run.returncode}\n{out}{err}"
        assert live_processes_with(marker) == {}
        assert service.env_file.read_bytes() == old_env
        assert containers_of(containers, service) == before
        [record] = history(cipug)
        assert record["outcome"] == "failed" and record["new"].endswith(new)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        for pid in live_processes_with(marker):
            os.kill(pid, signal.SIGKILL)


# Health checks without systemd

def push_checked_image(containers, reference: str, check: str) -> str:
    """Push an image whose HEALTHCHECK runs `check` every second as `reference`; its digest there."""
    base = f"{repository(reference)}-base:latest"
    base_digest = containers.push_image(base)
    # podman import cannot set a health check; a build FROM the imported image can (docker format only).
    build = containers.workdir / f"build-{secrets.token_hex(4)}"
    build.mkdir()
    (build / "Containerfile").write_text(
        f"FROM {repository(base)}@{base_digest}\nHEALTHCHECK --interval=1s CMD {check}\n")
    local = f"localhost/realstack/checked:{build.name}"
    digest_file = build / "digest"
    containers.podman("build", "--format", "docker", "--tag", local, build)
    try:
        realstack.run([*containers.skopeo, "copy", "--digestfile", digest_file, f"containers-storage:{local}",
                       f"docker://{reference}"], env=containers.env)
    finally:
        # The update must pull from the registry, as on a real host.
        containers.podman("rmi", local, f"{repository(base)}@{base_digest}")
    return digest_file.read_text().strip()


def test_a_podman_health_check_that_passes_passes_the_wait(containers, services, cipug, tag):
    deployed = deploy(containers, services, "healthy", {"web": tag("web")})
    service = deployed.service
    new = push_checked_image(containers, deployed.tags["web"], "true")

    result = cipug.run(HEALTH_TIMEOUT="20")

    assert result.returncode == 0, explain(result)
    assert without_notes(service.env_file.read_text()).endswith(f"@{new}\n")
    web = containers.containers(service.name)["web"]
    assert web["ImageDigest"] == new and web["State"]["Running"]
    assert web["State"]["Health"]["Status"] == "healthy"
    assert [record["outcome"] for record in history(cipug)] == ["updated"]


def test_a_podman_health_check_that_fails_is_rolled_back(containers, services, cipug, tag):
    deployed = deploy(containers, services, "unhealthy", {"web": tag("web")})
    service = deployed.service
    old_env = service.env_file.read_bytes()
    new = push_checked_image(containers, deployed.tags["web"], "false")

    result = cipug.run(HEALTH_TIMEOUT="6")

    assert result.returncode == RESTART_FAILED, explain(result)
    assert service.env_file.read_bytes() == old_env
    web = containers.containers(service.name)["web"]
    assert web["ImageDigest"] == deployed.digests["web"] and web["State"]["Running"]
    [record] = history(cipug)
    assert record["outcome"] == "rolled back" and record["new"].endswith(new)
    # Found unhealthy by its check, not left "starting" until the wait ran out.
    assert "is unhealthy" in record["detail"]


# A rollback that cannot be done

def test_rollback_to_a_snapshot_that_does_not_exist_stops_nothing(containers, services, cipug, tag):
    deployed = deploy(containers, services, "nosnapshot", {"web": tag("web")})
    service = deployed.service
    env, before = service.env_file.read_bytes(), containers_of(containers, service)

    result = cipug.run("rollback", service.name, "--snapshot", "999", "--yes")

    assert result.returncode == ROLLBACK_REFUSED, explain(result)
    assert containers_of(containers, service) == before
    assert all(running for _id, _digest, running in before.values())
    assert snapper_snapshots(service.snapper_config) == []
    assert service.env_file.read_bytes() == env
    assert history(cipug) == []
