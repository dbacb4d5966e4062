"""Margin losses of optax: binary and multiclass (Crammer-Singer) hinge and perceptron,
and the triplet margin loss.

Each is the mean of optax's per-element (binary) or per-row (multiclass, triplet) values.
At a kink (the margin met exactly) the subgradient is 0, as in
:func:`funcnet.ops.multiclass_hinge` (``jnp.maximum``'s would be 1/2).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._labels import check_class_labels, num_rows, one_hot, take_labels
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.losses_elementwise import check_elementwise_args, check_row_args


# ------------------------------------------------------------- binary hinge / perceptron
def margin_terms(scores, targets, margin: float):
    """``(terms, active)``: ``max(0, margin - y s)`` elementwise (0 at the kink) and where
    it is positive."""
    z = margin - targets * scores
    active = ~(z <= 0)       # NaN too: a NaN score or target gives a NaN loss, as optax's
    return jnp.where(active, z, jnp.zeros((), z.dtype)), active


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _margin(scores, targets, margin):
    return jnp.mean(margin_terms(scores, targets, margin)[0])


def _margin_fwd(scores, targets, margin):
    terms, active = margin_terms(scores, targets, margin)
    return jnp.mean(terms), (scores, targets, active)


def _margin_bwd(margin, res, g):
    scores, targets, active = res
    scale = jnp.where(active, -g / active.size, jnp.zeros((), scores.dtype))
    return targets * scale, scores * scale


defvjp(_margin, _margin_fwd, _margin_bwd)


@has_twin
def hinge_loss(predictor_outputs, targets):
    """Binary hinge loss (the SVM's), mean over all ``M`` elements:
    ``optax.hinge_loss(s, y).mean()``.

    Forward: ``L = (1/M) sum max(0, 1 - y s)``, targets ``y`` in ``{-1, +1}`` (any real
    value is taken as it is). Backward: ``dL/ds = -y [1 - y s > 0] / M``, ``dL/dy = -s [1 -
    y s > 0] / M`` (0 at the kink ``y s = 1``). Residuals: both inputs and the active mask.

    Args:
      predictor_outputs: floating array of any shape, at least one element.
      targets: the same shape, floating (promoted with ``predictor_outputs``).

    Returns:
      Scalar loss, of the promoted dtype.

    Raises:
      ValueError: shapes differ, an empty input.
      TypeError: non-floating inputs.

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    s, y = check_elementwise_args("hinge_loss", "predictor_outputs", predictor_outputs,
                                  "targets", targets)
    return _margin(s, y, 1.0)


@has_twin
def perceptron_loss(predictor_outputs, targets):
    """Binary perceptron loss, mean over all ``M`` elements:
    ``optax.perceptron_loss(s, y).mean()``.

    Forward: ``L = (1/M) sum max(0, -y s)`` (the hinge with margin 0), targets in ``{-1,
    +1}``. Backward: ``dL/ds = -y [y s < 0] / M``, ``dL/dy = -s [y s < 0] / M``.
    Shapes, residuals and errors: those of :func:`hinge_loss`.
    """
    s, y = check_elementwise_args("perceptron_loss", "predictor_outputs", predictor_outputs,
                                  "targets", targets)
    return _margin(s, y, 0.0)


# --------------------------------------------------- multiclass (Crammer-Singer) margin
def crammer_singer_parts(scores, labels, margin: float):
    """``(rows, top)``: ``max_j (s_ij + margin [j != y_i]) - s_iy_i`` per row and the
    argmax weights of that max (ties share equally, as ``jnp.max``'s gradient)."""
    hit = one_hot(labels, scores.shape[-1], jnp.bool_)
    v = jnp.where(hit, scores, scores + margin)
    m = jnp.max(v, axis=-1, keepdims=True)
    top = (v == m).astype(scores.dtype)
    return m[..., 0] - take_labels(scores, labels), top / jnp.sum(top, axis=-1, keepdims=True)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _crammer_singer(scores, labels, margin):
    return jnp.mean(crammer_singer_parts(scores, labels, margin)[0])


def _crammer_singer_fwd(scores, labels, margin):
    return _crammer_singer.fun(scores, labels, margin), (scores, labels)


def _crammer_singer_bwd(margin, res, g):
    scores, labels = res
    _, top = crammer_singer_parts(scores, labels, margin)
    hit = one_hot(labels, scores.shape[-1], scores.dtype)
    return (top - hit) * (g / num_rows(scores)), None


defvjp(_crammer_singer, _crammer_singer_fwd, _crammer_singer_bwd)


def check_crammer_singer_args(fn: str, scores, labels):
    """The checks of the multiclass margin losses (and their twins): ``(scores, labels)``,
    integer class indices of the scores' shape without the last axis."""
    return check_class_labels(fn, "scores", scores, labels, allow_probs=False)[:2]


@has_twin
def multiclass_hinge_loss(scores, labels):
    """Crammer-Singer multiclass hinge loss, mean over the rows:
    ``optax.losses.multiclass_hinge_loss(s, y).mean()``.

    Forward: ``L = (1/n) sum_i [max_j (s_ij + [j != y_i]) - s_iy_i]`` (the largest margin
    violation only; :func:`multiclass_hinge` is note 001's sum over every class, Weston
    and Watkins'). Backward: ``dL/ds_i = (e_{j*} - e_{y_i}) / n`` with ``j*`` the argmax
    (ties share it equally, as ``jnp.max``'s gradient). Residuals: the inputs.

    Args:
      scores: ``(..., C)`` floating, at least one row and one class.
      labels: integer class indices ``(...)`` in ``[0, C)``.

    Returns:
      Scalar loss, of the scores' dtype.

    Raises:
      ValueError: labels of another shape, an empty input, concrete labels out of range.
      TypeError: non-floating scores, non-integer labels.

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    return _crammer_singer(*check_crammer_singer_args("multiclass_hinge_loss", scores,
                                                      labels), 1.0)


@has_twin
def multiclass_perceptron_loss(scores, labels):
    """Multiclass perceptron loss, mean over the rows:
    ``optax.losses.multiclass_perceptron_loss(s, y).mean()``.

    Forward: ``L = (1/n) sum_i [max_j s_ij - s_iy_i]`` (0 where the label wins).
    Backward: ``dL/ds_i = (e_{j*} - e_{y_i}) / n``, ``j* = argmax_j s_ij`` (ties share).
    Shapes, residuals and errors: those of :func:`multiclass_hinge_loss`.
    """
    return _crammer_singer(*check_crammer_singer_args("multiclass_perceptron_loss", scores,
                                                      labels), 0.0)


# ------------------------------------------------------------------------------- triplet
def distance(delta, p: float, eps: float):
    """``(sum_k |delta_k|^p + eps)^(1/p)`` over the last axis (optax's smoothed norm)."""
    powers = delta * delta if p == 2.0 else jnp.abs(delta) ** p
    return (jnp.sum(powers, axis=-1) + eps) ** (1.0 / p)


def distance_grad(delta, d, p: float):
    """``d distance / d delta = sign(delta) |delta|^(p-1) / d^(p-1)`` (0 where ``d = 0``)."""
    dk = d[..., None]
    safe = jnp.where(dk > 0, dk, jnp.ones((), d.dtype))
    if p == 2.0:
        g = delta / safe
    else:
        g = jnp.sign(delta) * (jnp.abs(delta) / safe) ** (p - 1.0)
    return jnp.where(dk > 0, g, jnp.zeros((), g.dtype))


def triplet_parts(a, pos, neg, p, margin, eps):
    """``(terms, active, d_pos, d_neg)`` per row; ``p``, ``eps`` static floats, ``margin``
    a scalar (a Python float or an array, possibly traced)."""
    d_pos, d_neg = distance(a - pos, p, eps), distance(a - neg, p, eps)
    z = d_pos - d_neg + margin
    active = ~(z <= 0)       # NaN too: a NaN input gives a NaN loss, as optax's
    return jnp.where(active, z, jnp.zeros((), z.dtype)), active, d_pos, d_neg


@partial(jax.custom_vjp, nondiff_argnums=(3, 5))
def _triplet(a, pos, neg, p, margin, eps):
    return jnp.sum(triplet_parts(a, pos, neg, p, margin, eps)[0]) / num_rows(a)


def _triplet_fwd(a, pos, neg, p, margin, eps):
    return _triplet.fun(a, pos, neg, p, margin, eps), (a, pos, neg, margin)


def _triplet_bwd(p, eps, res, g):
    a, pos, neg, margin = res      # the inputs and margin: the distances are recomputed
    _, active, d_pos, d_neg = triplet_parts(a, pos, neg, p, margin, eps)
    scale = jnp.where(active, g / num_rows(a), jnp.zeros((), a.dtype))
    g_pos = distance_grad(a - pos, d_pos, p) * scale[..., None]
    g_neg = distance_grad(a - neg, d_neg, p) * scale[..., None]
    return g_pos - g_neg, -g_pos, g_neg, jnp.sum(scale)    # dL/dmargin = #active / n


defvjp(_triplet, _triplet_fwd, _triplet_bwd)


def check_triplet_args(fn: str, anchors, positives, negatives, axis, norm_degree, margin,
                       eps):
    """The checks of :func:`triplet_margin_loss` (and its twin): ``(a, pos, neg, p, margin,
    eps)`` promoted to one dtype, with the row axis last; ``p`` and ``eps`` static Python
    floats (they choose the program), ``margin`` a scalar array of that dtype (finite when
    concrete; a tracer for a sweep)."""
    p = _checks.static_float(fn, "norm_degree", norm_degree, 1.0, None)
    _checks.check_hyperparameter(fn, "margin", margin)
    eps = _checks.static_float(fn, "eps", eps, 0.0, None)
    a, pos, _ = check_row_args(fn, "anchors", anchors, "positives", positives, axis)
    _, neg, _ = check_row_args(fn, "anchors", anchors, "negatives", negatives, axis)
    dtype = jnp.result_type(a, pos, neg)
    return (a.astype(dtype), pos.astype(dtype), neg.astype(dtype), p,
            jnp.asarray(margin, dtype), eps)


@has_twin
def triplet_margin_loss(anchors, positives, negatives, axis=-1, norm_degree: float = 2.0,
                        margin: float = 1.0, eps: float = 1e-6):
    """Triplet margin loss (Schroff et al. 2015, FaceNet), mean over the rows:
    ``optax.triplet_margin_loss(a, p, n, axis, norm_degree, margin, eps).mean()``.

    Forward, per row ``i`` (along ``axis``): ``d(x, y) = (sum_k |x_k - y_k|^p + eps)^(1/p)``,
    ``L = (1/n) sum_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin)``. Backward, on the rows
    where the margin is violated (0 at the kink): with ``g(delta) = sign(delta)
    |delta|^(p-1) / d^(p-1)`` (``delta / d`` for ``p = 2``), ``dL/da_i = (g(a_i - p_i) -
    g(a_i - n_i)) / n``, ``dL/dp_i = -g(a_i - p_i) / n``, ``dL/dn_i = g(a_i - n_i) / n``,
    ``dL/dmargin = (1/n) #{i : z_i > 0}`` with ``z_i = d(a_i, p_i) - d(a_i, n_i) +
    margin`` (0 at the kink too). Residuals: the three inputs and the margin (the
    distances are recomputed).

    optax writes ``(x - y)^p`` without the absolute value: the same for even ``p``; for
    odd or fractional ``p`` funcnet's is the p-norm (optax's is NaN or negative there).

    Args:
      anchors, positives, negatives: ``(..., D)`` floating arrays of one shape (rows
        along ``axis``), promoted to their common dtype.
      axis: static int (or tuple of ints), the axis a row runs along (default the last).
      norm_degree: static Python float ``p >= 1`` (it chooses the program: not traced).
      margin: a Python float or a traced scalar (a ``jit`` argument, a ``jax.vmap``
        sweep), any finite real (checked when concrete); differentiable.
      eps: static Python float ``>= 0`` (it chooses the program: not traced): smooths
        the norm at 0 (with ``eps = 0`` the gradient at a zero distance is taken as 0).

    Returns:
      Scalar, the mean over the rows, of the promoted dtype.

    Raises:
      ValueError: shapes differ, rank 0, an empty input, a bad ``axis``, ``norm_degree <
        1``, ``eps < 0``, a hyperparameter NaN or infinite (``margin``: when concrete),
        a ``margin`` that is not a scalar.
      TypeError: non-floating inputs, ``norm_degree`` or ``eps`` not a Python number
        (a tracer included), a ``margin`` that is not a number or a real scalar array.

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    return _triplet(*check_triplet_args("triplet_margin_loss", anchors, positives,
                                        negatives, axis, norm_degree, margin, eps))
