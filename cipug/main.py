"""Entry point. With no arguments (what the timer runs) only the standard library is used;
subcommands come from the optional Typer CLI (`cipug[cli]`)."""

from __future__ import annotations

import sys
import time

try:
    # The C module behind `signal`: the same handlers without its enum wrappers, whose import
    # (enum, functools, collections) costs more than the timer's whole run on a warm cache.
    import _signal as signal
except ImportError:  # a Python without CPython's module layout
    import signal

from . import __version__, errors
from .config import load_config
from .errors import CipugError, Interrupted
from .log import Log

SUBCOMMANDS = ("update", "check", "check-snapshots", "config", "history", "rollback")
_SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


def _parser():  # -> argparse.ArgumentParser, imported only when flags are given
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:
            # One line, as for any other bad input; --help shows the usage.
            self.exit(errors.USAGE, f"cipug: error: {message} (see cipug --help)\n")

    parser = Parser(
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
        return errors.USAGE
    from .cli import run_cli

    return run_cli(argv)


def run_legacy(mode: str) -> int:
    """Run one of the flag modes: "update", "check_snapshots", "print_config" or "print_config_json"."""
    config = load_config()
    log = Log(config.verbosity)
    if mode == "print_config":
        print("\n".join(config.as_lines()))
        return errors.OK
    if mode == "print_config_json":
        import json

        print(json.dumps(config.as_json(), indent=2))
        return errors.OK
    from .update import run_update, select_services

    if mode == "check_snapshots":
        from .snapcheck import check_snapshots

        return check_snapshots(config, select_services(config, log), log, time.time())
    return run_update(config, log)


def _interrupt(signal_number: int, frame: object) -> None:
    raise Interrupted(_SIGNAL_NAMES[signal_number])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # systemd stops the service with SIGTERM: turn it into an exception, so a service half-way
    # through its update is put back before cipug exits.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if argv and (argv[0] in SUBCOMMANDS or (argv[0] in ("-h", "--help") and _typer_importable())):
        return _run_cli(argv)
    # The timer runs cipug without arguments: that path skips argparse, which costs more start-up
    # time than a run over dozens of services on a warm cache.
    mode = "update"
    if argv:
        arguments = _parser().parse_args(argv)
        mode = next((name for name in ("check_snapshots", "print_config", "print_config_json")
                     if getattr(arguments, name)), "update")
    try:
        return run_legacy(mode)
    except CipugError as error:
        Log().error(error.message)
        return error.code
