"""Restoring into the structure of ``like``: every node, shape and dtype must agree."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from funcnet.checkpoint.codec import (SCALARS, child_path, children, leaf_value, node_type,
                                      scalar, show)
from funcnet.checkpoint.errors import CheckpointError
from funcnet.checkpoint.registry import is_namedtuple_class


def _describe(node, path: str) -> str:
    kind = node_type(node, path)
    if kind == "namedtuple":
        name = str(node.get("name", "?")).rsplit(".", 1)[-1]
        return f"NamedTuple {name}{tuple(node.get('fields', ()))}"
    if kind in ("array", "key"):
        what = "a PRNG key" if kind == "key" else "an array"
        return f"{what} of shape {tuple(node.get('shape', ()))}"
    return {"none": "None", "int": "an int"}.get(kind, f"a {kind}")


def _like_kind(like) -> str:
    if like is None:
        return "None"
    if is_namedtuple_class(type(like)):
        return f"NamedTuple {type(like).__name__}{tuple(type(like)._fields)}"
    if hasattr(like, "shape") and hasattr(like, "dtype"):
        return f"an array of shape {tuple(like.shape)}"
    return f"a {type(like).__name__}"


def _place(value, like, path: str):
    """``value`` as a jax.Array, on ``like``'s sharding if it has one."""
    sharding = getattr(like, "sharding", None)
    out = jax.device_put(value, sharding) if sharding is not None else jax.device_put(value)
    if out.dtype != like.dtype:
        raise CheckpointError(f"{show(path)}: cannot hold dtype {like.dtype} as a jax.Array "
                              f"(got {out.dtype}; is jax_enable_x64 off?)")
    return out


def match(node, leaves: list[np.ndarray], like) -> Any:
    """Rebuilds the tree in ``like``'s structure and types, checking every leaf.

    Args:
      node: the file's tree description.
      leaves: the stored leaves.
      like: a pytree of arrays / ``jax.ShapeDtypeStruct`` / Python scalars / None, with
        dicts, lists, tuples and NamedTuples as inner nodes.

    Returns:
      The tree, with ``like``'s container types (its NamedTuple classes, its dict key
      order) and ``jax.Array`` leaves placed on ``like``'s shardings.

    Raises:
      CheckpointError: at the first path (in the file's order) where file and ``like`` differ.
      TypeError: ``like`` holds an unsupported node type.
    """
    counter = [0]

    def mismatch(path: str, what: str):
        return CheckpointError(f"{show(path)}: {what}")

    def go(node, like, path: str):
        kind = node_type(node, path)
        if isinstance(like, dict):
            if kind != "dict":
                raise mismatch(path, f"file has {_describe(node, path)}, like has a dict")
            items = children(node, path)
            file_keys = node["keys"]
            if set(file_keys) != set(like):
                raise mismatch(path, f"file has keys {sorted(file_keys)}, like has "
                                     f"{sorted(map(str, like))}")
            # decode in the file's order (the leaves' order), return in like's order
            out = {k: go(n, like[k], child_path(path, "key", k))
                   for k, n in zip(file_keys, items)}
            return {k: out[k] for k in like}
        if is_namedtuple_class(type(like)):
            fields = tuple(type(like)._fields)
            name = str(node.get("name", "")).rsplit(".", 1)[-1]
            if (kind != "namedtuple" or tuple(node.get("fields", ())) != fields
                    or name != type(like).__name__):
                raise mismatch(path, f"file has {_describe(node, path)}, like has "
                                     f"{_like_kind(like)}")
            items = children(node, path)
            return type(like)(*(go(n, v, child_path(path, "field", f))
                                for n, v, f in zip(items, like, fields)))
        if type(like) in (list, tuple):
            items = children(node, path) if kind == type(like).__name__ else None
            if items is None or len(items) != len(like):
                size = f" of length {len(items)}" if items is not None else ""
                raise mismatch(path, f"file has {_describe(node, path)}{size}, like has "
                                     f"a {type(like).__name__} of length {len(like)}")
            values = [go(n, v, child_path(path, "index", i))
                      for i, (n, v) in enumerate(zip(items, like))]
            return values if isinstance(like, list) else tuple(values)
        if like is None or type(like) in SCALARS.values():
            want = "none" if like is None else type(like).__name__
            if kind != want:
                raise mismatch(path, f"file has {_describe(node, path)}, like has "
                                     f"{_like_kind(like)}")
            return None if like is None else scalar(node, path)
        if hasattr(like, "shape") and hasattr(like, "dtype"):
            if kind not in ("array", "key"):
                raise mismatch(path, f"file has {_describe(node, path)}, like has "
                                     f"{_like_kind(like)}")
            value = leaf_value(node, leaves, counter, path)
            if tuple(value.shape) != tuple(like.shape):
                raise mismatch(path, f"file has shape {tuple(value.shape)}, like has "
                                     f"{tuple(like.shape)}")
            if value.dtype != like.dtype:
                raise mismatch(path, f"file has dtype {value.dtype}, like has {like.dtype}")
            return _place(value, like, path)
        raise TypeError(f"restore: like has unsupported type {type(like).__name__} at "
                        f"{show(path)}")

    tree = go(node, like, "")
    if counter[0] != len(leaves):
        raise CheckpointError(f"malformed tree description: it uses {counter[0]} of the "
                              f"{len(leaves)} stored leaves")
    return tree
