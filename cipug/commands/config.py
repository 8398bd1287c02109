"""`cipug config` (and `--print-config`, `--print-config-json`): the effective settings."""

from __future__ import annotations

import json

from ..errors import ExitCode
from ..settings import Settings


def run_config(settings: Settings, *, json_output: bool = False) -> ExitCode:
    print(json.dumps(settings.as_json(), indent=2) if json_output else "\n".join(settings.as_lines()))
    return ExitCode.OK
