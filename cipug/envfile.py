r"""Lossless parsing and in-place editing of compose `.env` files.

cipug rewrites users' server configuration, so an edit changes only the characters of the values it
sets; every other character (comments, blank lines, order, `export`, quotes, line endings, a missing
final newline, a byte-order mark, bytes that are not UTF-8) comes back unchanged. Text is handled as
`str` decoded with `errors="surrogateescape"`, so undecodable bytes survive as lone surrogates.

The syntax follows compose-go's dotenv parser (what docker compose accepts), with these decisions:

* Lines end at LF; CRLF is a LF with a CR before it, and a file may mix both. A UTF-8 byte-order
  mark at the start is skipped when parsing, as compose-go does, and kept in the text.
* Blank lines, and comments whose first non-blank character is `#`, are kept and ignored.
* An assignment is `[blanks][export<blanks>]KEY[blanks]=[blanks]VALUE`. Blanks around `=` are
  tolerated as compose-go does, and so is its YAML-like `KEY: VALUE`. Keys are
  `[A-Za-z_][A-Za-z0-9_.-]*`: compose-go also takes keys starting with a digit or holding `[`, `]`
  or non-ASCII letters; cipug refuses them.
* A line holding only `KEY` takes the value from the environment in compose. cipug does not read the
  environment, so such a line leaves the value from the file as it was (the last `KEY=...` above),
  and a key that only appears bare has no value: `value()` raises `EnvFileError`.
* Unquoted values run to the end of the line and lose trailing blanks. As in compose-go only a
  space followed by `#` starts a comment: in `a#b`, `a<TAB>#b` and `KEY= #x` the `#` is part of the
  value.
* Single-quoted values are literal and may span lines; as in compose-go, `\'` stands for a quote
  and every other backslash is kept.
* Double-quoted values may span lines and understand the escapes compose-go does: `\a \b \f \n
  \r \t \v \\ \" \$` and `\0` with three octal digits (a `\0` without them loses its `0`, as
  in compose-go); any other backslash is kept.
* After a closing quote only blanks and a `#` comment may follow on that line.
* A comment at the end of a pin's line that starts with `# cipug:` is cipug's own note (the pinned
  image's version): cipug rewrites it with the pin and puts it back with the pin. Any other
  comment on that line is the user's and is left alone, and then cipug writes no note.
* Unquoted and double-quoted values are interpolated: `$$` is `$`, `$NAME`, `${NAME}`,
  `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`, `${NAME:+other}` and
  `${NAME+other}`; a `$` followed by anything else is literal. Variables come only from assignments
  earlier in the same file, never from the process environment, so an unassigned variable is an
  error (compose would fall back to the environment, then to ""). Interpolation errors are raised
  only when the value that needs them is asked for, so they cannot break unrelated lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from .errors import CipugError, ExitCode

EXPECTED = "expected KEY=VALUE, export KEY=VALUE, a # comment or a blank line"

# Blanks as compose-go counts them; CR among them so that a CRLF line's CR trims away.
_BLANKS = " \t\v\f\r\x85\xa0"
_BOM = "\ufeff"
_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_.-]*"
_KEY = re.compile(_KEY_PATTERN)
# `export` followed by no valid key is itself the key, as in `export=1`.
_STATEMENT_KEY = re.compile(rf"(?:export[{_BLANKS}]+)?(?P<key>{_KEY_PATTERN})")
_QUOTES = "'\""
_SEPARATORS = "=:"
# Interpolation names are narrower than keys: `.` and `-` would end them.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>.*))?", re.DOTALL)
# `\0` takes up to three digits, whether or not they make an octal escape.
_DOUBLE_QUOTED_ESCAPE = re.compile(r"\\(0[0-9]{0,3}|.)", re.DOTALL)
_OCTAL_ESCAPE = re.compile(r"0[0-3][0-7]{2}")
# `\$` becomes `$$` so that interpolation, which runs afterwards, leaves a literal `$`.
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "$": "$$"}
_UNWRITABLE = frozenset(" '\"#$\\")


class EnvFileError(CipugError):
    """A .env file cannot be parsed, or a value in it cannot be interpolated."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.ENV_FILE_INVALID)


