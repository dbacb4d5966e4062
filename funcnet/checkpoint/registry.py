"""NamedTuple types known to :func:`funcnet.checkpoint.restore`, and faithful stand-ins.

A checkpoint records each NamedTuple by its qualified name (``module.QualName``) and its
field names. When restoring, the name is only *looked up* among classes that the running
program has handed over (:func:`register_namedtuple`, ``namedtuple_types=``, or the types
found in ``like``); nothing named in a file is ever imported. An unknown name is rebuilt
as a ``collections.namedtuple`` stand-in with the same name and fields.
"""
from __future__ import annotations

import collections
from typing import Iterable

from funcnet.checkpoint.errors import CheckpointError

STANDIN_MODULE = "funcnet.checkpoint.standin"
_REGISTRY: dict[str, type] = {}
_STANDINS: dict[tuple[str, tuple[str, ...]], type] = {}


def is_namedtuple_class(cls) -> bool:
    """Whether ``cls`` is a NamedTuple / ``collections.namedtuple`` class."""
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a NamedTuple class (a stand-in keeps the recorded name)."""
    return getattr(cls, "_checkpoint_name", f"{cls.__module__}.{cls.__qualname__}")


def register_namedtuple(cls: type) -> type:
    """Makes ``restore`` without ``like`` rebuild NamedTuples named like ``cls`` as ``cls``.

    Usable as a class decorator. Registering a class again (e.g. after a module reload)
    replaces the earlier one with the same qualified name.

    Args:
      cls: a ``typing.NamedTuple`` or ``collections.namedtuple`` class.

    Returns:
      ``cls`` unchanged.

    Raises:
      TypeError: ``cls`` is not a NamedTuple class.
    """
    if not is_namedtuple_class(cls):
        raise TypeError(f"register_namedtuple: expected a NamedTuple class, got {cls!r}")
    _REGISTRY[qualified_name(cls)] = cls
    return cls


def _standin(name: str, fields: tuple[str, ...]) -> type:
    """A cached ``collections.namedtuple`` called like the last part of ``name``."""
    key = (name, fields)
    if key not in _STANDINS:
        try:
            cls = collections.namedtuple(name.rsplit(".", 1)[-1], fields, module=STANDIN_MODULE)
        except (ValueError, TypeError) as err:
            raise CheckpointError(
                f"invalid NamedTuple {name!r} with fields {list(fields)}: {err}") from None
        cls._checkpoint_name = name
        _STANDINS[key] = cls
    return _STANDINS[key]


def resolve(name: str, fields: tuple[str, ...], extra: Iterable[type] = ()) -> type:
    """The class to rebuild a recorded NamedTuple with.

    Looks ``name`` up among ``extra`` (e.g. ``restore(..., namedtuple_types=...)``), then
    the registry. A class is used only if its fields equal the recorded ones; otherwise
    (unknown name, or fields changed since saving) a stand-in is returned.

    Raises:
      TypeError: an entry of ``extra`` is not a NamedTuple class.
      CheckpointError: the recorded name or fields cannot name a namedtuple.
    """
    known = {}
    for cls in extra:
        if not is_namedtuple_class(cls):
            raise TypeError(f"restore: namedtuple_types must hold NamedTuple classes, got {cls!r}")
        known[qualified_name(cls)] = cls
    cls = known.get(name, _REGISTRY.get(name))
    if cls is not None and tuple(cls._fields) == fields:
        return cls
    return _standin(name, fields)
