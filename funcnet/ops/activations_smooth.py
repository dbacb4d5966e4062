"""Smooth and leaky activations beyond the notes: GELU, SiLU/swish, leaky ReLU, softplus.

Names, signatures and defaults are ``jax.nn``'s (``gelu(x, approximate=True)``,
``silu``/``swish``, ``leaky_relu(x, negative_slope=0.01)``, ``softplus``), and so are the
values. Each op is a ``jax.custom_vjp`` whose backward rule is written out below; the
residual is the input ``x`` (GELU, SiLU, softplus: their derivatives need ``x``, and
recomputing ``tanh``/``erf``/``sigmoid`` is cheaper than storing a second array) or a
boolean mask (leaky ReLU, 1 byte per element). The backward rules are plain ``jnp``, so
``jax.grad(jax.grad(...))`` differentiates them (second order through the custom rule).

References:
  Hendrycks & Gimpel (2016), "Gaussian Error Linear Units (GELUs)",
  https://arxiv.org/abs/1606.08415. Elfwing, Uchibe & Doya (2018), "Sigmoid-Weighted
  Linear Units for Neural Network Function Approximation in Reinforcement Learning";
  Ramachandran, Zoph & Le (2017), "Searching for Activation Functions" (swish).
  Maas, Hannun & Ng (2013), "Rectifier Nonlinearities Improve Neural Network Acoustic
  Models" (leaky ReLU). Dugas et al. (2001), "Incorporating Second-Order Functional
  Knowledge for Better Option Pricing" (softplus).
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp

__all__ = ["gelu", "silu", "swish", "leaky_relu", "softplus"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_A = 0.044715


# ------------------------------------------------------------------------------ GELU
def gelu_tanh_forward(x):
    """``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, as ``jax.nn.gelu`` computes it."""
    return x * (0.5 * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_A * (x ** 3)))))


def gelu_erf_forward(x):
    """``x Phi(x) = x/2 erfc(-x / sqrt(2))``, as ``jax.nn.gelu(approximate=False)``."""
    return 0.5 * x * lax.erfc(-x * _SQRT_HALF)


@jax.custom_vjp
def _gelu_tanh(x):
    return gelu_tanh_forward(x)


def _gelu_tanh_fwd(x):
    return gelu_tanh_forward(x), x


def _gelu_tanh_bwd(x, g):
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_A * (x ** 3)))
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_A * (x * x))
    return (g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du),)


defvjp(_gelu_tanh, _gelu_tanh_fwd, _gelu_tanh_bwd)


@jax.custom_vjp
def _gelu_erf(x):
    return gelu_erf_forward(x)


def _gelu_erf_fwd(x):
    return gelu_erf_forward(x), x


def _gelu_erf_bwd(x, g):
    cdf = 0.5 * lax.erfc(-x * _SQRT_HALF)
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * (x * x))
    return (g * (cdf + x * pdf),)


defvjp(_gelu_erf, _gelu_erf_fwd, _gelu_erf_bwd)


@has_twin
def gelu(x, approximate: bool = True):
    """Gaussian error linear unit, ``jax.nn.gelu``'s signature, default and values.

    Exact form (``approximate=False``), with ``Phi``/``phi`` the standard normal CDF/PDF::

        y = x Phi(x) = x/2 erfc(-x/sqrt(2))
        dx = dy (Phi(x) + x phi(x)),        phi(x) = exp(-x^2/2) / sqrt(2 pi)

    Tanh approximation (``approximate=True``, the default of ``jax.nn.gelu``)::

        u = sqrt(2/pi) (x + 0.044715 x^3),  t = tanh(u),  y = x/2 (1 + t)
        dx = dy (1/2 (1 + t) + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))

    Residual: ``x``. Smooth everywhere (no kink). At large ``|x|`` the value tends to
    ``max(x, 0)`` and the gradient to ``[x > 0]`` (finite, no NaN, while ``x^2`` does not
    overflow: ``|x| < 1e19`` in float32).

    Args:
      x: floating array of any shape.
      approximate: static Python bool; ``True`` for the tanh form.

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      TypeError: non-floating ``x``, or ``approximate`` not a bool.

    References:
      Hendrycks & Gimpel (2016), https://arxiv.org/abs/1606.08415, section 2.
      ``docs/formulas.md``, "Beyond the notes".
    """
    _checks.check_float("gelu", "x", x)
    approximate = _checks.static_bool("gelu", "approximate", approximate)
    return _gelu_tanh(x) if approximate else _gelu_erf(x)


# ------------------------------------------------------------------------------ SiLU
@jax.custom_vjp
def _silu(x):
    return x * lax.logistic(x)


def _silu_fwd(x):
    return x * lax.logistic(x), x


def _silu_bwd(x, g):
    s = lax.logistic(x)
    return (g * (s * (1.0 + x * (1.0 - s))),)


defvjp(_silu, _silu_fwd, _silu_bwd)


@has_twin
def silu(x):
    """SiLU / swish ``y = x sigmoid(x)`` (``jax.nn.silu``; ``swish`` is the same function).

    Backward, with ``s = sigmoid(x)``::

        dx = dy (s + x s (1 - s)) = dy s (1 + x (1 - s))

    Residual: ``x`` (``s`` is recomputed). Saturates to ``0`` (``x -> -inf``) and ``x``
    (``x -> inf``) with finite gradients ``0`` and ``1``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype.

    References:
      Elfwing et al. (2018); Ramachandran et al. (2017). ``docs/formulas.md``,
      "Beyond the notes".
    """
    _checks.check_float("silu", "x", x)
    return _silu(x)


swish = silu


# ------------------------------------------------------------------------ leaky ReLU
def leaky_relu_forward(x, negative_slope):
    return jnp.where(x >= 0, x, negative_slope * x)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _leaky_relu(x, negative_slope):
    return leaky_relu_forward(x, negative_slope)


def _leaky_relu_fwd(x, negative_slope):
    return leaky_relu_forward(x, negative_slope), x >= 0


def _leaky_relu_bwd(negative_slope, mask, g):
    return (jnp.where(mask, g, negative_slope * g),)


defvjp(_leaky_relu, _leaky_relu_fwd, _leaky_relu_bwd)


@has_twin
def leaky_relu(x, negative_slope: float = 0.01):
    """Leaky ReLU ``y = x if x >= 0 else negative_slope * x`` (``jax.nn.leaky_relu``).

    Backward: ``dx = dy`` where ``x >= 0``, ``dx = negative_slope * dy`` elsewhere. At the
    kink ``x = 0`` the derivative is 1, as ``jax.grad(jax.nn.leaky_relu)(0.)`` (the
    ``x >= 0`` branch; note that ``ops.relu`` takes 0 there, as ``jax.nn.relu``). NaN
    propagates (``NaN >= 0`` is false, ``slope * NaN`` is NaN). Residual: a boolean mask
    ``x >= 0`` (1 byte per element).

    Args:
      x: floating array of any shape.
      negative_slope: static, finite Python float (any sign; 0 gives ReLU with
        derivative 1 at 0). Unlike ``jax.nn.leaky_relu`` an array slope is not accepted:
        a learned slope (PReLU) would need its own cotangent.

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      TypeError: non-floating ``x``, or a ``negative_slope`` that is not a number.
      ValueError: a NaN or infinite ``negative_slope``.

    References:
      Maas et al. (2013). ``docs/formulas.md``, "Beyond the notes".
    """
    _checks.check_float("leaky_relu", "x", x)
    slope = _checks.static_float("leaky_relu", "negative_slope", negative_slope)
    return _leaky_relu(x, slope)


# -------------------------------------------------------------------------- softplus
def softplus_forward(x):
    """``log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``: no overflow at any ``x``."""
    return jnp.logaddexp(x, jnp.zeros((), x.dtype))


@jax.custom_vjp
def _softplus(x):
    return softplus_forward(x)


def _softplus_fwd(x):
    return softplus_forward(x), x


def _softplus_bwd(x, g):
    return (g * lax.logistic(x),)


defvjp(_softplus, _softplus_fwd, _softplus_bwd)


@has_twin
def softplus(x):
    """Softplus ``y = log(1 + exp(x))``, computed stably (``jax.nn.softplus``).

    Forward as ``logaddexp(x, 0) = max(x, 0) + log1p(exp(-|x|))`` (no overflow: for
    ``x = 1000`` it gives ``1000``, not ``inf``). Backward::

        dx = dy sigmoid(x)

    (``lax.logistic``, exactly 0 or 1 when saturated, never NaN). Residual: ``x``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, positive.

    References:
      Dugas et al. (2001). ``docs/formulas.md``, "Beyond the notes".
    """
    _checks.check_float("softplus", "x", x)
    return _softplus(x)
