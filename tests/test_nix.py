"""The Nix side (flake.nix, flake.lock, nix/): checked as far as Nix runs without nixpkgs.

- Every .nix file parses and flake.lock pins nixos-26.05: needs `nix-instantiate`.
  Without it these tests skip, except in CI (CI=true), where they fail.
- The NixOS module and the flake's outputs are evaluated with nixpkgs' `lib` and
  small stand-ins for the rest of NixOS and nixpkgs (nix/tests/stand-ins.nix); the
  script of the module's `cipug` command is run with bash.
  lib comes from NIXPKGS_LIB (the folder holding lib's default.nix, or a nixpkgs
  or nixpkgs.lib checkout holding lib/) or from <nixpkgs/lib> on NIX_PATH;
  without it these tests skip, also in CI. `nix develop` sets NIXPKGS_LIB.

The flake checks (`nix flake check`) evaluate the same module cases in real NixOS,
build the package with its unit tests and run the VM test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import cipug
from cipug.settings import SETTINGS_BY_NAME, load_settings

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
SYSTEMS = ["aarch64-linux", "x86_64-linux"]

LOCKED_NIXPKGS = {
    "locked": {
        "lastModified": 1787101114,
        "narHash": "sha256-gwrPcFf/rDjHPaVflbDZ040ZDmBTRj/7+s8ZmE2SaIM=",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "b18a4b905f8d028dc4476412e6d6891728695379",
        "type": "github",
    },
    "original": {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs", "type": "github"},
}

NIX_FILES = sorted([REPO / "flake.nix", *(REPO / "nix").rglob("*.nix")])


# --- finding Nix and nixpkgs' lib -------------------------------------------------


@pytest.fixture(scope="session")
def nix_instantiate() -> str:
    program = shutil.which("nix-instantiate")
    if program is None:
        message = "nix-instantiate is not installed (Debian: apt-get install nix-bin)"
        if IN_CI:
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    return program


def _lib_folder(candidate: Path) -> Path | None:
    """The folder holding lib's default.nix: `candidate` itself or its lib/."""
    for folder in (candidate, candidate / "lib"):
        if (folder / "default.nix").is_file() and (folder / "modules.nix").is_file():
            return folder
    return None


@pytest.fixture(scope="session")
def nixpkgs_lib(nix_instantiate: str) -> Path:
    variable = os.environ.get("NIXPKGS_LIB", "")
    if variable:
        folder = _lib_folder(Path(variable))
        if folder is None:
            pytest.skip(f"NIXPKGS_LIB={variable} holds neither default.nix nor lib/default.nix of nixpkgs' lib")
        return folder
    found = subprocess.run(
        [nix_instantiate, "--find-file", "nixpkgs/lib"], capture_output=True, text=True, check=False
    )
    folder = _lib_folder(Path(found.stdout.strip())) if found.returncode == 0 and found.stdout.strip() else None
    if folder is None:
        pytest.skip(
            "nixpkgs' lib not found: set NIXPKGS_LIB to a checkout of nixpkgs or of "
            "nix-community/nixpkgs.lib, or put nixpkgs on NIX_PATH (`nix develop` sets NIXPKGS_LIB)"
        )
    return folder


def nix_eval(nix_instantiate: str, expression: str, **argstr: str):
    """Evaluate `expression` strictly in the repository and return it as JSON data."""
    command = [nix_instantiate, "--eval", "--strict", "--json", "--read-write-mode"]
    for name, value in argstr.items():
        command += ["--argstr", name, value]
    result = subprocess.run(
        [*command, "-E", expression], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"nix-instantiate failed:\n{result.stderr}")
    return json.loads(result.stdout)


