"""Immutable records of named fields, for the values the timer's run passes around.

Records are tuples, so they compare, hash and unpack by value, as collections.namedtuple's do.
namedtuple is not used on that path: importing collections costs the timer's run more start-up
time than its whole work on a warm cache.
"""

from __future__ import annotations


class Record(tuple):
    """A subclass names its fields in `fields` (space-separated); `defaults` fill the last ones.

    Subclasses declare `__slots__ = ()` too, so that records stay as small as tuples.
    """

    __slots__ = ()
    fields = ""
    defaults: tuple[object, ...] = ()
    _names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._names = tuple(cls.fields.split())
        for index, name in enumerate(cls._names):
            if name.startswith("_") or hasattr(Record, name):
                raise TypeError(f"{cls.__name__}: a field cannot be named {name!r}, which records use themselves")
            setattr(cls, name, property(lambda record, index=index: record[index]))

    def __new__(cls, *values: object) -> Record:
        missing = len(cls._names) - len(values)
        if not 0 <= missing <= len(cls.defaults):
            required = len(cls._names) - len(cls.defaults)
            raise TypeError(f"{cls.__name__} takes {required} to {len(cls._names)} values, not {len(values)}")
        return super().__new__(cls, values + cls.defaults[len(cls.defaults) - missing:])

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in zip(self._names, self))
        return f"{type(self).__name__}({values})"
