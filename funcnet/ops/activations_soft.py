"""Smooth activations of ``jax.nn`` beyond GELU/SiLU: ``mish``, ``log_sigmoid``,
``soft_sign``, ``squareplus``, and the gated linear unit ``glu``.

Names, signatures, defaults and values are ``jax.nn``'s. Each op is a ``jax.custom_vjp``
whose backward rule is written out below and keeps the input ``x`` as its only residual
(the sigmoid / tanh / square root it needs is recomputed, cheaper than storing a second
array). The rules are plain ``jnp``, so second order works.

References:
  Misra (2019), "Mish: A Self Regularized Non-Monotonic Activation Function",
  https://arxiv.org/abs/1908.08681. Turian, Bergstra & Bengio (2009), "Quadratic
  Features and Deep Architectures for Chunking" (softsign). Barron (2021),
  "Squareplus: A Softplus-Like Algebraic Rectifier", https://arxiv.org/abs/2112.11687.
  Dauphin et al. (2017), "Language Modeling with Gated Convolutional Networks",
  https://arxiv.org/abs/1612.08083 (GLU).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._elementwise import float_input, input_vjp
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.activations_smooth import softplus_forward

__all__ = ["mish", "log_sigmoid", "soft_sign", "squareplus", "glu"]


# ------------------------------------------------------------- forward maths (shared)
def mish_forward(x):
    return x * jnp.tanh(softplus_forward(x))


def log_sigmoid_forward(x):
    return -softplus_forward(jnp.negative(x))


def soft_sign_forward(x):
    return x / (jnp.abs(x) + 1.0)


def squareplus_forward(x, b):
    return (x + jnp.sqrt(x * x + b)) / 2


def glu_forward(x, axis):
    a, gate = jnp.split(x, 2, axis)
    return a * lax.logistic(gate)


# ------------------------------------------------------------------ the custom rules
def _mish_derivative(x):
    t = jnp.tanh(softplus_forward(x))
    return t + x * (1.0 - t * t) * lax.logistic(x)


_mish = input_vjp(mish_forward, _mish_derivative)
_log_sigmoid = input_vjp(log_sigmoid_forward, lambda x: lax.logistic(jnp.negative(x)))
_soft_sign = input_vjp(soft_sign_forward, lambda x: 1.0 / (jnp.abs(x) + 1.0) ** 2)
_squareplus = input_vjp(squareplus_forward,
                        lambda x, b: (1.0 + x / jnp.sqrt(x * x + b)) / 2)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _glu(x, axis):
    return glu_forward(x, axis)


def _glu_fwd(x, axis):
    return glu_forward(x, axis), x


def _glu_bwd(axis, x, g):
    a, gate = jnp.split(x, 2, axis)
    s = lax.logistic(gate)
    return (jnp.concatenate([g * s, g * a * s * (1.0 - s)], axis),)


defvjp(_glu, _glu_fwd, _glu_bwd)


# ------------------------------------------------------------------------ public ops
@has_twin
def mish(x):
    """Mish ``y = x tanh(softplus(x))`` (``jax.nn.mish``).

    Backward, with ``t = tanh(softplus(x))`` and ``tanh(softplus)' = (1 - t^2) sigmoid``::

        dx = dy (t + x (1 - t^2) sigmoid(x))

    Residual: ``x``. Softplus is the overflow-free ``logaddexp(x, 0)``, so large ``|x|``
    gives ``y -> max(x, 0)`` and ``dx -> dy [x > 0]`` without NaN.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype.

    References:
      Misra (2019), https://arxiv.org/abs/1908.08681, equation (1).
    """
    return _mish(float_input("mish", x), ())


@has_twin
def log_sigmoid(x):
    """Log-sigmoid ``y = log sigmoid(x) = -softplus(-x)`` (``jax.nn.log_sigmoid``),
    computed stably (``log_sigmoid(-1000) = -1000``, not ``-inf``).

    Backward: ``dx = dy sigmoid(-x)`` (``lax.logistic``: exactly 0 or 1 when saturated).
    Residual: ``x``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, non-positive.
    """
    return _log_sigmoid(float_input("log_sigmoid", x), ())


@has_twin
def soft_sign(x):
    """Softsign ``y = x / (|x| + 1)`` (``jax.nn.soft_sign``).

    Backward: ``dx = dy / (|x| + 1)^2`` (1 at ``x = 0``). Residual: ``x``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, in ``(-1, 1)``.

    References:
      Turian, Bergstra & Bengio (2009).
    """
    return _soft_sign(float_input("soft_sign", x), ())


@has_twin
def squareplus(x, b: float = 4.0):
    """Squareplus ``y = (x + sqrt(x^2 + b)) / 2`` (``jax.nn.squareplus``), an algebraic
    softplus.

    Backward: ``dx = dy (1 + x / sqrt(x^2 + b)) / 2``. Residual: ``x``.

    Args:
      x: floating array of any shape.
      b: static Python float ``> 0`` (default 4; ``b = 0`` is ReLU, whose derivative at 0
        would be ``0/0``: use :func:`funcnet.ops.relu`).

    Returns:
      Array of ``x``'s shape and dtype, positive.

    Raises:
      TypeError: non-floating ``x``; ``b`` not a number.
      ValueError: ``b <= 0``, NaN or infinite.

    References:
      Barron (2021), https://arxiv.org/abs/2112.11687, equation (1).
    """
    x = float_input("squareplus", x)
    b = _checks.static_float("squareplus", "b", b, 0.0, low_inclusive=False)
    return _squareplus(x, (b,))


@has_twin
def glu(x, axis: int = -1):
    """Gated linear unit ``y = a * sigmoid(g)`` with ``(a, g)`` the two halves of ``x``
    along ``axis`` (``jax.nn.glu``).

    Backward, with ``s = sigmoid(g)``::

        da = dy s,     dg = dy a s (1 - s),     dx = concat(da, dg, axis)

    Residual: ``x``. (GLU variants such as SwiGLU gate with another activation: write
    them as ``a * ops.silu(g)`` from two ``nn.Dense`` outputs.)

    Shapes:
      x: ``(..., 2F, ...)`` floating, the size along ``axis`` even; output ``(..., F, ...)``.

    Args:
      x: floating array, at least one axis.
      axis: static int, the axis to split (default the last).

    Returns:
      Array of ``x``'s dtype, half as long along ``axis``.

    Raises:
      TypeError: non-floating ``x``; ``axis`` not an int.
      ValueError: a scalar ``x``, ``axis`` out of range, or an odd size along it.

    References:
      Dauphin et al. (2017), https://arxiv.org/abs/1612.08083, equation (1).
    """
    return _glu(float_input("glu", x), check_glu_axis(x, axis))


def check_glu_axis(x, axis) -> int:
    """``axis`` as a non-negative int of ``x`` whose size is even (shared with the twin)."""
    shape = _checks.shape_of(x)
    if not shape:
        raise ValueError("glu: x must have at least one axis to split, got a scalar")
    axis = _checks.check_axis("glu", axis, len(shape))
    if shape[axis] % 2:
        raise ValueError(f"glu: x has shape {shape}, whose size {shape[axis]} along axis "
                         f"{axis} is odd; glu splits it into two equal halves")
    return axis
