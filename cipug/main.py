"""Entry point. Without arguments (what the timer runs) cipug updates every service using the
standard library only; subcommands come from the optional Typer CLI (`cipug[cli]`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from . import __version__
from .commands.config import run_config
from .commands.snapshots import check_snapshots
from .commands.update import run_update
from .errors import ExitCode, Interrupted, exit_code_of
from .log import Log
from .services import select_services
from .settings import load_settings

SUBCOMMANDS = ("update", "check", "check-snapshots", "config", "history", "rollback", "hold", "release", "adopt")
LEGACY_MODES = ("update", "check_snapshots", "print_config", "print_config_json")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, as for any other bad input; --help shows the usage.
        self.exit(ExitCode.USAGE, f"cipug: error: {message} (see cipug --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cipug",
        description="Pin the container images of compose services to digests, snapshot and update them. "
                    "Configured by CIPUG_* environment variables and CIPUG_CONFIG_FILE.",
        epilog="Subcommands (" + ", ".join(SUBCOMMANDS) + ") need the cli extra: pip install 'cipug[cli]'.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help="update every service (the default)")
    mode.add_argument("--check-snapshots", action="store_true",
                      help="check that every service has recent snapshots; exit 40 when not")
    mode.add_argument("--print-config", action="store_true", help="print the effective settings as KEY=value lines")
    mode.add_argument("--print-config-json", action="store_true", help="print the effective settings as JSON")
    parser.add_argument("--version", action="version", version=f"cipug {__version__}")
    return parser


def _typer_importable() -> bool:
    # Importing rather than importlib.util.find_spec: find_spec raises when an import hook blocks
    # typer, and finds a typer that then fails to import (a dependency missing).
    try:
        import typer  # noqa: F401
    except ImportError:
        return False
    return True


def _run_cli(argv: list[str]) -> int:
    if not _typer_importable():
        print(f"cipug: `cipug {argv[0]}` needs the command-line extra: pip install 'cipug[cli]' "
              "(without it: cipug --update, --check-snapshots, --print-config, --print-config-json)",
              file=sys.stderr)
        return ExitCode.USAGE
    # Typer is loaded only for a subcommand: the timer's run never needs it.
    from .cli import run_cli

    return run_cli(argv)


def run_legacy(mode: str) -> ExitCode:
    """Run one of LEGACY_MODES."""
    settings = load_settings()
    log = Log(settings.verbosity)
    if mode in ("print_config", "print_config_json"):
        return run_config(settings, json_output=mode == "print_config_json")
    if mode == "check_snapshots":
        return check_snapshots(settings, select_services(settings, log), log, time.time())
    return run_update(settings, log)


def _interrupt(signal_number: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signal_number).name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # systemd stops the service with SIGTERM: turn it into an exception, so a service half-way
    # through its update is put back before cipug exits.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if argv and (argv[0] in SUBCOMMANDS or (argv[0] in ("-h", "--help") and _typer_importable())):
        return _run_cli(argv)
    mode = "update"
    if argv:
        arguments = _parser().parse_args(argv)
        mode = next((name for name in LEGACY_MODES[1:] if getattr(arguments, name)), "update")
    return exit_code_of(lambda: run_legacy(mode))
