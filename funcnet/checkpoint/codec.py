"""Pytree <-> (JSON tree description, list of NumPy leaves).

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
unsigned integer of the same width; typed PRNG keys as their ``uint32`` key data. Only
dtypes and key implementations from the fixed tables below are accepted when reading.
"""
from __future__ import annotations

from typing import Any, Iterable

import jax
import ml_dtypes
import numpy as np

from funcnet.checkpoint.errors import CheckpointError
from funcnet.checkpoint.registry import is_namedtuple_class, qualified_name, resolve

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
    if dtype.name in BITS_DTYPES:
        return np.dtype(f"uint{8 * dtype.itemsize}")
    return dtype


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, jax.Array))


def is_key_dtype(dtype) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


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
        if _is_array(x) and is_key_dtype(x.dtype):
            return leaf({"type": "key", "impl": str(jax.random.key_impl(x)),
                         "shape": list(x.shape)}, np.asarray(jax.random.key_data(x)))
        if _is_array(x):
            array = np.asarray(x)
            dtype = array.dtype.newbyteorder("=")
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


def _get(node, field: str, kind, path: str):
    """``node[field]``, checked to be of ``kind``; else the description is malformed."""
    value = node.get(field) if isinstance(node, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        kind_name = getattr(kind, "__name__", kind)
        raise CheckpointError(f"malformed tree description at {show(path)}: expected "
                              f"{field!r} of type {kind_name} in {node!r:.200}")
    return value


def node_type(node, path: str) -> str:
    return _get(node, "type", str, path)


def children(node, path: str) -> list:
    """The child nodes of a dict/list/tuple/namedtuple node, checked against its keys."""
    kind = node_type(node, path)
    items = _get(node, "values" if kind == "dict" else "items", list, path)
    names = (_get(node, "keys", list, path) if kind == "dict"
             else _get(node, "fields", list, path) if kind == "namedtuple" else None)
    if names is not None and (len(names) != len(items) or len(set(names)) != len(names)
                              or not all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"malformed tree description at {show(path)}: names "
                              f"{names!r:.200} do not match {len(items)} children")
    return items


def scalar(node, path: str):
    kind = SCALARS[node_type(node, path)]
    return _get(node, "value", kind, path) if kind is not float else float(
        _get(node, "value", (int, float), path))


def leaf_value(node, leaves: list[np.ndarray], counter: list[int], path: str):
    """Decodes one array or key node from the next stored leaf (NumPy array / key array)."""
    index = _get(node, "leaf", int, path)
    if index != counter[0] or index >= len(leaves):
        raise CheckpointError(f"malformed tree description at {show(path)}: leaf {index} "
                              f"out of order (expected leaf {counter[0]} of {len(leaves)})")
    counter[0] += 1
    stored = leaves[index]
    shape = tuple(_get(node, "shape", list, path))
    if node_type(node, path) == "key":
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


def decode(node, leaves: list[np.ndarray], extra_types: Iterable[type] = ()) -> Any:
    """Rebuilds the tree from its description alone (see :func:`restore`).

    Raises:
      CheckpointError: the description is malformed or disagrees with the leaves.
    """
    extra_types = tuple(extra_types)
    counter = [0]

    def go(node, path: str):
        kind = node_type(node, path)
        if kind == "none":
            return None
        if kind in SCALARS:
            return scalar(node, path)
        if kind in ("array", "key"):
            return leaf_value(node, leaves, counter, path)
        if kind not in ("dict", "list", "tuple", "namedtuple"):
            raise CheckpointError(f"malformed tree description at {show(path)}: unknown node "
                                  f"type {kind!r}")
        items = children(node, path)
        if kind == "dict":
            keys = node["keys"]
            return {k: go(v, child_path(path, "key", k)) for k, v in zip(keys, items)}
        if kind == "namedtuple":
            fields = tuple(node["fields"])
            cls = resolve(_get(node, "name", str, path), fields, extra_types)
            return cls(*(go(v, child_path(path, "field", f)) for f, v in zip(fields, items)))
        values = [go(v, child_path(path, "index", i)) for i, v in enumerate(items)]
        return values if kind == "list" else tuple(values)

    tree = go(node, "")
    if counter[0] != len(leaves):
        raise CheckpointError(f"malformed tree description: it uses {counter[0]} of the "
                              f"{len(leaves)} stored leaves")
    return tree
