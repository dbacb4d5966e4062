"""Argument checks specific to training (generic ones live in :mod:`funcnet._checks`)."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from funcnet import _checks
from funcnet._checks import is_array
from funcnet.nn import Layer


def check_model_args(fn: str, model, loss_fn, metrics_fn, compute_dtype):
    """What ``train_step``, ``fit`` and ``evaluate`` share: a Layer, a callable loss, an
    optional callable metrics function, ``compute_dtype`` ``None`` or a floating dtype
    (returned resolved)."""
    if not isinstance(model, Layer):
        raise TypeError(f"{fn}: model must be a funcnet.nn.Layer (init, apply), got "
                        f"{type(model).__name__}")
    _checks.check_callable(fn, "loss_fn", loss_fn, "loss_fn(logits, labels) -> scalar")
    if metrics_fn is not None:
        _checks.check_callable(fn, "metrics_fn", metrics_fn,
                               "metrics_fn(logits, labels) -> dict of scalars (or None)")
    if compute_dtype is not None:
        compute_dtype = _checks.check_dtype(fn, "compute_dtype", compute_dtype)
    return compute_dtype


def check_pair(fn: str, what: str, data, parts: int | None = None, why: str = "") -> tuple:
    """``data`` must be a pair ``(x, y)`` of arrays (``x`` may be a pytree of arrays:
    several inputs) with the same, non-zero number of rows (with ``parts``, divisible by
    it: ``why`` says what it counts)."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        got = type(data).__name__ + (f" of length {len(data)}"
                                     if isinstance(data, (tuple, list)) else "")
        raise TypeError(f"{fn}: {what} must be a pair (x, y) of arrays, got {got}")
    x, y = data
    if not is_array(y):
        raise TypeError(f"{fn}: {what} y must be an array (the targets), got "
                        f"{type(y).__name__}")
    if not jax.tree_util.tree_leaves(x, is_leaf=is_array):
        raise TypeError(f"{fn}: {what} x must be an array or a pytree of arrays, got "
                        f"{type(x).__name__} with no arrays")
    if _checks.check_same_leading(fn, {f"{what} x": x, f"{what} y": y}, parts, why) == 0:
        raise ValueError(f"{fn}: {what} is empty (y has shape {tuple(y.shape)})")
    return x, y


def is_pair(data) -> bool:
    """``(x, y)``: ``y`` an array-like (anything with ``shape`` and ``dtype``), ``x`` one
    or a non-empty pytree of them. (A list of two ``(x, y)`` batches is not a pair.)"""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return False
    leaves = jax.tree_util.tree_leaves(data[0], is_leaf=is_array)
    return is_array(data[1]) and bool(leaves) and all(map(is_array, leaves))


def num_rows(x) -> int:
    """The leading size of an array or of the first array of a pytree (checked equal)."""
    return int(jax.tree_util.tree_leaves(x, is_leaf=is_array)[0].shape[0])


def check_labels(fn: str, what: str, y, num_classes: int | None) -> None:
    """Integer class labels must lie in ``[0, num_classes)`` (a host check of concrete values)."""
    if num_classes is not None:
        _checks.check_index_range(fn, f"the labels in {what}", y, num_classes,
                                  f"class indices in [0, {num_classes}) for a model with "
                                  f"{num_classes} outputs")


def num_classes(fn: str, what: str, model, params, state, x, y) -> int | None:
    """Traces the model on ``x``'s shape (its shape errors name ``what``, before any
    training) and returns ``C`` when ``y`` holds integer class indices for its
    ``(..., C)`` logits, else ``None``."""
    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(tuple(a.shape), a.dtype), x,
                                  is_leaf=is_array)
    with _checks.context(f"{fn}: {what}"):
        logits, _ = jax.eval_shape(lambda p, s, a: model.apply(p, s, a, train=False),
                                   params, state, spec)
    if not is_array(y) or not np.issubdtype(np.dtype(y.dtype), np.integer):
        return None
    if not is_array(logits):
        return None
    if tuple(y.shape[1:]) != tuple(logits.shape[1:-1]) or not logits.shape[1:]:
        return None
    return int(logits.shape[-1])


def check_manager(fn: str, manager) -> None:
    """A manager-like object: the methods fit uses, and a sane ``keep`` if it has one."""
    needed = ("save", "restore", "latest_step", "metadata", "clear")
    missing = [m for m in needed if not callable(getattr(manager, m, None))]
    if missing:
        raise TypeError(f"{fn}: checkpoint must be a checkpoint manager with save(step, tree, "
                        f"metadata=...), restore(step=None, like=None), latest_step(), "
                        f"metadata(step=None) and clear() (e.g. "
                        f"funcnet.checkpoint.CheckpointManager(dir)); "
                        f"{type(manager).__name__} lacks {', '.join(missing)}")
    keep = getattr(manager, "keep", None)
    if keep is not None:
        _checks.static_int(fn, "checkpoint.keep", keep, minimum=1)


def check_mesh(fn: str, mesh) -> int:
    """``mesh`` is ``None`` or a :class:`jax.sharding.Mesh`; returns its number of devices."""
    if mesh is None:
        return 1
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn}: mesh must be None or a jax.sharding.Mesh (e.g. "
                        f"funcnet.parallel.make_mesh()), got {type(mesh).__name__}")
    return int(mesh.size)


def check_batch_split(fn: str, what: str, batch_size: int, devices: int) -> None:
    if batch_size % devices:
        raise ValueError(f"{fn}: {what} {batch_size} is not divisible by the {devices} "
                         f"devices of the mesh; use a multiple of {devices}")