class Assignment(NamedTuple):
    r"""One `KEY=VALUE` (or bare `KEY`) statement and where it sits in the text.

    `raw_value` is the value after unquoting and escapes, before interpolation; in it an escaped
    `\$` of a double-quoted value reads `$$`, the interpolation syntax for a literal `$`.
    `lineno` is 1-based; `quote` is "", "'" or '"'; `has_value` is False for a bare `KEY` line;
    `value_start`/`value_end` are the text offsets of the value's characters, inside the quotes;
    `start` is the offset of the statement's first line, `end` the offset just past its last line
    ending (or the end of the text).
    """

    key: str
    raw_value: str
    lineno: int
    quote: str
    has_value: bool
    value_start: int
    value_end: int
    start: int
    end: int

    @property
    def interpolated(self) -> bool:
        return self.quote != "'"


# What starts cipug's note at the end of a pin's line; a space before it ends an unquoted value.
NOTE_MARK = "# cipug:"


class Previous(NamedTuple):
    """A key as it stood before cipug wrote it: assigned at all, with a value, the value's text as
    written, and what followed it on its line when that was cipug's (None: someone else's comment,
    or not known)."""

    assigned: bool
    has_value: bool
    text: str
    note: str | None = None

    def same_pin(self, other: Previous) -> bool:
        """Whether both say the same about the value, whatever the notes."""
        return self[:3] == other[:3]


