"""cipug.envfile: .env files parsed as compose does, and edits that change nothing but the values set."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cipug.envfile import EXPECTED, EnvFile, EnvFileError
from cipug.errors import CipugError, ExitCode

PATH = Path("/srv/web/.env")
REF = "docker.io/library/nginx@sha256:" + "a" * 64
FAILS = None  # as an expected value: value() raises EnvFileError


def parse(text: str) -> EnvFile:
    return EnvFile.parse(text, PATH)


def decoded(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@dataclass
class Case:
    text: str
    values: dict[str, str | None]  # every key, in first-appearance order, with its interpolated value
    update: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    result: str = ""  # the text after updated(update, after)


CASES = {
    "comments and blank lines": Case(
        "# top\n\n   # indented\nA=1\n\t \nB=2 # inline\n#C=3\n",
        {"A": "1", "B": "2"},
        {"B": "3"}, {},
        "# top\n\n   # indented\nA=1\n\t \nB=3 # inline\n#C=3\n"),
    "export": Case(
        "export A=1\n  export\tB='x'\nexportC=3\nexport=4\nexport  D = 5\n",
        {"A": "1", "B": "x", "exportC": "3", "export": "4", "D": "5"},
        {"A": "9", "B": "y", "export": "8", "D": "7"}, {},
        "export A=9\n  export\tB='y'\nexportC=3\nexport=8\nexport  D = 7\n"),
    "blanks around the separator and a YAML-like colon": Case(
        "A = 1\nB= 2 \n\tC =3\nD: x=y\nE:\n",
        {"A": "1", "B": "2", "C": "3", "D": "x=y", "E": ""},
        {"A": "a", "B": "b", "D": "d", "E": "e"}, {},
        "A = a\nB= b \n\tC =3\nD: d\nE:e\n"),
    "keys with dots and dashes": Case(
        "a.b-c_D=1\n_x=2\n", {"a.b-c_D": "1", "_x": "2"}, {"a.b-c_D": "3"}, {}, "a.b-c_D=3\n_x=2\n"),
    "unquoted values and what starts a comment": Case(
        "A=a#b\nB=a #b\nC=a\t#b\nD= #b\nE=\nF=   \nG=x y  z   \nH=it's\nI=say \"hi\"\n",
        {"A": "a#b", "B": "a", "C": "a\t#b", "D": "#b", "E": "", "F": "", "G": "x y  z", "H": "it's",
         "I": 'say "hi"'},
        {"B": "n", "C": "n", "D": "n", "E": "n", "F": "n", "G": "n"}, {},
        "A=a#b\nB=n #b\nC=n\nD= n\nE=n\nF=n   \nG=n   \nH=it's\nI=say \"hi\"\n"),
    "single-quoted values are literal": Case(
        "A='a b # c'\nB='$A \\n ${A}'\nC='it\\'s'\nD='x\\\\'\nE=''\nF='\"'\n",
        {"A": "a b # c", "B": "$A \\n ${A}", "C": "it's", "D": "x\\\\", "E": "", "F": '"'},
        {"A": "n", "C": "n", "E": "n"}, {},
        "A='n'\nB='$A \\n ${A}'\nC='n'\nD='x\\\\'\nE='n'\nF='\"'\n"),
    "double-quoted escapes": Case(
        'A="a\\tb\\nc\\rd"\nB="q\\"q"\nC="\\$A $$ \\\\"\nD="\\0101\\q\\x\\0\\0777\\01"\nE="\\a\\b\\f\\v"\n'
        "F=\"it's #1\"\n",
        {"A": "a\tb\nc\rd", "B": 'q"q', "C": "$A $ \\", "D": "A\\q\\x\\\\777\\1", "E": "\a\b\f\v",
         "F": "it's #1"},
        {"B": "n", "F": "n"}, {},
        'A="a\\tb\\nc\\rd"\nB="n"\nC="\\$A $$ \\\\"\nD="\\0101\\q\\x\\0\\0777\\01"\nE="\\a\\b\\f\\v"\nF="n"\n'),
    "comments after a closing quote": Case(
        "A=\"x\" # c\nB='y'#c\nC=\"z\"   \n",
        {"A": "x", "B": "y", "C": "z"},
        {"A": "1", "B": "2", "C": "3"}, {},
        "A=\"1\" # c\nB='2'#c\nC=\"3\"   \n"),
    "interpolation from earlier lines": Case(
        "A=1\nB=${A}2\nC=$A.$B\nD=${NOPE:-dflt}\nE=${NOPE-x}${A:+set}${NOPE+no}\nF=\"${A}${E}\"\nG='${A}'\n"
        "H=$$A\nI=$1 and $ and $-\nJ=${NOPE:-${A}x}\nK=a$A-b\n",
        {"A": "1", "B": "12", "C": "1.12", "D": "dflt", "E": "xset", "F": "1xset", "G": "${A}", "H": "$A",
         "I": "$1 and $ and $-", "J": "1x", "K": "a1-b"}),
    "defaults with an empty value": Case(
        "E=\nA=${E:-d}\nB=${E-d}\nC=${E:+x}\nD=${E+x}\nF=${E?set}${E:?}\n",
        {"E": "", "A": "d", "B": "", "C": "", "D": "x", "F": FAILS}),
    "CRLF line endings": Case(
        "A=1\r\nB='x'\r\n# c\r\nC=\"y\" # c\r\nD=\r\nE\r\n",
        {"A": "1", "B": "x", "C": "y", "D": "", "E": FAILS},
        {"A": "2", "B": "3", "C": "4", "D": "5", "E": "6", "F": REF}, {"F": "B"},
        "A=2\r\nB='3'\r\nF=" + REF + "\r\n# c\r\nC=\"4\" # c\r\nD=5\r\nE=6\r\n"),
    "mixed line endings": Case(
        "A=1\r\nB=2\nC=3\r\nD=4",
        {"A": "1", "B": "2", "C": "3", "D": "4"},
        {"B": "b", "C": "c", "X": "x", "Y": "y"}, {"X": "A", "Y": "B"},
        "A=1\r\nX=x\r\nB=b\nY=y\nC=c\r\nD=4"),
    "no trailing newline": Case(
        "A=1\nB=2", {"A": "1", "B": "2"}, {"B": "new"}, {}, "A=1\nB=new"),
    "duplicate keys: the last wins and only it changes": Case(
        "A=1\nB=${A}\nA=2 # second\nC=${A}\n",
        {"A": "2", "B": "1", "C": "2"},
        {"A": "3"}, {},
        "A=1\nB=${A}\nA=3 # second\nC=${A}\n"),
    "a bare key leaves the file's value, and gets one when set": Case(
        "A=1\nA\nB\nexport C\n",
        {"A": "1", "B": FAILS, "C": FAILS},
        {"A": "2", "B": "3", "C": "4"}, {},
        "A=2\nA\nB=3\nexport C=4\n"),
    "multi-line quoted values": Case(
        "A='line1\nline2'\nB=\"x\n# not a comment\ny\" # c\nC=3\n",
        {"A": "line1\nline2", "B": "x\n# not a comment\ny", "C": "3"},
        {"A_HASHED": REF, "B_HASHED": REF}, {"A_HASHED": "A", "B_HASHED": "B"},
        f"A='line1\nline2'\nA_HASHED={REF}\nB=\"x\n# not a comment\ny\" # c\nB_HASHED={REF}\nC=3\n"),
    "HASHED added after a TAGGED that is the last line without newline": Case(
        "# web\r\nOTHER=1\r\nSERVICE_WEB_IMAGE_TAGGED=nginx:latest",
        {"OTHER": "1", "SERVICE_WEB_IMAGE_TAGGED": "nginx:latest"},
        {"SERVICE_WEB_IMAGE_HASHED": REF}, {"SERVICE_WEB_IMAGE_HASHED": "SERVICE_WEB_IMAGE_TAGGED"},
        f"# web\r\nOTHER=1\r\nSERVICE_WEB_IMAGE_TAGGED=nginx:latest\r\nSERVICE_WEB_IMAGE_HASHED={REF}"),
    "HASHED added after a multi-line last value without newline, LF by default": Case(
        'T="a\nb"  # c', {"T": "a\nb"}, {"H": REF, "I": "i"}, {"H": "T", "I": "T"}, f'T="a\nb"  # c\nH={REF}\nI=i'),
    "HASHED added after a one-line file without newline": Case(
        "T=x:1", {"T": "x:1"}, {"H": REF}, {"H": "T"}, f"T=x:1\nH={REF}"),
    "HASHED added after the effective one of duplicate TAGGED": Case(
        "T=a:1\nX=1\nT=a:2\nY=2\n", {"T": "a:2", "X": "1", "Y": "2"}, {"H": REF}, {"H": "T"},
        f"T=a:1\nX=1\nT=a:2\nH={REF}\nY=2\n"),
    "HASHED updated inside double quotes": Case(
        'T=nginx\nexport H="docker.io/library/nginx@sha256:old" # pinned\n',
        {"T": "nginx", "H": "docker.io/library/nginx@sha256:old"},
        {"H": REF}, {"H": "T"},
        f'T=nginx\nexport H="{REF}" # pinned\n'),
    "HASHED updated inside single quotes": Case(
        "H = 'old'\r\n", {"H": "old"}, {"H": REF}, {}, f"H = '{REF}'\r\n"),
    "HASHED updated before an inline comment": Case(
        "H=old   # pinned by cipug\nZ=1\n", {"H": "old", "Z": "1"}, {"H": REF}, {}, f"H={REF}   # pinned by cipug\nZ=1\n"),
    "setting values that are already there changes nothing": Case(
        "A=1 # c\nB='2'\n", {"A": "1", "B": "2"}, {"A": "1", "B": "2"}, {}, "A=1 # c\nB='2'\n"),
    "bytes that are not UTF-8 are kept": Case(
        decoded(b"# caf\xe9 \xff\nA=\xff\xfe\nB='\xc3'\nC=caf\xc3\xa9\n"),
        {"A": "\udcff\udcfe", "B": "\udcc3", "C": "caf\u00e9"},
        {"B": "b", "C": "c"}, {},
        decoded(b"# caf\xe9 \xff\nA=\xff\xfe\nB='b'\nC=c\n")),
    "a byte-order mark is kept and not part of the first key": Case(
        "\ufeffA=1\nB=2\n", {"A": "1", "B": "2"}, {"A": "3", "C": "4"}, {"C": "A"}, "\ufeffA=3\nC=4\nB=2\n"),
    "a byte-order mark before a comment": Case(
        "\ufeff# c\nA=1", {"A": "1"}),
    "an unknown variable in an unrelated line does not matter": Case(
        "A=${NOPE}\nB=$ALSO_NOPE\nT=x:1\n", {"A": FAILS, "B": FAILS, "T": "x:1"},
        {"H": REF}, {"H": "T"}, f"A=${{NOPE}}\nB=$ALSO_NOPE\nT=x:1\nH={REF}\n"),
    "empty file": Case("", {}),
    "only blanks and comments, CRLF": Case("\r\n  \r\n# x\r\n", {}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_values(case: Case) -> None:
    env = parse(case.text)
    assert env.keys() == list(case.values)
    for key, expected in case.values.items():
        if expected is FAILS:
            with pytest.raises(EnvFileError):
                env.value(key)
        else:
            assert env.value(key) == expected


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_round_trip(case: Case) -> None:
    assert parse(case.text).updated({}, {}) == case.text


@pytest.mark.parametrize("case", [case for case in CASES.values() if case.update],
                         ids=[name for name, case in CASES.items() if case.update])
def test_update(case: Case) -> None:
    result = parse(case.text).updated(case.update, case.after)
    assert result == case.result
    again = parse(result)
    for key, value in case.update.items():
        assert again.value(key) == value


def test_raw_value_is_before_interpolation_and_lineno_counts_multi_line_values() -> None:
    env = parse('\n# c\nA="x\\$y $A"\nB=\'one\ntwo\'\r\n\nC=3\nC=4\n')
    assert (env.get("A").raw_value, env.get("A").lineno) == ("x$$y $A", 3)
    assert (env.get("B").raw_value, env.get("B").lineno) == ("one\ntwo", 4)
    assert env.get("C").lineno == 8
    assert env.get("missing") is None


def test_value_of_a_missing_key_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        parse("A=1\n").value("B")


BAD_LINES = [
    ("this is not valid", 1, "unexpected 'i' after the name this"),
    ("A=1\n=value", 2, "'=' cannot start a variable name"),
    ("1KEY=x", 1, "'1' cannot start a variable name"),
    ("A=1\n\n-A=1", 3, "'-' cannot start a variable name"),
    ('"A"=1', 1, "'\"' cannot start a variable name"),
    ("MY KEY=1", 1, "unexpected 'K' after the name MY"),
    ("A#=1", 1, "unexpected '#' after the name A"),
    ("A=1\nB=\"open\n\nC=2\n", 2, "the \"-quoted value of B is never closed"),
    ("B='open", 1, "the '-quoted value of B is never closed"),
    ("B='open\\'", 1, "the '-quoted value of B is never closed"),
    ('B="open\\"', 1, "the \"-quoted value of B is never closed"),
    ("A='x' y", 1, "unexpected 'y' after the closing quote of A"),
    ('A="x"B=1', 1, "unexpected 'B' after the closing quote of A"),
    ('A=1\r\nB="x\r\ny" z\r\n', 3, "unexpected 'z' after the closing quote of B"),
    ("\ufeff\ufeffA=1", 1, "'\\ufeff' cannot start a variable name"),
]


@pytest.mark.parametrize(("text", "lineno", "what"), BAD_LINES)
def test_invalid_lines_name_file_line_problem_and_what_is_accepted(text: str, lineno: int, what: str) -> None:
    with pytest.raises(EnvFileError) as caught:
        parse(text)
    assert isinstance(caught.value, CipugError)
    assert caught.value.code == ExitCode.ENV_FILE_INVALID == 26
    assert caught.value.message == f"{PATH}:{lineno}: {what}; {EXPECTED}"
    assert EXPECTED == "expected KEY=VALUE, export KEY=VALUE, a # comment or a blank line"


INTERPOLATION_ERRORS = [
    ("A=${NOPE}", "A", "/srv/web/.env:1: $NOPE is not assigned above this line"),
    ("A=1\nB=x$NOPE", "B", "/srv/web/.env:2: $NOPE is not assigned above this line"),
    ("A=$B\nB=1", "A", "/srv/web/.env:1: $B is not assigned above this line"),
    ("A=$NOPE\nB=ok\nC=\"$A\"", "C", "/srv/web/.env:1: $NOPE is not assigned above this line"),
    ("A=${NOPE:?must be set for $0}", "A", "/srv/web/.env:1: NOPE is required: must be set for $0"),
    ("E=\nA=${E:?is empty}", "A", "/srv/web/.env:2: E is required: is empty"),
    ("A=${NOPE?}", "A", "/srv/web/.env:1: NOPE is required: "),
    ("A=${B", "A", "/srv/web/.env:1: a ${ is never closed by }"),
    ("A=${1}", "A", "/srv/web/.env:1: invalid ${...}; expected ${NAME}"),
    ("A=${B C}", "A", "/srv/web/.env:1: invalid ${...}"),
    ("A=${}", "A", "/srv/web/.env:1: invalid ${...}"),
    ("B\nA=$B", "A", "/srv/web/.env:2: $B is not assigned above this line"),
    ("B\nA=$B", "B", "/srv/web/.env:1: B has no value in the file; a bare B line takes it from the environment"),
]


@pytest.mark.parametrize(("text", "key", "start"), INTERPOLATION_ERRORS)
def test_interpolation_errors_name_file_line_and_variable(text: str, key: str, start: str) -> None:
    env = parse(text)
    with pytest.raises(EnvFileError) as caught:
        env.value(key)
    assert caught.value.code == ExitCode.ENV_FILE_INVALID
    assert caught.value.message.startswith(start)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("value", ["a b", "a\tb", "a'b", 'a"b', "a#b", "a$b", "a\\b", "a\nb", "a\rb", "\x00",
                                   "a\u00a0b", "\udcff"])
def test_values_that_are_not_safe_in_every_quoting_are_refused(value: str) -> None:
    env = parse("H='x'\n")
    with pytest.raises(ValueError, match="refusing to write H"):
        env.updated({"H": value}, {})


@pytest.mark.parametrize("key", ["", "1A", "A B", "A=B", "A\n"])
def test_invalid_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="not a valid variable name"):
        parse("T=1\n").updated({key: "x"}, {key: "T"})


def test_a_new_key_without_anchor_or_with_a_missing_anchor_is_refused() -> None:
    env = parse("T=1\n")
    with pytest.raises(ValueError, match="no key to put it after"):
        env.updated({"H": REF}, {})
    with pytest.raises(ValueError, match="after NOPE, which is not in the file"):
        env.updated({"H": REF}, {"H": "NOPE"})


def test_a_value_written_in_place_reads_back_under_every_quoting_style() -> None:
    text = "A=old\nB='old'\nC=\"old\"\nD=\nE= # c\nF\n"
    new = "ghcr.io/o/x:1@sha256:" + "f" * 64
    keys = ["A", "B", "C", "D", "E", "F"]
    env = parse(parse(text).updated(dict.fromkeys(keys, new), {}))
    assert {key: env.value(key) for key in keys} == dict.fromkeys(keys, new)


# Property-style tests: files built from random lines whose meaning is known by construction.

PLAIN = "abcXYZ019:/@._-=+,;!?%&*()[]{}<>|~^\u00e9\udcff"


@dataclass
class Line:
    before: str  # up to the value (opening quote included)
    body: str  # the value's characters as written
    after: str  # from the value's end (closing quote included) to the line ending, excluded
    key: str | None = None
    raw: str = ""
    bare: bool = False

    def text(self, body: str | None = None) -> str:
        if body is None:
            return self.before + self.body + self.after
        return self.before + ("=" if self.bare else "") + body + self.after


def blanks(rng: random.Random, least: int = 0) -> str:
    return "".join(rng.choice(" \t") for _ in range(rng.randint(least, 2)))


def plain_word(rng: random.Random) -> str:
    return "".join(rng.choice(PLAIN) for _ in range(rng.randint(1, 6)))


def tokens(rng: random.Random, meanings: dict[str, str]) -> tuple[str, str]:
    """A random string of tokens: (as written, what it means)."""
    written, meant = [], []
    for _ in range(rng.randint(0, 8)):
        token = rng.choice(list(meanings) + ["word"] * 4)
        meaning = meanings.get(token) if token != "word" else None
        if meaning is None:
            token = meaning = plain_word(rng)
        written.append(token)
        meant.append(meaning)
    return "".join(written), "".join(meant)


SINGLE_QUOTED = {"\n": "\n", "\r\n": "\r\n", " ": " ", "#": "#", '"': '"', "$A": "$A", "\\'": "'",
                 "\\\\": "\\\\", "\\x": "\\x"}
DOUBLE_QUOTED = {"\n": "\n", "\r\n": "\r\n", " # ": " # ", "'": "'", '\\"': '"', "\\n": "\n", "\\t": "\t",
                 "\\\\": "\\", "\\$": "$$", "\\q": "\\q", "\\0101": "A", "\\08": "\\8", "${A:-x}": "${A:-x}"}
UNQUOTED_INSIDE = ["a b", "x#y", "q'z", 'q"z', "a\\nb", "$A", "a\t#b"]
KEYS = ["A", "B_2", "c.d", "E-F", "_g", "export", "exportH"]


def key_part(rng: random.Random, key: str) -> str:
    return blanks(rng) + rng.choice(["", "export ", "export\t"]) + key


def separator(rng: random.Random) -> str:
    return blanks(rng) + rng.choice("==:") + blanks(rng)


def unquoted_line(rng: random.Random, key: str) -> Line:
    value = rng.choice(["", plain_word(rng), plain_word(rng) + rng.choice(UNQUOTED_INSIDE) + plain_word(rng)])
    before = key_part(rng, key) + rng.choice("=:")
    if not value:
        # Blanks then `#...` after an empty value would be the value itself.
        return Line(before, "", blanks(rng), key, "")
    comment = rng.choice(["", blanks(rng) + " #" + plain_word(rng) + " # x"])
    return Line(before + blanks(rng), value, comment or blanks(rng), key, value)


def quoted_line(rng: random.Random, key: str, quote: str, meanings: dict[str, str]) -> Line:
    body, raw = tokens(rng, meanings)
    after = quote + blanks(rng) + rng.choice(["", "#", "# a 'comment' \"here\""])
    return Line(key_part(rng, key) + separator(rng) + quote, body, after, key, raw)


def random_line(rng: random.Random) -> Line:
    key = rng.choice(KEYS)
    kind = rng.randrange(7)
    if kind == 0:
        return Line(blanks(rng), "", "")
    if kind == 1:
        return Line(blanks(rng) + "#" + tokens(rng, {"'": "", '"': "", "=": "", "\\": ""})[0], "", "")
    if kind == 2:
        return Line(key_part(rng, key), "", blanks(rng), key, "", bare=True)
    if kind == 3:
        return quoted_line(rng, key, "'", SINGLE_QUOTED)
    if kind == 4:
        return quoted_line(rng, key, '"', DOUBLE_QUOTED)
    return unquoted_line(rng, key)


def random_file(rng: random.Random) -> tuple[str, list[Line], list[str]]:
    lines = [random_line(rng) for _ in range(rng.randint(0, 12))]
    endings = [rng.choice(["\n", "\r\n"]) for _ in lines]
    if endings and rng.random() < 0.4:
        endings[-1] = ""
    bom = "\ufeff" if rng.random() < 0.1 else ""
    return bom + "".join(line.text() + ending for line, ending in zip(lines, endings)), lines, endings


def line_offset(text: str, lines: list[Line], endings: list[str], index: int) -> int:
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    return len(bom) + sum(len(lines[i].text()) + len(endings[i]) for i in range(index))


def effective(lines: list[Line]) -> dict[str, int]:
    """The model of "last wins": per key, its last line with a value, else its last bare line."""
    chosen: dict[str, int] = {}
    for index, line in enumerate(lines):
        if line.key is not None and (not line.bare or line.key not in chosen or lines[chosen[line.key]].bare):
            chosen[line.key] = index
    return chosen


def rebuilt(text: str, lines: list[Line], endings: list[str], replace: dict[int, str],
            insert: dict[int, str]) -> str:
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    # Every line break of the file counts, those inside multi-line values too.
    crlf = text.count("\r\n")
    predominant = "\r\n" if crlf > text.count("\n") - crlf else "\n"
    pieces = [bom]
    for index, (line, ending) in enumerate(zip(lines, endings)):
        pieces.append(line.text(replace.get(index)) + ending)
        if index in insert:
            pieces.append(insert[index] + ending if ending else predominant + insert[index])
    return "".join(pieces)


@pytest.mark.parametrize("seed", range(20))
def test_generated_files_parse_as_built_and_edit_only_the_value(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        text, lines, endings = random_file(rng)
        env = parse(text)
        chosen = effective(lines)

        assert env.updated({}, {}) == text
        assert env.keys() == list(chosen)
        for key, index in chosen.items():
            line = lines[index]
            assignment = env.get(key)
            assert (assignment.raw_value, assignment.has_value) == (line.raw, not line.bare)
            assert assignment.lineno == 1 + text.count("\n", 0, line_offset(text, lines, endings, index))

        if not chosen:
            continue
        key = rng.choice(list(chosen))
        new = f"registry.example:5000/{key}@sha256:" + "%064x" % rng.getrandbits(256)
        assert env.updated({key: new}, {}) == rebuilt(text, lines, endings, {chosen[key]: new}, {})
        assert parse(env.updated({key: new}, {})).get(key).raw_value == new
        assert env.updated({"NEW_HASHED": new}, {"NEW_HASHED": key}) == rebuilt(
            text, lines, endings, {}, {chosen[key]: f"NEW_HASHED={new}"})


FUZZ_PREFIXES = ["A=", "export B=", "c.d: ", "  E = ", "", "#", "F", "G='", 'H="', "\t"]
FUZZ_TOKENS = ["a", "Z", "_", "1", ".", "-", "=", ":", "#", " #", "'", '"', "\\", "$", "${", "{", "}", "$$", " ",
               "\t", "\r", "\n", "\r\n", "export ", "\u00e9", "\udcff", "\ufeff", ":-", "?", "+", "A", "$A"]


@pytest.mark.parametrize("seed", range(10))
def test_any_text_either_fails_cleanly_or_round_trips_and_edits_in_place(seed: int) -> None:
    rng = random.Random(1000 + seed)
    parsed = 0
    for _ in range(300):
        text = "".join(rng.choice(FUZZ_PREFIXES) + "".join(rng.choice(FUZZ_TOKENS) for _ in range(rng.randint(0, 6)))
                       + rng.choice(["\n", "\r\n", ""]) for _ in range(rng.randint(1, 5)))
        try:
            env = parse(text)
        except EnvFileError as error:
            assert error.message.startswith(f"{PATH}:") and error.message.endswith(EXPECTED)
            continue
        parsed += 1
        assert env.updated({}, {}) == text
        for key in env.keys():
            try:
                assert isinstance(env.value(key), str)
            except EnvFileError as error:
                assert error.message.startswith(f"{PATH}:") and "\n" not in error.message
            assignment = env.get(key)
            written = ("" if assignment.has_value else "=") + "x@sha256:0"
            expected = text[:assignment.value_start] + written + text[assignment.value_end:]
            assert env.updated({key: "x@sha256:0"}, {}) == expected
            again = parse(expected)
            assert again.keys() == env.keys()
            assert again.get(key).raw_value == "x@sha256:0"
    # The inputs must exercise the successful path too, not only errors.
    assert parsed > 30


# Putting back what cipug wrote, and only that

PIN = "registry.example:5000/app@sha256:" + "b" * 64


@pytest.mark.parametrize("text, key, anchor", [
    ("A=1\nSERVICE_X_IMAGE_HASHED=old # was\n", "SERVICE_X_IMAGE_HASHED", None),
    ("A=1\r\nSERVICE_X_IMAGE_HASHED='old'\r\nB=2", "SERVICE_X_IMAGE_HASHED", None),
    ("SERVICE_X_IMAGE_TAGGED=app:1\nB=2\n", "SERVICE_X_IMAGE_HASHED", "SERVICE_X_IMAGE_TAGGED"),
    ("B=2\r\nSERVICE_X_IMAGE_TAGGED=app:1", "SERVICE_X_IMAGE_HASHED", "SERVICE_X_IMAGE_TAGGED"),
    ("SERVICE_X_IMAGE_TAGGED=app:1\nSERVICE_X_IMAGE_HASHED  \n", "SERVICE_X_IMAGE_HASHED", None),
])
def test_reverting_a_written_pin_restores_the_file_and_keeps_a_later_edit(text, key, anchor) -> None:
    original = parse(text)
    written = original.updated({key: PIN}, {key: anchor} if anchor else {})
    previous = {key: original.previous(key)}
    assert parse(written).reverted({key: PIN}, previous) == (text, [])
    # A line someone added after cipug wrote the file survives the revert.
    edited = "ADDED=by hand\n" + written
    assert parse(edited).reverted({key: PIN}, previous) == ("ADDED=by hand\n" + text, [])


def test_a_pin_edited_since_cipug_wrote_it_is_left_alone() -> None:
    original = parse("SERVICE_X_IMAGE_HASHED=old\nB=2\n")
    written = original.updated({"SERVICE_X_IMAGE_HASHED": PIN}, {})
    by_hand = written.replace(PIN, "registry.example:5000/app@sha256:" + "c" * 64)
    previous = {"SERVICE_X_IMAGE_HASHED": original.previous("SERVICE_X_IMAGE_HASHED")}
    assert parse(by_hand).reverted({"SERVICE_X_IMAGE_HASHED": PIN}, previous) == (by_hand, ["SERVICE_X_IMAGE_HASHED"])


@pytest.mark.parametrize("seed", range(10))
def test_generated_files_revert_to_exactly_what_they_were(seed: int) -> None:
    rng = random.Random(2000 + seed)
    for _ in range(30):
        text, lines, endings = random_file(rng)
        original = parse(text)
        keys = original.keys()
        if not keys:
            continue
        changed = {key: f"{PIN[:-8]}{index:08d}" for index, key in enumerate(rng.sample(keys, min(2, len(keys))))}
        changed["SERVICE_NEW_IMAGE_HASHED"] = PIN
        anchors = {"SERVICE_NEW_IMAGE_HASHED": rng.choice(keys)}
        written = parse(original.updated(changed, anchors))
        assert written.reverted(changed, {key: original.previous(key) for key in changed}) == (text, [])


@pytest.mark.parametrize("text, written", [
    ("K=old\n", f"K={PIN} # cipug: version 2\n"),
    ("K=old # cipug: version 1\r\n", f"K={PIN} # cipug: version 2\r\n"),
    ("K='old'\t# cipug: built 2026-01-01 00:00:00", f"K='{PIN}' # cipug: version 2"),
    ("K=old   \n", f"K={PIN} # cipug: version 2\n"),
    ("K\n", f"K={PIN} # cipug: version 2\n"),
    # Someone else's comment stays, and the line gets no note.
    ("K=old # mine\n", f"K={PIN} # mine\n"),
    ('K="old"# cipug: looks like it but is not\n', f'K="{PIN}"# cipug: looks like it but is not\n'),
])
def test_cipugs_note_follows_the_pin_and_goes_back_with_it(text, written) -> None:
    original = parse(text)
    assert original.updated({"K": PIN}, {}, {"K": "version 2"}) == written
    after = parse(written)
    assert after.value("K") == PIN
    assert after.reverted({"K": PIN}, {"K": original.previous("K")}) == (text, [])


def test_a_new_pin_line_gets_its_note_and_an_empty_note_removes_one() -> None:
    original = parse("T=app:1\n")
    written = original.updated({"K": PIN}, {"K": "T"}, {"K": "version 2"})
    assert written == f"T=app:1\nK={PIN} # cipug: version 2\n"
    assert parse(written).note("K") == " # cipug: version 2"
    assert parse(written).updated({}, {}, {"K": ""}) == f"T=app:1\nK={PIN}\n"
    # Trailing blanks are not a note: nothing to remove, nothing changes.
    assert parse("K=x  \n").updated({}, {}, {"K": ""}) == "K=x  \n"
    with pytest.raises(ValueError, match="not printable"):
        original.updated({"K": PIN}, {"K": "T"}, {"K": "line\nbreak"})
    with pytest.raises(ValueError, match="not in the file"):
        original.updated({}, {}, {"K": "version 2"})
