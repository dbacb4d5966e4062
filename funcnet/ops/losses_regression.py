"""Regression and embedding losses of optax: squared error and L2, Huber, log-cosh, cosine
similarity/distance.

Both arguments have the same shape (no broadcasting; Huber's and log-cosh's
``targets=None``, optax's default, is ``zeros_like(predictions)``) and floating dtypes
promoted to their common dtype. Huber and log-cosh are means over all ``M`` elements (optax
returns them elementwise: compare with ``optax_fn(...).mean()``); the cosine losses compare
rows along the last axis and are means over the ``n`` rows (optax returns one value per
row).
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._labels import num_rows
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.losses_elementwise import (check_elementwise_args, check_row_args,
                                            mean_square_kernel)


# ------------------------------------------------------------------------------ Huber
def huber_terms(x, delta):
    """``(elementwise Huber loss, clipped error)`` of the error ``x`` (``delta`` a float or
    a scalar array); at ``|x| = delta`` the quadratic piece (the clipped error is ``x``
    there)."""
    clipped = jnp.where(jnp.abs(x) <= delta, x, delta * jnp.sign(x))
    # 0.5 c^2 + delta (|x| - |c|): 0.5 x^2 inside, delta (|x| - delta / 2) outside; the
    # second term only outside, so a traced delta = inf gives 0.5 x^2 (not inf * 0)
    excess = jnp.abs(x) - jnp.abs(clipped)
    outside = jnp.where(excess > 0, delta * excess, jnp.zeros((), x.dtype))
    return 0.5 * clipped * clipped + outside, clipped


@jax.custom_vjp
def _huber(pred, target, delta):
    return jnp.mean(huber_terms(pred - target, delta)[0])


def _huber_fwd(pred, target, delta):
    x = pred - target
    terms, clipped = huber_terms(x, delta)
    # dL/ddelta * M: the excess |x| - delta of the errors outside (|x| - |c|, 0 inside)
    return jnp.mean(terms), (clipped, jnp.sum(jnp.abs(x) - jnp.abs(clipped)))


def _huber_bwd(res, g):
    clipped, excess = res
    scale = g / clipped.size
    dpred = clipped * scale
    return dpred, -dpred, excess * scale


defvjp(_huber, _huber_fwd, _huber_bwd)


def check_error_args(fn: str, predictions, targets):
    """The checks of the error ``predictions - targets`` of Huber and log-cosh:
    ``(predictions, targets)`` promoted; ``targets=None`` (optax's default) is zeros."""
    if targets is None:
        _checks.check_float(fn, "predictions", predictions)
        targets = jnp.zeros_like(predictions)
    return check_elementwise_args(fn, "predictions", predictions, "targets", targets)


def check_huber_args(fn: str, predictions, targets, delta):
    """The checks of :func:`huber_loss`; ``(predictions, targets, delta)`` with ``delta`` a
    scalar array of the promoted dtype (``> 0`` and finite when concrete; a tracer, e.g.
    a ``vmap`` sweep, is checked for its shape and dtype only)."""
    _checks.check_hyperparameter(fn, "delta", delta, 0.0, None, low_inclusive=False)
    p, t = check_error_args(fn, predictions, targets)
    return p, t, jnp.asarray(delta, p.dtype)


@has_twin
def squared_error(predictions, targets=None):
    """Squared error, mean over all ``M`` elements: ``optax.squared_error(p, t).mean()``,
    the value (and the backward rule) of :func:`mean_squared_error`.

    Forward: ``L = (1/M) sum_i (p_i - t_i)^2``. Backward: ``dL/dp = 2 (p - t) / M``,
    ``dL/dt = -dL/dp``. Residual: ``p - t``. ``targets=None`` (optax's default) is
    ``zeros_like(predictions)``; shapes and errors as :func:`huber_loss`.
    """
    return mean_square_kernel(*check_error_args("squared_error", predictions, targets))


@has_twin
def l2_loss(predictions, targets=None):
    """Half the squared error, mean over all ``M`` elements: ``optax.l2_loss(p,
    t).mean()``, ``L = (1/M) sum_i (p_i - t_i)^2 / 2`` (``dL/dp = (p - t) / M``): the
    :func:`squared_error` op halved. Arguments and errors as :func:`squared_error`.
    """
    return 0.5 * mean_square_kernel(*check_error_args("l2_loss", predictions, targets))


@has_twin
def huber_loss(predictions, targets=None, delta: float = 1.0):
    """Huber loss (Huber 1964), mean over all ``M`` elements of the error ``x = p - t``.

    Forward: ``L = (1/M) sum_i h(x_i)``, ``h(x) = x^2 / 2`` for ``|x| <= delta`` and
    ``delta (|x| - delta/2)`` outside: ``optax.huber_loss(p, t, delta=delta).mean()`` and
    ``torch.nn.functional.huber_loss(p, t, delta=delta)`` (reduction ``'mean'``); for
    ``delta = 1`` also PyTorch's ``smooth_l1_loss``. Backward: ``dL/dp = clip(x, -delta,
    delta) / M``, ``dL/dt = -dL/dp``: gradient descent on it is an L2 loss whose gradient
    is clipped (optax's remark). At the kink ``|x| = delta`` both pieces have derivative
    ``+-delta``; the quadratic piece is taken, so the second derivative there is 1 (0
    outside). ``dL/ddelta = (1/M) sum_{|x_i| > delta} (|x_i| - delta)`` (``delta |x| -
    delta^2/2`` outside, constant inside; continuous, 0, at the kink). Residuals: the
    clipped error ``(...)`` and the scalar ``sum_i (|x_i| - |clip(x_i)|)`` (removed
    under ``jit`` when ``delta``'s gradient is not used).

    Args:
      predictions: floating array of any shape, at least one element.
      targets: same shape (no broadcasting), floating (promoted with ``predictions``);
        ``None`` (optax's default) is ``zeros_like(predictions)``.
      delta: a Python float or a traced scalar (a ``jit`` argument, a ``jax.vmap``
        sweep), ``> 0`` and finite (checked when concrete; a traced ``inf`` gives the
        limit, :func:`l2_loss`, with ``dL/ddelta = 0``); differentiable.

    Returns:
      Scalar loss, of the promoted dtype.

    Raises:
      ValueError: shapes differ, an empty input, ``delta`` NaN, infinite or ``<= 0``, a
        non-scalar ``delta``.
      TypeError: non-floating inputs, a ``delta`` that is not a number or a real scalar
        array.

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    return _huber(*check_huber_args("huber_loss", predictions, targets, delta))


# ----------------------------------------------------------------------------- log-cosh
def log_cosh_terms(x):
    """``log cosh x = |x| + log1p(exp(-2|x|)) - log 2`` elementwise (no overflow)."""
    ax = jnp.abs(x)
    return ax + jnp.log1p(jnp.exp(-2 * ax)) - math.log(2.0)


@jax.custom_vjp
def _log_cosh(pred, target):
    return jnp.mean(log_cosh_terms(pred - target))


def _log_cosh_fwd(pred, target):
    x = pred - target
    return jnp.mean(log_cosh_terms(x)), jnp.tanh(x)


def _log_cosh_bwd(th, g):
    dpred = th * (g / th.size)
    return dpred, -dpred


defvjp(_log_cosh, _log_cosh_fwd, _log_cosh_bwd)


@has_twin
def log_cosh(predictions, targets=None):
    """Log-cosh loss, mean over all ``M`` elements of the error ``x = p - t``.

    Forward: ``L = (1/M) sum_i log cosh(x_i)``, computed as ``|x| + log1p(exp(-2|x|)) -
    log 2`` (finite for every finite ``x``; ``x^2/2`` near 0, ``|x| - log 2`` far out):
    ``optax.log_cosh(p, t).mean()``. Backward: ``dL/dp = tanh(x) / M``, ``dL/dt =
    -dL/dp``. Smooth everywhere (no kink). Residual: ``tanh(x)``.

    Args:
      predictions: floating array of any shape, at least one element.
      targets: same shape, floating (promoted with ``predictions``); ``None`` (optax's
        default) is ``zeros_like(predictions)``.

    Returns:
      Scalar loss, of the promoted dtype.

    Raises:
      ValueError: shapes differ, an empty input.
      TypeError: non-floating inputs.
    """
    return _log_cosh(*check_error_args("log_cosh", predictions, targets))


# ------------------------------------------------------------------------------- cosine
def unit_rows(a, eps: float):
    """``(u, norm, free)`` of rows along the last axis: ``norm = sqrt(max(|a|^2, eps))``
    (``keepdims``), ``u = a / norm``; ``free``: ``|a|^2 > eps`` (the norm depends on
    ``a``; at or below the guard it is the constant ``sqrt(eps)``)."""
    a2 = jnp.sum(a * a, axis=-1, keepdims=True)
    free = a2 > eps
    norm = jnp.sqrt(jnp.where(free, a2, jnp.asarray(eps, a2.dtype)))
    return a / norm, norm, free


def unit_rows_grad(du, u, norm, free, radial=None):
    """The cotangent of ``a`` from that of ``u = a / norm`` (:func:`unit_rows`):
    ``(du - u (u . du)) / norm`` where the norm depends on ``a``, ``du / norm`` below
    the guard. ``radial`` is ``u . du`` (``keepdims``) when the caller has it."""
    if radial is None:
        radial = jnp.sum(u * du, axis=-1, keepdims=True)
    return (du - jnp.where(free, u * radial, jnp.zeros((), du.dtype))) / norm


def cosine_parts(a, b, eps: float):
    """``(u, v, cos, a_norm, b_norm, a_free, b_free)`` of rows along the last axis
    (:func:`unit_rows` of both); ``cos = u . v``."""
    u, a_norm, a_free = unit_rows(a, eps)
    v, b_norm, b_free = unit_rows(b, eps)
    return u, v, jnp.sum(u * v, axis=-1), a_norm, b_norm, a_free, b_free


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cosine(a, b, eps):
    return jnp.sum(cosine_parts(a, b, eps)[2]) / num_rows(a)


def _cosine_fwd(a, b, eps):
    return _cosine.fun(a, b, eps), (a, b)


def _cosine_bwd(eps, res, g):
    a, b = res
    u, v, cos, a_norm, b_norm, a_free, b_free = cosine_parts(a, b, eps)
    scale = g / num_rows(a)   # d cos / du = v, d cos / dv = u; u . v = cos on both sides
    c = cos[..., None]
    return (unit_rows_grad(v, u, a_norm, a_free, c) * scale,
            unit_rows_grad(u, v, b_norm, b_free, c) * scale)


defvjp(_cosine, _cosine_fwd, _cosine_bwd)


def check_cosine_args(fn: str, predictions, targets, epsilon, axis=-1, where=None):
    """The checks of the cosine losses; ``(predictions, targets, epsilon, empty)``: the
    rows along ``axis`` last, masked-out elements 0 (out of the dot product and the
    norms), and ``empty`` the fraction of rows ``where`` masks out entirely. Those rows
    count 0, as optax's: their inputs are set to ones (cosine 1, no gradient to the
    inputs) and the caller subtracts ``empty`` from the mean."""
    epsilon = _checks.static_float(fn, "epsilon", epsilon, 0.0, None)
    a, b, where = check_row_args(fn, "predictions", predictions, "targets", targets, axis,
                                 where)
    if where is None:
        return a, b, epsilon, 0.0
    none = ~jnp.any(where, axis=-1, keepdims=True)
    a, b = (jnp.where(none, jnp.ones((), x.dtype), x) for x in (a, b))
    return a, b, epsilon, jnp.sum(none).astype(a.dtype) / none.size


def _similarity(fn, predictions, targets, epsilon, axis, where):
    """The mean cosine similarity after :func:`check_cosine_args` (the rows ``where``
    masks out entirely taken out of the mean's numerator; no extra op without a mask)."""
    *args, empty = check_cosine_args(fn, predictions, targets, epsilon, axis, where)
    return _cosine(*args) if where is None else _cosine(*args) - empty


@has_twin
def cosine_similarity(predictions, targets, epsilon: float = 0.0, axis=-1, where=None):
    """Mean cosine similarity of rows: ``optax.cosine_similarity(p, t, epsilon=e).mean()``
    (a score to maximise; :func:`cosine_distance` is the loss ``1 - S``).

    Forward, per row ``i`` (the last axis): ``cos_i = a_i . b_i / (|a_i|_eps |b_i|_eps)``
    with ``|a|_eps = sqrt(max(|a|^2, epsilon))`` (optax's guard; with ``epsilon = 0`` a
    zero row gives NaN, as optax); ``S = (1/n) sum_i cos_i``. Backward: ``dS/da_i = (v_i -
    cos_i u_i [|a_i|^2 > epsilon]) / (n |a_i|_eps)`` with ``u = a / |a|_eps``, ``v = b /
    |b|_eps`` (at or below the guard the norm is the constant ``sqrt(epsilon)``, so only
    ``v_i / (n |a_i|_eps)`` remains), and symmetrically for ``b``. Residuals: both inputs
    (the norms are recomputed in the backward pass).

    Args:
      predictions: ``(..., D)`` floating, at least one row and one feature.
      targets: the same shape, floating (promoted with ``predictions``).
      epsilon: static Python float ``>= 0``, finite: the floor of the squared norms.
      axis: the axis (or tuple of axes) a row runs along (optax's; default the last).
      where: optional bool array of the inputs' shape (optax's): False elements leave the
        dot product and the norms (zero gradient); the mean is still over every row, and a
        row masked out entirely counts 0 with a zero gradient (optax: 0, NaN gradient).

    Returns:
      Scalar, the mean over the ``n = prod(...)`` rows, of the promoted dtype.

    Raises:
      ValueError: rank 0, shapes differ, an empty input, ``epsilon`` negative or NaN, a
        bad ``axis``, ``where`` of another shape.
      TypeError: non-floating inputs, ``epsilon`` not a Python number, a non-bool
        ``where``.
    """
    return _similarity("cosine_similarity", predictions, targets, epsilon, axis, where)


@has_twin
def cosine_distance(predictions, targets, epsilon: float = 0.0, axis=-1, where=None):
    """Mean cosine distance of rows, ``1 - S``: ``optax.cosine_distance(p, t,
    epsilon=e).mean()``. Shapes, formulas, residuals and errors: those of
    :func:`cosine_similarity`, with the gradients negated.
    """
    return 1.0 - _similarity("cosine_distance", predictions, targets, epsilon, axis, where)