class EnvFile:
    """A parsed .env file that can produce its edited text."""

    def __init__(self, text: str, path: Path, assignments: list[Assignment]) -> None:
        self.text = text
        self.path = path
        self.assignments = tuple(assignments)
        self._effective = _effective_indexes(self.assignments)
        self._values = _interpolate_all(self.assignments, path)

    @classmethod
    def parse(cls, text: str, path: Path) -> EnvFile:
        """Parse `text`, the content of `path`; raises EnvFileError naming the first bad line."""
        return cls(text, path, _Parser(text, path).assignments())

    def keys(self) -> list[str]:
        """The assigned keys, each once, in the order they first appear."""
        return list(self._effective)

    def get(self, key: str) -> Assignment | None:
        """The assignment that gives `key` its value: the last one with a value, else the last bare one."""
        index = self._effective.get(key)
        return None if index is None else self.assignments[index]

    def value(self, key: str) -> str:
        """The interpolated value of `key`; KeyError if it is not assigned, EnvFileError if it has none."""
        if key not in self._effective:
            raise KeyError(key)
        index = self._effective[key]
        assignment = self.assignments[index]
        if not assignment.has_value:
            raise EnvFileError(f"{self.path}:{assignment.lineno}: {key} has no value in the file; a bare {key} "
                               "line takes it from the environment, which cipug does not read")
        result = self._values[index]
        if isinstance(result, EnvFileError):
            raise EnvFileError(result.message)
        return result

    def updated(self, values: dict[str, str], insert_after: dict[str, str],
                notes: Mapping[str, str] | None = None) -> str:
        """The text with `values` set, changing nothing but the characters of those values.

        A key that is assigned gets its effective assignment's value replaced in place, keeping its
        quotes, `export` and comment; a bare `KEY` line becomes `KEY=value`. A key that is not
        assigned gets a new `KEY=value` line right after the statement of its anchor
        `insert_after[key]`, with that line's ending. A value that is already there changes
        nothing, so with nothing to change the text comes back as it was. Raises ValueError for a
        key that is not valid, a value that is not safe in every quoting style, or a missing anchor.

        `notes` gives keys (of `values` or assigned) cipug's note, `# cipug: TEXT` after the value;
        "" removes it. A line whose comment is someone else's keeps it and gets no note.
        """
        notes = notes or {}
        edits: list[tuple[int, int, str]] = []
        for key, value in values.items():
            _check_writable(key, value)
            target = self.get(key)
            if target is None:
                anchor = self._anchor(key, insert_after)
                edits.append((anchor.end, anchor.end, self._new_line(anchor, f"{key}={value}{_note(notes.get(key))}")))
            elif not target.has_value:
                edits.append((target.value_start, target.value_end, "=" + value))
            elif self.text[target.value_start:target.value_end] != value:
                edits.append((target.value_start, target.value_end, value))
        for key, text in notes.items():
            target = self.get(key)
            if target is None:
                if key not in values:
                    raise ValueError(f"cannot note {key}, which is not in the file")
                continue
            start, end = self._tail(target)
            tail = self.text[start:end]
            if _is_cipugs(tail) and (NOTE_MARK in tail or text):
                edits.append((start, end, _note(text)))
        return _apply(self.text, edits)

    def note(self, key: str) -> str | None:
        """What follows the value of `key` on its line when that is cipug's ("" for nothing but blanks);
        None for someone else's comment, or a key that is not assigned."""
        target = self.get(key)
        if target is None:
            return None
        start, end = self._tail(target)
        tail = self.text[start:end]
        return tail if _is_cipugs(tail) else None

    def _tail(self, assignment: Assignment) -> tuple[int, int]:
        """The span after `assignment`'s value (past its closing quote) to the end of its line, without the ending."""
        start = assignment.value_end + (1 if assignment.quote else 0)
        end = _line_end(self.text, start)
        return start, end - 1 if self.text.endswith("\r", start, end) else end

    def previous(self, key: str) -> Previous:
        """How `key` stands in the file now, for `reverted` to put back after it is written."""
        current = self.get(key)
        if current is None:
            return Previous(False, False, "")
        return Previous(True, current.has_value, self.text[current.value_start:current.value_end], self.note(key))

    def reverted(self, written: dict[str, str], previous: dict[str, Previous]) -> tuple[str, list[str]]:
        """The text with each key of `written` put back as `previous` says it was, where it still holds the
        value cipug wrote; and the keys that no longer do, left alone (someone edited them since).

        Everything else stays as it is now, so an edit made since cipug wrote the file survives. cipug's
        note goes back with the value, where the line still ends in one of cipug's.
        """
        edits: list[tuple[int, int, str]] = []
        edited_since = []
        for key, value in written.items():
            current = self.get(key)
            if current is None or self.text[current.value_start:current.value_end] != value:
                edited_since.append(key)
                continue
            before = previous[key]
            if not before.assigned:
                edits.append((self._line_start_with_ending(current), current.end, ""))
            elif not before.has_value:
                # `KEY=value` back to the bare `KEY` it was, and what followed it.
                start, end = self._tail(current)
                if before.note is not None and _is_cipugs(self.text[start:end]):
                    edits.append((current.value_start - 1, end, before.note))
                else:
                    edits.append((current.value_start - 1, current.value_end, ""))
            else:
                edits.append((current.value_start, current.value_end, before.text))
                tail = self._tail(current)
                if before.note is not None and _is_cipugs(self.text[tail[0]:tail[1]]):
                    edits.append((*tail, before.note))
        return _apply(self.text, edits), edited_since

    def _line_start_with_ending(self, assignment: Assignment) -> int:
        """Where the line cipug added for `assignment` starts, with the line ending it gave the line before
        when it added the line at the end of a file without a final newline."""
        if assignment.end < len(self.text) or self.text.endswith("\n"):
            return assignment.start
        ending = "\r\n" if self.text.endswith("\r\n", 0, assignment.start) else "\n"
        return assignment.start - len(ending) if self.text.endswith(ending, 0, assignment.start) else assignment.start

    def _anchor(self, key: str, insert_after: dict[str, str]) -> Assignment:
        if key not in insert_after:
            raise ValueError(f"cannot add {key}: no key to put it after was given")
        anchor = self.get(insert_after[key])
        if anchor is None:
            raise ValueError(f"cannot add {key} after {insert_after[key]}, which is not in the file")
        return anchor

    def _new_line(self, anchor: Assignment, line: str) -> str:
        """`line` with the line ending it needs to follow `anchor`'s statement."""
        if self.text.endswith("\n", 0, anchor.end):
            ending = "\r\n" if self.text.endswith("\r\n", 0, anchor.end) else "\n"
            return line + ending
        # The anchor is the last line and has no ending: give it one, and leave the new last line without.
        return _predominant_ending(self.text) + line


