"""Argument checks specific to training (generic ones live in :mod:`funcnet._checks`)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from funcnet import _checks
from funcnet._checks import is_array
from funcnet.nn.base import check_layer
from funcnet.train.metrics import class_labels, class_layout, default_metrics


def check_model_args(fn: str, model, loss_fn, metrics_fn, compute_dtype):
    """What ``train_step``, ``fit`` and ``evaluate`` share: a Layer, a callable loss, an
    optional callable metrics function, ``compute_dtype`` ``None`` or a floating dtype
    (returned resolved)."""
    check_layer(fn, "model", model)
    _checks.check_callable(fn, "loss_fn", loss_fn, "loss_fn(logits, labels) -> scalar")
    if metrics_fn is not None:
        _checks.check_callable(fn, "metrics_fn", metrics_fn,
                               "metrics_fn(logits, labels) -> dict of scalars (or None)")
    if compute_dtype is not None:
        compute_dtype = _checks.check_dtype(fn, "compute_dtype", compute_dtype)
    return compute_dtype


def check_pair(fn: str, what: str, data, parts: int | None = None, why: str = "") -> tuple:
    """``data`` must be a pair ``(x, y)`` with the same, non-zero number of rows (with
    ``parts``, divisible by it: ``why`` says what it counts): ``x`` an array or a pytree
    of arrays (several inputs), ``y`` an array or a dict of arrays (targets and what
    travels with them, e.g. ``{"labels": ..., "mask": ...}``)."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        got = type(data).__name__ + (f" of length {len(data)}"
                                     if isinstance(data, (tuple, list)) else "")
        raise TypeError(f"{fn}: {what} must be a pair (x, y) of arrays, got {got}")
    x, y = data
    if not _is_targets(y):
        raise TypeError(f"{fn}: {what} y must be an array (the targets) or a non-empty "
                        f"dict of arrays (e.g. {{'labels': ..., 'mask': ...}}), got "
                        f"{type(y).__name__}" + (" (a dict, not a tuple: a pair of "
                                                 "tuples reads as two batches)"
                                                 if isinstance(y, (tuple, list)) else ""))
    if not jax.tree_util.tree_leaves(x, is_leaf=is_array):
        raise TypeError(f"{fn}: {what} x must be an array or a pytree of arrays, got "
                        f"{type(x).__name__} with no arrays")
    if _checks.check_same_leading(fn, {f"{what} x": x, f"{what} y": y}, parts, why) == 0:
        raise ValueError(f"{fn}: {what} is empty (y has {num_rows(y)} rows)")
    return x, y


def _is_targets(y) -> bool:
    """An array-like, or a non-empty dict whose leaves all are (checked by shape later)."""
    if is_array(y):
        return True
    return isinstance(y, Mapping) and bool(
        jax.tree_util.tree_leaves(y, is_leaf=is_array))


def is_pair(data) -> bool:
    """``(x, y)``: ``y`` an array-like (anything with ``shape`` and ``dtype``) or a dict of
    them, ``x`` one or a non-empty pytree of them. (A list of two ``(x, y)`` batches is
    not a pair: its ``y`` is a tuple.)"""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return False
    leaves = jax.tree_util.tree_leaves(data, is_leaf=is_array)
    return _is_targets(data[1]) and bool(
        jax.tree_util.tree_leaves(data[0], is_leaf=is_array)) and all(map(is_array, leaves))


def num_rows(x) -> int:
    """The leading size of an array or of the first array of a pytree (checked equal)."""
    return int(jax.tree_util.tree_leaves(x, is_leaf=is_array)[0].shape[0])


def check_labels(fn: str, what: str, y, num_classes: int | None) -> None:
    """Integer class labels must lie in ``[0, num_classes)`` (a host check of concrete
    values): ``y``, or a dict's ``"labels"`` where its ``"mask"`` is true (so padding
    labels such as ``-100`` pass, and a real label out of range is still caught)."""
    if num_classes is None:
        return
    labels, mask = class_labels(y)
    if labels is not y:
        what = f"{what}['labels']"
        values, kept = _checks.concrete(labels), _checks.concrete(mask)
        if values is None or (mask is not None and (kept is None or
                                                     kept.shape != values.shape)):
            return
        labels = values if mask is None else np.where(kept.astype(bool), values, 0)
    try:
        _checks.check_index_range(fn, f"the labels in {what}", labels, num_classes,
                                  f"class indices in [0, {num_classes}) for a model with "
                                  f"{num_classes} outputs" + (" (where y['mask'] is true)"
                                                              if mask is not None else ""))
    except ValueError as err:
        if labels is not y or _checks.concrete(y).min() >= 0:
            raise
        raise ValueError(
            f"{err}. Padding labels (e.g. -100) need a mask that travels with them: pass y "
            f"as a dict, y={{'labels': y, 'mask': y >= 0}}, with loss_fn=lambda logits, t: "
            f"funcnet.ops.softmax_cross_entropy(logits, t['labels'], where=t['mask']) and a "
            f"metrics_fn (e.g. funcnet.train.accuracy(logits, t['labels'], "
            f"where=t['mask']))") from None


