# Evaluation tests of services.cipug, shared by the flake check `module-eval`
# (real NixOS, nix/tests/module-eval.nix) and tests/test_nix.py (stand-ins).
#
#   evalConfig: list of NixOS modules -> config, with the cipug module and its
#               package already in place
#   pkgs:       the package set that evaluation uses
#
# Returns `tests` (lib.runTests cases: { expr; expected; }) and `jsonFiles`
# ({ file; expected; }: a generated config file and the JSON it must hold;
# each runner reads the file its own way).
{
  lib,
  pkgs,
  evalConfig,
}:

let
  root = "/srv/services";

  # Enabled, with the one required setting, plus the case's own modules.
  cipug =
    modules:
    evalConfig (
      [
        {
          services.cipug.enable = true;
          services.cipug.settings.SERVICES_ROOT = lib.mkDefault root;
        }
      ]
      ++ modules
    );
  withSettings = settings: cipug [ { services.cipug.settings = settings; } ];
  withEnvironmentFile = file: cipug [ { services.cipug.environmentFile = file; } ];

  service = config: config.systemd.services.cipug;
  timer = config: config.systemd.timers.cipug;
  inPath = pkg: config: lib.elem pkg (service config).path;

  mentionsCipug = lib.hasInfix "services.cipug";
  failedAssertions =
    config:
    map (a: a.message) (lib.filter (a: !a.assertion && mentionsCipug a.message) config.assertions);
  cipugWarnings = config: lib.filter mentionsCipug config.warnings;
  anyMentions = text: lib.any (lib.hasInfix text);

  # True when evaluating the value fails (a type error or a throw).
  fails = value: !(builtins.tryEval (builtins.deepSeq value value)).success;
  settingsFail = settings: fails (withSettings settings).services.cipug.settings;
  environmentFileFails = file: fails (withEnvironmentFile file).services.cipug.environmentFile;

  # The `cipug` command for an admin's shell, and its script.
  command =
    config: lib.findFirst (pkg: lib.getName pkg == "cipug") null config.environment.systemPackages;
  # Without string context, which builtins.match (in lib.hasInfix) refuses.
  commandText = config: builtins.unsafeDiscardStringContext (command config).text;
  commandHas = text: lib.hasInfix (builtins.unsafeDiscardStringContext text);

  plain = cipug [ ];
  withSecrets = withEnvironmentFile "/run/secrets/cipug.env";
  podmanOn = cipug [ { virtualisation.podman.enable = true; } ];
  docker = cipug [
    {
      virtualisation.docker.enable = true;
      services.cipug.settings = {
        COMPOSE_TOOL = "docker compose";
        CONTAINER_TOOL = "docker";
        SERVICE_SNAPSHOT = false;
      };
    }
  ];
  disabled = evalConfig [ ];

  # node_exporter with its textfile collector reading `flags`' folder.
  nodeExporter =
    extra:
    cipug [
      {
        virtualisation.podman.enable = true;
        services.cipug.settings.SERVICE_SNAPSHOT = false;
        services.prometheus.exporters.node = {
          enable = true;
        }
        // extra;
      }
    ];
  metricsFile = config: config.services.cipug.settings.METRICS_FILE;
  # Notifications need a package built with buildPythonApplication, to add apprise to.
  notifying = cipug [
    {
      services.cipug.package = lib.mkForce (pkgs.callPackage ../package.nix { });
      services.cipug.notifications.enable = true;
      services.cipug.environmentFile = "/run/secrets/cipug.env";
    }
  ];
  notNotifying = cipug [ { services.cipug.package = lib.mkForce (pkgs.callPackage ../package.nix { }); } ];

  # The file every enabled configuration gets with no other setting: the
  # declared settings with cipug's defaults, nothing left as null.
  defaultJSON = {
    SERVICES_ROOT = root;
    SERVICES_FILTER = [ ];
    SERVICES_FILTER_EXCLUDE = [ ];
    COMPOSE_FILE_NAME = "";
    ENV_FILE_NAME = ".env";
    COMPOSE_TOOL = "podman-compose";
    CONTAINER_TOOL = "podman";
    SERVICE_STOP_START = true;
    STOP_START_METHOD = "compose";
    SERVICE_SNAPSHOT = true;
    SERVICE_PULL = true;
    PRUNE_IMAGES = true;
    AUTO_ROLLBACK = true;
    HEALTH_TIMEOUT = 60;
    VERBOSITY = 1;
    CACHE_DURATION = 3600;
    RESOLVER = "registry";
    NOTIFY_COMMAND = "";
  };

  customSettings = {
    VERBOSITY = 2;
    SERVICES_FILTER_EXCLUDE = [ "legacy" ];
    # Undeclared settings are passed on as they are.
    SNAPSHOTS_DIR_SNAPPER = ".snapshots";
    REGISTRY_TIMEOUT = 12.5;
    RESOLVE_WORKERS = 4;
  };
