{
  description = "cipug: pins container images of compose services to digests, snapshots and updates them";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        cipug = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.cipug;
      });

      # `nix run github:OWNER/cipug` is the update run; `nix run github:OWNER/cipug -- check`
      # (or any other subcommand) runs the CLI. Tools come from your PATH.
      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.cipug;
          meta.description = "cipug: without arguments the update run; `-- check`, `-- history` and the other subcommands after `--`";
        };
      });

      overlays.default = import ./nix/overlay.nix;

      nixosModules = {
        cipug =
          { lib, pkgs, ... }:
          {
            _class = "nixos";
            imports = [ ./nix/module.nix ];
            # The module's default is `pkgs.cipug`, from overlays.default. This
            # module does not add the overlay itself: nixpkgs.overlays is
            # read-only where pkgs is shared (nixosModules.readOnlyPkgs,
            # runNixOSTest). Without it, cipug is built with the machine's
            # nixpkgs all the same, so its overlays, `follows` and platform
            # apply.
            services.cipug.package = lib.mkDefault (pkgs.cipug or (pkgs.callPackage ./nix/package.nix { }));
          };
        default = self.nixosModules.cipug;
      };

      checks = forAllSystems (pkgs: {
        # The package build runs the unit tests.
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.cipug;
        module-eval = import ./nix/tests/module-eval.nix {
          inherit pkgs;
          module = self.nixosModules.default;
        };
        vm = import ./nix/tests/vm.nix {
          inherit pkgs;
          module = self.nixosModules.default;
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (ps: [
              ps.setuptools
              ps.typer
              ps.pytest
              ps.pytest-subprocess
            ]))
            pkgs.skopeo
            pkgs.snapper
            pkgs.podman-compose
            pkgs.nix
            pkgs.nixfmt-tree
          ];
          # tests/test_nix.py evaluates the module against this nixpkgs' lib.
          NIXPKGS_LIB = "${nixpkgs}/lib";
          shellHook = ''
            export PYTHONPATH="$PWD''${PYTHONPATH:+:$PYTHONPATH}"
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
