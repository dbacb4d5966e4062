"""Metrics of a batch (accuracy, the default metrics rule) and the casts of mixed precision.

A metrics function is ``metrics_fn(logits, labels) -> {name: scalar}``, each value the
MEAN over the batch (so that it can be averaged over steps, devices and, per example,
over a padded evaluation batch). The default (``metrics_fn=None`` in :func:`train_step`,
:func:`fit` and :func:`evaluate`) is :func:`default_metrics` of the loss:

- integer labels of shape ``logits.shape[:-1]`` are class indices: ``{"accuracy"}``;
- floating labels of ``logits``' shape with at least 2 classes are one-hot / probability
  labels when the loss is a classification loss that takes them
  (:func:`funcnet.ops.softmax_cross_entropy`, :func:`funcnet.ops.cross_entropy`,
  :func:`funcnet.ops.poly_loss_cross_entropy`, the multiclass Dice losses (pixel accuracy
  of a segmentation) or their reference twins, also as a
  ``functools.partial``, e.g. with ``label_smoothing=``): ``{"accuracy"}`` of
  ``argmax(labels)``; a ``partial(softmax_cross_entropy, axis=...)`` (or PolyLoss's) takes
  its argmax over the loss's class axes (classes not last, or a tuple of axes);
- anything else (a regression with ``mean_squared_error``, binary targets, a custom loss
  on float targets, :func:`funcnet.ops.ntxent`, whose integer labels group rows rather
  than name classes of the outputs): ``{}``, so no meaningless accuracy is reported. Pass
  ``metrics_fn=train.classification_metrics`` to force accuracy for a custom loss;
- a dict of targets (``fit``'s ``y = {"labels": ..., "mask": ...}``, padded sequence
  labels): the rule above on its ``"labels"``, counting only the rows where its
  ``"mask"`` is true (:func:`accuracy`'s ``where``); a dict without ``"labels"``: ``{}``.
  :func:`funcnet.train.evaluate` weighs each example's metrics by its count of true
  ``"mask"`` entries (:func:`kept_per_example`), and ``fit`` each step's in the epoch
  means by its batch's, so they come out over every kept entry of the set.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Callable

import jax
import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.ops import reference
from funcnet.ops.losses import check_softmax_cross_entropy_args

__all__ = ["accuracy", "cast_floating", "classification_metrics", "correct",
           "default_metrics", "per_example"]

KEPT = "__kept__"   # fit's per-step count of kept target entries (a dict y with a mask)

_PROBABILITY_LOSSES = (ops.softmax_cross_entropy, ops.cross_entropy,
                       ops.poly_loss_cross_entropy, ops.dice_loss,
                       ops.safe_softmax_cross_entropy, reference.safe_softmax_cross_entropy,
                       ops.multiclass_generalized_dice_loss, reference.softmax_cross_entropy,
                       reference.cross_entropy, reference.poly_loss_cross_entropy,
                       reference.dice_loss, reference.multiclass_generalized_dice_loss)


def _label_kind(logits, labels) -> str | None:
    """``"index"``, ``"onehot"`` or ``None`` from the static shapes and dtypes (``None``
    for a dict of targets: the default metrics cannot know which entry is the label; and
    for one output, which is no softmax over classes: an argmax over one logit would
    count the share of class 0 as "accuracy")."""
    if not (_checks.is_array(logits) and _checks.is_array(labels)):
        return None
    lshape, yshape = tuple(jnp.shape(logits)), tuple(jnp.shape(labels))
    if not lshape or lshape[-1] < 2:
        return None
    dtype = jnp.result_type(labels)
    if jnp.issubdtype(dtype, jnp.integer) and yshape == lshape[:-1]:
        return "index"
    if jnp.issubdtype(dtype, jnp.floating) and yshape == lshape:
        return "onehot"
    return None


def correct(logits, labels, *, k: int = 1) -> jax.Array:
    """Per-example correctness as ``float32`` 0/1: ``argmax(logits) == label``, or with
    ``k > 1`` the label among the ``k`` largest logits (``jax.lax.top_k``: ties go to the
    lower class index, as ``argmax``'s).

    Args:
      logits: ``(..., C)`` scores.
      labels: ``(...)`` int class indices or ``(..., C)`` one-hot / probabilities (the
        class with the largest probability counts as the label).
      k: static int in ``[1, C]`` (keyword-only).

    Returns:
      ``logits.shape[:-1]`` float32, 1.0 where the prediction is right.

    Raises:
      ValueError: ``labels`` are neither class indices nor one-hot of ``logits``' shape;
        ``k`` outside ``[1, C]``.
      TypeError: a non-int ``k``.
    """
    kind = _label_kind(logits, labels)
    if kind is None and tuple(jnp.shape(logits))[-1:] == (1,):
        raise ValueError(f"accuracy: logits of shape {tuple(jnp.shape(logits))} hold one "
                         f"output, not class scores (an argmax over one logit is always 0); "
                         f"a one-logit binary classifier's accuracy is "
                         f"mean((logits[..., 0] > 0) == labels)")
    if kind is None:
        raise ValueError(f"accuracy: labels with shape {tuple(jnp.shape(labels))} and dtype "
                         f"{jnp.result_type(labels)} are neither integer class indices of "
                         f"shape {tuple(jnp.shape(logits))[:-1]} nor one-hot / probabilities "
                         f"of the logits' shape {tuple(jnp.shape(logits))}")
    classes = jnp.shape(logits)[-1]
    k = _checks.static_int("accuracy", "k", k, minimum=1)
    if k > classes:
        raise ValueError(f"accuracy: k = {k} is more than the {classes} classes of logits "
                         f"{tuple(jnp.shape(logits))}")
    idx = labels if kind == "index" else jnp.argmax(labels, axis=-1)
    if k == 1:
        pred = jnp.argmax(logits, axis=-1)
        return (pred.astype(idx.dtype) == idx).astype(jnp.float32)
    top = jax.lax.top_k(logits, k)[1]
    return jnp.any(top == idx[..., None].astype(top.dtype), axis=-1).astype(jnp.float32)


def accuracy(logits, labels, where=None, *, k: int = 1) -> jax.Array:
    """Fraction of examples whose ``argmax(logits)`` is the label (with ``k``: whose label
    is among the ``k`` largest logits, top-``k`` accuracy), a float32 scalar.

    With ``where`` (e.g. the mask of padded sequence labels), the fraction of the kept
    rows: ``sum(correct * where) / sum(where)``, so masked rows (whatever their label,
    ``-100`` included) never count, and a batch without a kept row gives 0. A float
    ``where`` weighs each row by its value (non-negative weights).

    Args:
      logits: ``(..., C)`` scores, e.g. ``(N, C)`` or ``(N, T, C)``.
      labels: ``logits.shape[:-1]`` int class indices or ``logits``-shaped one-hot /
        probabilities.
      where: optional bool mask (or non-negative float weights) of shape
        ``logits.shape[:-1]``: the rows that count.
      k: static int in ``[1, C]``, keyword-only (default 1).

    Returns:
      A float32 scalar in ``[0, 1]``.

    Raises:
      ValueError: labels that are no class labels of ``logits``; ``where`` of another
        shape; ``k`` outside ``[1, C]``.
    """
    hits = correct(logits, labels, k=k)
    if where is None:
        return jnp.mean(hits)
    _checks.check_array("accuracy", "where", where)
    if _checks.shape_of(where) != hits.shape:
        raise ValueError(f"accuracy: where has shape {_checks.shape_of(where)}, expected the "
                         f"logits' shape without the class axis {hits.shape} (logits "
                         f"{tuple(jnp.shape(logits))})")
    kept = jnp.asarray(where).astype(jnp.float32)
    total = jnp.sum(kept)
    return jnp.sum(hits * kept) / jnp.where(total > 0, total, 1.0)


def classification_metrics(logits, labels, where=None) -> dict:
    """``{"accuracy": accuracy(logits, labels, where)}`` for class-index or one-hot labels,
    else ``{}``.

    Unlike :func:`default_metrics` it does not look at the loss: float labels of the
    logits' shape always count as one-hot / probabilities.
    """
    if _label_kind(logits, labels) is None:
        return {}
    return {"accuracy": accuracy(logits, labels, where)}


def _index_metrics(logits, labels, where=None) -> dict:
    if _label_kind(logits, labels) != "index":
        return {}
    return {"accuracy": accuracy(logits, labels, where)}


def _no_metrics(logits, labels, where=None) -> dict:
    return {}


def class_labels(y) -> tuple:
    """``(labels, mask)``: ``y`` itself (no mask), or a dict's ``"labels"`` entry and its
    ``"mask"`` (the entries that count; either may be ``None``), the convention of padded
    sequence labels ``{"labels": ..., "mask": ...}``."""
    if isinstance(y, Mapping):
        return y.get("labels"), y.get("mask")
    return y, None


def kept_per_example(y, n: int) -> jax.Array:
    """``(N,)`` float32 weight of each example in the metrics of
    :func:`funcnet.train.evaluate` (and of ``fit``'s epochs): 1, or for a
    dict of targets with a ``"mask"`` (padded sequence labels ``{"labels", "mask"}``) the
    number of its true entries (the sum of its values for a float mask of weights).

    A metric of such targets is a mean over the kept entries (``accuracy(...,
    where=mask)``), so weighting each example's value by its count gives the mean over
    every kept entry of the set: the token accuracy, not the mean of each sequence's
    accuracy, and a sequence with nothing kept does not count."""
    kept = class_labels(y)[1]
    if kept is None:
        return jnp.ones((n,), jnp.float32)
    kept = jnp.asarray(kept).astype(jnp.float32)
    return jnp.sum(kept.reshape(n, -1), axis=1)


@functools.lru_cache(maxsize=None)
def _on_labels(metrics: Callable) -> Callable:
    """``metrics`` (a rule's function) that also takes a dict of targets: the rule runs on
    its ``"labels"`` with ``where=`` its ``"mask"``; without ``"labels"``, no metrics.
    One wrapper per rule, so the jitted steps compile once."""
    def run(logits, y):
        labels, mask = class_labels(y)
        if labels is None:
            return {}
        return metrics(logits, labels) if mask is None else metrics(logits, labels, mask)
    run.__name__ = run.__qualname__ = getattr(metrics, "__name__", "metrics")
    return run


def default_metrics(loss_fn: Callable) -> Callable:
    """The default ``metrics_fn`` for ``loss_fn`` (the rule of the module docstring).

    Returns :func:`classification_metrics` for the losses that take one-hot /
    probability labels, an accuracy over the loss's class axes for a ``partial`` with
    ``axis=``, no metrics for :func:`funcnet.ops.ntxent`, and an accuracy for integer
    class indices only for any other loss; for a dict of targets, the same rule on its
    ``"labels"`` where its ``"mask"`` is true. Each is one function per rule (per
    ``axis``), so the jitted functions that use them compile once.
    """
    loss_fn, axis = _loss_and_axis(loss_fn)
    if axis is None:
        return _on_labels(_no_metrics)
    if axis != -1:
        return _on_labels(_classes_on(axis))
    if any(loss_fn is f for f in _PROBABILITY_LOSSES):
        return _on_labels(classification_metrics)
    return _on_labels(_index_metrics)


def _loss_and_axis(loss_fn):
    """``(the function under any functools.partial, its class axes)``: the ``axis``
    keyword of the losses that take one (an int or a tuple), ``-1`` (classes last) for
    every other loss, ``None`` for a loss whose integer labels are not classes."""
    keywords: dict = {}
    while isinstance(loss_fn, functools.partial):    # partial(softmax_cross_entropy,
        keywords = {**loss_fn.keywords, **keywords}   #   label_smoothing=0.1) is one too
        loss_fn = loss_fn.func
    if any(loss_fn is f for f in _EMBEDDING_LOSSES):
        return loss_fn, None
    if not any(loss_fn is f for f in _AXIS_LOSSES):
        return loss_fn, -1
    axis = keywords.get("axis", -1)
    return loss_fn, tuple(axis) if isinstance(axis, list) else axis


def check_per_example_loss(fn: str, what: str, loss_fn) -> None:
    """``evaluate`` averages per-example losses (every example counts once, a padded last
    batch included): a loss that couples the rows of a batch (``ntxent``'s pairs) has no
    per-example value, so it is refused there with a ``ValueError``."""
    if _loss_and_axis(loss_fn)[1] is None:
        raise ValueError(
            f"{fn}: {what} is a loss over pairs of rows (ntxent), which has no value per "
            "example; evaluate computes per-example losses so that every example counts "
            "once. Evaluate it on whole batches yourself, e.g. jax.jit(lambda p, s, x, y: "
            "loss_fn(model.apply(p, s, x, train=False)[0], y))")


def class_layout(loss_fn, logits_shape) -> tuple[tuple, int] | None:
    """``(labels' shape, class count)`` of integer class labels of ``loss_fn`` (``None``:
    the classes last) for logits of ``logits_shape``: the shape without the loss's class
    axes and their size. ``None`` when its integer labels are not class indices
    (:func:`funcnet.ops.ntxent`), the axes do not fit the shape (the loss says why), or
    they hold one output, which is no softmax over classes (0/1 labels of a one-logit
    binary classifier)."""
    axis = -1 if loss_fn is None else _loss_and_axis(loss_fn)[1]
    if axis is None:
        return None
    try:
        rest, axes = _checks.row_axes("metrics", axis, len(logits_shape))
    except (TypeError, ValueError):
        return None
    classes = math.prod(int(logits_shape[i]) for i in axes)
    return None if classes < 2 else (tuple(logits_shape[i] for i in rest), classes)


# losses whose integer labels name groups of rows, not classes of the outputs: no accuracy
_EMBEDDING_LOSSES = (ops.ntxent, reference.ntxent)
_AXIS_LOSSES = (ops.softmax_cross_entropy, ops.poly_loss_cross_entropy,
                ops.softmax_cross_entropy_with_integer_labels,
                reference.softmax_cross_entropy, reference.poly_loss_cross_entropy,
                reference.softmax_cross_entropy_with_integer_labels)


@functools.lru_cache(maxsize=None)
def _classes_on(axis) -> Callable:
    """:func:`classification_metrics` of a loss whose classes lie on ``axis`` (an int or
    a tuple, the loss's keyword): the logits (and probability labels) are laid out as
    the loss lays them out, classes last and flattened, before the argmax. One function
    per ``axis``, so the jitted steps that use it compile once."""
    def metrics(logits, labels, where=None):
        if (where is not None and _checks.shape_of(where) == _checks.shape_of(labels)
                and jnp.issubdtype(jnp.result_type(labels), jnp.integer)):
            labels = jnp.where(where, labels, 0)     # padding labels (-100) are no classes
        logits, labels, *_ = check_softmax_cross_entropy_args("accuracy", logits, labels,
                                                               axis)
        return classification_metrics(logits, labels, where)
    return metrics


def per_example(fn: Callable, logits, labels):
    """``fn`` (a batch mean, e.g. a loss or a metrics function) on batches of one example.

    Returns ``fn``'s result with a leading axis of ``N``, so that a padded evaluation
    batch can mask out its padding. Works for anything that averages over the batch
    (every loss of :mod:`funcnet.ops`, every metrics function). ``labels`` may be a dict
    of arrays (``fit``'s ``y``): each leaf is cut alike.
    """
    def one(lg, t):
        return fn(lg[None], jax.tree_util.tree_map(lambda a: a[None], t))
    return jax.vmap(one)(logits, labels)


def cast_floating(tree, dtype):
    """Casts every floating leaf of ``tree`` to ``dtype``; other leaves are kept.

    ``dtype=None`` returns ``tree`` unchanged. Used for mixed precision: the float32
    master weights are cast to e.g. ``bfloat16`` for the forward/backward pass; the cast's
    transpose brings the gradients back to float32.
    """
    if dtype is None:
        return tree

    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    return jax.tree_util.tree_map(cast, tree)
