# NixOS module: services.cipug, a systemd timer that keeps the container images
# of compose services pinned to digests and up to date.
#
# `services.cipug.package` defaults to `pkgs.cipug`, which the flake's
# `overlays.default` (nix/overlay.nix) adds; the flake's `nixosModules.default`
# imports this file and builds the package with the machine's nixpkgs when
# `pkgs.cipug` is missing.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;

  cfg = config.services.cipug;
  settings = cfg.settings;

  settingsFormat = pkgs.formats.json { };

  # Every setting cipug reads from its config file (cipug/config.py, SETTINGS).
  # tests/test_nix.py checks that this list matches cipug's exactly.
  knownSettings = [
    "SERVICES_ROOT"
    "SERVICES_FILTER"
    "SERVICES_FILTER_EXCLUDE"
    "COMPOSE_FILE_NAME"
    "ENV_FILE_NAME"
    "COMPOSE_TOOL"
    "CONTAINER_TOOL"
    "SERVICE_STOP_START"
    "STOP_START_METHOD"
    "RESTART"
    "SERVICE_SNAPSHOT"
    "SERVICE_PULL"
    "PRUNE_IMAGES"
    "KEEP_IMAGES"
    "UPDATE_MIN_AGE"
    "VERBOSITY"
    "CACHE_DURATION"
    "CACHE_LOCATION"
    "SNAPSHOTS_DIR_SNAPPER"
    "SNAPSHOTS_DIR_BTRBK"
    "SNAPSHOTS_MAX_AGE_SNAPPER"
    "SNAPSHOTS_MAX_AGE_BTRBK"
    "SKOPEO_TOOL"
    "SNAPPER_TOOL"
    "RESOLVE_WORKERS"
    "RESOLVER"
    "REGISTRY_INSECURE_HOSTS"
    "REGISTRY_TIMEOUT"
    "REGISTRY_FALLBACK"
    "REGISTRY_WORKERS"
    "AUTO_ROLLBACK"
    "HEALTH_TIMEOUT"
    "CHECK_DRIFT"
    "CHECK_VERSIONS"
    "HISTORY_FILE"
    "NOTIFY_URLS"
    "NOTIFY_COMMAND"
    "NOTIFY_TIMEOUT"
    "METRICS_FILE"
  ];
  unknownSettings = lib.subtractLists knownSettings (lib.attrNames settings);

  # Null values stand for "cipug's own default" and are left out of the file.
  configFile = settingsFormat.generate "cipug.json" (lib.filterAttrs (_: v: v != null) settings);

  # The program a command-line setting runs: "docker compose" -> "docker".
  programOf =
    command:
    let
      words = lib.filter (word: word != "") (lib.splitString " " command);
    in
    if words == [ ] then "" else baseNameOf (lib.head words);
  composeProgram = programOf settings.COMPOSE_TOOL;
  containerProgram = programOf settings.CONTAINER_TOOL;

  composeIsPodman = lib.elem composeProgram [
    "podman-compose"
    "podman"
  ];
  composeIsDocker = lib.elem composeProgram [
    "docker-compose"
    "docker"
  ];
  usesPodman = composeIsPodman || containerProgram == "podman";
  usesDocker = composeIsDocker || containerProgram == "docker";

  # Podman and Docker as the system configures them (virtualisation.*), so the
  # service sees the same runtimes, storage and networks as an admin's shell.
  podmanPackage = config.virtualisation.podman.package;
  dockerPackage = config.virtualisation.docker.package;

  # systemctl, for the systemd STOP_START_METHODs, needs no entry: NixOS puts
  # systemd on the PATH of every unit.
  toolPackages = [
    pkgs.skopeo
  ]
  ++ lib.optional settings.SERVICE_SNAPSHOT pkgs.snapper
  ++ lib.optional composeIsPodman pkgs.podman-compose
  ++ lib.optional (composeProgram == "docker-compose") pkgs.docker-compose
  ++ lib.optional usesPodman podmanPackage
  ++ lib.optional usesDocker dockerPackage;

  # The unit as NixOS completes it: its environment holds the PATH built from
  # `path`, and whatever other modules add.
  # The package the service and the `cipug` command run: with the notify
  # extra (Apprise) when notifications are on.
  withApprise =
    package:
    if package ? overridePythonAttrs then
      package.overridePythonAttrs (old: {
        dependencies = (old.dependencies or [ ]) ++ [ pkgs.python3Packages.apprise ];
      })
    else
      throw "services.cipug.notifications.enable needs a services.cipug.package built with buildPythonApplication (overridePythonAttrs), to add apprise to it";
  finalPackage = if cfg.notifications.enable then withApprise cfg.package else cfg.package;

  # node_exporter's textfile collector reads *.prom files from the folder given
  # by --collector.textfile.directory (in extraFlags; the collector is on by
  # default unless disabledCollectors names it).
  nodeExporter =
    config.services.prometheus.exporters.node or {
      enable = false;
      extraFlags = [ ];
      disabledCollectors = [ ];
    };
  textfileFlag = "--collector.textfile.directory";
  nodeFlags = nodeExporter.extraFlags or [ ];
  textfileDirectories =
    lib.concatMap (
      flag:
      let
        found = builtins.match "${lib.escapeRegex textfileFlag}[= ][[:space:]]*([^[:space:]]+)[[:space:]]*" flag;
      in
      if found == null then [ ] else found
    ) nodeFlags
    # The flag and the folder as two items of the list.
    ++ lib.concatLists (
      lib.zipListsWith (flag: next: lib.optional (flag == textfileFlag) next) nodeFlags (lib.drop 1 nodeFlags)
    );
  textfileCollectorOn =
    (nodeExporter.enable or false) && !(lib.elem "textfile" (nodeExporter.disabledCollectors or [ ]));
  textfileDirectory =
    if textfileCollectorOn && textfileDirectories != [ ] then
      lib.removeSuffix "/" (lib.last textfileDirectories)
    else
      null;

  unit = config.systemd.services.cipug;
  unitEnvironment = lib.filterAttrs (name: value: value != null && name != "PATH") unit.environment;
  stateDirectory = "cipug";
  cacheDirectory = "cipug";

  # `cipug` for an admin's shell, run as the unit runs it: `sudo cipug update`
  # gets the timer's credentials and CIPUG_* overrides, and `cipug check`,
  # `history` and `rollback` see its settings, state, cache and tools. As under
  # systemd, the environment file comes last and wins. Like the wrapper of
  # nixpkgs' restic module, this sources it as shell: NAME=value lines read the
  # same either way.
  sourceEnvironmentFile = lib.optionalString (cfg.environmentFile != null) (
    "source ${lib.escapeShellArg cfg.environmentFile} || exit"
  );
  cipugCommand = pkgs.writeShellScriptBin "cipug" ''
    set -a
    ${lib.toShellVars unitEnvironment}
    PATH=${lib.escapeShellArg unit.environment.PATH}''${PATH:+:$PATH}
    STATE_DIRECTORY=/var/lib/${stateDirectory}
    CACHE_DIRECTORY=/var/cache/${cacheDirectory}
    ${sourceEnvironmentFile}
    set +a
    unset ${toString (unit.serviceConfig.UnsetEnvironment or [ ])}
    exec ${lib.getExe finalPackage} "$@"
  '';

  snapperConfigs = config.services.snapper.configs;
  servicesRoot =
    if settings.SERVICES_ROOT == null then "" else lib.removeSuffix "/" settings.SERVICES_ROOT;
  snapperConfigsUnderRoot = lib.filterAttrs (
    _: snapperConfig: lib.hasPrefix "${servicesRoot}/" (toString (snapperConfig.SUBVOLUME or ""))
  ) snapperConfigs;

  boolSetting =
    default: description:
    mkOption {
      type = types.bool;
      inherit default description;
    };
