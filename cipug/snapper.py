"""snapper: which config covers a service folder, and taking snapshots."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from . import errors
from .commands import run_checked
from .errors import CipugError


def parse_configs(stdout: str) -> dict[str, str]:
    """Map subvolume path → config name from `snapper --jsonout list-configs`."""
    try:
        configs = json.loads(stdout)["configs"]
        return {os.path.realpath(entry["subvolume"]): entry["config"] for entry in configs}
    except (ValueError, KeyError, TypeError):
        raise CipugError("snapper list-configs printed output cipug cannot read", errors.SNAPSHOT_FAILED) from None


class Snapper:
    def __init__(self, snapper: Sequence[str]) -> None:
        self.snapper = list(snapper)
        self._configs: dict[str, str] | None = None

    def config_for(self, folder: str) -> str:
        """The snapper config whose subvolume is `folder`; listed once per run."""
        if self._configs is None:
            stdout = run_checked([*self.snapper, "--jsonout", "list-configs"], errors.SNAPSHOT_FAILED,
                                 "listing snapper configs failed")
            self._configs = parse_configs(stdout)
        try:
            return self._configs[os.path.realpath(folder)]
        except KeyError:
            raise CipugError(
                f"no snapper config has {folder} as its subvolume; create one with "
                f"`snapper -c NAME create-config {folder}` or set SERVICE_SNAPSHOT=false",
                errors.SNAPSHOT_FAILED,
            ) from None

    def create(self, config: str, description: str) -> int:
        """Take a snapshot; its number. `number` cleanup lets snapper expire old pre-update snapshots."""
        stdout = run_checked(
            [*self.snapper, "-c", config, "create", "--cleanup-algorithm", "number",
             "--description", description, "--print-number"],
            errors.SNAPSHOT_FAILED, f"snapper snapshot with config {config} failed",
        )
        try:
            return int(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise CipugError(f"snapper create printed no snapshot number: {stdout.strip()!r}",
                             errors.SNAPSHOT_FAILED) from None

    def undo_change(self, config: str, number: int) -> None:
        """Make the folder as it was in snapshot `number` (files changed since are put back)."""
        run_checked([*self.snapper, "-c", config, "undochange", f"{number}..0"], errors.SNAPSHOT_FAILED,
                    f"snapper undochange {number}..0 with config {config} failed")