in
{
  jsonFiles = {
    default = {
      file = (service plain).environment.CIPUG_CONFIG_FILE;
      expected = defaultJSON;
    };
    custom = {
      file = (service (withSettings customSettings)).environment.CIPUG_CONFIG_FILE;
      expected = defaultJSON // customSettings;
    };
    # node_exporter's textfile collector: the metrics file is in its folder.
    metrics = {
      file =
        (service (nodeExporter {
          extraFlags = [ "--collector.textfile.directory=/run/textfile" ];
        })).environment.CIPUG_CONFIG_FILE;
      expected = defaultJSON // {
        SERVICE_SNAPSHOT = false;
        METRICS_FILE = "/run/textfile/cipug.prom";
      };
    };
  };

  tests = {
    # The service
    testServiceIsOneshot = {
      expr = (service plain).serviceConfig.Type;
      expected = "oneshot";
    };
    testExecStartRunsTheUpdate = {
      expr = (service plain).serviceConfig.ExecStart;
      expected = lib.getExe plain.services.cipug.package;
    };
    testConfigFileInEnvironment = {
      expr = lib.hasSuffix "-cipug.json" (toString (service plain).environment.CIPUG_CONFIG_FILE);
      expected = true;
    };
    testUnbufferedOutput = {
      expr = (service plain).environment.PYTHONUNBUFFERED;
      expected = "1";
    };
    testAfterNetworkOnline = {
      expr = lib.all (lib.flip lib.elem (service plain).after) [ "network-online.target" ];
      expected = true;
    };
    testWantsNetworkOnline = {
      expr = lib.elem "network-online.target" (service plain).wants;
      expected = true;
    };
    testNotRestartedBySwitch = {
      expr = {
        inherit (service plain) restartIfChanged;
        stopOnRemoval = (service plain).unitConfig.X-StopOnRemoval;
      };
      expected = {
        restartIfChanged = false;
        stopOnRemoval = false;
      };
    };
    testStateAndCacheDirectories = {
      expr = {
        inherit ((service plain).serviceConfig)
          StateDirectory
          StateDirectoryMode
          CacheDirectory
          CacheDirectoryMode
          ;
      };
      expected = {
        StateDirectory = "cipug";
        StateDirectoryMode = "0700";
        CacheDirectory = "cipug";
        CacheDirectoryMode = "0700";
      };
    };
    testNoEnvironmentFileByDefault = {
      expr = (service plain).serviceConfig ? EnvironmentFile;
      expected = false;
    };
    testEnvironmentFile = {
      expr = (service withSecrets).serviceConfig.EnvironmentFile;
      expected = "/run/secrets/cipug.env";
    };
    testEnvironmentFileNeverFromTheStore = {
      expr = environmentFileFails "${pkgs.jq}/cipug.env";
      expected = true;
    };
    testEnvironmentFileNotAPathValue = {
      # A path value would be copied into the store when used.
      expr = environmentFileFails ./cipug.env;
      expected = true;
    };
    testUnsetInvocationId = {
      # Or podman leaves conmon in the unit's cgroup, and systemd kills the
      # restarted containers when the run ends.
      expr = (service plain).serviceConfig.UnsetEnvironment;
      expected = "INVOCATION_ID";
    };
    testRequiresMountsForServicesRoot = {
      expr = (service plain).unitConfig.RequiresMountsFor;
      expected = [ root ];
    };
    testTimeoutStartDefault = {
      expr = (service plain).serviceConfig.TimeoutStartSec;
      expected = "4h";
    };
    testTimeoutStartOption = {
      expr =
        let
          config = cipug [ { services.cipug.timeoutStartSec = "90min"; } ];
        in
        (service config).serviceConfig.TimeoutStartSec;
      expected = "90min";
    };
    testDockerServiceOrdering = {
      expr = lib.elem "docker.service" (service docker).after;
      expected = true;
    };

    # The timer
    testTimerDefaults = {
      expr = {
        inherit (timer plain) wantedBy;
        inherit ((timer plain).timerConfig)
          OnCalendar
          RandomizedDelaySec
          FixedRandomDelay
          Persistent
          ;
      };
      expected = {
        wantedBy = [ "timers.target" ];
        OnCalendar = "daily";
        RandomizedDelaySec = "0";
        FixedRandomDelay = false;
        Persistent = true;
      };
    };
    testTimerOptions = {
      expr =
        (timer (cipug [
          {
            services.cipug = {
              dates = "Mon..Fri 04:00";
              randomizedDelaySec = "45min";
              fixedRandomDelay = true;
              persistent = false;
            };
          }
        ])).timerConfig;
      expected = {
        OnCalendar = "Mon..Fri 04:00";
        RandomizedDelaySec = "45min";
        FixedRandomDelay = true;
        Persistent = false;
      };
    };
    testTimerSeveralDates = {
      expr =
        (timer (cipug [
          {
            services.cipug.dates = [
              "04:00"
              "16:00"
            ];
          }
        ])).timerConfig.OnCalendar;
      expected = [
        "04:00"
        "16:00"
      ];
    };

    # PATH by settings
    testPathDefault = {
      expr = map (pkg: inPath pkg podmanOn) [
        pkgs.skopeo
        pkgs.snapper
        pkgs.podman-compose
        podmanOn.virtualisation.podman.package
      ];
      expected = [
        true
        true
        true
        true
      ];
    };
    testPathDocker = {
      expr = map (pkg: inPath pkg docker) [
        pkgs.skopeo
        docker.virtualisation.docker.package
        pkgs.snapper
        pkgs.podman-compose
        docker.virtualisation.podman.package
      ];
      expected = [
        true
        true
        false
        false
        false
      ];
    };
    testPathDockerCompose = {
      expr = inPath pkgs.docker-compose (withSettings {
        COMPOSE_TOOL = "docker-compose";
        CONTAINER_TOOL = "docker";
      });
      expected = true;
    };
    testPathAddsToTheDefaults = {
      expr =
        let
          config = cipug [ { services.cipug.path = [ pkgs.gzip ]; } ];
        in
        [
          (inPath pkgs.gzip config)
          (inPath pkgs.skopeo config)
        ];
      expected = [
        true
        true
      ];
    };
    testPathCanBeReplaced = {
      expr =
        let
          config = cipug [ { services.cipug.path = lib.mkForce [ pkgs.gzip ]; } ];
        in
        [
          (inPath pkgs.gzip config)
          (inPath pkgs.skopeo config)
        ];
      expected = [
        true
        false
      ];
    };

    # The `cipug` command for an admin's shell
    testCommandInstalled = {
      expr = command plain != null;
      expected = true;
    };
    testCommandRunsThePackage = {
      expr =
        let
          program = lib.getExe plain.services.cipug.package;
        in
        commandHas ''exec ${program} "$@"'' (commandText plain);
      expected = true;
    };
    testCommandHasTheUnitsEnvironment = {
      expr =
        let
          text = commandText plain;
          environment = (service plain).environment;
        in
        map (line: commandHas line text) [
          "CIPUG_CONFIG_FILE=${lib.escapeShellArg environment.CIPUG_CONFIG_FILE}"
          "PYTHONUNBUFFERED=1"
          "PATH=${lib.escapeShellArg environment.PATH}"
          "STATE_DIRECTORY=/var/lib/cipug"
          "CACHE_DIRECTORY=/var/cache/cipug"
          "unset INVOCATION_ID"
        ];
      expected = [
        true
        true
        true
        true
        true
        true
      ];
    };
    testCommandSourcesTheEnvironmentFile = {
      expr = {
        withFile = commandHas "source /run/secrets/cipug.env" (commandText withSecrets);
        withoutFile = commandHas "source" (commandText plain);
      };
      expected = {
        withFile = true;
        withoutFile = false;
      };
    };

    # Disabled: nothing at all
    testDisabledGeneratesNothing = {
      expr = {
        service = disabled.systemd.services ? cipug;
        timer = disabled.systemd.timers ? cipug;
        command = command disabled != null;
        assertions = failedAssertions disabled;
        warnings = cipugWarnings disabled;
      };
      expected = {
        service = false;
        timer = false;
        command = false;
        assertions = [ ];
        warnings = [ ];
      };
    };

    # Assertions and warnings
    testNoAssertionsWhenConfigured = {
      expr = failedAssertions podmanOn;
      expected = [ ];
    };
    testAssertServicesRoot = {
      expr = anyMentions "SERVICES_ROOT" (
        failedAssertions (withSettings { SERVICES_ROOT = null; })
      );
      expected = true;
    };
    testAssertUnknownSetting = {
      expr = anyMentions "SERVICE_ROOT" (
        failedAssertions (withSettings { SERVICE_ROOT = "/srv"; })
      );
      expected = true;
    };
    testAssertConfigFileSetting = {
      expr = anyMentions "CONFIG_FILE" (
        failedAssertions (withSettings { CONFIG_FILE = "/etc/x.json"; })
      );
      expected = true;
    };
    testValidSettingsEvaluate = {
      # The control for the failing cases below.
      expr = settingsFail {
        STOP_START_METHOD = "systemd-system";
        VERBOSITY = 3;
        SERVICE_SNAPSHOT = false;
      };
      expected = false;
    };
    testBadStopStartMethod = {
      expr = settingsFail { STOP_START_METHOD = "restart"; };
      expected = true;
    };
    testBadVerbosity = {
      expr = settingsFail { VERBOSITY = 4; };
      expected = true;
    };
    testBadBoolean = {
      expr = settingsFail { SERVICE_SNAPSHOT = "no"; };
      expected = true;
    };
    testRelativeServicesRoot = {
      expr = settingsFail { SERVICES_ROOT = "srv/services"; };
      expected = true;
    };
    testServicesRootInTheStore = {
      expr = settingsFail { SERVICES_ROOT = "${pkgs.jq}/services"; };
      expected = true;
    };
    testWarnWithoutSnapperConfigs = {
      expr = anyMentions "services.snapper.configs" (cipugWarnings podmanOn);
      expected = true;
    };
    testWarnSnapperConfigsElsewhere = {
      expr = anyMentions "no snapper config" (
        cipugWarnings (cipug [
          {
            virtualisation.podman.enable = true;
            services.snapper.configs.home.SUBVOLUME = "/home";
          }
        ])
      );
      expected = true;
    };
    testNoWarningWithSnapperConfig = {
      expr = cipugWarnings (cipug [
        {
          virtualisation.podman.enable = true;
          services.snapper.configs.web.SUBVOLUME = "${root}/web";
        }
      ]);
      expected = [ ];
    };
    testNoSnapperWarningWithoutSnapshots = {
      expr = cipugWarnings (cipug [
        {
          virtualisation.podman.enable = true;
          services.cipug.settings.SERVICE_SNAPSHOT = false;
        }
      ]);
      expected = [ ];
    };
    testWarnPodmanNotEnabled = {
      expr = anyMentions "virtualisation.podman.enable" (cipugWarnings plain);
      expected = true;
    };
    testWarnDockerNotEnabled = {
      expr = anyMentions "virtualisation.docker.enable" (
        cipugWarnings (withSettings {
          COMPOSE_TOOL = "docker compose";
          CONTAINER_TOOL = "docker";
          SERVICE_SNAPSHOT = false;
        })
      );
      expected = true;
    };
    testWarnDockerComposeWithPodmanContainerTool = {
      expr = anyMentions "CONTAINER_TOOL = \"docker\"" (
        cipugWarnings (withSettings {
          COMPOSE_TOOL = "docker compose";
        })
      );
      expected = true;
    };
    testWarnSystemdUserMethod = {
      expr = anyMentions "systemd-user" (
        cipugWarnings (cipug [
          {
            virtualisation.podman.enable = true;
            services.cipug.settings = {
              STOP_START_METHOD = "systemd-user";
              SERVICE_SNAPSHOT = false;
            };
          }
        ])
      );
      expected = true;
    };
    testNoWarningsForDocker = {
      expr = cipugWarnings docker;
      expected = [ ];
    };

    # Notifications and metrics
    testNotificationsAddApprise = {
      # The package the service and the `cipug` command run is another one.
      expr = {
        service = (service notifying).serviceConfig.ExecStart != (service notNotifying).serviceConfig.ExecStart;
        final = notifying.services.cipug.finalPackage != notNotifying.services.cipug.finalPackage;
        command = commandHas (lib.getExe notifying.services.cipug.finalPackage) (commandText notifying);
      };
      expected = {
        service = true;
        final = true;
        command = true;
      };
    };
    testNoApprisePackageByDefault = {
      expr = plain.services.cipug.finalPackage == plain.services.cipug.package;
      expected = true;
    };
    testNoWarningsWhenNotifying = {
      expr = cipugWarnings (cipug [
        {
          services.cipug.package = lib.mkForce (pkgs.callPackage ../package.nix { });
          services.cipug.notifications.enable = true;
          services.cipug.environmentFile = "/run/secrets/cipug.env";
          virtualisation.podman.enable = true;
          services.cipug.settings.SERVICE_SNAPSHOT = false;
        }
      ]);
      expected = [ ];
    };
    testWarnNotificationsWithoutEnvironmentFile = {
      expr = anyMentions "CIPUG_NOTIFY_URLS" (
        cipugWarnings (cipug [
          {
            services.cipug.package = lib.mkForce (pkgs.callPackage ../package.nix { });
            services.cipug.notifications.enable = true;
          }
        ])
      );
      expected = true;
    };
    testAssertNotifyUrlsNotInTheStore = {
      expr = anyMentions "CIPUG_NOTIFY_URLS" (
        failedAssertions (withSettings { NOTIFY_URLS = [ "ntfys://token@ntfy.example/cipug" ]; })
      );
      expected = true;
    };
    testNotifyCommandIsASetting = {
      expr = (withSettings { NOTIFY_COMMAND = "/etc/cipug/notify.sh"; }).services.cipug.settings.NOTIFY_COMMAND;
      expected = "/etc/cipug/notify.sh";
    };
    testNoMetricsFileByDefault = {
      expr = metricsFile plain;
      expected = null;
    };
    testMetricsFileInTheTextfileDirectory = {
      expr = {
        equals = metricsFile (nodeExporter {
          extraFlags = [ "--collector.textfile.directory=/var/lib/node-exporter/textfile/" ];
        });
        twoItems = metricsFile (nodeExporter {
          extraFlags = [
            "--collector.textfile.directory"
            "/run/textfile"
          ];
        });
        enabledCollector = metricsFile (nodeExporter {
          enabledCollectors = [ "textfile" ];
          extraFlags = [ "--collector.textfile.directory /run/prom" ];
        });
      };
      expected = {
        equals = "/var/lib/node-exporter/textfile/cipug.prom";
        twoItems = "/run/textfile/cipug.prom";
        enabledCollector = "/run/prom/cipug.prom";
      };
    };
    testNoMetricsFileWhenTheTextfileCollectorIsOff = {
      expr = {
        disabled = metricsFile (nodeExporter {
          disabledCollectors = [ "textfile" ];
          extraFlags = [ "--collector.textfile.directory=/run/textfile" ];
        });
        exporterOff = metricsFile (cipug [
          {
            services.prometheus.exporters.node = {
              enable = false;
              extraFlags = [ "--collector.textfile.directory=/run/textfile" ];
            };
          }
        ]);
      };
      expected = {
        disabled = null;
        exporterOff = null;
      };
    };
    testMetricsFileOverride = {
      expr = metricsFile (cipug [
        {
          services.prometheus.exporters.node = {
            enable = true;
            extraFlags = [ "--collector.textfile.directory=/run/textfile" ];
          };
          services.cipug.settings.METRICS_FILE = "/srv/metrics/cipug.prom";
        }
      ]);
      expected = "/srv/metrics/cipug.prom";
    };
    testWarnNodeExporterWithoutTextfileDirectory = {
      expr = anyMentions "--collector.textfile.directory" (cipugWarnings (nodeExporter { }));
      expected = true;
    };
    testNoWarningsWithTheTextfileCollector = {
      expr = cipugWarnings (nodeExporter {
        extraFlags = [ "--collector.textfile.directory=/run/textfile" ];
      });
      expected = [ ];
    };
  };
}