# Log entries of ``fit`` that a metric must not overwrite (``eval_*`` are the evaluation's).
FIT_LOGS = ("loss", "epoch", "learning_rate", "epoch_time")


def check_loss(fn: str, loss) -> None:
    """``loss`` must be a scalar, the batch mean. Shapes only: works on arrays, tracers and
    ``ShapeDtypeStruct`` s, so it runs at trace time (before ``jax.grad`` would fail)."""
    if _checks.shape_of(loss) != ():
        raise ValueError(
            f"{fn}: loss_fn must return a scalar, the mean over the batch; it returned shape "
            f"{_checks.shape_of(loss)}. A per-example loss (as optax's losses are) needs "
            f"its mean: loss_fn=lambda logits, labels: my_loss(logits, labels).mean()")


def check_metrics(fn: str, metrics, reserved=("loss",), prefix: str | None = None) -> dict:
    """``metrics`` must be a dict (or ``None``) of scalars named neither ``reserved`` nor
    ``prefix...``; returns it as a dict. Shapes only, as :func:`check_loss`."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{fn}: metrics_fn must return a dict {{name: scalar}} (or None), "
                        f"got {type(metrics).__name__}")
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"{fn}: metrics_fn's names must be str, got {name!r}")
        if name in reserved or (prefix is not None and name.startswith(prefix)):
            taken = ", ".join(repr(r) for r in reserved) + (f" or {prefix!r}..." if prefix
                                                             else "")
            raise ValueError(f"{fn}: metrics_fn returned a metric named {name!r}, a name "
                             f"{fn} gives its own log entries ({taken}); rename it")
        if _checks.shape_of(value) != ():
            raise ValueError(f"{fn}: metrics_fn must return scalars, the means over the "
                             f"batch; {name!r} has shape {_checks.shape_of(value)}")
    return dict(metrics)


class Outputs(NamedTuple):
    """What tracing the model, the loss and the metrics on one batch shape tells."""

    num_classes: int | None    # C for integer class labels of (..., C) logits, else None
    metrics: tuple             # the metric names, in metrics_fn's order


def trace_outputs(fn: str, what: str, model, params, state, x, y, loss_fn=None,
                  metrics_fn=None, reserved=("loss",), prefix: str | None = None) -> Outputs:
    """Traces the model on ``x``'s shape (its shape errors name ``what``, before any
    training) and, given ``loss_fn``, the loss and the metrics on its logits
    (:func:`check_loss`, :func:`check_metrics`); returns the class count of integer
    labels and the metric names."""
    def spec(a):
        return jax.ShapeDtypeStruct(tuple(a.shape), a.dtype)

    def outputs(p, s, a, t):
        logits, _ = model.apply(p, s, a, train=False)
        if loss_fn is None:
            return logits, None, None
        metrics = (default_metrics(loss_fn) if metrics_fn is None else metrics_fn)(logits, t)
        return logits, loss_fn(logits, t), metrics

    try:
        with _checks.context(f"{fn}: {what}"):
            logits, loss, metrics = jax.eval_shape(
                outputs, params, state,
                *jax.tree_util.tree_map(spec, (x, y), is_leaf=is_array))
    except TypeError as err:
        if not isinstance(y, Mapping):
            raise
        raise TypeError(f"{err}; y is a dict ({', '.join(map(repr, y))}) and loss_fn and "
                        f"metrics_fn get it whole: pass functions that take it, e.g. "
                        f"loss_fn=lambda logits, t: funcnet.ops.softmax_cross_entropy("
                        f"logits, t['labels'], where=t['mask'])") from None
    names = ()
    if loss_fn is not None:
        check_loss(fn, loss)
        names = tuple(check_metrics(fn, metrics, reserved, prefix))
    return Outputs(_classes(logits, y, loss_fn), names)


def _classes(logits, y, loss_fn) -> int | None:
    """The class count that integer labels ``y`` (or a dict's ``"labels"``) index (along
    the loss's class axes), or ``None`` where they are no class labels of ``logits``."""
    y = class_labels(y)[0]
    if not is_array(y) or not np.issubdtype(np.dtype(y.dtype), np.integer):
        return None
    if not is_array(logits) or len(logits.shape) < 2:
        return None
    layout = class_layout(loss_fn, tuple(logits.shape))
    if layout is None or tuple(y.shape[1:]) != layout[0][1:]:
        return None
    return layout[1]


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


def check_config(fn: str, config):
    """``config`` as its JSON round trip (tuples become lists, so that it compares equal to
    the copy read back from a checkpoint); ``None`` stays ``None``."""
    if config is None:
        return None
    try:
        return json.loads(json.dumps(config, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{fn}: config must be JSON-serialisable (dicts with str keys, lists, "
                        f"str, finite numbers, bool, None): {err}") from None


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
