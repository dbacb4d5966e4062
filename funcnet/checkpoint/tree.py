"""Pytrees <-> a JSON tree description plus NumPy leaves, with or without ``like``.

The description is plain JSON, one node per tree node::

    {"type": "dict", "keys": [...], "values": [...]}        # string keys, order kept
    {"type": "list" | "tuple", "items": [...]}
    {"type": "namedtuple", "name": "module.QualName", "fields": [...], "items": [...]}
    {"type": "none"}
    {"type": "int" | "float" | "bool" | "str", "value": ...}  # Python scalars
    {"type": "array", "leaf": i, "dtype": "bfloat16", "shape": [...]}
    {"type": "key", "leaf": i, "impl": "threefry2x32", "shape": [...]}  # typed PRNG keys

Array leaves are numbered in traversal order. Dtypes that NumPy cannot store natively
(``bfloat16``, float8, int4, ... from ``ml_dtypes``) are stored as their raw bits in an
unsigned integer of the same width; typed PRNG keys as their ``uint32`` key data. When
reading, dtypes and key implementations come only from the fixed tables below, and a
NamedTuple name is only *looked up* among classes the running program handed over
(:func:`register_namedtuple`, ``namedtuple_types=``, the types in ``like``): nothing named
in a file is ever imported or called. An unknown name becomes a ``collections.namedtuple``
stand-in with the same name and fields.
"""
from __future__ import annotations

import collections
import copy
from typing import Any, Iterable

import jax
import ml_dtypes
import numpy as np

from funcnet import _checks


class CheckpointError(ValueError):
    """A checkpoint file is damaged, or does not match ``like``.

    The message names the file and, for a mismatch, the first path in the tree that
    differs. Nothing is returned when this is raised: restoring never half-loads.

    Attributes:
      damaged: ``True`` when the file itself is bad (truncated, corrupted, not a funcnet
        checkpoint, checksum mismatch, forged or malformed header, a recorded step that
        differs from the file name); ``False`` when a sound file does not match ``like``
        (structure, keys, shape, dtype). ``CheckpointManager.restore`` falls back to an
        older checkpoint on damage only.
    """

    def __init__(self, message: str, *, damaged: bool = True):
        super().__init__(message)
        self.damaged = damaged


# ------------------------------------------------------------------ NamedTuple classes
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


def known_namedtuples(fn: str, types: Iterable[type]) -> dict[str, type]:
    """``namedtuple_types`` checked and keyed by qualified name (``TypeError`` if bad)."""
    if isinstance(types, type) or not isinstance(types, Iterable):
        raise TypeError(f"{fn}: namedtuple_types must be an iterable of NamedTuple classes, "
                        f"got {types!r}")
    known = {}
    for cls in types:
        if not is_namedtuple_class(cls):
            raise TypeError(f"{fn}: namedtuple_types must hold NamedTuple classes, got {cls!r}")
        known[qualified_name(cls)] = cls
    return known


def _resolve(name: str, fields: tuple[str, ...], known: dict[str, type]) -> type:
    """The class to rebuild a recorded NamedTuple with: a known class with the same
    fields, else a cached stand-in named like the last part of ``name``."""
    cls = known.get(name, _REGISTRY.get(name))
    if cls is not None and tuple(cls._fields) == fields:
        return cls
    if (name, fields) not in _STANDINS:
        try:
            cls = collections.namedtuple(name.rsplit(".", 1)[-1], fields, module=STANDIN_MODULE)
        except (ValueError, TypeError) as err:
            raise CheckpointError(
                f"invalid NamedTuple {name!r} with fields {list(fields)}: {err}") from None
        cls._checkpoint_name = name
        _STANDINS[name, fields] = cls
    return _STANDINS[name, fields]


