"""parse_json must read what json.loads reads, and refuse what it refuses, with its message."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cipug import jsontext
from cipug.jsontext import InvalidJSON, parse_json

REPO = Path(__file__).resolve().parents[1]

VALID = [
    '{"SERVICES_ROOT": "/srv/services", "VERBOSITY": 2, "SERVICE_PULL": false}',
    '  \n\t{"a": {"b": [1, 2.5, -3e2, true, null, "x"]}}\r\n ',
    '{"a": 1, "a": 2}',
    '"\\u00e9\\ud83d\\ude00 \\n \\" \\\\ /"',
    "[]", "{}", "0", "-0.0", "1E400", "123456789012345678901234567890",
    '{"nextcloud:latest": {"name": "docker.io/library/nextcloud", "digest": "sha256:' + "a" * 64
    + '", "resolved_at": 1764400000.25}}',
]

INVALID = [
    "", "   ", "{", '{"a": 1,}', '{"a": 1} {"b": 2}', "[1] x", "\ufeff{}", "{'a': 1}", '{"a": "tab\there"}',
    '{"a": 01}', "[1, 2", '"unterminated', "nul", "[" * 100_000 + "]" * 100_000,
]


@pytest.fixture(params=["C scanner", "without it"])
def scanner(request, monkeypatch):
    """Run a test with CPython's C scanner and as on a Python without it."""
    if request.param == "without it":
        monkeypatch.setattr(jsontext, "make_scanner", None)


@pytest.mark.parametrize("text", VALID)
@pytest.mark.usefixtures("scanner")
def test_valid_documents_read_as_json_loads_reads_them(text):
    assert parse_json(text) == json.loads(text)


@pytest.mark.usefixtures("scanner")
def test_nan_and_infinity_read_as_json_loads_reads_them():
    value = parse_json('[NaN, Infinity, -Infinity]')
    assert math.isnan(value[0]) and value[1:] == [math.inf, -math.inf]


def expected_message(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    except RecursionError:
        return "nested too deeply"
    except ValueError as error:
        return str(error)
    raise AssertionError(f"json.loads accepted {text!r}")


@pytest.mark.parametrize("text", INVALID, ids=lambda text: repr(text[:20]))
@pytest.mark.usefixtures("scanner")
def test_invalid_documents_are_refused_with_json_loads_message(text):
    with pytest.raises(InvalidJSON) as raised:
        parse_json(text)
    assert str(raised.value) == expected_message(text)


@pytest.mark.skipif(not getattr(sys, "get_int_max_str_digits", lambda: 0)(),
                    reason="this Python reads integers of any length")
@pytest.mark.usefixtures("scanner")
def test_an_integer_longer_than_python_reads_is_refused_with_json_loads_message():
    text = "1" * (sys.get_int_max_str_digits() + 1)
    with pytest.raises(InvalidJSON) as raised:
        parse_json(text)
    assert str(raised.value) == expected_message(text)


@pytest.mark.usefixtures("scanner")
def test_random_documents_and_their_corruptions_agree_with_json_loads():
    generator = random.Random(6)

    def value(depth: int) -> object:
        kind = generator.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return generator.choice([None, True, False])
        if kind == 1:
            return generator.choice([0, -1, 2**70, 0.1, -2.5e-8, 1e300])
        if kind in (2, 3):
            return "".join(generator.choice('ab"\\/\n\t\u00e9\U0001f600 :,{}[]') for _ in range(generator.randrange(6)))
        if kind in (4, 5):
            return {str(value(depth + 1)): value(depth + 1) for _ in range(generator.randrange(4))}
        return [value(depth + 1) for _ in range(generator.randrange(4))]

    for _ in range(3000):
        text = json.dumps(value(0), indent=generator.choice([None, 2]), ensure_ascii=generator.random() < 0.5)
        assert parse_json(text) == json.loads(text)
        cut = generator.randrange(len(text) + 1)
        broken = text[:cut] + generator.choice(["", "}", ",", '"', "x", " ", "]"]) + text[cut + 1:]
        try:
            expected = json.loads(broken)
        except ValueError:
            with pytest.raises(InvalidJSON):
                parse_json(broken)
        else:
            assert parse_json(broken) == expected


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="the C scanner is CPython's")
def test_valid_documents_are_read_without_importing_the_json_package_and_invalid_ones_still_refused():
    # -S: site may import re for its own reasons. The scanner meets invalid text before json is
    # imported here, unlike in this test process.
    code = ("import sys\nfrom cipug.jsontext import InvalidJSON, parse_json\n"
            "assert parse_json('{\"a\": [1, 2.5, \"x\"]}') == {'a': [1, 2.5, 'x']}\n"
            "print(sorted({'json', 're'} & set(sys.modules)))\n"
            "for text in sys.argv[1:]:\n"
            "    try:\n"
            "        parse_json(text)\n"
            "    except InvalidJSON as error:\n"
            "        print(error)\n")
    texts = ['{"VERBOSITY": 2,}', "[1 2]", '"open']
    result = subprocess.run([sys.executable, "-S", "-c", code, *texts], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", *(expected_message(text) for text in texts)]
