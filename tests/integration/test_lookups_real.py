"""Lookups on the real stack: stale caches, runs at once, compose's own file names, bad references and registry faults.

Each test asserts on what is really there afterwards: .env bytes, snapper snapshots, history records and
the containers podman runs with their image digests. Registry faults come from FaultyRegistry, a tiny
HTTP server on loopback.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import threading
from pathlib import Path

import pytest

from tests.integration.test_update_real import state
from tests.support.realstack import (Service, deploy, env_text, explain, repository, snapper_snapshots, var,
                                     without_notes)

pytestmark = pytest.mark.integration

OK, LOCKED, ENV_FILE_INVALID, RESOLVE_FAILED = 0, 11, 26, 35


def history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_runs(containers, service: Service, digest: str) -> None:
    web = containers.containers(service.name)["web"]
    assert web["State"]["Running"] and web["ImageDigest"] == digest


def assert_pinned(service: Service, tagged: str, digest: str) -> None:
    assert f"{var('web', 'HASHED')}={repository(tagged)}@{digest}\n" in without_notes(service.env_file.read_text())


class FaultyRegistry:
    """A loopback HTTP server where a registry should be, failing in one way (`mode`), recording request lines.

    "500" answers every request with HTTP 500; "hang" reads requests and never answers; "gone" starts
    answering the first request, then drops it and stops listening, as a registry that goes away mid-run.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> FaultyRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        self._stop_listening()
        for thread in self._threads:
            thread.join(timeout=5)

    def _stop_listening(self) -> None:
        # shutdown, not only close: it wakes the thread blocked in accept().
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._answer, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as reader:
            while not self._closed.is_set():
                request_line = reader.readline()
                if not request_line:
                    return
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # headers; lookups send no body
                self.requests.append(request_line.decode(errors="replace").strip())
                if self.mode == "500":
                    connection.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                elif self.mode == "hang":
                    self._closed.wait()
                else:
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-")
                    self._stop_listening()
                    return


def resolver_settings(resolver: str, *hosts: str) -> dict[str, str]:
    """Settings for RESOLVER=`resolver`, letting the registry resolver talk plain HTTP to `hosts`."""
    return {"RESOLVER": resolver, "REGISTRY_INSECURE_HOSTS": ",".join(hosts)}


# Defect 2 of issue 11.
def test_an_older_cache_never_moves_a_pin_back(containers, services, cipug, tag, workdir):
    deployed = deploy(containers, services, "stale", {"web": tag("web")})
    service, tagged, v4 = deployed.service, deployed.tags["web"], deployed.digests["web"]
    timer_cache, shell_cache = workdir / "timer" / "cache.json", workdir / "shell" / "cache.json"
    cached = {"CACHE_DURATION": "3600"}
    first = cipug.run(CACHE_LOCATION=str(timer_cache), **cached)
    assert first.returncode == OK, explain(first)
    v5 = containers.push_image(tagged)
    shell = cipug.run(CACHE_LOCATION=str(shell_cache), **cached)
    assert shell.returncode == OK, explain(shell)
    assert_pinned(service, tagged, v5)
    assert json.loads(timer_cache.read_text())[tagged]["digest"] == v4
    before = state(containers, service)

    result = cipug.run(CACHE_LOCATION=str(timer_cache), **cached)

    assert result.returncode == OK, explain(result)
    assert state(containers, service) == before
    assert_pinned(service, tagged, v5)
    assert_runs(containers, service, v5)
    assert len(snapper_snapshots(service.snapper_config)) == 1
    assert [(record["old"], record["new"]) for record in history(Path(cipug.settings["HISTORY_FILE"]))] == [
        (f"{repository(tagged)}@{v4}", f"{repository(tagged)}@{v5}")]
    # The live answer replaced the stale one.
    assert json.loads(timer_cache.read_text())[tagged]["digest"] == v5


