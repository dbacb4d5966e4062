"""Plain-JAX twins of :mod:`funcnet.ops.activations_smooth` (differentiated by JAX).

Same forward maths and the same argument checks as the ops; no ``custom_vjp``.
"""
from __future__ import annotations

from jax import lax

from funcnet import _checks
from funcnet.ops.activations_smooth import (gelu_erf_forward, gelu_tanh_forward,
                                            leaky_relu_forward, softplus_forward)

__all__ = ["gelu", "silu", "swish", "leaky_relu", "softplus"]


def gelu(x, approximate: bool = True):
    """Reference GELU: the tanh form, or ``x/2 erfc(-x/sqrt(2))`` when not approximate."""
    _checks.check_float("gelu", "x", x)
    if _checks.static_bool("gelu", "approximate", approximate):
        return gelu_tanh_forward(x)
    return gelu_erf_forward(x)


def silu(x):
    """Reference SiLU ``x * sigmoid(x)``."""
    _checks.check_float("silu", "x", x)
    return x * lax.logistic(x)


swish = silu


def leaky_relu(x, negative_slope: float = 0.01):
    """Reference leaky ReLU ``where(x >= 0, x, negative_slope * x)``."""
    _checks.check_float("leaky_relu", "x", x)
    slope = _checks.static_float("leaky_relu", "negative_slope", negative_slope)
    return leaky_relu_forward(x, slope)


def softplus(x):
    """Reference softplus ``logaddexp(x, 0)``."""
    _checks.check_float("softplus", "x", x)
    return softplus_forward(x)
