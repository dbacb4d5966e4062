"""Elementwise activations and softmax (notes 002 and 004).

Each op saves the smallest residual its backward rule needs: ReLU a boolean mask,
sigmoid/tanh/softmax their output, log-softmax its output.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def _relu_forward(x):
    return jnp.maximum(x, jnp.zeros((), x.dtype))  # maximum (not where): NaN stays NaN


@jax.custom_vjp
def _relu(x):
    return _relu_forward(x)


def _relu_fwd(x):
    return _relu_forward(x), x > 0


def _relu_bwd(mask, g):
    return (jnp.where(mask, g, jnp.zeros((), g.dtype)),)


defvjp(_relu, _relu_fwd, _relu_bwd)


@has_twin
def relu(x):
    """Rectified linear unit ``y = max(x, 0)``.

    Backward: ``dx = dy * [x > 0]``. At the kink ``x = 0`` the derivative is taken as 0
    (as ``jax.nn.relu`` and most libraries do); note 004 uses 1 there (``x >= 0``), see
    ``docs/formulas.md``. Residual: a boolean mask of ``x``'s shape (1 byte per element).

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype.
    """
    _checks.check_float("relu", "x", x)
    return _relu(as_array(x))


@jax.custom_vjp
def _sigmoid(x):
    return lax.logistic(x)


def _sigmoid_fwd(x):
    y = lax.logistic(x)
    return y, y


def _sigmoid_bwd(y, g):
    return (g * y * (1 - y),)


defvjp(_sigmoid, _sigmoid_fwd, _sigmoid_bwd)


@has_twin
def sigmoid(x):
    """Logistic sigmoid ``y = 1 / (1 + exp(-x))``, computed without overflow.

    Backward (note 002): ``dx = dy * y * (1 - y)``. Note 004 writes ``f(x)(1 - f(x))^2``,
    which is wrong; note 002's code ``1 / 1 + np.exp(-x)`` has a precedence bug
    (see ``docs/formulas.md``). Residual: ``y``. Saturates to exactly 0/1 at large ``|x|``
    with a zero (not NaN) gradient.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, in ``[0, 1]``.
    """
    _checks.check_float("sigmoid", "x", x)
    return _sigmoid(as_array(x))


@jax.custom_vjp
def _tanh(x):
    return jnp.tanh(x)


def _tanh_fwd(x):
    y = jnp.tanh(x)
    return y, y


def _tanh_bwd(y, g):
    return (g * (1 - y * y),)


defvjp(_tanh, _tanh_fwd, _tanh_bwd)


@has_twin
def tanh(x):
    """Hyperbolic tangent. Backward (note 004): ``dx = dy * (1 - y^2)``. Residual: ``y``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, in ``[-1, 1]``.
    """
    _checks.check_float("tanh", "x", x)
    return _tanh(as_array(x))


def _shifted(x, axis, finite_shift=False, where=None):
    """``x - max(x)`` along ``axis`` (a constant for autodiff); with ``finite_shift`` an
    infinite max is replaced by 0, as ``logsumexp`` does. With ``where`` the entries
    outside the mask are ``-inf`` first, so the max runs over the kept ones (``-inf`` for
    a row with none kept, as ``jax.nn``'s ``initial=-inf``)."""
    if where is not None:
        x = jnp.where(where, x, jnp.asarray(-jnp.inf, x.dtype))
    m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    if finite_shift:
        m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), m.dtype))
    return x - m


def stable_softmax(x, axis, where=None):
    """``exp(x - max) / sum exp(x - max)`` along ``axis`` (an int or a tuple of ints).

    With ``where`` (a bool mask broadcastable to ``x``, same rank) the entries outside it
    take no part and are 0; a row with nothing kept is all 0 (``jax.nn.softmax``'s value),
    and autodiff of this formula gives 0 there (the NaN of ``0/0`` stays behind the
    selects)."""
    e = jnp.exp(_shifted(x, axis, where=where))
    if where is None:
        return e / jnp.sum(e, axis=axis, keepdims=True)
    zero = jnp.zeros((), e.dtype)
    e = jnp.where(where, e, zero)
    return jnp.where(where, e / jnp.sum(e, axis=axis, keepdims=True), zero)


def stable_log_softmax(x, axis, where=None, *, finite_shift=False):
    """``x - logsumexp(x)`` shifted by the max. A ``+inf`` entry makes the row all NaN
    (``inf - inf``), as ``jax.nn.log_softmax``; with ``finite_shift`` (the cross-entropy,
    as optax's ``logsumexp``) it is NaN at the ``+inf`` entries and ``-inf`` elsewhere, so
    a ``+inf`` logit at another class gives the loss ``+inf``. Finite rows: the same.

    With ``where`` (as :func:`stable_softmax`) the entries outside it are ``-inf``, also in
    a row with nothing kept (``jax.nn.log_softmax``'s value)."""
    z = _shifted(x, axis, finite_shift, where)
    if where is None:
        return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))
    e = jnp.where(where, jnp.exp(z), jnp.zeros((), z.dtype))
    out = z - jnp.log(jnp.sum(e, axis=axis, keepdims=True))
    return jnp.where(where, out, jnp.asarray(-jnp.inf, out.dtype))