# NixOS configurations to probe, as Nix expressions for a list of modules.
ENABLED = '{ services.cipug.enable = true; services.cipug.settings.SERVICES_ROOT = "/srv/services"; }'
PROBES = {
    "default": f"[ {ENABLED} ]",
    "podman": f"[ {ENABLED} {{ virtualisation.podman.enable = true; }} ]",
    "snapper": f"""[ {ENABLED} {{
        virtualisation.podman.enable = true;
        services.snapper.configs.web.SUBVOLUME = "/srv/services/web";
    }} ]""",
    "docker": f"""[ {ENABLED} {{
        virtualisation.docker.enable = true;
        services.cipug.settings = {{ COMPOSE_TOOL = "docker compose"; CONTAINER_TOOL = "docker"; SERVICE_SNAPSHOT = false; }};
    }} ]""",
    "docker_compose": f"""[ {ENABLED} {{
        services.cipug.settings = {{ COMPOSE_TOOL = "docker-compose"; CONTAINER_TOOL = "docker"; }};
    }} ]""",
    "systemd_method": f'[ {ENABLED} {{ services.cipug.settings.STOP_START_METHOD = "systemd-system"; }} ]',
    "timer": f"""[ {ENABLED} {{
        services.cipug = {{ dates = "Sun 03:30"; randomizedDelaySec = "1h"; persistent = false; }};
    }} ]""",
    "environment_file": f'[ {ENABLED} {{ services.cipug.environmentFile = "/run/secrets/cipug.env"; }} ]',
    "timeout": f'[ {ENABLED} {{ services.cipug.timeoutStartSec = "30min"; }} ]',
    "no_root": "[ { services.cipug.enable = true; } ]",
    "unknown_setting": f"[ {ENABLED} {{ services.cipug.settings.SERVICE_ROOT = \"/srv\"; }} ]",
    "bad_method": f'[ {ENABLED} {{ services.cipug.settings.STOP_START_METHOD = "restart"; }} ]',
    "bad_verbosity": f"[ {ENABLED} {{ services.cipug.settings.VERBOSITY = 9; }} ]",
    "relative_root": '[ { services.cipug.enable = true; services.cipug.settings.SERVICES_ROOT = "services"; } ]',
    "notifications": f"""[ {ENABLED} ({{ pkgs, lib, ... }}: {{
        services.cipug.package = lib.mkForce (pkgs.callPackage ./nix/package.nix {{ }});
        services.cipug.notifications.enable = true;
        services.cipug.environmentFile = "/run/secrets/cipug.env";
    }}) ]""",
    "notifications_off": f"""[ {ENABLED} ({{ pkgs, lib, ... }}: {{
        services.cipug.package = lib.mkForce (pkgs.callPackage ./nix/package.nix {{ }});
    }}) ]""",
    "notify_urls_in_store": f'[ {ENABLED} {{ services.cipug.settings.NOTIFY_URLS = "ntfys://tk_secret@ntfy.example/x"; }} ]',
    "node_exporter": f"""[ {ENABLED} {{
        services.prometheus.exporters.node = {{
            enable = true; enabledCollectors = [ "systemd" ];
            extraFlags = [ "--collector.textfile.directory=/var/lib/prometheus-node-exporter-text-files" ];
        }};
    }} ]""",
    "node_exporter_without_folder": f"[ {ENABLED} {{ services.prometheus.exporters.node.enable = true; }} ]",
    "disabled": "[ ]",
    "disabled_configured": '[ { services.cipug.settings.SERVICES_ROOT = "/srv/services"; } ]',
}


@pytest.fixture(scope="session")
def evaluated(nix_instantiate: str, nixpkgs_lib: Path) -> dict:
    """One evaluation of everything the tests below look at."""
    probes = " ".join(f"{name} = t.probe {modules};" for name, modules in PROBES.items())
    expression = f"""
      {{ libPath }}:
      let
        t = import ./nix/tests/stand-in-eval.nix {{ lib = import libPath; }};
      in
      {{
        cases = t.caseResults;
        jsonFiles = t.jsonFiles;
        declared = t.declaredSettings;
        packageOption = t.packageOption;
        flake = t.flakeSummary;
        probes = {{ {probes} }};
      }}
    """
    return nix_eval(nix_instantiate, expression, libPath=str(nixpkgs_lib))


@pytest.fixture(scope="session")
def probes(evaluated: dict) -> dict:
    return evaluated["probes"]