in
{
  options.services.cipug = {
    enable = lib.mkEnableOption ''
      a systemd timer running cipug, which resolves the
      `SERVICE_*_IMAGE_TAGGED` entries in each service's `.env` to digests,
      snapshots the service folder with snapper, writes the
      `SERVICE_*_IMAGE_HASHED` entries, then pulls and restarts the services
      whose images changed'';

    finalPackage = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      default = finalPackage;
      description = "The package the service runs: `package`, with apprise when notifications are on.";
    };

    package = lib.mkPackageOption pkgs "cipug" {
      extraDescription = ''
        nixpkgs has no cipug: `pkgs.cipug` comes from the flake's
        `overlays.default` (`nix/overlay.nix`), built with the machine's
        nixpkgs, so its overlays apply. The flake's `nixosModules.default`
        does without the overlay: when `pkgs.cipug` is missing it builds
        `nix/package.nix` with the machine's `pkgs` itself.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        cipug's settings. They are written to a JSON file in the Nix store whose
        path the service gets as `CIPUG_CONFIG_FILE`; keys are cipug's setting
        names without the `CIPUG_` prefix.

        The settings below are declared with their types and cipug's defaults
        (those defaults are written to the file too). Every other setting cipug
        knows can be given as well and is passed on as it is:
        ${lib.concatMapStringsSep ", " (name: "`${name}`") knownSettings}.
        A name cipug does not know fails the evaluation, since cipug would
        refuse the file.

        The file is world-readable in the Nix store: put nothing secret here;
        use {option}`services.cipug.environmentFile` instead. Variables
        `CIPUG_<NAME>` in that file take precedence over these settings.

        Defaults worth knowing under this service: `CACHE_LOCATION` is
        `/var/cache/cipug/cache.json` and `HISTORY_FILE` is
        `/var/lib/cipug/history.jsonl` (systemd's `CacheDirectory` and
        `StateDirectory`).
      '';
      example = lib.literalExpression ''
        {
          SERVICES_ROOT = "/srv/services";
          SERVICES_FILTER_EXCLUDE = [ "legacy-app" ];
          COMPOSE_TOOL = "docker compose";
          CONTAINER_TOOL = "docker";
          SNAPSHOTS_DIR_SNAPPER = ".snapshots";
        }
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;

        options = {
          SERVICES_ROOT = mkOption {
            type = types.nullOr types.externalPath;
            default = null;
            example = "/srv/services";
            description = ''
              The folder holding one folder per service (ideally each a btrfs
              subvolume with its own snapper config). A folder is a service
              when it holds both `COMPOSE_FILE_NAME` and `ENV_FILE_NAME`.
              Required; an absolute path outside the Nix store, as a string.
            '';
          };

          SERVICES_FILTER = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [
              "nextcloud"
              "gitea"
            ];
            description = "Service folder names to include; empty means all of them.";
          };

          SERVICES_FILTER_EXCLUDE = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [ "legacy-app" ];
            description = "Service folder names to skip.";
          };

          COMPOSE_FILE_NAME = mkOption {
            type = types.str;
            default = "";
            example = "docker-compose.yml";
            description = ''
              Name of the compose file in each service folder; empty for the
              first of compose's own names (`compose.yaml`, `compose.yml`,
              `docker-compose.yaml`, `docker-compose.yml`).
            '';
          };

          ENV_FILE_NAME = mkOption {
            type = types.str;
            default = ".env";
            description = ''
              Name of the env file in each service folder, holding the
              `SERVICE_<NAME>_IMAGE_TAGGED` entries cipug resolves and the
              `SERVICE_<NAME>_IMAGE_HASHED` entries it writes.
            '';
          };

          COMPOSE_TOOL = mkOption {
            # The known tools, or any other command line.
            type = types.either (types.enum [
              "podman-compose"
              "docker-compose"
              "docker compose"
            ]) types.str;
            default = "podman-compose";
            example = "docker compose";
            description = ''
              The compose command, split on spaces: `podman-compose`,
              `docker-compose` or `docker compose`. The module puts the
              matching packages on the service's PATH: podman-compose and
              podman for `podman-compose`; docker-compose for `docker-compose`;
              docker (`virtualisation.docker.package`) for `docker compose`.
              For another command, add its package to
              {option}`services.cipug.path`.
            '';
          };

          CONTAINER_TOOL = mkOption {
            type = types.either (types.enum [
              "podman"
              "docker"
            ]) types.str;
            default = "podman";
            example = "docker";
            description = ''
              The container command cipug uses to prune images and to watch
              restarted containers come up. Set it to `docker` when the
              compose tool is Docker's.
            '';
          };

          SERVICE_STOP_START = boolSetting true "Whether to restart the services whose images changed.";

          STOP_START_METHOD = mkOption {
            type = types.enum [
              "compose"
              "systemd-system"
              "systemd-user"
            ];
            default = "compose";
            description = ''
              How a changed service is restarted: `compose` runs the compose
              tool's `down` and `up -d` in the service folder; `systemd-system`
              and `systemd-user` run `systemctl [--user] restart
              <compose-tool>@<service>`, for services managed by such template
              units.
            '';
          };

          SERVICE_SNAPSHOT = boolSetting true ''
            Whether to take a snapper snapshot of a service folder before
            changing it. Each service folder then needs a snapper config whose
            `SUBVOLUME` is that folder, in {option}`services.snapper.configs`.
          '';

          SERVICE_PULL = boolSetting true ''
            Whether to pull the new images before restarting, so the downtime
            stays short.
          '';

          PRUNE_IMAGES = boolSetting true ''
            Whether to prune unused images once per run when something changed.
          '';

          AUTO_ROLLBACK = boolSetting true ''
            Whether to put the previous images back when a restarted service
            does not come up (running, and healthy where it has a health check)
            within `HEALTH_TIMEOUT` seconds.
          '';

          HEALTH_TIMEOUT = mkOption {
            type = types.ints.between 0 3600;
            default = 60;
            description = "Seconds to wait for restarted containers to run and be healthy; 0 does not wait.";
          };

          VERBOSITY = mkOption {
            type = types.ints.between 0 3;
            default = 1;
            description = "How much cipug logs: 0 errors only, 1 normal, 2 verbose, 3 very verbose.";
          };

          CACHE_DURATION = mkOption {
            type = types.ints.unsigned;
            default = 3600;
            description = "Seconds a resolved digest is reused; 0 disables the cache.";
          };

          RESOLVER = mkOption {
            type = types.enum [
              "skopeo"
              "registry"
            ];
            default = "registry";
            description = ''
              How tags are resolved to digests: `skopeo` runs `skopeo inspect`;
              `registry` sends HTTP HEAD requests, which do not count against
              Docker Hub's pull quota, and falls back to skopeo for what it
              cannot do itself.
            '';
          };

          NOTIFY_COMMAND = mkOption {
            type = types.str;
            default = "";
            example = "/etc/cipug/notify.sh";
            description = ''
              A program, split like a shell does, that gets one JSON object
              per event (updated, rolled back, failed, held, skipped because
              it failed before, drift) on standard input; empty for none. It
              runs as root with the service's PATH (add its packages to
              {option}`services.cipug.path`). One that fails or takes longer
              than `NOTIFY_TIMEOUT` seconds is a warning. For Apprise URLs,
              see {option}`services.cipug.notifications.enable`.
            '';
          };

          METRICS_FILE = mkOption {
            type = types.nullOr types.externalPath;
            default = if textfileDirectory == null then null else "${textfileDirectory}/cipug.prom";
            defaultText = lib.literalMD ''
              `<dir>/cipug.prom` when `services.prometheus.exporters.node` is
              enabled, its textfile collector is not disabled and its
              `extraFlags` give `--collector.textfile.directory=<dir>`;
              otherwise `null` (no metrics file)
            '';
            example = "/var/lib/prometheus-node-exporter/textfile/cipug.prom";
            description = ''
              A file in Prometheus' text format that cipug replaces at the end
              of every run (also a failed one), for node_exporter's textfile
              collector: when the run ended and its exit code, and per service
              and image entry whether an update is pending, held or failed
              before, when its pin last changed and the version it runs.
              Readable by everyone (mode 0644): it names services and images,
              nothing secret. `null` writes none.
            '';
          };
        };
      };
    };

    environmentFile = mkOption {
      type = types.nullOr types.externalPath;
      default = null;
      example = "/run/secrets/cipug.env";
      description = ''
        A file of `NAME=value` lines the service reads at start (systemd's
        `EnvironmentFile`), for what must not go into the world-readable Nix
        store: for example `REGISTRY_AUTH_FILE=/run/secrets/registry-auth.json`
        for skopeo and podman, `CIPUG_NOTIFY_URLS=<url>,<url>` for
        {option}`services.cipug.notifications.enable`, or other `CIPUG_*`
        variables, which take precedence over {option}`services.cipug.settings`. Give it as a string: it is
        read at run time and never copied into the store.
      '';
    };

    notifications.enable = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = ''
        Whether cipug can send notifications to Apprise URLs (ntfy, e-mail,
        Matrix, Telegram, Gotify, webhooks, ...): builds
        {option}`services.cipug.package` with its `notify` extra (apprise).
        The URLs hold tokens and passwords, so they never go into the Nix
        store: put them into {option}`services.cipug.environmentFile` as
        `CIPUG_NOTIFY_URLS=ntfys://ntfy.example/cipug,mailtos://...`
        (comma-separated). `settings.NOTIFY_URLS` is refused.
      '';
    };

    path = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = lib.literalExpression "[ pkgs.gzip ]";
      description = ''
        Packages on the service's PATH, in addition to the ones the module adds
        from the settings: skopeo always; snapper when `SERVICE_SNAPSHOT` is
        on; podman-compose and podman, docker-compose, or docker as
        `COMPOSE_TOOL` and `CONTAINER_TOOL` say. Podman and Docker are taken
        from `virtualisation.podman.package` and
        `virtualisation.docker.package`. NixOS adds coreutils and systemd
        (`systemctl`, for the systemd `STOP_START_METHOD`s) to every unit's
        PATH. Definitions here are added to that list; use `lib.mkForce` to
        replace it entirely. The `cipug` command the module installs runs with
        the same PATH.
      '';
    };

    dates = mkOption {
      type = types.either types.str (types.listOf types.str);
      default = "daily";
      example = "*-*-* 04:00:00";
      description = ''
        When cipug runs: one or more calendar events in the format of
        {manpage}`systemd.time(7)` (the timer's `OnCalendar`). Changed
        services are restarted at that time, so pick a maintenance window.
      '';
    };

    randomizedDelaySec = mkOption {
      type = types.str;
      default = "0";
      example = "45min";
      description = ''
        A random delay, up to this time span ({manpage}`systemd.time(7)`), added
        to each run (the timer's `RandomizedDelaySec`). The default `"0"` keeps
        runs, and therefore restarts, at exactly the times in
        {option}`services.cipug.dates`; set a delay to spread many machines'
        requests to the same registries.
      '';
    };

    fixedRandomDelay = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = ''
        Whether the random delay is the same for every run on this machine
        (the timer's `FixedRandomDelay`), so runs stay a fixed interval apart.
      '';
    };

    persistent = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Whether a run missed while the machine was off happens as soon as it
        is on again (the timer's `Persistent`), still subject to
        {option}`services.cipug.randomizedDelaySec`.
      '';
    };

    timeoutStartSec = mkOption {
      type = types.str;
      default = "4h";
      example = "90min";
      description = ''
        How long one run may take (the unit's `TimeoutStartSec`): a time span
        in the format of {manpage}`systemd.time(7)`, or `"infinity"`. A run
        that takes longer is stopped, as by `systemctl stop cipug.service`,
        and the unit fails. Without a limit, a tool that hangs (a registry
        that never answers, a stuck pull) would keep the unit active and the
        timer would start no later run. The default leaves room for large
        pulls and the health waits of many restarted services.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = settings.SERVICES_ROOT != null;
        message = ''
          services.cipug.settings.SERVICES_ROOT must be set: the folder holding one folder per service, for example "/srv/services".
        '';
      }
      {
        assertion = !(settings ? NOTIFY_URLS);
        message = ''
          services.cipug.settings.NOTIFY_URLS would put the notification URLs, which hold tokens and passwords, into the world-readable Nix store. Put CIPUG_NOTIFY_URLS=<url>,<url> into services.cipug.environmentFile instead, and set services.cipug.notifications.enable = true.
        '';
      }
      {
        assertion = unknownSettings == [ ];
        message = ''
          services.cipug.settings has ${lib.concatStringsSep ", " unknownSettings}, which cipug does not know (it would refuse the config file). cipug's settings are: ${lib.concatStringsSep ", " knownSettings}.
        '';
      }
    ];

    warnings =
      lib.optional (cfg.notifications.enable && cfg.environmentFile == null) ''
        services.cipug.notifications.enable is on, but services.cipug.environmentFile is not set: the Apprise URLs go there, as CIPUG_NOTIFY_URLS=..., so they stay out of the world-readable Nix store. Without them nothing is sent.
      ''
      ++ lib.optional (textfileCollectorOn && textfileDirectories == [ ] && settings.METRICS_FILE == null) ''
        services.prometheus.exporters.node is enabled, but its extraFlags give no ${textfileFlag}=<dir>, so the textfile collector reads no folder and cipug writes no metrics. Add the flag (cipug then writes <dir>/cipug.prom), or set services.cipug.settings.METRICS_FILE.
      ''
      ++ lib.optional (settings.SERVICE_SNAPSHOT && snapperConfigs == { }) ''
        services.cipug.settings.SERVICE_SNAPSHOT is on, but services.snapper.configs is empty: cipug takes a snapshot of each service folder before changing it and needs a snapper config per service subvolume, for example services.snapper.configs.nextcloud.SUBVOLUME = "${
          if servicesRoot == "" then "/srv/services" else servicesRoot
        }/nextcloud" (NixOS sets up snapper's D-Bus service only when a config exists). Without them every changed service fails. Set SERVICE_SNAPSHOT = false to update without snapshots.
      ''
      ++
        lib.optional
          (
            settings.SERVICE_SNAPSHOT
            && snapperConfigs != { }
            && servicesRoot != ""
            && snapperConfigsUnderRoot == { }
          )
          ''
            services.cipug.settings.SERVICE_SNAPSHOT is on, but no snapper config in services.snapper.configs has a SUBVOLUME inside ${servicesRoot}: cipug needs one per service folder, for example services.snapper.configs.nextcloud.SUBVOLUME = "${servicesRoot}/nextcloud".
          ''
      ++ lib.optional (usesPodman && !config.virtualisation.podman.enable) ''
        services.cipug uses podman (COMPOSE_TOOL "${settings.COMPOSE_TOOL}", CONTAINER_TOOL "${settings.CONTAINER_TOOL}"), but virtualisation.podman.enable is off: podman then lacks the /etc/containers configuration NixOS provides. Enable it, or set COMPOSE_TOOL and CONTAINER_TOOL for Docker.
      ''
      ++ lib.optional (usesDocker && !config.virtualisation.docker.enable) ''
        services.cipug uses docker (COMPOSE_TOOL "${settings.COMPOSE_TOOL}", CONTAINER_TOOL "${settings.CONTAINER_TOOL}"), but virtualisation.docker.enable is off, so there is no Docker daemon to talk to.
      ''
      ++ lib.optional (composeIsDocker && containerProgram == "podman") ''
        services.cipug.settings.COMPOSE_TOOL is "${settings.COMPOSE_TOOL}" but CONTAINER_TOOL is "podman": cipug would prune images and watch restarted containers with podman, not where Docker runs them. Set services.cipug.settings.CONTAINER_TOOL = "docker" (unless docker is podman's Docker compatibility).
      ''
      ++ lib.optional (settings.STOP_START_METHOD == "systemd-user") ''
        services.cipug.settings.STOP_START_METHOD is "systemd-user", but services.cipug runs as root in a system service, which has no user manager to talk to: `systemctl --user` fails there unless you give the service XDG_RUNTIME_DIR of a running user manager yourself. For system units use "systemd-system".
      '';

    # Added to whatever else is defined for services.cipug.path.
    services.cipug.path = toolPackages;

    # For an admin's shell; high priority so it wins over a plain cipug package.
    environment.systemPackages = [ (lib.hiPrio cipugCommand) ];

    systemd.services.cipug = {
      description = "cipug: pin and update the container images of compose services";
      after = [
        "network-online.target"
      ]
      ++ lib.optional usesDocker "docker.service";
      wants = [ "network-online.target" ];
      path = cfg.path;

      environment = {
        CIPUG_CONFIG_FILE = configFile;
        # Python buffers stdout when it is not a terminal: without this, the
        # journal gets cipug's lines late and out of order with its errors.
        PYTHONUNBUFFERED = "1";
      };

      # A run in progress is neither restarted by `nixos-rebuild switch` nor
      # stopped when the unit disappears from the configuration: stopping it
      # between writing .env and restarting a service would leave that service
      # half-updated.
      restartIfChanged = false;

      unitConfig = {
        X-StopOnRemoval = false;
        # The services root is often a file system of its own (btrfs): start
        # after it is mounted, and not at all without it.
        RequiresMountsFor = lib.optional (settings.SERVICES_ROOT != null) settings.SERVICES_ROOT;
      };

      # No sandboxing (PrivateTmp, ProtectSystem, ProtectHome, PrivateDevices,
      # ProtectKernel*, ProtectControlGroups, ProtectHostname, NoNewPrivileges,
      # SystemCallFilter, RestrictNamespaces, RestrictAddressFamilies,
      # CapabilityBoundingSet, LockPersonality, MemoryDenyWriteExecute, Nice,
      # IOSchedulingClass, ...): podman has no daemon, so the containers cipug
      # restarts are started by this service's processes and inherit its mount
      # namespace, seccomp filters, capability bounding set and scheduling
      # priority for their whole life. Any of these would break or weaken the
      # containers, not cipug. cipug itself runs as root because root podman,
      # snapper and the service folders need it.
      serviceConfig = {
        Type = "oneshot";
        ExecStart = lib.getExe finalPackage;
        # Podman keeps conmon, and with it the containers, in the calling
        # unit's cgroup while INVOCATION_ID is set, so systemd would kill the
        # containers cipug restarted as soon as the run ends.
        UnsetEnvironment = "INVOCATION_ID";
        TimeoutStartSec = cfg.timeoutStartSec;
        # /var/lib/cipug (history.jsonl, intents/) and /var/cache/cipug
        # (cache.json), found by cipug through $STATE_DIRECTORY/$CACHE_DIRECTORY;
        # the run lock is SERVICES_ROOT/.cipug.lock.
        # Mode 0700: only root may read the history or plant cache entries.
        StateDirectory = stateDirectory;
        StateDirectoryMode = "0700";
        CacheDirectory = cacheDirectory;
        CacheDirectoryMode = "0700";
      }
      // lib.optionalAttrs (cfg.environmentFile != null) {
        EnvironmentFile = cfg.environmentFile;
      };
    };

    # Any other [Timer] setting (AccuracySec, OnBootSec, ...) goes straight into
    # systemd.timers.cipug.timerConfig, which merges with these, as
    # systemd.services.cipug.serviceConfig does for the service; so the module
    # has no timerConfig option of its own, like system.autoUpgrade.
    systemd.timers.cipug = {
      description = "Run cipug on schedule";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.dates;
        RandomizedDelaySec = cfg.randomizedDelaySec;
        FixedRandomDelay = cfg.fixedRandomDelay;
        Persistent = cfg.persistent;
      };
    };
  };
}
