# The flake check `module-eval`: evaluates services.cipug in real NixOS
# configurations and checks the cases of module-cases.nix. The pure cases are
# decided at evaluation time; the generated config files are compared with jq
# when the check builds (no import-from-derivation, so `nix flake check`
# evaluates this for every system).
{
  pkgs,
  module,
}:

let
  inherit (pkgs) lib;

  evalConfig =
    modules:
    (import (pkgs.path + "/nixos/lib/eval-config.nix") {
      system = null;
      inherit pkgs;
      modules = [
        module
        {
          # Just enough of a machine for its assertions to evaluate.
          boot.loader.grub.enable = false;
          fileSystems."/" = {
            device = "none";
            fsType = "tmpfs";
          };
          system.stateVersion = lib.trivial.release;
        }
      ]
      ++ modules;
    }).config;

  cases = import ./module-cases.nix { inherit lib pkgs evalConfig; };

  failures = lib.runTests cases.tests;
  # Derivations in a failure report are shown, not built.
  failureReport = builtins.unsafeDiscardStringContext (builtins.toJSON failures);

  compareJSON = lib.concatStrings (
    lib.mapAttrsToList (name: check: ''
      if ! diff -u <(jq -S . ${pkgs.writeText "cipug-${name}-expected.json" (builtins.toJSON check.expected)}) <(jq -S . ${check.file}); then
        echo "module-eval: generated config file '${name}' differs from what was expected" >&2
        failed=1
      fi
    '') cases.jsonFiles
  );
in
pkgs.runCommand "cipug-module-eval"
  {
    nativeBuildInputs = [ pkgs.jq ];
    inherit failureReport;
    caseCount = toString (lib.length (lib.attrNames cases.tests));
  }
  ''
    failed=0
    if [ "$failureReport" != "[]" ]; then
      echo "module-eval: failed cases (name, expected, result):" >&2
      jq . <<<"$failureReport" >&2
      failed=1
    fi
    ${compareJSON}
    if [ "$failed" != 0 ]; then
      exit 1
    fi
    echo "module-eval: $caseCount cases and ${toString (lib.length (lib.attrNames cases.jsonFiles))} config files as expected"
    touch "$out"
  ''
