"""Piecewise activations of ``jax.nn``: ``relu6``, ``hard_tanh``, ``hard_sigmoid``,
``hard_silu`` / ``hard_swish``, ``sparse_plus``, ``sparse_sigmoid``, and the exponential
linear units ``elu``, ``celu``, ``selu``.

Names, signatures, defaults and values are ``jax.nn``'s, and so are the derivatives at
the kinks (``jax.grad`` of ``jax.nn`` is the judge; each op's docstring gives its value
there). Every op is a ``jax.custom_vjp`` with the backward rule written out; the
piecewise-linear ones keep a boolean mask (1 byte per element), the others their input
``x`` (which a training step keeps anyway as the previous layer's output). NaN inputs give
NaN outputs. Hyperparameters (``alpha``, ``b``) are static Python floats: a learned one
would need its own cotangent.

References:
  Krizhevsky (2010), "Convolutional Deep Belief Networks on CIFAR-10" (ReLU6). Howard et
  al. (2019), "Searching for MobileNetV3", https://arxiv.org/abs/1905.02244 (hard
  sigmoid, hard swish). Martins & Astudillo (2016), "From Softmax to Sparsemax",
  https://arxiv.org/abs/1602.02068 (sparse plus / sigmoid, the 2-class sparsemax).
  Clevert, Unterthiner & Hochreiter (2016), "Fast and Accurate Deep Network Learning by
  Exponential Linear Units (ELUs)", https://arxiv.org/abs/1511.07289. Barron (2017),
  "Continuously Differentiable Exponential Linear Units", https://arxiv.org/abs/1704.07483
  (CELU). Klambauer et al. (2017), "Self-Normalizing Neural Networks",
  https://arxiv.org/abs/1706.02515 (SELU).
"""
from __future__ import annotations

import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._elementwise import float_input, input_vjp, mask_vjp
from funcnet.ops._mode import has_twin

__all__ = ["relu6", "hard_tanh", "hard_sigmoid", "hard_silu", "hard_swish", "sparse_plus",
           "sparse_sigmoid", "elu", "celu", "selu"]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ------------------------------------------------------------- forward maths (shared)
def relu6_forward(x):
    return jnp.minimum(jnp.maximum(x, 0.0), 6.0)


def hard_tanh_forward(x):
    return jnp.where(x > 1, 1.0, jnp.where(x < -1, -1.0, x))


def hard_sigmoid_forward(x):
    return relu6_forward(x + 3.0) / 6.0


def hard_silu_forward(x):
    return x * hard_sigmoid_forward(x)


def sparse_plus_forward(x):
    return jnp.where(x <= -1.0, 0.0, jnp.where(x >= 1.0, x, (x + 1.0) ** 2 / 4))


def sparse_sigmoid_forward(x):
    return 0.5 * jnp.clip(x + 1.0, 0.0, 2.0)


def elu_forward(x, alpha):
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.where(x > 0, 0.0, x)))


def celu_forward(x, alpha):
    return jnp.maximum(x, 0.0) + alpha * jnp.expm1(jnp.minimum(x, 0.0) / alpha)


# ------------------------------------------------------------------ the custom rules
_relu6 = mask_vjp(relu6_forward, lambda x: (x > 0) & (x < 6), 1.0)
_hard_tanh = mask_vjp(hard_tanh_forward, lambda x: ~((x > 1) | (x < -1)), 1.0)  # NaN: dy
_hard_sigmoid = mask_vjp(hard_sigmoid_forward, lambda x: (x > -3) & (x < 3), 1.0 / 6.0)


def _hard_silu_derivative(x):
    inside = (x > -3) & (x < 3)
    return hard_sigmoid_forward(x) + jnp.where(inside, x / 6.0, 0.0)


def sparse_plus_derivative(x):
    return jnp.where(x <= -1.0, 0.0, jnp.where(x >= 1.0, 1.0, (x + 1.0) / 2))


def _sparse_sigmoid_derivative(x):
    a = jnp.abs(x)
    return jnp.where(a < 1, 0.5, jnp.where(a == 1, 0.25, 0.0))


def _elu_derivative(x, alpha):
    return jnp.where(x > 0, 1.0, alpha * jnp.exp(jnp.where(x > 0, 0.0, x)))


def _celu_derivative(x, alpha):
    return jnp.where(x > 0, 1.0, jnp.exp(jnp.minimum(x, 0.0) / alpha))


_hard_silu = input_vjp(hard_silu_forward, _hard_silu_derivative)
_sparse_plus = input_vjp(sparse_plus_forward, sparse_plus_derivative)
_sparse_sigmoid = input_vjp(sparse_sigmoid_forward, _sparse_sigmoid_derivative)
_elu = input_vjp(elu_forward, _elu_derivative)
_celu = input_vjp(celu_forward, _celu_derivative)


def selu_forward(x):
    return SELU_SCALE * elu_forward(x, SELU_ALPHA)


_selu = input_vjp(selu_forward, lambda x: SELU_SCALE * _elu_derivative(x, SELU_ALPHA))


# ------------------------------------------------------------------------ public ops
@has_twin
def relu6(x):
    """ReLU6 ``y = min(max(x, 0), 6)`` (``jax.nn.relu6``; MobileNet's bounded ReLU).

    Backward: ``dx = dy * [0 < x < 6]``: 0 at both kinks, as ``jax.nn.relu6``'s own rule.
    Residual: a boolean mask (1 byte per element).

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, in ``[0, 6]``.

    References:
      Krizhevsky (2010). ``docs/formulas.md``, "Beyond the notes".
    """
    return _relu6(float_input("relu6", x))


