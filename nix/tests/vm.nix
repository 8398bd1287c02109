# The flake check `vm`: cipug.service on a NixOS VM against the real stack: a
# local registry (services.dockerRegistry), root podman with podman-compose, a
# btrfs services root with a snapper config for the service's subvolume, and
# images built with dockerTools and pushed with skopeo. The containers cipug
# restarts must outlive the run, and the unit must end successfully.
{
  pkgs,
  module,
}:

let
  registry = "localhost:5000";
  repository = "${registry}/demo/app";

  # Two versions of a small image; /version tells them apart inside the
  # container. Its PID 1 exits on SIGTERM, as a real service's does, so the
  # kill at the end of a run that left conmon in cipug.service's cgroup shows
  # as a dead container (a PID 1 that ignores SIGTERM would hold the unit in
  # stop-sigterm for 90 s instead).
  mkImage =
    version:
    pkgs.dockerTools.buildImage {
      name = "demo/app";
      tag = version;
      compressor = "none";
      copyToRoot = [
        pkgs.busybox
        (pkgs.writeTextDir "version" version)
      ];
      config.Cmd = [
        "/bin/sh"
        "-c"
        "trap 'exit 0' TERM; sleep 86400 & wait"
      ];
    };
  imageV1 = mkImage "v1";
  imageV2 = mkImage "v2";

  # The service runs the tag until cipug pins it.
  composeFile = pkgs.writeText "compose.yml" ''
    services:
      app:
        image: ''${SERVICE_APP_IMAGE_HASHED:-${repository}:latest}
  '';
  envFile = pkgs.writeText "env" ''
    # the demo service
    SERVICE_APP_IMAGE_TAGGED=${repository}:latest
  '';
  # A second service, which the environment file excludes: if EnvironmentFile
  # were not read, cipug would try to snapshot it and fail (it has no snapper
  # config), and its .env would change.
  otherEnvFile = pkgs.writeText "env" ''
    SERVICE_APP_IMAGE_TAGGED=${repository}:latest
  '';
