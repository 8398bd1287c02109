# Adds `pkgs.cipug`, built with the nixpkgs it is applied to: the flake's
# `overlays.default`, and for a configuration without flakes
#   nixpkgs.overlays = [ (import /path/to/cipug/nix/overlay.nix) ];
# The NixOS module's `services.cipug.package` defaults to it.
final: _prev: {
  cipug = final.callPackage ./package.nix { };
}
