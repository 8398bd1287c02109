"""Reading JSON text (the config file, the cache) on the timer's path.

The `json` package imports `re` and compiles patterns when it is imported, which costs more than
the timer's whole run on a warm cache. CPython's C scanner behind it, `_json`, reads the same
documents without either; the `json` package is imported only where the scanner is missing or the
text is not valid JSON, so results and error messages are json.loads' own.
"""

from __future__ import annotations

try:
    from _json import make_scanner
except ImportError:  # a Python without CPython's accelerator
    make_scanner = None

# json.loads' own whitespace, and its defaults for what the scanner hands back to Python.
_WHITESPACE = " \t\n\r"


class _Defaults:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


class InvalidJSON(ValueError):
    """Text that is not JSON; the message says what is wrong and where."""


def parse_json(text: str) -> object:
    """The value `text` holds, as json.loads gives it; InvalidJSON when it is not valid JSON."""
    if make_scanner is not None:
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = make_scanner(_Defaults)(text, start)
        # Whatever it raises on text that is not JSON (some CPython versions raise SystemError when
        # the json package is not imported yet), json.loads decides below and says why.
        except Exception:
            pass
        else:
            if end == len(text.rstrip(_WHITESPACE)):
                return value
    return _parse_with_json(text)


def _parse_with_json(text: str) -> object:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidJSON(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except ValueError as error:  # an integer with more digits than int() takes
        raise InvalidJSON(str(error)) from None
    except RecursionError:
        raise InvalidJSON("nested too deeply") from None