# --- without lib ------------------------------------------------------------------------


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_nix_file_parses(nix_instantiate: str, path: Path) -> None:
    result = subprocess.run([nix_instantiate, "--parse", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_flake_lock_pins_nixos_26_05() -> None:
    lock = json.loads((REPO / "flake.lock").read_text(encoding="utf-8"))
    assert lock == {
        "nodes": {"nixpkgs": LOCKED_NIXPKGS, "root": {"inputs": {"nixpkgs": "nixpkgs"}}},
        "root": "root",
        "version": 7,
    }


def test_flake_input_is_the_locked_branch(nix_instantiate: str) -> None:
    inputs = nix_eval(nix_instantiate, "(import ./flake.nix).inputs")
    assert inputs == {"nixpkgs": {"url": "github:NixOS/nixpkgs/nixos-26.05"}}


def test_ci_runs_the_tests_and_the_flake_checks() -> None:
    workflow = (REPO / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert "./tests/run" in workflow
    assert "nix flake check -L" in workflow
    assert "/dev/kvm" in workflow


# --- the module, evaluated with the stand-ins -----------------------------------------


def test_module_cases(evaluated: dict) -> None:
    """nix/tests/module-cases.nix, which the flake check module-eval runs in real NixOS."""
    cases = evaluated["cases"]
    assert len(cases) >= 40
    failed = {name: {"expected": case["expected"], "got": case["expr"]} for name, case in cases.items() if not case["ok"]}
    assert not failed, json.dumps(failed, indent=2)


@pytest.mark.parametrize("name", ["default", "custom", "metrics"])
def test_generated_config_file(evaluated: dict, name: str) -> None:
    check = evaluated["jsonFiles"][name]
    assert json.loads(Path(check["file"]).read_text(encoding="utf-8")) == check["expected"]


def test_config_file_keys_are_cipug_settings_and_cipug_reads_it(evaluated: dict) -> None:
    path = evaluated["jsonFiles"]["default"]["file"]
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    assert set(data) <= set(SETTINGS_BY_NAME)
    settings = load_settings({"CIPUG_CONFIG_FILE": path}, cwd=REPO)
    for name, value in data.items():
        assert settings.sources[name].startswith("setting "), name
        setting = SETTINGS_BY_NAME[name]
        assert getattr(settings, setting.attribute) == setting.parse(value, REPO), name
        if setting.default is not None and not callable(setting.default):
            # What the module writes by default is cipug's own default.
            assert setting.parse(value, REPO) == setting.parse(setting.default, REPO), name
    # Defaults that depend on systemd's directories are left to cipug.
    assert "CACHE_LOCATION" not in data and "HISTORY_FILE" not in data


def test_module_knows_exactly_cipugs_settings(probes: dict) -> None:
    (message,) = [m for m in probes["unknown_setting"]["assertions"] if "does not know" in m]
    assert "SERVICE_ROOT" in message
    known = message.split("cipug's settings are: ", 1)[1].strip().rstrip(".").split(", ")
    assert sorted(known) == sorted(SETTINGS_BY_NAME)
    assert len(known) == len(set(known))


def test_declared_settings_have_cipugs_names_and_defaults(evaluated: dict) -> None:
    declared = evaluated["declared"]
    assert {"SERVICES_ROOT", "COMPOSE_TOOL", "STOP_START_METHOD", "SERVICE_SNAPSHOT", "VERBOSITY"} <= set(declared)
    for name, option in declared.items():
        assert name in SETTINGS_BY_NAME, f"{name} is not a cipug setting"
        setting = SETTINGS_BY_NAME[name]
        assert option["hasDefault"], name
        if setting.default is None or callable(setting.default):
            # Required, or computed by cipug at run time: null, left out of the file.
            assert option["default"] is None, name
        elif option["default"] is None:
            # Left out of the file, so cipug's own default holds: one that is off (METRICS_FILE: no file;
            # the module's default depends on the machine, e.g. node_exporter's textfile folder).
            assert setting.parse(setting.default, REPO) is None, name
        else:
            assert setting.parse(option["default"], REPO) == setting.parse(setting.default, REPO), name


def test_enum_settings_accept_what_cipug_accepts(evaluated: dict) -> None:
    for name in ("STOP_START_METHOD", "RESOLVER"):
        values = re.findall(r'"([^"]+)"', evaluated["declared"][name]["type"])
        assert values, name
        setting = SETTINGS_BY_NAME[name]
        for value in values:
            assert setting.parse(value, REPO) == value
        with pytest.raises(Exception) as error:
            setting.parse("no such choice", REPO)
        accepted = getattr(error.value, "accepted", "")
        if accepted.startswith("one of "):
            assert sorted(accepted[len("one of "):].split(", ")) == sorted(values)


def test_service(probes: dict) -> None:
    service = probes["podman"]["service"]
    assert service["serviceConfig"]["Type"] == "oneshot"
    assert service["serviceConfig"]["ExecStart"].endswith("/bin/cipug")  # no arguments: the update run
    assert re.fullmatch(r"/nix/store/[^/]+-cipug\.json", service["environment"]["CIPUG_CONFIG_FILE"])
    assert "network-online.target" in service["after"] and "network-online.target" in service["wants"]
    assert service["restartIfChanged"] is False
    assert service["unitConfig"]["X-StopOnRemoval"] is False
    assert service["serviceConfig"]["StateDirectory"] == "cipug"
    assert service["serviceConfig"]["CacheDirectory"] == "cipug"
    assert "EnvironmentFile" not in service["serviceConfig"]
    assert probes["environment_file"]["service"]["serviceConfig"]["EnvironmentFile"] == "/run/secrets/cipug.env"
    assert "cipug" in probes["podman"]["systemPackages"]


def test_service_lets_the_containers_outlive_the_run(probes: dict) -> None:
    # Podman leaves conmon in the unit's cgroup while INVOCATION_ID is set; systemd then
    # kills the containers cipug restarted when the oneshot ends.
    assert probes["default"]["service"]["serviceConfig"]["UnsetEnvironment"] == "INVOCATION_ID"


def test_service_waits_for_the_services_root_and_has_a_time_limit(probes: dict) -> None:
    assert probes["default"]["service"]["unitConfig"]["RequiresMountsFor"] == ["/srv/services"]
    # A oneshot has no start timeout unless given one: a hung tool would block every later run.
    assert probes["default"]["service"]["serviceConfig"]["TimeoutStartSec"] == "4h"
    assert probes["timeout"]["service"]["serviceConfig"]["TimeoutStartSec"] == "30min"


def _run_command(command: dict, tmp_path: Path, env_file_text: str | None, **environ: str):
    """Run the `cipug` command's script with bash, the package replaced by a script printing its environment."""
    program = tmp_path / "cipug"
    program.write_text('#!/bin/sh\necho "args: $*"\nenv\n', encoding="utf-8")
    program.chmod(0o755)
    env_file = tmp_path / "cipug.env"
    if env_file_text is not None:
        env_file.write_text(env_file_text, encoding="utf-8")
    script = command["text"].replace(command["program"], str(program)).replace("/run/secrets/cipug.env", str(env_file))
    result = subprocess.run(
        ["bash", "-c", script, "cipug", "history", "web"],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "INVOCATION_ID": "0123abcd", **environ},
    )
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line and not line.startswith("args:"))
    return result, seen


def test_command_runs_with_the_units_environment_and_environment_file(probes: dict, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    command = probes["environment_file"]["command"]
    service = probes["environment_file"]["service"]
    result, seen = _run_command(
        command, tmp_path,
        "# secrets\nREGISTRY_AUTH_FILE=/run/secrets/auth.json\nCIPUG_VERBOSITY=3\nPYTHONUNBUFFERED=0\n",
        CIPUG_CONFIG_FILE="/elsewhere.json",
    )
    assert result.returncode == 0, result.stderr
    assert "args: history web" in result.stdout
    # The unit's environment, over the caller's.
    assert seen["CIPUG_CONFIG_FILE"] == service["environment"]["CIPUG_CONFIG_FILE"]
    assert seen["PATH"] == service["environment"]["PATH"] + ":/usr/bin:/bin"
    assert (seen["STATE_DIRECTORY"], seen["CACHE_DIRECTORY"]) == ("/var/lib/cipug", "/var/cache/cipug")
    # The environment file over the unit's environment, as with systemd's EnvironmentFile.
    assert (seen["REGISTRY_AUTH_FILE"], seen["CIPUG_VERBOSITY"]) == ("/run/secrets/auth.json", "3")
    assert seen["PYTHONUNBUFFERED"] == "0"
    assert "INVOCATION_ID" not in seen


def test_command_without_its_environment_file_does_not_run(probes: dict, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    result, _ = _run_command(probes["environment_file"]["command"], tmp_path, None)
    assert result.returncode != 0
    assert "args:" not in result.stdout
    assert "cipug.env" in result.stderr


def test_command_without_an_environment_file(probes: dict, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    command = probes["default"]["command"]
    assert "source" not in command["text"]
    result, seen = _run_command(command, tmp_path, None)
    assert result.returncode == 0, result.stderr
    assert seen["PYTHONUNBUFFERED"] == "1"
    assert seen["PATH"] == probes["default"]["service"]["environment"]["PATH"] + ":/usr/bin:/bin"


def test_timer(probes: dict) -> None:
    assert probes["default"]["timer"]["wantedBy"] == ["timers.target"]
    assert probes["default"]["timer"]["timerConfig"] == {
        "OnCalendar": "daily",
        "RandomizedDelaySec": "0",
        "FixedRandomDelay": False,
        "Persistent": True,
    }
    custom = probes["timer"]["timer"]["timerConfig"]
    assert (custom["OnCalendar"], custom["RandomizedDelaySec"], custom["Persistent"]) == ("Sun 03:30", "1h", False)


@pytest.mark.parametrize(
    ("probe", "present", "absent"),
    [
        ("default", ["skopeo", "snapper", "podman-compose", "podman"], ["docker", "docker-compose", "systemd"]),
        ("docker", ["skopeo", "docker"], ["snapper", "podman-compose", "podman", "docker-compose"]),
        ("docker_compose", ["skopeo", "snapper", "docker-compose", "docker"], ["podman-compose", "podman"]),
        # NixOS puts systemd on every unit's PATH: the module adds nothing for these methods.
        ("systemd_method", ["skopeo", "snapper", "podman-compose", "podman"], ["docker", "systemd"]),
    ],
)
def test_path_follows_the_settings(probes: dict, probe: str, present: list[str], absent: list[str]) -> None:
    path = probes[probe]["service"]["path"]
    assert [name for name in present if name not in path] == []
    assert [name for name in absent if name in path] == []


def test_assertions_fire_on_bad_settings(probes: dict) -> None:
    assert probes["podman"]["assertions"] == []
    assert any("SERVICES_ROOT must be set" in message for message in probes["no_root"]["assertions"])
    assert any("SERVICE_ROOT" in message for message in probes["unknown_setting"]["assertions"])
    # Values of the wrong type or out of range fail the evaluation itself.
    for probe in ("bad_method", "bad_verbosity", "relative_root"):
        assert probes[probe] == {"settingsValid": False}, probe


def test_warnings(probes: dict) -> None:
    assert any("services.snapper.configs is empty" in w for w in probes["podman"]["warnings"])
    assert any("virtualisation.podman.enable" in w for w in probes["default"]["warnings"])
    assert probes["snapper"]["warnings"] == []
    assert probes["docker"]["warnings"] == []


def test_notifications_build_the_package_with_apprise_and_keep_urls_out_of_the_store(probes: dict) -> None:
    assert probes["notifications"]["finalPackageDependencies"] == ["typer", "apprise"]
    assert probes["notifications_off"]["finalPackageDependencies"] == ["typer"]
    service = probes["notifications"]["service"]
    assert service["serviceConfig"]["ExecStart"] != probes["notifications_off"]["service"]["serviceConfig"]["ExecStart"]
    # With the environment file for the URLs, notifications add no warning.
    assert probes["notifications"]["warnings"] == probes["notifications_off"]["warnings"]
    [message] = [m for m in probes["notify_urls_in_store"]["assertions"] if "NOTIFY_URLS" in m]
    assert "CIPUG_NOTIFY_URLS" in message and "environmentFile" in message and "tk_secret" not in message


def test_metrics_file_defaults_to_node_exporters_textfile_folder(probes: dict, tmp_path: Path) -> None:
    assert probes["default"]["metricsFile"] is None
    path = probes["node_exporter"]["metricsFile"]
    assert path == "/var/lib/prometheus-node-exporter-text-files/cipug.prom"
    # cipug reads what the module writes.
    data = json.loads(Path(probes["node_exporter"]["service"]["environment"]["CIPUG_CONFIG_FILE"]).read_text())
    environ = {"CIPUG_SERVICES_ROOT": "/srv/services", "CIPUG_METRICS_FILE": data["METRICS_FILE"],
               "HOME": str(tmp_path)}
    assert load_settings(environ, cwd=REPO).metrics_file == Path(path)
    assert probes["node_exporter_without_folder"]["metricsFile"] is None
    assert any("--collector.textfile.directory" in w for w in probes["node_exporter_without_folder"]["warnings"])


@pytest.mark.parametrize("probe", ["disabled", "disabled_configured"])
def test_nothing_when_disabled(probes: dict, probe: str) -> None:
    result = probes[probe]
    assert result["hasService"] is False and result["hasTimer"] is False
    assert result["systemPackages"] == []
    assert result["assertions"] == [] and result["warnings"] == []


# --- the flake's outputs, evaluated with a stand-in nixpkgs ---------------------------


def test_flake_outputs_for_both_systems(evaluated: dict) -> None:
    flake = evaluated["flake"]
    assert flake["systems"] == SYSTEMS
    assert flake["nixosModules"] == ["cipug", "default"]
    assert flake["overlays"] == ["default"]
    assert flake["overlayPackage"] == "cipug"
    for system in SYSTEMS:
        outputs = flake["perSystem"][system]
        assert outputs["packages"] == ["cipug", "default"]
        assert outputs["defaultIsCipug"] is True
        assert outputs["apps"] == ["default"]
        assert outputs["app"]["type"] == "app"
        assert outputs["app"]["program"].endswith("/bin/cipug")
        assert outputs["app"]["description"]
        assert outputs["checks"] == ["module-eval", "package", "vm"]
        assert outputs["devShells"] == ["default"]
        assert outputs["formatter"] == "nixfmt-tree"
        # The flake's module builds cipug with the machine's nixpkgs, for its platform and with
        # its overlays, or takes the machine's pkgs.cipug where the overlay is applied.
        assert outputs["moduleSetsPackageFor"] == system
        assert outputs["moduleBuildsWithHostDependencies"] == ["typer-of-the-host"]
        assert outputs["moduleTakesHostsCipug"] == "cipug of the host"
        assert {"skopeo", "snapper", "podman-compose", "nix", "nixfmt-tree"} <= set(outputs["shellPackages"])


def test_package_definition(evaluated: dict) -> None:
    package = evaluated["flake"]["perSystem"]["x86_64-linux"]["package"]
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert package["pname"] == "cipug"
    assert package["version"] == cipug.__version__
    assert package["pyproject"] is True
    assert package["build-system"] == ["setuptools"] and 'build-backend = "setuptools.build_meta"' in pyproject
    assert package["dependencies"] == ["typer"]
    assert set(package["nativeCheckInputs"]) == {"pytestCheckHook", "pytest-subprocess"}
    assert package["disabledTestPaths"] == ["tests/integration", "tests/system", "tests/test_nix.py"]
    assert all((REPO / path).exists() for path in package["disabledTestPaths"])  # pytestCheckHook aborts otherwise
    assert "cipug" in package["pythonImportsCheck"]
    assert package["license"] == "MIT"
    assert package["mainProgram"] == "cipug" and 'cipug = "cipug.main:main"' in pyproject
    assert package["description"]


def test_package_option_defaults_to_the_overlays_cipug(evaluated: dict) -> None:
    option = evaluated["packageOption"]
    assert option["defaultText"] == "pkgs.cipug"
    assert option["withOverlay"] == {"pname": "cipug", "isPkgsCipug": True}
    # nixpkgs has no cipug: nix/module.nix alone, without the overlay, has no package.
    assert option["missingWithoutOverlay"] is True


def test_package_source_is_filtered(evaluated: dict) -> None:
    source = evaluated["flake"]["source"]
    if source is None:
        pytest.skip("lib.fileset needs builtins.readFileType (Nix >= 2.14); this Nix is older")
    names = {path.name for path in Path(source).iterdir()}
    assert {"pyproject.toml", "cipug", "tests", "LICENSE"} <= names
    assert not names & {"flake.nix", "flake.lock", "nix", ".github", ".git"}