# ------------------------------------------------------------------------- encoding
NATIVE_DTYPES = {name: np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128")}
BITS_DTYPES = {name: np.dtype(getattr(ml_dtypes, name)) for name in (
    "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
    "float8_e4m3b11fnuz", "float8_e3m4", "float8_e4m3", "float8_e8m0fnu", "float4_e2m1fn",
    "float6_e2m3fn", "float6_e3m2fn", "int2", "int4", "uint2", "uint4")
    if hasattr(ml_dtypes, name)}
KEY_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def child_path(path: str, kind: str, key) -> str:
    """Extends a path like ``params['dense_0'].mu[0]`` by one step."""
    if kind == "field":
        return f"{path}.{key}" if path else key
    if kind == "key" and not path and isinstance(key, str) and key.isidentifier():
        return key
    return f"{path}[{key!r}]"


def show(path: str) -> str:
    return path or "<root>"


def stored_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a leaf of ``dtype`` is stored as in the file."""
    return np.dtype(f"uint{8 * dtype.itemsize}") if dtype.name in BITS_DTYPES else dtype


def encode(tree) -> tuple[dict, list[np.ndarray]]:
    """Describes ``tree`` as JSON-able nodes and collects its array leaves.

    Raises:
      TypeError: naming the path, for an unsupported node type, a non-string dict key, a
        traced value, or an unsupported dtype.
    """
    leaves: list[np.ndarray] = []

    def leaf(node: dict, array: np.ndarray) -> dict:
        node["leaf"] = len(leaves)
        leaves.append(np.asarray(array, order="C"))  # keeps 0-d
        return node

    def go(x, path: str) -> dict:
        if isinstance(x, jax.core.Tracer):
            raise TypeError(f"save: {show(path)} is a traced value; save concrete arrays "
                            f"outside jit/vmap/grad")
        if x is None:
            return {"type": "none"}
        for name, kind in SCALARS.items():
            if type(x) is kind:
                return {"type": name, "value": x}
        if isinstance(x, dict):
            bad = [k for k in x if not isinstance(k, str)]
            if bad:
                raise TypeError(f"save: dict at {show(path)} has a non-string key {bad[0]!r}; "
                                f"checkpoints need string keys")
            return {"type": "dict", "keys": list(x),
                    "values": [go(v, child_path(path, "key", k)) for k, v in x.items()]}
        if is_namedtuple_class(type(x)):
            return {"type": "namedtuple", "name": qualified_name(type(x)),
                    "fields": list(type(x)._fields),
                    "items": [go(v, child_path(path, "field", f))
                              for f, v in zip(type(x)._fields, x)]}
        if type(x) in (list, tuple):
            return {"type": type(x).__name__,
                    "items": [go(v, child_path(path, "index", i)) for i, v in enumerate(x)]}
        if isinstance(x, (np.ndarray, np.generic, jax.Array)) and _checks.is_key(x):
            return leaf({"type": "key", "impl": str(jax.random.key_impl(x)),
                         "shape": list(x.shape)}, np.asarray(jax.random.key_data(x)))
        if isinstance(x, (np.ndarray, np.generic, jax.Array)):
            array = np.asarray(x)
            dtype = _native(array.dtype)
            if dtype.name not in NATIVE_DTYPES and dtype.name not in BITS_DTYPES:
                raise TypeError(f"save: {show(path)} has unsupported dtype {array.dtype}")
            array = array.astype(dtype, copy=False).view(stored_dtype(dtype))
            return leaf({"type": "array", "dtype": dtype.name, "shape": list(array.shape)},
                        array)
        raise TypeError(
            f"save: {show(path)} has unsupported type {type(x).__name__}; checkpoints hold "
            f"dicts (string keys), lists, tuples, NamedTuples, None, int/float/bool/str "
            f"and arrays")

    return go(tree, ""), leaves


# ------------------------------------------------------------------------- decoding
def _get(node, field: str, kind, path: str):
    """``node[field]``, checked to be of ``kind``; else the description is malformed."""
    value = node.get(field) if isinstance(node, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        kind_name = getattr(kind, "__name__", kind)
        raise CheckpointError(f"malformed tree description at {show(path)}: expected "
                              f"{field!r} of type {kind_name} in {node!r:.200}")
    return value


def _children(node, kind: str, path: str) -> tuple[list | None, list]:
    """``(names, child nodes)`` of a dict / namedtuple (names ``None`` for list/tuple)."""
    items = _get(node, "values" if kind == "dict" else "items", list, path)
    names = (_get(node, "keys", list, path) if kind == "dict"
             else _get(node, "fields", list, path) if kind == "namedtuple" else None)
    if names is not None and (len(names) != len(items) or len(set(names)) != len(names)
                              or not all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"malformed tree description at {show(path)}: names "
                              f"{names!r:.200} do not match {len(items)} children")
    return names, items


def _scalar(node, kind: str, path: str):
    if kind == "float":
        return float(_get(node, "value", (int, float), path))
    return _get(node, "value", SCALARS[kind], path)


def _leaf(node, kind: str, leaves: list[np.ndarray], counter: list[int], path: str):
    """Decodes one array node (a NumPy array) or key node (a jax key array)."""
    index = _get(node, "leaf", int, path)
    if index != counter[0] or index >= len(leaves):
        raise CheckpointError(f"malformed tree description at {show(path)}: leaf {index} "
                              f"out of order (expected leaf {counter[0]} of {len(leaves)})")
    counter[0] += 1
    stored, shape = leaves[index], tuple(_get(node, "shape", list, path))
    if kind == "key":
        impl = _get(node, "impl", str, path)
        if impl not in KEY_IMPLS or stored.dtype != np.uint32 or stored.shape[:len(shape)] != shape:
            raise CheckpointError(f"malformed PRNG key at {show(path)}: impl {impl!r}, key "
                                  f"shape {shape}, data {stored.dtype} {stored.shape}")
        try:
            return jax.random.wrap_key_data(stored, impl=impl)
        except Exception as err:  # noqa: BLE001 - any failure means a malformed key
            raise CheckpointError(f"malformed PRNG key at {show(path)}: {err}") from None
    name = _get(node, "dtype", str, path)
    dtype = NATIVE_DTYPES.get(name, BITS_DTYPES.get(name))
    if dtype is None or stored.dtype != stored_dtype(dtype) or stored.shape != shape:
        raise CheckpointError(
            f"malformed array at {show(path)}: description says {name} {shape}, stored leaf "
            f"is {stored.dtype} {stored.shape}")
    return stored.view(dtype)


def _raw_key_as(value: np.ndarray, like):
    """A stored ``uint32`` array that is the key data of a key like ``like`` (a typed key
    of the same shape and implementation), as that typed key; anything else unchanged.

    States that once held raw ``uint32[2]`` keys now hold typed ones (``noisy_sgd``'s
    ``rng_key``), so a checkpoint written before still restores into today's template.
    """
    if value.dtype != np.uint32:
        return value
    for impl in KEY_IMPLS:
        try:
            key = jax.random.wrap_key_data(value, impl=impl)
        except (TypeError, ValueError):
            continue
        if key.dtype == like.dtype and key.shape == tuple(like.shape):
            return key
    return value


def _describe(node, kind: str) -> str:
    if kind == "namedtuple":
        name = str(node.get("name", "?")).rsplit(".", 1)[-1]
        return f"NamedTuple {name}{tuple(node.get('fields', ()))}"
    if kind in ("array", "key"):
        what = "a PRNG key" if kind == "key" else "an array"
        return f"{what} of shape {tuple(node.get('shape', ()))}"
    return {"none": "None", "int": "an int"}.get(kind, f"a {kind}")


def _like_kind(like, path: str) -> tuple[str, str]:
    """``(node type it matches, description)`` of a ``like`` node."""
    if like is None:
        return "none", "None"
    if isinstance(like, dict):
        return "dict", "a dict"
    if is_namedtuple_class(type(like)):
        return "namedtuple", f"NamedTuple {type(like).__name__}{tuple(type(like)._fields)}"
    if type(like) in (list, tuple):
        return type(like).__name__, f"a {type(like).__name__} of length {len(like)}"
    for name, kind in SCALARS.items():
        if type(like) is kind:
            return name, f"a {name}"
    if _checks.is_array(like):
        return "leaf", f"an array of shape {tuple(like.shape)}"
    raise TypeError(f"restore: like has unsupported type {type(like).__name__} at "
                    f"{show(path)}")


def _native(dtype):
    """``dtype`` in native byte order (``'>f8'`` is float64): what ``save`` stores and
    ``restore`` returns; key dtypes as they are."""
    return dtype.newbyteorder("=") if isinstance(dtype, np.dtype) else dtype


def _place(value, like, path: str):
    """``value`` as a jax.Array, on ``like``'s sharding if it has one."""
    sharding = getattr(like, "sharding", None)
    out = jax.device_put(value, sharding) if sharding is not None else jax.device_put(value)
    if out.dtype != _native(like.dtype):
        raise CheckpointError(f"{show(path)}: cannot hold dtype {like.dtype} as a jax.Array "
                              f"(got {out.dtype}; is jax_enable_x64 off?)", damaged=False)
    return out


def _like_dict(like: dict, items: list) -> dict:
    """``items`` in a dict of ``like``'s type: ``dict``, or a subclass copied and refilled
    (an ``OrderedDict``, a ``defaultdict`` with its factory), so that the restored tree has
    ``like``'s tree structure."""
    if type(like) is dict:
        return dict(items)
    out = copy.copy(like)
    out.clear()
    out.update(items)
    return out


FREE = object()  # ``like`` of a subtree rebuilt from the description alone


def build(description, leaves: list[np.ndarray], like=FREE,
          known: dict[str, type] | None = None) -> Any:
    """Rebuilds the tree from its description, alone or in the structure of ``like``.

    Without ``like`` (``FREE``): dicts in saved key order, lists, tuples, ``None``, Python
    scalars, NumPy array leaves (exact dtype), ``jax.Array`` typed keys, NamedTuples as
    the known class of that name and fields (``known``, then the registry) or a stand-in.

    With ``like``: every node type, dict key set, NamedTuple name and fields, length,
    shape and dtype must agree; the result takes ``like``'s container types and key
    order, and its array leaves are ``jax.Array``s on ``like``'s shardings. A typed key
    of ``like`` also takes a stored ``uint32`` array that is its key data (a state that
    held raw keys when it was saved).

    Raises:
      CheckpointError: ``damaged=True`` for a malformed description (or one that
        disagrees with the leaves); ``damaged=False`` at the first path (in the file's
        order) where the file and ``like`` differ.
      TypeError: ``like`` holds an unsupported node type.
    """
    known = known or {}
    counter = [0]

    def mismatch(path: str, what: str):
        return CheckpointError(f"{show(path)}: {what}", damaged=False)

    def go(node, like, path: str):
        kind = _get(node, "type", str, path)
        if kind not in ("dict", "list", "tuple", "namedtuple", "none", "array", "key",
                        *SCALARS):
            raise CheckpointError(f"malformed tree description at {show(path)}: unknown "
                                  f"node type {kind!r}")
        free = like is FREE
        if not free:
            want, shown = _like_kind(like, path)
            if kind != want and not (want == "leaf" and kind in ("array", "key")):
                raise mismatch(path, f"file has {_describe(node, kind)}, like has {shown}")
        if kind == "none":
            return None
        if kind in SCALARS:
            return _scalar(node, kind, path)
        if kind in ("array", "key"):
            value = _leaf(node, kind, leaves, counter, path)
            if free:
                return value
            if kind == "array" and _checks.is_key(like):
                value = _raw_key_as(value, like)
            if tuple(value.shape) != tuple(like.shape):
                raise mismatch(path, f"file has shape {tuple(value.shape)}, like has "
                                     f"{tuple(like.shape)}")
            if value.dtype != _native(like.dtype):
                raise mismatch(path, f"file has dtype {value.dtype}, like has {like.dtype}")
            return _place(value, like, path)
        names, items = _children(node, kind, path)
        if kind == "dict":
            if not free and set(names) != set(like):
                raise mismatch(path, f"file has keys {sorted(names)}, like has "
                                     f"{sorted(map(str, like))}")
            # decode in the file's order (the leaves' order), return in like's order
            out = {k: go(n, FREE if free else like[k], child_path(path, "key", k))
                   for k, n in zip(names, items)}
            return out if free else _like_dict(like, [(k, out[k]) for k in like])
        if kind == "namedtuple":
            name, fields = _get(node, "name", str, path), tuple(names)
            if free:
                cls = _resolve(name, fields, known)
            elif fields != like._fields or name.rsplit(".", 1)[-1] != type(like).__name__:
                raise mismatch(path, f"file has {_describe(node, kind)}, like has {shown}")
            else:
                cls = type(like)
            likes = [FREE] * len(items) if free else like
            return cls(*(go(n, v, child_path(path, "field", f))
                         for n, v, f in zip(items, likes, fields)))
        if not free and len(items) != len(like):
            raise mismatch(path, f"file has a {kind} of length {len(items)}, like has {shown}")
        likes = [FREE] * len(items) if free else like
        values = [go(n, v, child_path(path, "index", i))
                  for i, (n, v) in enumerate(zip(items, likes))]
        return values if kind == "list" else tuple(values)

    tree = go(description, like, "")
    if counter[0] != len(leaves):
        raise CheckpointError(f"malformed tree description: it uses {counter[0]} of the "
                              f"{len(leaves)} stored leaves")
    return tree
