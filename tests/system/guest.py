#!/usr/bin/env python3
"""The job the system test VM runs at boot (as root, systemd as PID 1, no network but loopback).

Run as /job/guest.py by /job/run.sh. It installs the cipug copied from the checkout into
/opt/cipug, starts a registry on 127.0.0.1:5000, makes images from busybox-static, mounts a
btrfs loop file at /srv, and runs the scenarios named in /job/scenarios, in order. Each
scenario writes what it saw (units, containers, .env pins, history, journal) to
/job/out/<scenario>.json; test_vm.py asserts on those files. A scenario that raises records
the traceback under "error" and the next one still runs. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

JOB = Path(os.environ.get("CIPUG_TEST_JOB", "/job"))
OUT = JOB / "out"
REGISTRY = "127.0.0.1:5000"
ENTRY = "SERVICE_APP_IMAGE_HASHED"
UNITS = Path("/etc/systemd/system")
CONFIG_FILE = Path("/etc/cipug.json")
T0 = time.monotonic()

# This job is itself a systemd unit; podman would otherwise put the conmon of every container
# the set-up starts into the job's cgroup (the very defect scenario 1 is about).
os.environ.pop("INVOCATION_ID", None)
os.environ["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
os.environ.setdefault("LANG", "C.UTF-8")


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}] {message}", flush=True)


def run(*argv: str, check: bool = True, timeout: float = 300, cwd: str | Path | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            env=None if env is None else {**os.environ, **env})
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {(result.stderr or result.stdout)[-3000:]}")
    return result


def out(*argv: str, **kwargs) -> str:
    return run(*argv, **kwargs).stdout.strip()


def write(path: str | Path, text: str, mode: int = 0o644) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def wait_for(what: str, condition, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- set-up shared by every scenario -------------------------------------------------------

def install_cipug() -> None:
    """The checkout's cipug package folder, run with PYTHONPATH, like pip's console script would."""
    shutil.rmtree("/opt/cipug", ignore_errors=True)
    shutil.copytree(JOB / "src", "/opt/cipug/lib")
    paths = ["/opt/cipug/lib"]
    if (JOB / "cli-lib").is_dir():
        shutil.copytree(JOB / "cli-lib", "/opt/cipug/cli-lib")
        paths.append("/opt/cipug/cli-lib")
    write("/opt/cipug/bin/cipug", "#!/bin/sh\n# cipug from the checkout under test\n"
          f'PYTHONPATH={":".join(paths)}${{PYTHONPATH:+:$PYTHONPATH}} exec /usr/bin/python3 -m cipug "$@"\n', 0o755)


def start_registry() -> None:
    write("/etc/containers/registries.conf.d/50-cipug-test.conf",
          f'[[registry]]\nlocation = "{REGISTRY}"\ninsecure = true\n')
    write("/etc/cipug-test/registry.yml",
          "version: 0.1\nlog: {level: warn}\nstorage:\n  filesystem: {rootdirectory: /var/lib/cipug-test-registry}\n"
          f"  delete: {{enabled: true}}\nhttp: {{addr: {REGISTRY}}}\n")
    run("systemd-run", "--unit=cipug-test-registry", "/usr/bin/docker-registry", "serve",
        "/etc/cipug-test/registry.yml")
    wait_for("the registry", lambda: run("curl", "-sf", f"http://{REGISTRY}/v2/", check=False).returncode == 0, 60)


def mount_btrfs() -> None:
    run("truncate", "-s", "1G", "/var/tmp/srv.img")
    run("mkfs.btrfs", "-q", "/var/tmp/srv.img")
    Path("/srv").mkdir(exist_ok=True)
    run("mount", "-o", "loop", "/var/tmp/srv.img", "/srv")


def make_images() -> None:
    """localhost/cipug-test:{v1,v2,bad}: busybox, a /version file, /healthy except in `bad`."""
    base = Path("/var/tmp/images")
    shutil.rmtree(base, ignore_errors=True)
    for version in ("v1", "v2", "bad"):
        root = base / version / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        for applet in ("sh", "sleep", "test", "cat", "true", "echo", "ls"):
            (root / "bin" / applet).symlink_to("busybox")
        for folder in ("tmp", "etc", "proc", "sys", "dev", "run"):
            (root / folder).mkdir()
        (root / "version").write_text(version + "\n")
        if version != "bad":
            (root / "healthy").write_text("yes\n")
        tar = base / version / "rootfs.tar"
        run("tar", "-C", str(root), "-cf", str(tar), ".")
        run("podman", "import", "--quiet", str(tar), f"localhost/cipug-test:{version}")


def push(version: str, repository: str, tag: str = "stable") -> str:
    """Push an image to REGISTRY/repository:tag; the pin cipug would write for it (Name@Digest)."""
    target = f"docker://{REGISTRY}/{repository}:{tag}"
    run("skopeo", "copy", "--quiet", f"containers-storage:localhost/cipug-test:{version}", target)
    info = json.loads(out("skopeo", "inspect", "--no-tags", target))
    return f"{info['Name']}@{info['Digest']}"


COMMAND = """["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]"""
HEALTHCHECK = """    healthcheck:
      test: ["CMD", "test", "-f", "/healthy"]
      interval: 5s
      timeout: 10s
      retries: 2
"""


def make_service(root: Path, name: str, repository: str, pin: str, *, health: bool = False,
                 start: bool = True, containers: tuple = ("app", "worker")) -> Path:
    """A service folder (btrfs subvolume with a snapper config) with containers on `pin` (two:
    a restart must bring back all of them; one where that is not the point, as TCG is slow)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    run("btrfs", "subvolume", "create", str(folder))
    run("snapper", "-c", name, "create-config", str(folder))
    services = "".join(
        f"  {container}:\n    image: ${{{ENTRY}}}\n    command: {COMMAND}\n" + (HEALTHCHECK if health else "")
        for container in containers)
    write(folder / "compose.yml", f"services:\n{services}")
    write(folder / ".env", f"# {name}: a test service\nSERVICE_APP_IMAGE_TAGGED={REGISTRY}/{repository}:stable\n"
          f"{ENTRY}={pin}\n")
    if start:
        run("podman-compose", "up", "-d", cwd=folder, timeout=300)
    return folder


# --- what scenarios record ------------------------------------------------------------------

def cgroup_of(pid) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text().strip()
    except (OSError, TypeError):
        return ""


def containers(folder: Path) -> list[dict]:
    ids = out("podman", "ps", "-a", "-q", "--filter",
              f"label=com.docker.compose.project.working_dir={folder}").split()
    if not ids:
        return []
    found = []
    for container in json.loads(out("podman", "inspect", *ids)):
        state = container.get("State") or {}
        health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "")
        found.append({
            "id": container["Id"], "name": container["Name"], "status": state.get("Status"), "health": health,
            "image_name": container.get("ImageName"), "image_id": container.get("Image"),
            "started_at": state.get("StartedAt"), "exit_code": state.get("ExitCode"),
            "pid": state.get("Pid"), "cgroup": cgroup_of(state.get("Pid")),
            "conmon_pid": state.get("ConmonPid"), "conmon_cgroup": cgroup_of(state.get("ConmonPid")),
        })
    return sorted(found, key=lambda c: c["name"])


def env_values(folder: Path) -> dict:
    values = {}
    for line in (folder / ".env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            # As compose reads an unquoted value: a space and # start a comment (cipug's version note).
            values[key.strip()] = value.partition(" #")[0].strip()
    return values


def image_id(reference: str) -> str:
    return out("podman", "image", "inspect", "--format", "{{.Id}}", reference, check=False)


PROPERTIES = ("ActiveState", "SubState", "Result", "ExecMainStatus", "ExecMainCode", "InvocationID",
              "ControlGroup", "ActiveEnterTimestampMonotonic", "InactiveEnterTimestampMonotonic",
              "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic", "NRestarts")


def unit(name: str) -> dict:
    text = out("systemctl", "show", name, *[f"--property={p}" for p in PROPERTIES])
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def cursor() -> int:
    """Now, in the journal's microseconds: journal(unit, cursor()) reads what comes after it."""
    return time.time_ns() // 1000


def journal(unit_name: str, after: int = 0) -> list[dict]:
    """The journal entries of a unit after a cursor, oldest first: its processes' lines and systemd's
    (whose UNIT_RESULT, or the "Deactivated successfully" message, is the run's result even after
    systemd unloaded the unit)."""
    run("journalctl", "--sync", check=False)
    lines = []
    for raw in out("journalctl", "-b", "--no-pager", "-o", "json", "-u", unit_name).splitlines():
        entry = json.loads(raw)
        if int(entry.get("__REALTIME_TIMESTAMP", 0)) < after:
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # bytes: journald stores non-UTF-8 as a byte list
            message = bytes(message).decode("utf-8", "replace")
        lines.append({"pid": entry.get("_PID"), "comm": entry.get("_COMM"), "message": message,
                      "from_systemd": entry.get("_PID") == "1", "message_id": entry.get("MESSAGE_ID"),
                      "unit_result": entry.get("UNIT_RESULT"),
                      "invocation": entry.get("_SYSTEMD_INVOCATION_ID") or entry.get("INVOCATION_ID"),
                      "usec": int(entry.get("__REALTIME_TIMESTAMP", 0))})
    return lines


def history_records(path: str = "/var/lib/cipug/history.jsonl") -> list[dict]:
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def processes() -> list[dict]:
    """Every process but kernel threads: pid, ppid, command line, cgroup."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if not argv[0]:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found.append({"pid": int(entry.name), "ppid": ppid,
                      "argv": [part.decode(errors="replace") for part in argv if part],
                      "cgroup": cgroup_of(entry.name)})
    return found


def snapshot_list(name: str) -> list:
    result = run("snapper", "-c", name, "--jsonout", "list", check=False)
    try:
        return json.loads(result.stdout).get(name, [])
    except ValueError:
        return [result.stdout + result.stderr]


def service_state(folder: Path) -> dict:
    pin = env_values(folder).get(ENTRY, "")
    return {"env": env_values(folder), "pin_image_id": image_id(pin) if pin else "",
            "containers": containers(folder)}


def configure(settings: dict) -> None:
    write(CONFIG_FILE, json.dumps(settings, indent=2) + "\n")


def install_units(files: dict, start_timer: bool = True) -> None:
    """Replace the cipug units (and drop-ins) with `files` ({relative path: text}); daemon-reload."""
    for path in list(UNITS.glob("cipug.*")):  # with cipug.service.d/ and cipug.timer.d/
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    run("systemctl", "stop", "cipug.timer", check=False)
    for relative, text in files.items():
        write(UNITS / relative, text)
    run("systemctl", "daemon-reload")
    run("systemctl", "reset-failed", "cipug.service", check=False)
    if start_timer:
        # As installed, the timer is active; it also keeps systemd from unloading the inactive
        # service, so `systemctl show -P Result cipug.service` tells how the last run ended.
        run("systemctl", "start", "cipug.timer")


# Unit files the test renders (the host passes README's in /job/units/readme/).
TEST_DROP_IN = "[Service]\n# test: a failing stop costs 45 s, not 90\nTimeoutStopSec=45s\n"


def module_unit(unset_invocation_id: bool) -> str:
    """The unit settings nix/module.nix generates, with the checkout's cipug as ExecStart."""
    return "\n".join([
        "[Unit]",
        "Description=cipug: pin and update the container images of compose services",
        "After=network-online.target",
        "Wants=network-online.target",
        "RequiresMountsFor=/srv",
        "X-StopOnRemoval=false",
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=/opt/cipug/bin/cipug",
        f"Environment=CIPUG_CONFIG_FILE={CONFIG_FILE}",
        "Environment=PYTHONUNBUFFERED=1",
        "Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        *(["UnsetEnvironment=INVOCATION_ID"] if unset_invocation_id else []),
        "StateDirectory=cipug",
        "StateDirectoryMode=0700",
        "CacheDirectory=cipug",
        "CacheDirectoryMode=0700",
        "TimeoutStartSec=4h",
        "TimeoutStopSec=45s",
        "",
    ])


MODULE_TIMER = """[Unit]
Description=Run cipug on schedule

[Timer]
OnCalendar=daily
RandomizedDelaySec=0
FixedRandomDelay=false
Persistent=true

[Install]
WantedBy=timers.target
"""


def module_units(unset_invocation_id: bool = True) -> dict:
    return {"cipug.service": module_unit(unset_invocation_id), "cipug.timer": MODULE_TIMER}


def readme_units() -> dict:
    files = {path.name: path.read_text() for path in (JOB / "units" / "readme").iterdir()}
    files["cipug.service.d/50-test.conf"] = TEST_DROP_IN
    return files


def start_cipug(facts: dict, key: str = "run", timeout: float = 600) -> dict:
    """`systemctl start cipug.service` (waits for the oneshot); records the unit and its journal."""
    mark = cursor()
    begin = time.monotonic()
    result = run("systemctl", "start", "cipug.service", check=False, timeout=timeout)
    record = {"systemctl_rc": result.returncode, "systemctl_stderr": result.stderr[-2000:],
              "seconds": round(time.monotonic() - begin, 1), "unit": unit("cipug.service"),
              "journal": journal("cipug.service", mark)}
    facts[key] = record
    say(f"  cipug.service ran {record['seconds']} s: {record['unit'].get('Result')}")
    return record


# --- scenarios ------------------------------------------------------------------------------

def scenario_oneshot(variant: str) -> dict:
    """1: a tag moves; `systemctl start cipug.service` updates and restarts; containers outlive the unit."""
    name = f"s1{variant.replace('-', '')}"
    root = Path(f"/srv/{name}-root")
    repository = f"{name}/app"
    facts: dict = {"variant": variant}
    old = push("v1", repository)
    folder = make_service(root, name, repository, old)
    configure({"SERVICES_ROOT": str(root), "VERBOSITY": 2, "HEALTH_TIMEOUT": 60})
    if variant == "readme":
        files = readme_units()
    else:
        files = module_units(unset_invocation_id=variant == "module")
    install_units(files)
    facts["unit_files"] = files
    facts["before"] = service_state(folder)
    new = push("v2", repository)
    facts.update(service=name, folder=str(folder), old=old, new=new,
                 old_image_id=image_id(old))
    run_facts = start_cipug(facts)
    facts["after_start"] = service_state(folder)
    time.sleep(10)
    facts["unit_10s_later"] = unit("cipug.service")
    facts["after_10s"] = service_state(folder)
    facts["new_image_id"] = image_id(new)
    facts["journal"] = run_facts["journal"]
    facts["history"] = [r for r in history_records() if r.get("service") == name]
    facts["snapshots"] = snapshot_list(name)
    facts["cgroup_processes"] = [p for p in processes() if "cipug.service" in p["cgroup"]]
    return facts


def slow_compose_tool() -> str:
    """A compose tool that waits 6 s before `pull` and `up`, once each time a marker is set."""
    write("/usr/local/bin/slow-compose", """#!/bin/sh
# podman-compose, waiting 6 s first when /run/cipug-test/slow-<verb> exists (removed as it starts),
# so the test can stop cipug.service while a pull or restart is in progress.
for verb in "$@"; do case $verb in pull|up|down)
    if [ -e /run/cipug-test/slow-$verb ]; then
        rm -f /run/cipug-test/slow-$verb; : >/run/cipug-test/in-$verb; sleep 6
    fi; break;; esac
done
exec /usr/bin/podman-compose "$@"
""", 0o755)
    return "/usr/local/bin/slow-compose"


def scenario_stop(phase: str) -> dict:
    """2: `systemctl stop cipug.service` during the pull or the restart: the service ends fully old or new."""
    name = f"s2{phase}"
    root = Path(f"/srv/{name}-root")
    repository = f"{name}/app"
    facts: dict = {"phase": phase}
    tool = slow_compose_tool()
    old = push("v1", repository)
    folder = make_service(root, name, repository, old)
    configure({"SERVICES_ROOT": str(root), "VERBOSITY": 2, "HEALTH_TIMEOUT": 60, "COMPOSE_TOOL": tool})
    install_units(module_units())
    new = push("v2", repository)
    facts.update(service=name, folder=str(folder), old=old, new=new, old_image_id=image_id(old))
    marker_dir = Path("/run/cipug-test")
    shutil.rmtree(marker_dir, ignore_errors=True)
    marker_dir.mkdir()
    # During the restart: `up -d`, after `down` stopped the old containers.
    verb = "pull" if phase == "pull" else "up"
    (marker_dir / f"slow-{verb}").touch()
    mark = cursor()
    run("systemctl", "start", "--no-block", "cipug.service")
    wait_for(f"cipug to reach {verb}", lambda: (marker_dir / f"in-{verb}").exists(), 300, 0.2)
    time.sleep(1)
    facts["during"] = {"unit": unit("cipug.service"), "env": env_values(folder),
                       "processes": [p for p in processes() if "cipug.service" in p["cgroup"]]}
    begin = time.monotonic()
    stop = run("systemctl", "stop", "cipug.service", check=False, timeout=300)
    facts["stop"] = {"rc": stop.returncode, "stderr": stop.stderr, "seconds": round(time.monotonic() - begin, 1)}
    say(f"  stop took {facts['stop']['seconds']} s")
    facts["unit"] = unit("cipug.service")
    facts["after"] = service_state(folder)
    facts["new_image_id"] = image_id(new)
    time.sleep(3)
    facts["after_3s"] = service_state(folder)
    facts["journal"] = journal("cipug.service", mark)
    facts["history"] = [r for r in history_records() if r.get("service") == name]
    facts["processes"] = processes()
    facts["cgroup_processes"] = [p for p in processes() if "cipug.service" in p["cgroup"]]
    return facts


def scenario_health() -> dict:
    """3: health checks run by systemd; healthy new image passes, unhealthy one is rolled back."""
    name = "s3health"
    root = Path(f"/srv/{name}-root")
    repository = f"{name}/app"
    facts: dict = {}
    v1 = push("v1", repository)
    folder = make_service(root, name, repository, v1, health=True, containers=("app",))
    configure({"SERVICES_ROOT": str(root), "VERBOSITY": 2, "HEALTH_TIMEOUT": 20, "CACHE_DURATION": 0})
    install_units(module_units())
    facts["before"] = service_state(folder)
    v2 = push("v2", repository)
    facts.update(service=name, folder=str(folder), v1=v1, v2=v2)
    healthy = start_cipug(facts, "healthy_run")
    facts["after_healthy"] = service_state(folder)
    facts["timers"] = out("systemctl", "list-units", "--all", "--no-legend", "--plain", "--type=timer,service")
    facts["healthy_journal"] = healthy["journal"]
    bad = push("bad", repository)
    facts["bad"] = bad
    unhealthy = start_cipug(facts, "unhealthy_run")
    facts["after_unhealthy"] = service_state(folder)
    facts["v2_image_id"] = image_id(v2)
    facts["unhealthy_journal"] = unhealthy["journal"]
    facts["history"] = [r for r in history_records() if r.get("service") == name]
    # Each health check is a podman process every 5 s: costly under software emulation.
    run("podman-compose", "down", cwd=folder, check=False)
    return facts


def scenario_systemd_units() -> dict:
    """4: STOP_START_METHOD=systemd-system with podman-compose@<service>.service template units."""
    name = "s4units"
    root = Path(f"/srv/{name}-root")
    repository = f"{name}/app"
    facts: dict = {}
    template = f"""[Unit]
Description=compose service %i (podman-compose)
RequiresMountsFor={root}

[Service]
Type=oneshot
RemainAfterExit=yes
WorkingDirectory={root}/%i
ExecStart=/usr/bin/podman-compose up -d
ExecStop=/usr/bin/podman-compose down
TimeoutStopSec=30s

[Install]
WantedBy=multi-user.target
"""
    write(UNITS / "podman-compose@.service", template)
    run("systemctl", "daemon-reload")
    old = push("v1", repository)
    folder = make_service(root, name, repository, old, start=False, containers=("app",))
    run("systemctl", "start", f"podman-compose@{name}.service", timeout=300)
    compose_unit = f"podman-compose@{name}.service"
    configure({"SERVICES_ROOT": str(root), "VERBOSITY": 2, "HEALTH_TIMEOUT": 60,
               "STOP_START_METHOD": "systemd-system"})
    install_units(module_units())
    facts["template"] = template
    facts["compose_unit_before"] = unit(compose_unit)
    facts["before"] = service_state(folder)
    new = push("v2", repository)
    facts.update(service=name, folder=str(folder), old=old, new=new, compose_unit_name=compose_unit)
    mark = cursor()
    run_facts = start_cipug(facts)
    time.sleep(5)
    facts["compose_unit_after"] = unit(compose_unit)
    facts["after"] = service_state(folder)
    facts["new_image_id"] = image_id(new)
    facts["journal"] = run_facts["journal"]
    facts["compose_journal"] = journal(compose_unit, mark)
    facts["history"] = [r for r in history_records() if r.get("service") == name]
    return facts


def scenario_timer() -> dict:
    """5: README's timer, started with a near OnActiveSec, fires and a run happens."""
    name = "s5timer"
    root = Path(f"/srv/{name}-root")
    repository = f"{name}/app"
    facts: dict = {}
    old = push("v1", repository)
    folder = make_service(root, name, repository, old, containers=("app",))
    configure({"SERVICES_ROOT": str(root), "VERBOSITY": 2, "HEALTH_TIMEOUT": 60})
    files = readme_units()
    files["cipug.service.d/60-unset.conf"] = "[Service]\nUnsetEnvironment=INVOCATION_ID\n"
    files["cipug.timer.d/50-test.conf"] = "[Timer]\n# test: fire 5 s after the timer starts\nOnActiveSec=5s\nAccuracySec=1s\n"
    install_units(files, start_timer=False)
    facts["unit_files"] = files
    new = push("v2", repository)
    facts.update(service=name, folder=str(folder), old=old, new=new)
    facts["service_before"] = unit("cipug.service")
    mark = cursor()
    run("systemctl", "start", "cipug.timer")
    facts["timer_started"] = out("systemctl", "list-timers", "--all", "--no-pager", "cipug.timer")
    say("  cipug.timer started")
    begin = time.monotonic()

    exited_before = int(facts["service_before"].get("ExecMainExitTimestampMonotonic") or 0)

    def ran():
        state = unit("cipug.service")
        done = int(state.get("ExecMainExitTimestampMonotonic") or 0) > exited_before and \
            state.get("ActiveState") in ("inactive", "failed")
        return state if done else None

    facts["unit"] = wait_for("the timer's run", ran, 300, 1)
    facts["seconds_until_done"] = round(time.monotonic() - begin, 1)
    time.sleep(5)
    facts["after"] = service_state(folder)
    facts["new_image_id"] = image_id(new)
    facts["timer"] = out("systemctl", "show", "cipug.timer",
                         "--property=ActiveState,LastTriggerUSecMonotonic,Result")
    facts["journal"] = journal("cipug.service", mark)
    facts["history"] = [r for r in history_records() if r.get("service") == name]
    run("systemctl", "stop", "cipug.timer", check=False)
    return facts


def scenario_persistent() -> dict:
    """5: README's timer as it is (Persistent=true): a run missed while the machine was off happens
    as soon as the timer starts. s5_timer's service, up to date by now, is the services root."""
    root = Path("/srv/s5timer-root")
    facts: dict = {}
    configure({"SERVICES_ROOT": str(root), "VERBOSITY": 2, "HEALTH_TIMEOUT": 60})
    files = readme_units()
    files["cipug.service.d/60-unset.conf"] = "[Service]\nUnsetEnvironment=INVOCATION_ID\n"
    install_units(files, start_timer=False)
    facts["unit_files"] = files
    # The last run two days ago: the daily run of yesterday midnight was missed.
    stamp = Path("/var/lib/systemd/timers/stamp-cipug.timer")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    two_days_ago = time.time() - 2 * 86400
    os.utime(stamp, (two_days_ago, two_days_ago))
    facts["history_before"] = len(history_records())
    before = unit("cipug.service")
    exited_before = int(before.get("ExecMainExitTimestampMonotonic") or 0)
    mark = cursor()
    run("systemctl", "start", "cipug.timer")
    begin = time.monotonic()

    def ran():
        state = unit("cipug.service")
        done = int(state.get("ExecMainExitTimestampMonotonic") or 0) > exited_before and \
            state.get("ActiveState") in ("inactive", "failed")
        return state if done else None

    facts["unit"] = wait_for("the missed run", ran, 120, 1)
    facts["seconds_until_done"] = round(time.monotonic() - begin, 1)
    facts["timer"] = out("systemctl", "show", "cipug.timer", "--property=ActiveState,LastTriggerUSec,Result")
    facts["stamp_mtime_age"] = round(time.time() - stamp.stat().st_mtime, 1)
    facts["journal"] = journal("cipug.service", mark)
    facts["history_after"] = len(history_records())
    run("systemctl", "stop", "cipug.timer", check=False)
    return facts


def scenario_directories() -> dict:
    """6: history and cache land in StateDirectory/CacheDirectory; `cipug history` from a shell sees them."""
    facts: dict = {}
    for folder in ("/var/lib/cipug", "/var/cache/cipug"):
        path = Path(folder)
        facts[folder] = {
            "exists": path.is_dir(),
            "mode": oct(path.stat().st_mode & 0o7777) if path.exists() else None,
            "files": sorted(p.name for p in path.iterdir()) if path.is_dir() else [],
        }
    facts["history"] = history_records()
    cache = Path("/var/cache/cipug/cache.json")
    facts["cache_text"] = cache.read_text() if cache.exists() else None
    facts["elsewhere"] = [str(p) for p in (Path("/root/.local/state/cipug"), Path("/root/.cache/cipug"))
                          if p.exists()]
    shell_env = {"STATE_DIRECTORY": "/var/lib/cipug", "CACHE_DIRECTORY": "/var/cache/cipug",
                 "CIPUG_CONFIG_FILE": str(CONFIG_FILE)}
    facts["cli_available"] = run("python3", "-c", "import typer", check=False,
                                 env={"PYTHONPATH": "/opt/cipug/cli-lib"}).returncode == 0 \
        and Path("/opt/cipug/cli-lib").is_dir()
    result = run("/opt/cipug/bin/cipug", "history", "--json", check=False, env=shell_env)
    facts["cli_history"] = {"rc": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
    result = run("/opt/cipug/bin/cipug", "history", check=False, env=shell_env)
    facts["cli_history_text"] = {"rc": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
    # A root shell without the unit's environment (README's unit: nothing tells it where the timer's state is).
    plain_env = {key: value for key, value in os.environ.items()
                 if key not in ("STATE_DIRECTORY", "CACHE_DIRECTORY", "CIPUG_CONFIG_FILE")}
    plain = subprocess.run(["/opt/cipug/bin/cipug", "history", "--json"], capture_output=True, text=True,
                           env={**plain_env, "CIPUG_CONFIG_FILE": str(CONFIG_FILE)}, timeout=120)
    facts["cli_history_config_only"] = {"rc": plain.returncode, "stdout": plain.stdout, "stderr": plain.stderr}
    result = run("/opt/cipug/bin/cipug", "--print-config-json", check=False, env=shell_env)
    facts["shell_config"] = {"rc": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
    return facts


SCENARIOS = {
    "s1_readme": lambda: scenario_oneshot("readme"),
    "s1_bare": lambda: scenario_oneshot("bare"),
    "s1_module": lambda: scenario_oneshot("module"),
    "s2_pull": lambda: scenario_stop("pull"),
    "s2_restart": lambda: scenario_stop("restart"),
    "s3_health": scenario_health,
    "s4_systemd_units": scenario_systemd_units,
    "s5_timer": scenario_timer,
    "s5_persistent": scenario_persistent,
    "s6_directories": scenario_directories,
}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    names = (JOB / "scenarios").read_text().split() if (JOB / "scenarios").exists() else list(SCENARIOS)
    times: dict = {"boot_to_job": float(Path("/proc/uptime").read_text().split()[0])}
    say(f"job started {times['boot_to_job']} s after boot; scenarios: {' '.join(names)}")
    begin = time.monotonic()
    try:
        install_cipug()
        start_registry()
        mount_btrfs()
        make_images()
    except Exception:
        (OUT / "setup-error.txt").write_text(traceback.format_exc())
        say("set-up failed:\n" + traceback.format_exc())
        return 1
    times["setup"] = round(time.monotonic() - begin, 1)
    say(f"set-up done in {times['setup']} s")
    for name in names:
        say(f"scenario {name}")
        begin = time.monotonic()
        try:
            facts = SCENARIOS[name]()
        except Exception:
            facts = {"error": traceback.format_exc()}
            say(f"  {name} raised:\n{facts['error']}")
        facts["seconds"] = times[name] = round(time.monotonic() - begin, 1)
        # Stop what the scenario left running (containers of earlier scenarios only cost time).
        (OUT / f"{name}.json").write_text(json.dumps(facts, indent=1, default=str))
        say(f"  {name} done in {facts['seconds']} s")
    (OUT / "times.json").write_text(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