in
pkgs.testers.runNixOSTest {
  name = "cipug";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ module ];

      virtualisation = {
        memorySize = 2048;
        diskSize = 4096;
        # Becomes /dev/vdb: the btrfs services root, formatted by the test.
        emptyDiskImages = [ 1024 ];
        additionalPaths = [
          imageV1
          imageV2
          composeFile
          envFile
          otherEnvFile
        ];
        podman.enable = true;
        containers.registries.insecure = [ registry ];
      };

      boot.supportedFilesystems = [ "btrfs" ];

      services.dockerRegistry = {
        enable = true;
        listenAddress = "127.0.0.1";
        port = 5000;
      };

      services.snapper.configs.web.SUBVOLUME = "/srv/services/web";

      environment.systemPackages = [
        pkgs.btrfs-progs
        pkgs.skopeo
        pkgs.podman-compose
      ];

      services.cipug = {
        enable = true;
        environmentFile = "/etc/cipug.env";
        settings = {
          SERVICES_ROOT = "/srv/services";
          VERBOSITY = 2;
          HEALTH_TIMEOUT = 30;
        };
      };
    };

  testScript = ''
    import json

    root = "/srv/services"
    web = root + "/web"


    def env_value(path: str, key: str) -> str:
        for line in machine.succeed(f"cat {path}").splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() == key:
                return value.strip().strip("\"'")
        return ""


    def push(archive: str) -> str:
        machine.succeed(
            f"skopeo copy --dest-tls-verify=false docker-archive:{archive} docker://${repository}:latest"
        )
        return machine.succeed(
            "skopeo inspect --tls-verify=false --format '{{.Digest}}' docker://${repository}:latest"
        ).strip()


    def run_cipug() -> None:
        status, _ = machine.execute("systemctl start cipug.service")
        if status != 0:
            print(machine.execute("journalctl --no-pager -u cipug.service")[1])
            raise AssertionError("cipug.service failed")
        result = machine.succeed("systemctl show -P Result cipug.service").strip()
        assert result == "success", f"cipug.service ended with Result={result}"


    def container() -> str:
        ids = machine.succeed(
            "podman ps -q --filter label=io.podman.compose.project=web"
        ).split()
        assert len(ids) == 1, f"expected one running container for web, found {ids}"
        return ids[0]


    def assert_outlives_the_run(ctr: str) -> None:
        # The run is over (a oneshot's start returns when it ends); what cipug
        # restarted must still be running some seconds later, outside the unit.
        machine.sleep(10)
        state = machine.execute("systemctl is-active cipug.service")[1].strip()
        assert state == "inactive", f"cipug.service is {state}"
        result = machine.succeed("systemctl show -P Result cipug.service").strip()
        assert result == "success", f"cipug.service ended with Result={result}"
        assert container() == ctr, "the container cipug started is gone"
        status = machine.succeed("podman inspect --format '{{.State.Status}}' " + ctr).strip()
        assert status == "running", f"container {ctr} is {status}"
        conmon = machine.succeed("podman inspect --format '{{.State.ConmonPid}}' " + ctr).strip()
        cgroup = machine.succeed(f"cat /proc/{conmon}/cgroup")
        assert "cipug.service" not in cgroup, f"conmon runs in cipug.service's cgroup: {cgroup}"


    def assert_runs(digest: str, version: str) -> None:
        ref = "${repository}@" + digest
        assert env_value(web + "/.env", "SERVICE_APP_IMAGE_HASHED") == ref
        ctr = container()
        running = machine.succeed("podman inspect --format '{{.Image}}' " + ctr).strip()
        pinned = machine.succeed("podman image inspect --format '{{.Id}}' " + ref).strip()
        assert running == pinned, f"container runs image {running}, {ref} is {pinned}"
        assert machine.succeed(f"podman exec {ctr} cat /version").strip() == version


    start_all()
    machine.wait_for_unit("docker-registry.service")
    machine.wait_for_open_port(5000)

    with subtest("the timer and the service are installed as configured"):
        machine.wait_for_unit("cipug.timer")
        timer = machine.succeed("systemctl cat cipug.timer")
        assert "OnCalendar=daily" in timer, timer
        assert "Persistent=true" in timer, timer
        assert "RandomizedDelaySec=0" in timer, timer
        service = machine.succeed("systemctl cat cipug.service")
        for line in (
            "Type=oneshot",
            "UnsetEnvironment=INVOCATION_ID",
            "RequiresMountsFor=/srv/services",
            "TimeoutStartSec=4h",
            "EnvironmentFile=/etc/cipug.env",
        ):
            assert line in service, f"{line} missing in:\n{service}"
        timeout = machine.succeed("systemctl show -P TimeoutStartUSec cipug.service").strip()
        assert timeout == "4h", timeout

    with subtest("a btrfs services root, a snapper config for the service"):
        machine.succeed(
            "mkfs.btrfs -q /dev/vdb",
            f"mkdir -p {root}",
            f"mount /dev/vdb {root}",
            f"btrfs subvolume create {web}",
            f"btrfs subvolume create {web}/.snapshots",
            f"install -m 0644 ${composeFile} {web}/compose.yml",
            f"install -m 0644 ${envFile} {web}/.env",
            f"mkdir {root}/other",
            f"install -m 0644 ${composeFile} {root}/other/compose.yml",
            f"install -m 0644 ${otherEnvFile} {root}/other/.env",
            "echo CIPUG_SERVICES_FILTER_EXCLUDE=other > /etc/cipug.env",
        )
        machine.succeed("snapper -c web list")

    with subtest("the service runs the tag"):
        digest1 = push("${imageV1}")
        machine.succeed(f"cd {web} && podman-compose up -d")
        container()

    with subtest("first run: digest pinned, snapshot taken, service restarted on it"):
        run_cipug()
        assert_runs(digest1, "v1")
        assert_outlives_the_run(container())
        machine.succeed(f"test -d {web}/.snapshots/1/snapshot")
        machine.fail(f"grep -q HASHED {web}/.snapshots/1/snapshot/.env")
        machine.fail(f"test -e {web}/.snapshots/2")
        assert env_value(f"{root}/other/.env", "SERVICE_APP_IMAGE_HASHED") == ""

    with subtest("state and cache in the systemd directories"):
        machine.succeed(
            "test -s /var/lib/cipug/history.jsonl",
            "test -f /var/cache/cipug/cache.json",
        )
        assert machine.succeed("stat -c %a /var/lib/cipug").strip() == "700"
        assert machine.succeed("stat -c %a /var/cache/cipug").strip() == "700"

    with subtest("nothing moved: nothing touched"):
        before = machine.succeed(f"stat -c %Y {web}/.env")
        ctr = container()
        run_cipug()
        assert machine.succeed(f"stat -c %Y {web}/.env") == before
        assert container() == ctr
        machine.fail(f"test -e {web}/.snapshots/2")

    with subtest("a new image under the same tag: updated, second snapshot"):
        digest2 = push("${imageV2}")
        assert digest2 != digest1
        # The first run cached the tag's digest for CACHE_DURATION.
        machine.succeed("rm -f /var/cache/cipug/cache.json")
        run_cipug()
        assert_runs(digest2, "v2")
        assert_outlives_the_run(container())
        machine.succeed(f"test -d {web}/.snapshots/2/snapshot")
        assert (
            env_value(f"{web}/.snapshots/2/snapshot/.env", "SERVICE_APP_IMAGE_HASHED")
            == "${repository}@" + digest1
        )
        machine.fail(f"test -e {web}/.snapshots/3")

    with subtest("the cipug command runs as the service does"):
        # The environment file's CIPUG_SERVICES_FILTER_EXCLUDE, as the service sees it.
        settings = machine.succeed("cipug config")
        assert "SERVICES_FILTER_EXCLUDE=other" in settings.splitlines(), settings

    with subtest("the cipug command sees what the service did"):
        records = json.loads(machine.succeed("cipug history --json web"))
        updates = [r for r in records if r["outcome"] == "updated"]
        assert [r["snapshot"] for r in updates] == [1, 2], records
        assert digest1 in updates[0]["new"] and digest2 in updates[1]["new"], records
  '';
}