# Defect 4 of issue 11.
def test_two_runs_with_different_cache_and_state_locations_one_exits_11(containers, services, cipug, tag, workdir):
    deployed = deploy(containers, services, "twice", {"web": tag("web")})
    service, tagged = deployed.service, deployed.tags["web"]
    new = containers.push_image(tagged)
    # Holds the first run inside the lock long enough for the other to meet it.
    slow_skopeo = workdir / "slow-skopeo"
    slow_skopeo.write_text(f'#!/bin/sh\nsleep 3\nexec {shlex.join(containers.skopeo)} "$@"\n')
    slow_skopeo.chmod(0o755)
    places = [workdir / "timer", workdir / "shell"]

    runs = [cipug.start(SKOPEO_TOOL=str(slow_skopeo), CACHE_LOCATION=str(place / "cache.json"),
                        HISTORY_FILE=str(place / "history.jsonl")) for place in places]
    outputs = [process.communicate(timeout=300) for process in runs]

    report = "\n".join(f"exit {p.returncode}\n{out}{err}" for p, (out, err) in zip(runs, outputs))
    assert sorted(process.returncode for process in runs) == [OK, LOCKED], report
    assert_pinned(service, tagged, new)
    assert_runs(containers, service, new)
    assert len(snapper_snapshots(service.snapper_config)) == 1
    assert [len(history(place / "history.jsonl")) for place in places] == (
        [1, 0] if runs[0].returncode == OK else [0, 1]), report


# Defect 5 of issue 11.
@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "compose.yaml"])
def test_a_service_with_another_of_composes_names_is_updated(containers, services, cipug, tag, compose_file):
    deployed = deploy(containers, services, "named", {"web": tag("web")})
    service, tagged = deployed.service, deployed.tags["web"]
    (service.folder / "compose.yml").rename(service.folder / compose_file)
    new = containers.push_image(tagged)

    result = cipug.run()

    assert result.returncode == OK, explain(result)
    assert_pinned(service, tagged, new)
    assert_runs(containers, service, new)
    assert len(snapper_snapshots(service.snapper_config)) == 1


# Defect 6 of issue 11.
@pytest.mark.parametrize("resolver", ["skopeo", "registry"])
def test_bad_references_are_env_errors_found_before_any_lookup(containers, services, cipug, tag, registry, resolver):
    good = deploy(containers, services, "good", {"web": tag("web")})
    new = containers.push_image(good.tags["web"])
    with FaultyRegistry("500") as elsewhere:
        bad = {
            "upper": f"{elsewhere.host}/{services.token}/UPPER:case",
            "digest": f"{elsewhere.host}/{services.token}/foo@sha256:short",
            "scheme": f"docker://{elsewhere.host}/{services.token}/app:latest",
        }
        bad_services = [services.add(name, env_text({"web": reference}), "services: {}\n", snapper=False)
                        for name, reference in bad.items()]
        envs = [service.env_file.read_bytes() for service in bad_services]

        result = cipug.run(**resolver_settings(resolver, registry.host, elsewhere.host))

    assert result.returncode == ENV_FILE_INVALID, explain(result)
    assert elsewhere.requests == []
    assert [service.env_file.read_bytes() for service in bad_services] == envs
    assert {record["service"] for record in history(Path(cipug.settings["HISTORY_FILE"]))} == {good.service.name}
    assert_pinned(good.service, good.tags["web"], new)
    assert_runs(containers, good.service, new)


# The registry faults of issue 11's fault matrix: one run meets all three, each through its own service.
@pytest.mark.parametrize("resolver", ["skopeo", "registry"])
def test_failing_registries_fail_only_their_services(containers, services, cipug, tag, registry, resolver):
    good = deploy(containers, services, "good", {"web": tag("web")})
    new = containers.push_image(good.tags["web"])
    modes = ("500", "hang", "gone")
    deployed = {mode: deploy(containers, services, f"hit{mode}", {"web": tag("web")}) for mode in modes}
    hit = {mode: one.service for mode, one in deployed.items()}
    with contextlib.ExitStack() as stack:
        faulty = {mode: stack.enter_context(FaultyRegistry(mode)) for mode in modes}
        before = {}
        for mode, service in hit.items():
            # Pinned and running on images from the working registry; its tag now names the faulty one.
            text = service.env_file.read_text()
            service.env_file.write_text(text.replace(f"={deployed[mode].tags['web']}\n",
                                                     f"={faulty[mode].host}/{services.token}/app:latest\n"))
            containers.allow_registry(faulty[mode].host)
            before[mode] = state(containers, service)

        result = cipug.run(REGISTRY_TIMEOUT="2", **resolver_settings(
            resolver, registry.host, *(server.host for server in faulty.values())))

        assert all(server.requests for server in faulty.values()), "a lookup did not reach its faulty registry"
    assert result.returncode == RESOLVE_FAILED, explain(result)
    for mode, service in hit.items():
        assert state(containers, service) == before[mode], mode
        assert snapper_snapshots(service.snapper_config) == [], mode
    assert {record["service"] for record in history(Path(cipug.settings["HISTORY_FILE"]))} == {good.service.name}
    assert_pinned(good.service, good.tags["web"], new)
    assert_runs(containers, good.service, new)
