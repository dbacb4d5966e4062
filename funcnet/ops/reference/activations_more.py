"""Plain-JAX twins of :mod:`funcnet.ops.activations_piecewise` and
:mod:`funcnet.ops.activations_soft` (differentiated by JAX).

Same forward maths and the same argument checks as the ops; no ``custom_vjp``. At a
kink, autodiff of a twin takes whichever branch its ``jnp`` formula does (the ops follow
``jax.nn``'s derivative there; the tests compare the two away from the kinks).
"""
from __future__ import annotations

from funcnet import _checks
from funcnet.ops.activations_piecewise import (celu_forward, elu_forward,
                                               hard_sigmoid_forward, hard_silu_forward,
                                               hard_tanh_forward, relu6_forward,
                                               selu_forward, sparse_plus_forward,
                                               sparse_sigmoid_forward)
from funcnet.ops.activations_soft import (check_glu_axis, glu_forward, log_sigmoid_forward,
                                          mish_forward, soft_sign_forward,
                                          squareplus_forward)

__all__ = ["relu6", "hard_tanh", "hard_sigmoid", "hard_silu", "hard_swish", "sparse_plus",
           "sparse_sigmoid", "elu", "celu", "selu", "mish", "log_sigmoid", "soft_sign",
           "squareplus", "glu"]


def _checked(fn: str, forward):
    def twin(x):
        _checks.check_float(fn, "x", x)
        return forward(x)
    twin.__name__ = fn
    twin.__doc__ = f"Reference {fn}: its forward formula, differentiated by JAX."
    return twin


relu6 = _checked("relu6", relu6_forward)
hard_tanh = _checked("hard_tanh", hard_tanh_forward)
hard_sigmoid = _checked("hard_sigmoid", hard_sigmoid_forward)
hard_silu = hard_swish = _checked("hard_silu", hard_silu_forward)
sparse_plus = _checked("sparse_plus", sparse_plus_forward)
sparse_sigmoid = _checked("sparse_sigmoid", sparse_sigmoid_forward)
selu = _checked("selu", selu_forward)
mish = _checked("mish", mish_forward)
log_sigmoid = _checked("log_sigmoid", log_sigmoid_forward)
soft_sign = _checked("soft_sign", soft_sign_forward)


def elu(x, alpha: float = 1.0):
    """Reference ELU ``where(x > 0, x, alpha expm1(x))``."""
    _checks.check_float("elu", "x", x)
    return elu_forward(x, _checks.static_float("elu", "alpha", alpha))


def celu(x, alpha: float = 1.0):
    """Reference CELU ``max(x, 0) + alpha expm1(min(x, 0) / alpha)``."""
    _checks.check_float("celu", "x", x)
    alpha = _checks.static_float("celu", "alpha", alpha)
    if alpha == 0:
        raise ValueError("celu: alpha must be nonzero (it divides x), got 0")
    return celu_forward(x, alpha)


def squareplus(x, b: float = 4.0):
    """Reference squareplus ``(x + sqrt(x^2 + b)) / 2``."""
    _checks.check_float("squareplus", "x", x)
    return squareplus_forward(x, _checks.static_float("squareplus", "b", b, 0.0,
                                                      low_inclusive=False))


def glu(x, axis: int = -1):
    """Reference GLU ``a * sigmoid(g)``, ``(a, g) = split(x, 2, axis)``."""
    _checks.check_float("glu", "x", x)
    return glu_forward(x, check_glu_axis(x, axis))
