"""snapper: which config covers a service folder, and taking snapshots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import CipugError, ExitCode
from .process import Runner


def parse_configs(stdout: str) -> dict[Path, str]:
    """Map subvolume path → config name from `snapper --jsonout list-configs`."""
    try:
        configs = json.loads(stdout)["configs"]
        return {Path(entry["subvolume"]).resolve(): entry["config"] for entry in configs}
    except (ValueError, KeyError, TypeError):
        raise CipugError("snapper list-configs printed output cipug cannot read", ExitCode.SNAPSHOT_FAILED) from None


class Snapper:
    def __init__(self, snapper: Sequence[str], runner: Runner) -> None:
        self.snapper = list(snapper)
        self.runner = runner
        self._configs: dict[Path, str] | None = None

    def config_for(self, folder: Path) -> str:
        """The snapper config whose subvolume is `folder`; listed once per run."""
        if self._configs is None:
            stdout = self.runner.output([*self.snapper, "--jsonout", "list-configs"], ExitCode.SNAPSHOT_FAILED,
                                 "listing snapper configs failed")
            self._configs = parse_configs(stdout)
        try:
            return self._configs[folder.resolve()]
        except KeyError:
            raise CipugError(
                f"no snapper config has {folder} as its subvolume; create one with "
                f"`snapper -c NAME create-config {folder}` or set SERVICE_SNAPSHOT=false",
                ExitCode.SNAPSHOT_FAILED,
            ) from None

    def snapshot_numbers(self, config: str) -> set[int]:
        """The numbers of the config's snapshots, without 0 (snapper's name for the live folder)."""
        stdout = self.runner.output([*self.snapper, "--jsonout", "-c", config, "list"], ExitCode.SNAPSHOT_FAILED,
                                    f"listing the snapshots of snapper config {config} failed")
        try:
            return {int(entry["number"]) for entry in json.loads(stdout)[config]} - {0}
        except (ValueError, KeyError, TypeError):
            raise CipugError(f"snapper list of config {config} printed output cipug cannot read",
                             ExitCode.SNAPSHOT_FAILED) from None

    def create(self, config: str, description: str) -> int:
        """Take a snapshot; its number. `number` cleanup lets snapper expire old pre-update snapshots."""
        stdout = self.runner.output(
            [*self.snapper, "-c", config, "create", "--cleanup-algorithm", "number",
             "--description", description, "--print-number"],
            ExitCode.SNAPSHOT_FAILED, f"snapper snapshot with config {config} failed",
        )
        try:
            return int(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise CipugError(f"snapper create printed no snapshot number: {stdout.strip()!r}",
                             ExitCode.SNAPSHOT_FAILED) from None

    def describe(self, config: str, number: int, description: str) -> None:
        """Give snapshot `number` another description."""
        self.runner.output([*self.snapper, "-c", config, "modify", "--description", description, str(number)],
                           ExitCode.SNAPSHOT_FAILED, f"snapper modify of snapshot {number} with config {config} failed")

    def undo_change(self, config: str, number: int) -> None:
        """Make the folder as it was in snapshot `number` (files changed since are put back)."""
        self.runner.output([*self.snapper, "-c", config, "undochange", f"{number}..0"], ExitCode.SNAPSHOT_FAILED,
                    f"snapper undochange {number}..0 with config {config} failed")