@has_twin
def hard_tanh(x):
    """Hard tanh ``y = clip(x, -1, 1)`` (``jax.nn.hard_tanh``).

    Backward: ``dx = dy * [-1 <= x <= 1]`` (1 at both kinks and at NaN, as ``jax.grad``
    of ``jax.nn.hard_tanh``). Residual: a boolean mask.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, in ``[-1, 1]``.
    """
    return _hard_tanh(float_input("hard_tanh", x))


@has_twin
def hard_sigmoid(x):
    """Hard sigmoid ``y = relu6(x + 3) / 6`` (``jax.nn.hard_sigmoid``, MobileNetV3).

    Backward: ``dx = dy / 6 * [-3 < x < 3]`` (0 at the kinks). Residual: a boolean mask.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, in ``[0, 1]``.

    References:
      Howard et al. (2019), https://arxiv.org/abs/1905.02244, section 5.2.
    """
    return _hard_sigmoid(float_input("hard_sigmoid", x))


@has_twin
def hard_silu(x):
    """Hard SiLU / hard swish ``y = x relu6(x + 3) / 6`` (``jax.nn.hard_silu``;
    ``hard_swish`` is the same function).

    Backward::

        dx = dy (relu6(x + 3) / 6 + [-3 < x < 3] x / 6)

    so 0 at ``x = -3`` and 1 at ``x = 3``, as ``jax.grad``. Residual: ``x``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype.

    References:
      Howard et al. (2019), https://arxiv.org/abs/1905.02244, section 5.2.
    """
    return _hard_silu(float_input("hard_silu", x), ())


hard_swish = hard_silu


@has_twin
def sparse_plus(x):
    """Sparse plus (``jax.nn.sparse_plus``), a softplus that is exactly 0 and ``x`` outside
    ``(-1, 1)``::

        y  = 0 (x <= -1),  (x + 1)^2 / 4 (-1 < x < 1),  x (x >= 1)
        dx = dy * {0, (x + 1) / 2, 1}         (0 at x = -1 and 1 at x = 1, as jax.grad)

    Residual: ``x``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, non-negative.

    References:
      Martins & Astudillo (2016), https://arxiv.org/abs/1602.02068.
    """
    return _sparse_plus(float_input("sparse_plus", x), ())


@has_twin
def sparse_sigmoid(x):
    """Sparse sigmoid ``y = clip(x + 1, 0, 2) / 2`` (``jax.nn.sparse_sigmoid``, the
    derivative of :func:`sparse_plus`).

    Backward: ``dx = dy / 2`` for ``|x| < 1``, ``dy / 4`` at ``|x| = 1`` (the mean of the
    one-sided derivatives, which is ``jax.grad``'s value of ``clip`` there), 0 outside.
    Residual: ``x``.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype, in ``[0, 1]``.
    """
    return _sparse_sigmoid(float_input("sparse_sigmoid", x), ())


@has_twin
def elu(x, alpha: float = 1.0):
    """Exponential linear unit (``jax.nn.elu``)::

        y  = x (x > 0),  alpha (exp(x) - 1) (x <= 0)
        dx = dy (x > 0),  dy alpha exp(x) (x <= 0)      (alpha at x = 0, as jax.grad)

    ``expm1`` keeps small negative ``x`` exact; the positive branch never evaluates
    ``exp(x)``, so no overflow. Residual: ``x``.

    Args:
      x: floating array of any shape.
      alpha: static, finite Python float (default 1.0).

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      TypeError: non-floating ``x``; ``alpha`` not a number (a traced one included).
      ValueError: NaN or infinite ``alpha``.

    References:
      Clevert et al. (2016), https://arxiv.org/abs/1511.07289, equation (15).
    """
    x = float_input("elu", x)
    return _elu(x, (_checks.static_float("elu", "alpha", alpha),))


@has_twin
def celu(x, alpha: float = 1.0):
    """Continuously differentiable ELU (``jax.nn.celu``)::

        y  = max(x, 0) + alpha (exp(min(x, 0) / alpha) - 1)
        dx = dy (x > 0),  dy exp(x / alpha) (x <= 0)    (1 at x = 0, for every alpha)

    Residual: ``x``.

    Args:
      x: floating array of any shape.
      alpha: static, finite, nonzero Python float (default 1.0).

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      TypeError: non-floating ``x``; ``alpha`` not a number.
      ValueError: ``alpha`` zero, NaN or infinite.

    References:
      Barron (2017), https://arxiv.org/abs/1704.07483, equation (2).
    """
    x = float_input("celu", x)
    alpha = _checks.static_float("celu", "alpha", alpha)
    if alpha == 0:
        raise ValueError("celu: alpha must be nonzero (it divides x), got 0")
    return _celu(x, (alpha,))


@has_twin
def selu(x):
    """Scaled ELU ``y = scale * elu(x, alpha)`` with SELU's fixed constants (``jax.nn.selu``)::

        alpha = 1.6732632423543772848170429916717
        scale = 1.0507009873554804934193349852946
        dx = dy scale (x > 0),  dy scale alpha exp(x) (x <= 0)

    Residual: ``x``. With LeCun-normal weights (``nn.initializers.lecun_normal()``) and
    standardised inputs, activations stay near mean 0 and variance 1 through depth.

    Args:
      x: floating array of any shape.

    Returns:
      Array of ``x``'s shape and dtype.

    References:
      Klambauer et al. (2017), https://arxiv.org/abs/1706.02515, equation (2).
    """
    return _selu(float_input("selu", x), ())
