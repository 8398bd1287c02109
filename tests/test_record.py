"""Records behave as the tuples they replace: by value, immutable, readable in test failures."""

import pytest

from cipug.imageref import Reference, Resolution
from cipug.record import Record

DIGEST = "sha256:" + "a" * 64


def test_fields_read_by_name_and_by_position():
    resolution = Resolution("docker.io/library/nginx", DIGEST)
    name, digest = resolution
    assert (resolution.name, resolution.digest) == (name, digest) == ("docker.io/library/nginx", DIGEST)
    assert resolution[1] == DIGEST and len(resolution) == 2


def test_records_compare_and_hash_by_value():
    assert Resolution("a", DIGEST) == Resolution("a", DIGEST) != Resolution("b", DIGEST)
    assert len({Resolution("a", DIGEST), Resolution("a", DIGEST)}) == 1


def test_defaults_fill_the_last_fields():
    assert Reference("docker.io", "library/nginx", "latest").digest is None
    assert Reference("docker.io", "library/nginx", "latest", DIGEST).digest == DIGEST


@pytest.mark.parametrize("values", [("docker.io", "library/nginx"), ("a", "b", "c", DIGEST, "extra")])
def test_a_wrong_number_of_values_is_refused(values):
    with pytest.raises(TypeError, match="Reference takes 3 to 4 values"):
        Reference(*values)


def test_records_cannot_be_changed():
    resolution = Resolution("a", DIGEST)
    with pytest.raises(AttributeError):
        resolution.name = "b"
    with pytest.raises(AttributeError):
        resolution.other = 1


def test_repr_names_the_fields():
    assert repr(Resolution("a", DIGEST)) == f"Resolution(name='a', digest='{DIGEST}')"


@pytest.mark.parametrize("name", ["count", "index", "fields", "_names"])
def test_fields_cannot_hide_what_records_use(name):
    with pytest.raises(TypeError, match=f"cannot be named '{name}'"):
        type("Bad", (Record,), {"__slots__": (), "fields": f"first {name}"})
