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


def _shifted(x, axis, finite_shift=False):
    """``x - max(x)`` along ``axis`` (a constant for autodiff); with ``finite_shift`` an
    infinite max is replaced by 0, as ``logsumexp`` does."""
    m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    if finite_shift:
        m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), m.dtype))
    return x - m


def stable_softmax(x, axis):
    e = jnp.exp(_shifted(x, axis))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def stable_log_softmax(x, axis, *, finite_shift=False):
    """``x - logsumexp(x)`` shifted by the max. A ``+inf`` entry makes the row all NaN
    (``inf - inf``), as ``jax.nn.log_softmax``; with ``finite_shift`` (the cross-entropy,
    as optax's ``logsumexp``) it is NaN at the ``+inf`` entries and ``-inf`` elsewhere, so
    a ``+inf`` logit at another class gives the loss ``+inf``. Finite rows: the same."""
    z = _shifted(x, axis, finite_shift)
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))


def check_softmax_args(fn: str, x, axis):
    """The checks of :func:`softmax` / :func:`log_softmax` (and their twins).

    Returns ``(x, axis)`` with ``axis`` non-negative; the axis must not be empty (a
    softmax over zero classes is undefined).
    """
    _checks.check_float(fn, "x", x)
    x = as_array(x)
    _checks.check_min_rank(fn, "x", x, 1)
    axis = _checks.check_axis(fn, axis, x.ndim)
    _checks.check_nonempty(fn, "x", x, f"at least one class along axis {axis}", (axis,))
    return x, axis


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axis):
    return stable_softmax(x, axis)


def _softmax_fwd(x, axis):
    y = stable_softmax(x, axis)
    return y, y


def _softmax_bwd(axis, y, g):
    return (y * (g - jnp.sum(g * y, axis=axis, keepdims=True)),)


defvjp(_softmax, _softmax_fwd, _softmax_bwd)


@has_twin
def softmax(x, axis: int = -1):
    """Softmax ``y_k = exp(x_k) / sum_j exp(x_j)`` along ``axis``, shifted by the max.

    Backward: the full Jacobian-vector product ``dx = y * (dy - sum_k dy_k y_k)``
    (``dy_i/dx_j = y_i (delta_ij - y_j)``). Note 004's derivative ``f(x)(1 - f(x))`` is
    only the diagonal of that Jacobian, and note 002's code ``np.exp(x)`` overflows for
    large inputs (see ``docs/formulas.md``). Residual: ``y``.

    Departure from ``jax.nn.softmax``: ``axis`` is one int (no tuple, no ``None`` for
    all axes) and there is no ``where=``; both are refused with ``TypeError``. A ``+inf``
    entry gives a row of NaN, as ``jax.nn.softmax``.

    Args:
      x: floating array, rank >= 1, at least one element along ``axis``.
      axis: static Python int, the class axis.

    Returns:
      Array of ``x``'s shape; sums to 1 along ``axis``.

    Raises:
      TypeError: non-floating ``x``, non-int ``axis``.
      ValueError: ``axis`` out of range, or an empty ``axis``.
    """
    return _softmax(*check_softmax_args("softmax", x, axis))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axis):
    return stable_log_softmax(x, axis)


def _log_softmax_fwd(x, axis):
    y = stable_log_softmax(x, axis)
    return y, y


def _log_softmax_bwd(axis, y, g):
    return (g - jnp.exp(y) * jnp.sum(g, axis=axis, keepdims=True),)


defvjp(_log_softmax, _log_softmax_fwd, _log_softmax_bwd)


@has_twin
def log_softmax(x, axis: int = -1):
    """``y = x - logsumexp(x)`` along ``axis``, computed stably.

    Backward: ``dx = dy - softmax(x) * sum_k dy_k``, with ``softmax(x) = exp(y)``.
    Residual: ``y``. As :func:`softmax`: one int ``axis`` only, no ``where=`` (unlike
    ``jax.nn.log_softmax``); a ``+inf`` entry gives a row of NaN, as ``jax.nn``.

    Args:
      x: floating array, rank >= 1, at least one element along ``axis``.
      axis: static Python int.

    Returns:
      Array of ``x``'s shape.

    Raises:
      TypeError, ValueError: as :func:`softmax`.
    """
    return _log_softmax(*check_softmax_args("log_softmax", x, axis))
