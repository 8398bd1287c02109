"""Which compose services use which image, read from the compose file without a YAML library.

The timer's run must not need PyYAML, and cipug only needs one thing from the file: each
service's `image:` line. `scan` is a careful line scanner for the block style nearly every
compose file is written in (`services:` at the top, one key per service, `image:` one level
further in). Whatever it cannot read with certainty (flow style, anchors and aliases, `extends`,
several documents, tabs, block scalars, an `image:` that is not a plain scalar) makes it refuse
with the reason and the line, so callers fall back to what is safe instead of guessing.
`cipug adopt` uses the same scan to know which lines it may rewrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .files.atomic import read_text

# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}`, `$NAME`: compose's interpolation.
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
# A mapping key at the start of a line's content: `name:` followed by a space, a comment or the end.
_KEY = re.compile(r"""(?P<key>[A-Za-z0-9_.\-]+|"[^"]*"|'[^']*')[ ]*:(?=[ ]|$)""")


class Unsure(Exception):
    """The compose file holds something the scanner cannot read with certainty; `line` is 1-based (0: none)."""

    def __init__(self, reason: str, line: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


@dataclass(frozen=True)
class ImageLine:
    """A compose service's `image:` line: the value as written (quotes removed) and where it stands.

    `start` and `end` are offsets of the value, quotes included, within the line's text (which
    keeps its line ending), so the value can be replaced without touching another byte.
    """

    service: str
    line: int
    value: str
    start: int
    end: int
    quote: str = ""

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables the value interpolates, in order."""
        return tuple(first or second for first, second in _VARIABLE.findall(self.value))


@dataclass(frozen=True)
class ComposeFile:
    """The file's lines (each with its ending) and its services' image lines, by service."""

    lines: tuple[str, ...]
    images: dict[str, ImageLine]
    # Services without an `image:` (built from a Dockerfile), in file order.
    without_image: tuple[str, ...]

    def services_using(self, variables: set[str]) -> tuple[str, ...]:
        """The compose services whose image interpolates any of `variables`, in file order."""
        return tuple(name for name, image in self.images.items() if variables & set(image.variables))


def _content(line: str) -> str:
    """The line without its ending and without a trailing comment (a `#` after a space)."""
    text = line.rstrip("\r\n")
    match = re.search(r"(^|[ ])#", text)
    return text[:match.start()].rstrip() if match else text.rstrip()


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _scalar(line: str, number: int, offset: int) -> tuple[str, int, int, str]:
    """The plain or quoted scalar starting at `offset` of `line`: value, start, end, quote character."""
    text = line.rstrip("\r\n")
    rest = text[offset:]
    value_start = offset + len(rest) - len(rest.lstrip(" "))
    rest = rest.strip(" ")
    if not rest or rest.startswith("#"):
        raise Unsure("`image:` has no value on its line", number)
    first = rest[0]
    if first in "'\"":
        close = rest.find(first, 1)
        if close < 0 or (first == '"' and "\\" in rest[:close]) or (first == "'" and rest[close:close + 2] == "''"):
            raise Unsure("`image:` holds a quoted value cipug does not read (escapes or a line break)", number)
        after = rest[close + 1:].strip(" ")
        if after and not after.startswith("#"):
            raise Unsure("`image:` has text after its quoted value", number)
        return rest[1:close], value_start, value_start + close + 1, first
    if first in "&*!|>{[@`%":
        raise Unsure(f"`image:` starts with {first!r} (an anchor, alias, tag, block or flow value)", number)
    value = _content(rest)
    if ": " in value or value.endswith(":"):
        raise Unsure("`image:` holds a value with `: ` in it", number)
    return value, value_start, value_start + len(value), ""


def parse(text: str) -> ComposeFile:
    """Scan compose file text; raises Unsure with the reason and line for anything not read with certainty."""
    lines = tuple(text.splitlines(keepends=True))
    images: dict[str, ImageLine] = {}
    without_image: list[str] = []
    in_services = False
    services_indent: int | None = None  # the indent of the service names
    service: str | None = None
    key_indent: int | None = None  # the indent of a service's keys
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        content = _content(line)
        if "\t" in line[:len(line) - len(line.lstrip(" \t"))]:
            raise Unsure("a tab in the indentation", number)
        if not content.strip():
            continue
        if content.startswith(("---", "...")) and (len(content) == 3 or content[3] == " "):
            if any(_content(earlier).strip() for earlier in lines[:number - 1]):
                raise Unsure("several YAML documents in one file", number)
            continue
        if content.startswith("%"):
            raise Unsure("a YAML directive", number)
        indent = _indent(content)
        stripped = content.strip()
        if indent == 0:
            if in_services and service is not None and service not in images:
                without_image.append(service)
            key = _KEY.match(stripped)
            if key is None:
                raise Unsure("a top-level line that is not `key:`", number)
            in_services = key.group("key").strip("'\"") == "services"
            service, services_indent = None, None
            if in_services:
                rest = stripped[key.end():].strip()
                if rest:
                    raise Unsure("`services:` is not followed by an indented block (flow style, anchor or alias)",
                                 number)
            continue
        if not in_services:
            continue
        if services_indent is None:
            services_indent = indent
        if indent < services_indent:
            raise Unsure("indentation cipug cannot follow", number)
        if indent == services_indent:
            if service is not None and service not in images:
                without_image.append(service)
            key = _KEY.match(stripped)
            if key is None or stripped.startswith("- "):
                raise Unsure("a line under `services:` that is not `name:`", number)
            service = key.group("key").strip("'\"")
            if service in seen:
                raise Unsure(f"service {service} is defined twice", number)
            seen.add(service)
            rest = stripped[key.end():].strip()
            if rest:
                raise Unsure(f"service {service} is not an indented block (flow style, anchor or alias)", number)
            key_indent = None
            continue
        if service is None:
            raise Unsure("indentation cipug cannot follow", number)
        if key_indent is None:
            key_indent = indent
        if indent < key_indent:
            raise Unsure("indentation cipug cannot follow", number)
        if indent > key_indent:
            continue  # inside one of the service's keys: ports, environment, …
        key = _KEY.match(stripped)
        if key is None:
            if stripped.startswith("<<"):
                raise Unsure(f"service {service} merges a mapping (`<<:`)", number)
            raise Unsure(f"a line of service {service} that is not `key:`", number)
        name = key.group("key").strip("'\"")
        if name == "<<":
            raise Unsure(f"service {service} merges a mapping (`<<:`)", number)
        if name == "extends":
            raise Unsure(f"service {service} uses `extends`, so its image may come from another file", number)
        if name == "image":
            if service in images:
                raise Unsure(f"service {service} has two `image:` keys", number)
            value, start, end, quote = _scalar(line, number, indent + key.end())
            images[service] = ImageLine(service, number, value, start, end, quote)
    if in_services and service is not None and service not in images:
        without_image.append(service)
    return ComposeFile(lines, images, tuple(without_image))


def read(path: Path) -> ComposeFile:
    """`parse` of the file; raises Unsure (also when it cannot be read)."""
    try:
        text = read_text(path)
    except OSError as error:
        raise Unsure(f"{path} cannot be read: {error.strerror}") from None
    return parse(text)


def services_to_recreate(path: Path, variables: set[str]) -> tuple[str, ...]:
    """The compose services of the file at `path` whose image uses any of `variables`.

    Raises Unsure when the file cannot be read with certainty, or when no service uses them
    (the images may be named in another way cipug does not see, so restarting only some is not safe).
    """
    found = read(path).services_using(variables)
    if not found:
        raise Unsure(f"no service's `image:` uses {', '.join(sorted(variables))}")
    return found
