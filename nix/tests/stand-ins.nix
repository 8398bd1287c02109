# Small stand-ins for the parts of NixOS and nixpkgs that nix/module.nix and
# flake.nix touch, so both can be evaluated with nixpkgs' `lib` alone
# (tests/test_nix.py). The flake's checks use the real NixOS instead.
{
  lib,
  system ? "x86_64-linux",
  # Applied to the stand-in package set as nixpkgs applies overlays.
  overlays ? [ ],
}:

let
  inherit (lib) mkOption types;

  # Something that passes for a derivation: types.package, lib.getExe and
  # lib.getName accept it, and it interpolates to a store path.
  fakeDerivation =
    pname: attrs:
    {
      type = "derivation";
      inherit pname system;
      version = "1.0";
      name = "${pname}-1.0";
      outPath =
        let
          hash = builtins.substring 0 32 (builtins.hashString "sha256" "${system}-${pname}");
        in
        "${builtins.storeDir}/${hash}-${pname}-1.0";
      meta.mainProgram = pname;
    }
    // attrs;

  jsonValue =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        (types.attrsOf jsonValue)
        (types.listOf jsonValue)
      ]
    )
    // {
      description = "JSON value";
    };

  pythonPackages = {
    buildPythonApplication =
      args:
      fakeDerivation args.pname {
        inherit (args) version meta;
        name = "${args.pname}-${args.version}";
        # Another package for other dependencies, as a real build would be.
        outPath =
          let
            hash = builtins.substring 0 32 (
              builtins.hashString "sha256" "${system}-${args.pname}-${
                toString (map lib.getName (args.dependencies or [ ]))
              }"
            );
          in
          "${builtins.storeDir}/${hash}-${args.pname}-${args.version}";
        # What package.nix asked for, for the tests to look at.
        buildArgs = args;
        overridePythonAttrs = f: pythonPackages.buildPythonApplication (args // f args);
      };
  }
  // lib.genAttrs [
    "setuptools"
    "typer"
    "pytest"
    "pytestCheckHook"
    "pytest-subprocess"
    "apprise"
  ] (name: fakeDerivation name { });

  basePkgs =
    final:
    lib.genAttrs [
      "skopeo"
      "snapper"
      "podman"
      "podman-compose"
      "docker"
      "docker-compose"
      "jq"
      "gzip"
      "nix"
      "nixfmt-tree"
      "busybox"
      "btrfs-progs"
    ] (name: fakeDerivation name { })
    // {
      inherit lib;
      stdenv.hostPlatform.system = system;
      path = "${builtins.storeDir}/00000000000000000000000000000000-nixpkgs";
      python3Packages = pythonPackages;
      python3 = fakeDerivation "python3" {
        withPackages = select: fakeDerivation "python3-env" { packages = select pythonPackages; };
      };
      callPackage =
        fn: args:
        let
          f = if builtins.isFunction fn then fn else import fn;
        in
        f (builtins.intersectAttrs (builtins.functionArgs f) final // args);
      formats.json =
        { }:
        {
          type = jsonValue;
          # The real one runs jq in a derivation; a file written at evaluation
          # time has the same contents (needs --read-write-mode).
          generate = name: value: builtins.toFile name (builtins.toJSON value);
        };
      writeShellScriptBin = name: text: fakeDerivation name { inherit text; };
      writeText = name: text: builtins.toFile name text;
      runCommand = name: env: script: fakeDerivation name { inherit env script; };
      mkShell = args: fakeDerivation "shell" { inherit args; };
      testers.runNixOSTest = test: fakeDerivation "vm-test-run-${test.name}" { inherit test; };
    };

  pkgs = lib.fix (lib.extends (lib.composeManyExtensions overlays) basePkgs);

  # systemd.services.<name> as nixos/lib/systemd-lib.nix completes it: the
  # unit's PATH from `path` (without the defaults NixOS adds to every unit).
  serviceType = types.submodule (
    { config, ... }:
    {
      freeformType = types.attrsOf types.anything;
      options = {
        path = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        environment = mkOption {
          type = types.attrsOf (
            types.nullOr (
              types.oneOf [
                types.str
                types.path
                types.package
              ]
            )
          );
          default = { };
        };
      };
      config.environment.PATH = lib.mkIf (config.path != [ ]) (
        lib.concatStringsSep ":" [
          (lib.makeBinPath config.path)
          (lib.makeSearchPathOutput "bin" "sbin" config.path)
        ]
      );
    }
  );

  # The NixOS options nix/module.nix reads or defines, declared explicitly (a
  # freeform top level would make `config = mkIf cfg.enable …` recurse).
  nixosModule =
    { ... }:
    {
      options = {
        assertions = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        warnings = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        environment.systemPackages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        systemd = {
          services = mkOption {
            type = types.attrsOf serviceType;
            default = { };
          };
          timers = mkOption {
            type = types.attrsOf (types.attrsOf types.anything);
            default = { };
          };
        };
        services.snapper.configs = mkOption {
          type = types.attrsOf (types.attrsOf types.anything);
          default = { };
        };
        # nixos/modules/services/monitoring/prometheus/exporters/node.nix
        services.prometheus.exporters.node = {
          enable = mkOption {
            type = types.bool;
            default = false;
          };
          enabledCollectors = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
          disabledCollectors = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
          extraFlags = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        };
        virtualisation = {
          podman = {
            enable = mkOption {
              type = types.bool;
              default = false;
            };
            package = mkOption {
              type = types.package;
              default = pkgs.podman;
            };
          };
          docker = {
            enable = mkOption {
              type = types.bool;
              default = false;
            };
            package = mkOption {
              type = types.package;
              default = pkgs.docker;
            };
          };
        };
      };
      config._module.args.pkgs = pkgs;
    };
in
{
  inherit pkgs nixosModule fakeDerivation;
}