class _Parser:
    """Splits a text into statements, recording every assignment with its spans."""

    def __init__(self, text: str, path: Path) -> None:
        self.text = text
        self.path = path

    def assignments(self) -> list[Assignment]:
        text = self.text
        found = []
        position = len(_BOM) if text.startswith(_BOM) else 0
        lineno = 1
        while position < len(text):
            line_end = _line_end(text, position)
            start = _skip_blanks(text, position, line_end)
            if start == line_end or text[start] == "#":
                next_position = _next_line(text, line_end)
            else:
                assignment = self._assignment(position, start, line_end, lineno)
                found.append(assignment)
                next_position = assignment.end
            lineno += text.count("\n", position, next_position)
            position = next_position
        return found

    def _assignment(self, line_start: int, start: int, line_end: int, lineno: int) -> Assignment:
        text = self.text
        match = _STATEMENT_KEY.match(text, start, line_end)
        if not match:
            raise self._error(lineno, f"{text[start]!r} cannot start a variable name")
        key, key_end = match["key"], match.end()
        separator = _skip_blanks(text, key_end, line_end)
        if separator == line_end:
            return Assignment(key, "", lineno, "", False, key_end, key_end, line_start, _next_line(text, line_end))
        if text[separator] not in _SEPARATORS:
            raise self._error(lineno, f"unexpected {text[separator]!r} after the name {key}")
        value_start = _skip_blanks(text, separator + 1, line_end)
        if value_start < line_end and text[value_start] in _QUOTES:
            return self._quoted(key, line_start, value_start, lineno)
        return self._unquoted(key, line_start, separator, value_start, line_end, lineno)

    def _unquoted(self, key: str, line_start: int, separator: int, value_start: int, line_end: int,
                  lineno: int) -> Assignment:
        comment = self.text.find(" #", value_start, line_end)
        value = self.text[value_start:line_end if comment < 0 else comment].rstrip(_BLANKS)
        if not value:
            # An empty value is written right after the separator: past the blanks could be after a CR.
            value_start = separator + 1
        return Assignment(key, value, lineno, "", True, value_start, value_start + len(value), line_start,
                          _next_line(self.text, line_end))

    def _quoted(self, key: str, line_start: int, opening: int, lineno: int) -> Assignment:
        text = self.text
        quote = text[opening]
        closing = _closing_quote(text, opening + 1, quote)
        if closing < 0:
            raise self._error(lineno, f"the {quote}-quoted value of {key} is never closed")
        line_end = _line_end(text, closing)
        rest = _skip_blanks(text, closing + 1, line_end)
        if rest < line_end and text[rest] != "#":
            closing_lineno = lineno + text.count("\n", opening, closing)
            raise self._error(closing_lineno, f"unexpected {text[rest]!r} after the closing quote of {key}")
        body = text[opening + 1:closing]
        raw = body.replace("\\'", "'") if quote == "'" else _DOUBLE_QUOTED_ESCAPE.sub(_unescape, body)
        return Assignment(key, raw, lineno, quote, True, opening + 1, closing, line_start,
                          _next_line(text, line_end))

    def _error(self, lineno: int, what: str) -> EnvFileError:
        return EnvFileError(f"{self.path}:{lineno}: {what}; {EXPECTED}")


def _line_end(text: str, position: int) -> int:
    """The offset of the LF ending the line at `position`, or the end of the text."""
    end = text.find("\n", position)
    return len(text) if end < 0 else end


def _next_line(text: str, line_end: int) -> int:
    return min(line_end + 1, len(text))


def _skip_blanks(text: str, position: int, end: int) -> int:
    while position < end and text[position] in _BLANKS:
        position += 1
    return position


def _closing_quote(text: str, position: int, quote: str) -> int:
    """The offset of the quote closing a value that starts at `position`, or -1."""
    while position < len(text):
        char = text[position]
        if char == quote:
            return position
        # A backslash keeps the next character, a quote too, from closing the value.
        position += 2 if char == "\\" else 1
    return -1


def _unescape(match: re.Match[str]) -> str:
    """What one backslash sequence of a double-quoted value stands for."""
    sequence = match[1]
    if _OCTAL_ESCAPE.fullmatch(sequence):
        return chr(int(sequence, 8))
    if sequence[0] == "0":
        # compose-go drops the 0 of a sequence that is not an octal escape: "\08" reads \8.
        return "\\" + sequence[1:]
    return _ESCAPES.get(sequence, match[0])


def _effective_indexes(assignments: tuple[Assignment, ...]) -> dict[str, int]:
    """Per key in first-appearance order, the index of its last assignment with a value, else its last bare one."""
    effective: dict[str, int] = {}
    for index, assignment in enumerate(assignments):
        current = effective.get(assignment.key)
        if assignment.has_value or current is None or not assignments[current].has_value:
            effective[assignment.key] = index
    return effective


