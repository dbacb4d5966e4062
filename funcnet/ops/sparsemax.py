"""Sparsemax and its losses: ``sparsemax`` (the Euclidean projection onto the simplex),
optax's ``multiclass_sparsemax_loss`` and binary ``sparsemax_loss``.

Sparsemax (Martins & Astudillo 2016) is a softmax whose probabilities can be exactly 0:
``p = argmin_{p in simplex} ||p - z||^2 = max(z - tau(z), 0)``, with ``tau`` the threshold
that makes ``p`` sum to 1. Its Jacobian on the support ``S = {j : p_j > 0}`` is ``I -
1 1^T / |S|``, so its backward rule needs only the support (a boolean mask, 1 byte per
element). The multiclass sparsemax loss is to sparsemax what cross-entropy is to
softmax: its gradient is ``sparsemax(z) - e_y``; the binary loss is ``sparse_plus`` of the
signed score, whose derivative is ``sparse_sigmoid``.

References:
  Martins & Astudillo (2016), "From Softmax to Sparsemax: A Sparse Model of Attention and
  Multi-Label Classification", https://arxiv.org/abs/1602.02068 (equations (12)-(14),
  (19) and Proposition 2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._labels import check_class_labels, num_rows, one_hot
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.activations_piecewise import sparse_plus_derivative, sparse_plus_forward

__all__ = ["sparsemax", "multiclass_sparsemax_loss", "sparsemax_loss"]


# ------------------------------------------------------------------------- sparsemax
def sparsemax_last(z):
    """Sparsemax over the last axis: sort descending, ``k = max{k : 1 + k u_k > sum_{j<=k}
    u_j}``, ``tau = (sum_{j<=k} u_j - 1) / k``, ``p = max(z - tau, 0)``, on ``z - max(z)``
    (sparsemax is shift-invariant; unshifted, ``sum u_j - 1`` rounds to ``sum u_j`` at
    large scores, e.g. 3e7 in float32 or 300 in bfloat16, and every ``p`` to 0). A
    ``-inf`` score gets 0 (a masked class), as long as one score of the row is finite."""
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    u = jnp.flip(jnp.sort(z, axis=-1), axis=-1)   # no unary minus: NumPy inputs too
    cumsum = jnp.cumsum(u, axis=-1)
    ks = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype).reshape((1,) * (z.ndim - 1) + (-1,))
    support = 1.0 + ks * u > cumsum
    k = jnp.sum(support, axis=-1, keepdims=True)
    tau = (jnp.take_along_axis(cumsum, k - 1, axis=-1) - 1.0) / k.astype(z.dtype)
    return jnp.maximum(z - tau, 0.0)


def sparsemax_grad(support, g):
    """``dz = [p > 0] (g - sum_S g / |S|)`` on the last axis (Proposition 2)."""
    g = jnp.where(support, g, jnp.zeros((), g.dtype))
    count = jnp.sum(support, axis=-1, keepdims=True).astype(g.dtype)
    return jnp.where(support, g - jnp.sum(g, axis=-1, keepdims=True) / count,
                     jnp.zeros((), g.dtype))


@jax.custom_vjp
def _sparsemax(z):
    return sparsemax_last(z)


def _sparsemax_fwd(z):
    p = sparsemax_last(z)
    return p, p > 0


def _sparsemax_bwd(support, g):
    return (sparsemax_grad(support, g),)


defvjp(_sparsemax, _sparsemax_fwd, _sparsemax_bwd)


def check_sparsemax_args(x, axis) -> tuple:
    """``(x, axis)``: floating ``x`` with at least one axis, ``axis`` normalised."""
    _checks.check_float("sparsemax", "x", x)
    x = as_array(x)
    if not x.shape:
        raise ValueError("sparsemax: x must have at least one axis (the classes), got a "
                         "scalar")
    axis = _checks.check_axis("sparsemax", axis, x.ndim)
    if x.shape[axis] == 0:
        raise ValueError(f"sparsemax: x has shape {x.shape}, with no class along axis {axis}")
    return x, axis


@has_twin
def sparsemax(x, axis: int = -1):
    """Sparsemax: the Euclidean projection of ``x`` onto the probability simplex along
    ``axis`` (``optax.projections.projection_simplex`` of each slice).

    Forward (sort-based, ``O(C log C)`` per row), with ``u`` the scores sorted in
    decreasing order::

        k   = max{k : 1 + k u_k > u_1 + ... + u_k}
        tau = (u_1 + ... + u_k - 1) / k
        p   = max(x - tau, 0)

    Backward (Martins & Astudillo 2016, Proposition 2), with ``S`` the support ``p > 0``::

        dx = [p > 0] (dy - (sum_{j in S} dy_j) / |S|)

    Residual: the support, a boolean mask of ``x``'s shape. A ``-inf`` score gets
    probability 0 and no gradient (a masked class), while some score of its slice is
    finite.

    Shapes:
      x: ``(..., C, ...)`` floating, ``C >= 1`` along ``axis``; output the same shape.

    Args:
      x: floating array, at least one axis.
      axis: static int, the class axis (default the last).

    Returns:
      Non-negative array of ``x``'s shape and dtype; each slice sums to 1.

    Raises:
      TypeError: non-floating ``x``, a non-int ``axis``.
      ValueError: a scalar ``x``, ``axis`` out of range, no class along it.

    References:
      Martins & Astudillo (2016), https://arxiv.org/abs/1602.02068, Algorithm 1 and
      Proposition 2. ``docs/formulas.md``, "Beyond the notes".
    """
    x, axis = check_sparsemax_args(x, axis)
    return jnp.moveaxis(_sparsemax(jnp.moveaxis(x, axis, -1)), -1, axis)


# ---------------------------------------------------------- multiclass sparsemax loss
def multiclass_sparsemax_rows(scores, labels):
    """``(per-row loss, p)``: ``L_i = sum_{j in S} p_j (z_j - z_y) + (1 - ||p||^2) / 2``
    (optax's form of ``-z_y + 1/2 sum_S (z_j^2 - tau^2) + 1/2``)."""
    p = sparsemax_last(scores)
    hit = one_hot(labels, scores.shape[-1], jnp.bool_)
    z_y = jnp.sum(jnp.where(hit, scores, jnp.zeros((), scores.dtype)), axis=-1,
                  keepdims=True)
    shifted = jnp.where((p > 0) & ~hit, scores - z_y, jnp.zeros((), scores.dtype))
    return jnp.sum(p * shifted, axis=-1) + 0.5 * (1.0 - jnp.sum(p * p, axis=-1)), p


@jax.custom_vjp
def _multiclass_sparsemax(scores, labels):
    return jnp.mean(multiclass_sparsemax_rows(scores, labels)[0])


def _multiclass_sparsemax_fwd(scores, labels):
    rows, p = multiclass_sparsemax_rows(scores, labels)
    return jnp.mean(rows), (p, labels)


def _multiclass_sparsemax_bwd(res, g):
    p, labels = res
    hit = one_hot(labels, p.shape[-1], p.dtype)
    return (p - hit) * (g / num_rows(p)), None


defvjp(_multiclass_sparsemax, _multiclass_sparsemax_fwd, _multiclass_sparsemax_bwd)


def check_multiclass_sparsemax_args(scores, labels):
    """``(scores, labels)``: integer class indices of the scores' shape without the last
    axis (shared with the twin)."""
    return check_class_labels("multiclass_sparsemax_loss", "scores", scores, labels,
                              allow_probs=False)[:2]


@has_twin
def multiclass_sparsemax_loss(scores, labels):
    """Multiclass sparsemax loss, mean over the rows:
    ``optax.losses.multiclass_sparsemax_loss(z, y).mean()``.

    Forward (Martins & Astudillo 2016, equation (19)), ``p = sparsemax(z_i)``, ``S`` its
    support::

        L = (1/n) sum_i [-z_iy + 1/2 sum_{j in S} (z_ij^2 - tau_i^2) + 1/2]
          = (1/n) sum_i [sum_{j in S} p_j (z_ij - z_iy) + (1 - ||p||^2) / 2]

    (the second form, optax's, never squares a large score). Backward: ``dL/dz_i =
    (sparsemax(z_i) - e_{y_i}) / n``. ``L >= 0``, and 0 exactly when ``p = e_y``.
    Residuals: ``p`` and the labels. Shapes (``scores (..., C)``, integer ``labels
    (...)``) and errors: those of :func:`funcnet.ops.multiclass_hinge_loss`.

    References:
      Martins & Astudillo (2016), https://arxiv.org/abs/1602.02068, section 3.
    """
    return _multiclass_sparsemax(*check_multiclass_sparsemax_args(scores, labels))


# ------------------------------------------------------------- binary sparsemax loss
def signed_scores(logits, labels):
    """``-s`` where the label is 1, ``s`` where it is 0: the score of the wrong side."""
    return jnp.where(labels, jnp.negative(logits), logits)


@jax.custom_vjp
def _sparsemax_binary(logits, labels):
    return jnp.mean(sparse_plus_forward(signed_scores(logits, labels)))


def _sparsemax_binary_fwd(logits, labels):
    return _sparsemax_binary.fun(logits, labels), (logits, labels)


def _sparsemax_binary_bwd(res, g):
    logits, labels = res
    slope = sparse_plus_derivative(signed_scores(logits, labels)) * (g / logits.size)
    return jnp.where(labels, -slope, slope), None


defvjp(_sparsemax_binary, _sparsemax_binary_fwd, _sparsemax_binary_bwd)


def check_sparsemax_binary_args(logits, labels):
    """``(logits, labels as bool)``: floating logits, 0/1 (integer or bool) labels of the
    same shape (shared with the twin)."""
    fn = "sparsemax_loss"
    _checks.check_float(fn, "logits", logits)
    _checks.check_array(fn, "labels", labels)
    if not (jnp.issubdtype(_checks.dtype_of(labels), jnp.integer)
            or jnp.issubdtype(_checks.dtype_of(labels), jnp.bool_)):
        raise TypeError(f"{fn}: labels must be integers or bools (0 / 1, the positive "
                        f"class), got {_checks.dtype_of(labels)}")
    logits, labels = as_array(logits), as_array(labels)
    if logits.shape != labels.shape:
        raise ValueError(f"{fn}: logits have shape {logits.shape} but labels have shape "
                         f"{labels.shape}; they must be equal (no broadcasting)")
    if logits.size == 0:
        raise ValueError(f"{fn}: logits are empty (shape {logits.shape})")
    _checks.check_index_range(fn, "labels", labels, 2, "0 or 1")
    return logits, labels.astype(jnp.bool_)


@has_twin
def sparsemax_loss(logits, labels):
    """Binary sparsemax loss, mean over all ``M`` elements:
    ``optax.losses.sparsemax_loss(s, y).mean()``.

    Forward: ``L = (1/M) sum sparse_plus(t)``, ``t = -s`` where ``y = 1`` and ``s`` where
    ``y = 0`` (:func:`funcnet.ops.sparse_plus`: 0 for ``t <= -1``, ``(t + 1)^2 / 4``
    inside, ``t`` above). It is 0 exactly when ``sparse_sigmoid(s) = y``. Backward:
    ``dL/ds = ± sparse_plus'(t) / M`` (``-`` where ``y = 1``), with ``sparse_plus'(t) = 0,
    (t + 1) / 2, 1``. Residuals: the inputs.

    Args:
      logits: floating array of any shape, at least one element.
      labels: integer or bool 0 / 1 labels of the same shape.

    Returns:
      Scalar loss, of the logits' dtype.

    Raises:
      ValueError: shapes differ, an empty input, concrete labels other than 0 and 1.
      TypeError: non-floating logits, float labels.

    References:
      Martins & Astudillo (2016), https://arxiv.org/abs/1602.02068, section 3.
    """
    return _sparsemax_binary(*check_sparsemax_binary_args(logits, labels))
