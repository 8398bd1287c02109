# Evaluates nix/module.nix and flake.nix with nixpkgs' `lib` and the stand-ins,
# for tests/test_nix.py:
#   nix-instantiate --eval --strict --json --read-write-mode -E \
#     '(import ./nix/tests/stand-in-eval.nix { lib = import <lib>; }).…'
# (--read-write-mode: the stand-in JSON generator writes its file to the store).
{ lib }:

let
  standIns = import ./stand-ins.nix { inherit lib; };
  inherit (standIns) pkgs;

  evaluate =
    modules:
    lib.evalModules {
      modules = [
        ../module.nix
        standIns.nixosModule
        { services.cipug.package = standIns.fakeDerivation "cipug" { }; }
      ]
      ++ modules;
    };
  evalConfig = modules: (evaluate modules).config;

  cases = import ./module-cases.nix { inherit lib pkgs evalConfig; };

  # The `cipug` command a configuration installs, if any.
  commandOf =
    config: lib.findFirst (pkg: lib.getName pkg == "cipug") null config.environment.systemPackages;

  # What a configuration produced, as plain data.
  probe =
    modules:
    let
      config = evalConfig modules;
      service = config.systemd.services.cipug or null;
      command = commandOf config;
      attempt = builtins.tryEval (builtins.deepSeq config.services.cipug.settings true);
    in
    if !attempt.success then
      { settingsValid = false; }
    else
      {
        settingsValid = true;
        hasService = service != null;
        hasTimer = config.systemd.timers ? cipug;
        service =
          if service == null then
            null
          else
            {
              inherit (service)
                after
                wants
                restartIfChanged
                unitConfig
                serviceConfig
                ;
              environment = lib.mapAttrs (_: toString) service.environment;
              path = map lib.getName service.path;
            };
        timer = config.systemd.timers.cipug or null;
        systemPackages = map lib.getName config.environment.systemPackages;
        # The script of the `cipug` command, and the program it runs.
        command =
          if command == null then
            null
          else
            {
              inherit (command) text;
              program = lib.getExe config.services.cipug.package;
            };
        assertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
        warnings = config.warnings;
        # What the package the service runs was built with (stand-in packages only).
        finalPackageDependencies = map lib.getName (
          config.services.cipug.finalPackage.buildArgs.dependencies or [ ]
        );
        metricsFile = config.services.cipug.settings.METRICS_FILE;
      };

  # The typed options declared under services.cipug.settings.
  declaredSettings =
    let
      options = (evaluate [ ]).options.services.cipug.settings.type.getSubOptions [ ];
    in
    lib.mapAttrs (
      _: option:
      {
        type = option.type.description;
        hasDefault = option ? default;
      }
      // lib.optionalAttrs (option ? default) { inherit (option) default; }
    ) (lib.filterAttrs (name: _: !lib.hasPrefix "_" name) options);

  # services.cipug.package of nix/module.nix on its own: pkgs.cipug, from the
  # flake's overlay.
  packageOption =
    let
      enabled = overlays: {
        imports = [
          ../module.nix
          (import ./stand-ins.nix { inherit lib overlays; }).nixosModule
        ];
        services.cipug.enable = true;
        services.cipug.settings.SERVICES_ROOT = "/srv/services";
      };
      withOverlay = lib.evalModules { modules = [ (enabled [ flake.overlays.default ]) ]; };
      withoutOverlay = lib.evalModules { modules = [ (enabled [ ]) ]; };
      package = withOverlay.config.services.cipug.package;
      missing = builtins.tryEval withoutOverlay.config.services.cipug.package;
    in
    {
      defaultText = withOverlay.options.services.cipug.package.defaultText.text;
      withOverlay = {
        inherit (package) pname;
        isPkgsCipug = package == withOverlay._module.args.pkgs.cipug;
      };
      missingWithoutOverlay = !missing.success;
    };

  # flake.nix's outputs with a stand-in nixpkgs input.
  flake =
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      nixpkgs = {
        inherit lib;
        outPath = "${builtins.storeDir}/00000000000000000000000000000000-nixpkgs";
        legacyPackages = lib.genAttrs systems (
          system: (import ./stand-ins.nix { inherit lib system; }).pkgs
        );
      };
      self = (import ../../flake.nix).outputs { inherit self nixpkgs; } // {
        outPath = ../..;
      };
    in
    self;

  flakeSummary =
    let
      perSystem = lib.mapAttrs (
        system: _:
        let
          # The flake's module wrapper, evaluated on this system with the
          # machine's nixpkgs and its overlays.
          wrapped =
            overlays:
            lib.evalModules {
              modules = [
                flake.nixosModules.default
                (import ./stand-ins.nix { inherit lib system overlays; }).nixosModule
              ];
            };
          # The machine's own overlays: one for a dependency of cipug, one on
          # top of the flake's overlay for cipug itself.
          hostTyper = _final: prev: {
            python3Packages = prev.python3Packages // {
              typer = prev.python3Packages.typer // {
                pname = "typer-of-the-host";
              };
            };
          };
          hostCipug = _final: prev: {
            cipug = prev.cipug // {
              marker = "cipug of the host";
            };
          };
          modulePackage = overlays: (wrapped overlays).config.services.cipug.package;
          app = flake.apps.${system}.default;
        in
        {
          packages = lib.attrNames flake.packages.${system};
          apps = lib.attrNames flake.apps.${system};
          app = {
            inherit (app) type program;
            description = app.meta.description or null;
          };
          checks = lib.attrNames flake.checks.${system};
          devShells = lib.attrNames flake.devShells.${system};
          formatter = flake.formatter.${system}.pname;
          package =
            let
              args = flake.packages.${system}.cipug.buildArgs;
            in
            {
              inherit (args)
                pname
                version
                pyproject
                disabledTestPaths
                pythonImportsCheck
                ;
              build-system = map lib.getName args.build-system;
              dependencies = map lib.getName args.dependencies;
              nativeCheckInputs = map lib.getName args.nativeCheckInputs;
              inherit (args.meta) description mainProgram;
              license = args.meta.license.spdxId;
            };
          defaultIsCipug = flake.packages.${system}.default == flake.packages.${system}.cipug;
          moduleSetsPackageFor = (modulePackage [ ]).system;
          moduleBuildsWithHostDependencies =
            let
              package = modulePackage [ hostTyper ];
            in
            map lib.getName package.buildArgs.dependencies;
          moduleTakesHostsCipug =
            let
              package = modulePackage [
                flake.overlays.default
                hostCipug
              ];
            in
            package.marker or null;
          shellPackages = map lib.getName flake.devShells.${system}.default.args.packages;
        }
      ) flake.packages;
    in
    {
      systems = lib.attrNames flake.packages;
      inherit perSystem;
      nixosModules = lib.attrNames flake.nixosModules;
      overlays = lib.attrNames flake.overlays;
      overlayPackage = (flake.overlays.default pkgs pkgs).cipug.pname;
      # The package's filtered source, copied to the store. lib.fileset needs
      # builtins.readFileType (Nix 2.14); null on older Nix.
      source =
        if builtins ? readFileType then
          toString flake.packages.x86_64-linux.cipug.buildArgs.src
        else
          null;
    };
in
{
  inherit
    evalConfig
    cases
    probe
    declaredSettings
    packageOption
    flake
    flakeSummary
    ;

  # Each case of module-cases.nix with its result.
  caseResults = lib.mapAttrs (_: case: {
    ok = case.expr == case.expected;
    inherit (case) expr expected;
  }) cases.tests;

  jsonFiles = lib.mapAttrs (_: check: {
    file = toString check.file;
    inherit (check) expected;
  }) cases.jsonFiles;
}
