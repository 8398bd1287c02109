"""Image versions on the real stack: an update says, and history keeps, which version ran before and after."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.support import realstack
from tests.support.realstack import deploy, explain

pytestmark = pytest.mark.integration


def push_versioned(containers, reference: str, version: str, workdir: Path) -> str:
    """An image labelled with an OCI version, pushed as `reference`; its digest."""
    rootfs, local = workdir / f"{version}.tar", f"localhost/versions/{secrets.token_hex(4)}:{version}"
    realstack._write_rootfs(rootfs, containers.busybox, f"{reference} {version} {secrets.token_hex(8)}\n")
    containers.podman("import", "--change", "CMD " + json.dumps(list(realstack.SLEEP_COMMAND)),
                      "--change", f"LABEL org.opencontainers.image.version={version}", rootfs, local)
    digest_file = workdir / f"{version}.digest"
    realstack.run([*containers.skopeo, "copy", "--digestfile", digest_file, f"containers-storage:{local}",
                   f"docker://{reference}"], env=containers.env)
    containers.podman("rmi", local)
    return digest_file.read_text().strip()


def test_an_update_names_the_versions_and_history_keeps_them(containers, services, cipug, tag, workdir):
    deployed = deploy(containers, services, "versioned", {"web": tag("web")})
    push_versioned(containers, deployed.tags["web"], "29.0.4", workdir)

    result = cipug.run()

    assert result.returncode == 0, explain(result)
    [record] = [json.loads(line) for line in Path(cipug.settings["HISTORY_FILE"]).read_text().splitlines()]
    assert record["new_version"] == "29.0.4"
    # The image it ran before has no label: its build time stands for its version.
    assert record["old_version"].startswith("built ")
    assert f"{record['old_version']} → 29.0.4" in result.stdout