def _interpolate_all(assignments: tuple[Assignment, ...], path: Path) -> list[str | EnvFileError]:
    """Every assignment's interpolated value, or the error it ran into, from the assignments above it."""
    seen: dict[str, str | EnvFileError] = {}
    results: list[str | EnvFileError] = []
    for assignment in assignments:
        if not assignment.has_value:
            results.append("")
            continue
        try:
            result: str | EnvFileError = (_Interpolation(seen, path, assignment.lineno).substitute(
                assignment.raw_value) if assignment.interpolated else assignment.raw_value)
        except EnvFileError as error:
            result = error
        seen[assignment.key] = result
        results.append(result)
    return results


class _Interpolation:
    """Substitutes variables in one value from the values assigned above it."""

    def __init__(self, seen: dict[str, str | EnvFileError], path: Path, lineno: int) -> None:
        self.seen = seen
        self.where = f"{path}:{lineno}"

    def substitute(self, template: str) -> str:
        out = []
        position = 0
        while (dollar := template.find("$", position)) >= 0:
            out.append(template[position:dollar])
            replacement, position = self._at_dollar(template, dollar)
            out.append(replacement)
        out.append(template[position:])
        return "".join(out)

    def _at_dollar(self, template: str, dollar: int) -> tuple[str, int]:
        """What the `$` at `dollar` stands for, and where the text after it goes on."""
        following = template[dollar + 1:dollar + 2]
        if following == "$":
            return "$", dollar + 2
        if following == "{":
            closing = _closing_brace(template, dollar + 2)
            if closing < 0:
                raise self._error("a ${ is never closed by }")
            return self._braced(template[dollar + 2:closing]), closing + 1
        name = _NAME.match(template, dollar + 1)
        if name:
            return self._required(name[0]), name.end()
        return "$", dollar + 1

    def _braced(self, inside: str) -> str:
        match = _BRACED.fullmatch(inside)
        if not match:
            raise self._error("invalid ${...}; expected ${NAME}, ${NAME:-default}, ${NAME-default}, "
                              "${NAME:?error}, ${NAME?error}, ${NAME:+other} or ${NAME+other}")
        name, operator, argument = match["name"], match["operator"], match["argument"]
        if operator is None:
            return self._required(name)
        value = self._lookup(name)
        kind = operator[-1]
        # With a colon an empty value counts as missing, as in the shell.
        if value is None or (operator.startswith(":") and value == ""):
            if kind == "-":
                return self.substitute(argument)
            if kind == "+":
                return ""
            raise self._error(f"{name} is required: {self.substitute(argument)}")
        return self.substitute(argument) if kind == "+" else value

    def _required(self, name: str) -> str:
        value = self._lookup(name)
        if value is None:
            raise self._error(f"${name} is not assigned above this line (cipug takes variables only from "
                              "earlier lines of the file, not from the environment)")
        return value

    def _lookup(self, name: str) -> str | None:
        value = self.seen.get(name)
        if isinstance(value, EnvFileError):
            raise EnvFileError(value.message)
        return value

    def _error(self, what: str) -> EnvFileError:
        return EnvFileError(f"{self.where}: {what}")


def _closing_brace(template: str, position: int) -> int:
    """The offset of the `}` closing a `${` whose content starts at `position`, or -1."""
    depth = 1
    for index in range(position, len(template)):
        if template[index] == "{":
            depth += 1
        elif template[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _check_writable(key: str, value: str) -> None:
    """Refuse what would need quoting or escaping: the value must mean the same in every quoting style."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a valid variable name")
    for char in value:
        if char in _UNWRITABLE or not char.isprintable():
            raise ValueError(f"refusing to write {key}: its value holds {char!r}, which cipug does not write")


def _is_cipugs(tail: str) -> bool:
    """Whether what follows a value on its line is nothing but blanks, or cipug's note."""
    rest = tail.lstrip(_BLANKS)
    return not rest or (rest.startswith(NOTE_MARK) and tail[:1] in _BLANKS)


def _note(text: str | None) -> str:
    if not text:
        return ""
    if not text.isprintable():
        raise ValueError(f"refusing to write the note {text!r}: it holds characters that are not printable")
    return f" {NOTE_MARK} {text}"


def _predominant_ending(text: str) -> str:
    crlf = text.count("\r\n")
    return "\r\n" if crlf > text.count("\n") - crlf else "\n"


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """`text` with each (start, end, replacement) applied; insertions at one offset keep their order."""
    pieces = []
    done = 0
    for start, end, replacement in sorted(edits, key=lambda edit: edit[0]):
        pieces += [text[done:start], replacement]
        done = end
    pieces.append(text[done:])
    return "".join(pieces)
