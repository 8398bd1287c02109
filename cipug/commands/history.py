"""`cipug history`: every change cipug made, oldest first."""

from __future__ import annotations

import json

from ..errors import ExitCode
from ..files import history
from ..log import Log
from ..report import history_line
from ..settings import Settings


def run_history(settings: Settings, log: Log, service: str | None = None, *, json_output: bool = False) -> ExitCode:
    records = [record for record in history.read(settings.history_file, log)
               if service is None or record.service == service]
    if json_output:
        print(json.dumps([record._asdict() for record in records], indent=2))
    elif records:
        print("\n".join(history_line(record) for record in records))
    else:
        log.info(f"no history{f' for {service}' if service else ''} in {settings.history_file}")
    return ExitCode.OK
