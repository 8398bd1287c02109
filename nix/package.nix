# cipug with its CLI (typer). The unit tests run in the build; the integration
# tests (tests/integration: root, a registry, btrfs, podman) and the system
# tests (tests/system: a VM) are left to ./tests/run and to the NixOS VM test
# (nix/tests/vm.nix).
#
# Runtime tools (skopeo, snapper, podman-compose, ...) are not wrapped in: the
# NixOS module puts them on the service's PATH, and `nix run` uses yours.
{
  lib,
  python3Packages,
}:

let
  root = ../.;
  # The version pyproject.toml takes from cipug/__init__.py.
  version = lib.head (
    builtins.match ".*__version__ = \"([^\"]+)\".*" (builtins.readFile ../cipug/__init__.py)
  );
in
python3Packages.buildPythonApplication {
  pname = "cipug";
  inherit version;
  pyproject = true;

  # Only what the build and the unit tests read (README.md is the package's
  # long description), so editing the Nix files or CI does not rebuild the
  # package; and only these files are copied to the store, also when this
  # file is used without the flake.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../cipug
      ../tests
      ../LICENSE
      ../README.md
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = [ python3Packages.typer ];

  nativeCheckInputs = [
    python3Packages.pytestCheckHook
    python3Packages.pytest-subprocess
  ];

  # Integration tests need root and real services, system tests a VM, and
  # tests/test_nix.py needs Nix itself, which the build sandbox lacks. The
  # other tests import their helpers from the package tests/support, found
  # through pytest's `pythonpath` in pyproject.toml.
  disabledTestPaths = [
    "tests/integration"
    "tests/system"
    "tests/test_nix.py"
  ];

  preCheck = ''
    export HOME="$(mktemp -d)"
  '';

  pythonImportsCheck = [
    "cipug"
    "cipug.main"
  ];

  meta = {
    description = "Pins container images of compose services to digests, snapshots and updates them";
    longDescription = ''
      cipug resolves the SERVICE_*_IMAGE_TAGGED entries in each compose
      service's .env to digests with skopeo, takes a snapper snapshot of the
      service folder, writes the SERVICE_*_IMAGE_HASHED entries, pulls and
      restarts the services whose images changed.
    '';
    license = lib.licenses.mit;
    mainProgram = "cipug";
    platforms = lib.platforms.linux;
  };
}