def check_softmax_args(fn: str, x, axis, where=None):
    """The checks of :func:`softmax` / :func:`log_softmax` (and their twins).

    Returns ``(x, axes, where)``: ``axes`` a sorted tuple of non-negative ints (``None``:
    all axes), none of them empty (a softmax over zero classes is undefined); ``where``
    ``None`` or a bool array of ``x``'s rank, each size 1 or ``x``'s.
    """
    _checks.check_float(fn, "x", x)
    x = as_array(x)
    _checks.check_min_rank(fn, "x", x, 1)
    if axis is None:
        axes = tuple(range(x.ndim))
    else:
        axes = tuple(sorted(_checks.row_axes(fn, axis, x.ndim)[1]))
    along = f"axis {axes[0]}" if len(axes) == 1 else f"axes {axes}"
    _checks.check_nonempty(fn, "x", x, f"at least one class along {along}", axes)
    if where is not None:
        where = _checks.check_bool(fn, "where", where)
        layout = f"(x has shape {x.shape}; each size 1 or equal)"
        _checks.check_rank(fn, "where", where, x.ndim, layout)
        _checks.check_broadcastable(fn, "where", where, x.shape, "(x's shape)")
    return x, axes, where


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axes, where):
    return stable_softmax(x, axes, where)


def _softmax_fwd(x, axes, where):
    y = stable_softmax(x, axes, where)
    return y, (y, where)


def _masked_vjp(vjp, where, g):
    """``(vjp(g), None)`` (``None``: no cotangent for the mask); with ``where``, the
    cotangent of an entry outside it is ignored (a ``-inf`` output of log-softmax, a 0 of
    softmax) and ``dx`` is 0 there, also in a NaN row."""
    if where is None:
        return vjp(g), None
    zero = jnp.zeros((), g.dtype)
    return jnp.where(where, vjp(jnp.where(where, g, zero)), zero), None


def _softmax_bwd(axes, res, g):
    y, where = res
    return _masked_vjp(lambda g: y * (g - jnp.sum(g * y, axis=axes, keepdims=True)), where, g)


defvjp(_softmax, _softmax_fwd, _softmax_bwd)


@has_twin
def softmax(x, axis=-1, where=None):
    """Softmax ``y_k = exp(x_k) / sum_j exp(x_j)`` along ``axis``, shifted by the max:
    ``jax.nn.softmax(x, axis, where)`` (value and gradient).

    With ``where``: ``y_k = [w_k] exp(x_k) / sum_j [w_j] exp(x_j)``, the sum and the max
    over the kept entries only; an entry outside ``where`` is 0 (its ``x``, even ``+inf``
    or NaN, takes no part) and a row with nothing kept is all 0 with gradient 0, as
    ``jax.nn.softmax``.

    Backward: the full Jacobian-vector product ``dx = y * (dy - sum_k dy_k y_k)``
    (``dy_i/dx_j = y_i (delta_ij - y_j)``), the sum along ``axis``; with ``where``, ``dy``
    is taken as 0 outside it and ``dx`` is 0 there. Note 004's derivative
    ``f(x)(1 - f(x))`` is only the diagonal of that Jacobian, and note 002's code
    ``np.exp(x)`` overflows for large inputs (see ``docs/formulas.md``). Residuals: ``y``
    and the caller's ``where``. A ``+inf`` kept entry gives a row of NaN, as
    ``jax.nn.softmax``.

    Shapes: ``x`` any shape of rank >= 1; ``where`` bool of ``x``'s rank, each size equal
    to ``x``'s or 1 (``(N, 1, T)`` against ``(N, H, T)``; no rank promotion); output
    ``x``'s shape, summing to 1 along ``axis`` in a row with something kept.

    Args:
      x: floating array, rank >= 1, at least one element along ``axis``.
      axis: static: an int, a tuple of distinct ints (one softmax over those axes
        together) or ``None`` (all axes).
      where: optional bool mask of the entries that take part (may be traced).

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      TypeError: non-floating ``x``, an ``axis`` that is not an int, a tuple of ints or
        ``None``, a non-bool ``where``.
      ValueError: ``axis`` out of range or repeated, an empty tuple, an empty ``axis``
        (zero classes); ``where`` of another rank, or a size neither ``x``'s nor 1.
    """
    return _softmax(*check_softmax_args("softmax", x, axis, where))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axes, where):
    return stable_log_softmax(x, axes, where)


def _log_softmax_fwd(x, axes, where):
    y = stable_log_softmax(x, axes, where)
    return y, (y, where)


def _log_softmax_bwd(axes, res, g):
    y, where = res      # exp(y) = 0 outside where (y = -inf there)
    return _masked_vjp(lambda g: g - jnp.exp(y) * jnp.sum(g, axis=axes, keepdims=True),
                       where, g)


defvjp(_log_softmax, _log_softmax_fwd, _log_softmax_bwd)


@has_twin
def log_softmax(x, axis=-1, where=None):
    """``y = x - logsumexp(x)`` along ``axis``, computed stably:
    ``jax.nn.log_softmax(x, axis, where)`` (value and gradient).

    With ``where``: ``y_k = x_k - log sum_j [w_j] exp(x_j)`` for a kept entry, ``-inf``
    outside ``where`` (also in a row with nothing kept, whose gradient is 0), as
    ``jax.nn.log_softmax``.

    Backward: ``dx = dy - softmax(x) * sum_k dy_k``, with ``softmax(x) = exp(y)`` and the
    sum along ``axis``; with ``where``, ``dy`` is taken as 0 outside it (where ``y`` is
    ``-inf``) and ``dx`` is 0 there. A ``-inf`` kept entry gets ``dx = dy`` (its
    ``softmax`` is 0), as ``jax.grad``. Residuals: ``y`` and the caller's ``where``. A
    ``+inf`` kept entry gives a row of NaN, as ``jax.nn``.

    Shapes: as :func:`softmax`.

    Args:
      x: floating array, rank >= 1, at least one element along ``axis``.
      axis: static: an int, a tuple of distinct ints or ``None`` (all axes).
      where: optional bool mask of the entries that take part (may be traced).

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      TypeError, ValueError: as :func:`softmax`.
    """
    return _log_softmax(*check_softmax_args("log_softmax", x, axis, where))
