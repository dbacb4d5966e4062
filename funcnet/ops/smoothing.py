"""Label smoothing as optax writes it: ``smooth_labels(labels, alpha, *, axis=-1,
where=None)``, a ``jax.custom_vjp`` (the map is linear: ``dt = (1 - alpha) dt'``).

For training with smoothed targets, ``softmax_cross_entropy(..., label_smoothing=alpha)``
fuses the two (and takes index labels); this op is for code that smooths the labels
itself (optax's habit) or needs the smoothed targets.

References:
  Szegedy et al. (2016), "Rethinking the Inception Architecture for Computer Vision",
  https://arxiv.org/abs/1512.00567, section 7. Müller, Kornblith & Hinton (2019), "When
  does label smoothing help?", https://arxiv.org/abs/1906.02629.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin

__all__ = ["smooth_labels"]


def smoothed(labels, alpha: float, count):
    """``(1 - alpha) t + alpha / K``."""
    return (1.0 - alpha) * labels + alpha / count


def smoothing_mix(a, plain, uniform):
    """``(1 - a) plain + a uniform`` for a traced smoothing ``a``: a value linear in it
    (the smoothed labels, a loss of them), from its values at ``a = 0`` (the labels as
    they are) and ``a = 1`` (the uniform ones), each by its static rule, so that the
    input gradients mix the two rules and ``d/da = uniform - plain``. A ``-inf`` logit
    (a masked class) makes a loss's ``uniform`` infinite: it counts only for ``a > 0``."""
    a = jnp.asarray(a).astype(plain.dtype)
    uniform = jnp.where((a == 0) & jnp.isinf(uniform), jnp.zeros((), plain.dtype), uniform)
    return (1 - a) * plain + a * uniform


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _smooth(labels, alpha, count):
    return smoothed(labels, alpha, count)


def _smooth_fwd(labels, alpha, count):
    return smoothed(labels, alpha, count), None


def _smooth_bwd(alpha, _, g):
    return (1.0 - alpha) * g, None    # K counts classes: no gradient


defvjp(_smooth, _smooth_fwd, _smooth_bwd)


def check_smooth_labels_args(labels, alpha, axis, where):
    """``(labels, alpha, K)`` with ``K`` the class count along ``axis`` (a Python int), or
    ``sum(where, axis, keepdims=True)`` (shared with the twin)."""
    fn = "smooth_labels"
    _checks.check_float(fn, "labels", labels)
    labels = as_array(labels)
    if _checks.is_traced(alpha):
        _checks.check_hyperparameter(fn, "alpha", alpha)
        alpha = jnp.asarray(alpha).astype(labels.dtype)
    else:
        alpha = _checks.static_float(fn, "alpha", alpha, 0.0, 1.0)
    _checks.check_min_rank(fn, "labels", labels, 1)
    _, axes = _checks.row_axes(fn, axis, labels.ndim)
    if where is None:
        count = 1
        for a in axes:
            count *= labels.shape[a]
        return labels, alpha, jnp.asarray(count, labels.dtype)
    where = _checks.check_bool(fn, "where", where)
    _checks.check_same_shape(fn, "where", where, "labels", labels)
    return labels, alpha, jnp.sum(where, axis=axes, keepdims=True).astype(labels.dtype)


@has_twin
def smooth_labels(labels, alpha: float, *, axis=-1, where=None):
    """Label smoothing, ``optax.smooth_labels(labels, alpha, axis=axis, where=where)``.

    Forward: ``t' = (1 - alpha) t + alpha / K``, ``K`` the number of classes along
    ``axis`` (or, with ``where``, the number of True entries of each row: a row's
    masked-out classes still get ``alpha / K`` as in optax). Backward: ``dt = (1 -
    alpha) dt'``. Nothing is saved.

    Args:
      labels: floating one-hot / probabilities ``(..., C)``.
      alpha: Python float in ``[0, 1]``, or a traced scalar (a ``jax.vmap`` sweep, as
        optax's): then ``(1 - alpha) t + alpha / K`` with ``d/dalpha = 1/K - t``, its
        range the caller's to keep.
      axis: static int or tuple of ints, the class axes (default the last).
      where: optional bool mask of the labels' shape: the classes each row counts.

    Returns:
      The smoothed labels, the labels' shape and dtype.

    Raises:
      TypeError: non-floating labels, an ``alpha`` that is not a number or a scalar
        tracer, a bad ``axis`` or ``where``.
      ValueError: ``alpha`` outside ``[0, 1]``, a scalar, ``where`` of another shape.
    """
    labels, alpha, count = check_smooth_labels_args(labels, alpha, axis, where)
    if _checks.is_traced(alpha):   # linear in alpha: the rules of alpha = 0 and 1, mixed
        return smoothing_mix(alpha, _smooth(labels, 0.0, count), _smooth(labels, 1.0, count))
    return _smooth(labels, alpha, count)
