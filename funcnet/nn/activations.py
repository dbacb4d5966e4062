"""Activation layers: ``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax`` (note 004), and
``GELU``, ``SiLU``, ``LeakyReLU``, ``Softplus`` and the rest of ``jax.nn``'s activations
(``ReLU6``, ``HardTanh``, ``HardSigmoid``, ``HardSiLU``/``HardSwish``, ``ELU``, ``CELU``,
``SELU``, ``Mish``, ``LogSigmoid``, ``SoftSign``, ``Squareplus``, ``SparsePlus``,
``SparseSigmoid``, ``GLU``), and ``SoftCap`` (Gemma 2's logit soft cap).

Each is parameter-free and stateless (params ``()``, state ``()``), keeps the input shape
(``GLU`` halves its split axis) and calls the matching :mod:`funcnet.ops` primitive,
whose hand-written backward rule is the derivative (and whose checks, prefixed with the
layer name, are the layer's). The op's static arguments (``approximate``,
``negative_slope``) are checked at construction by a shape-only trace of the op.

References:
  Note 004 (Activation Functions); note 002 (Sigmoid, Softmax). Hendrycks & Gimpel (2016),
  "Gaussian Error Linear Units (GELUs)", https://arxiv.org/abs/1606.08415. Elfwing,
  Uchibe, Doya (2018), "Sigmoid-Weighted Linear Units", https://arxiv.org/abs/1702.03118.
  Maas, Hannun, Ng (2013), "Rectifier Nonlinearities Improve Neural Network Acoustic
  Models" (leaky ReLU).
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn.base import (Layer, apply_shape, check_dtype, check_input_shape,
                             check_no_params, probe)
from funcnet._describe import described

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax", "GELU", "SiLU", "LeakyReLU", "Softplus",
           "ReLU6", "HardTanh", "HardSigmoid", "HardSiLU", "HardSwish", "ELU", "CELU", "SELU",
           "Mish", "LogSigmoid", "SoftSign", "Squareplus", "SparsePlus", "SparseSigmoid",
           "GLU", "SoftCap"]


def _elementwise(name: str, fn: Callable, check_now: bool = False) -> Layer:
    """A parameter-free layer ``y = fn(x)``; ``check_now`` (for an op with static
    arguments) traces ``fn`` on a scalar at construction so that the op checks them
    before any data is seen."""
    if check_now:
        probe(name, fn, ())

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, None)
        return apply_shape(name, apply, (), (), shape, check_dtype(name, None)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        with _checks.context(name):
            return fn(x), state

    return Layer(init, apply, name)


@described
def ReLU() -> Layer:
    """``y = max(x, 0)`` elementwise (:func:`funcnet.ops.relu`; ``relu'(0) = 0``).

    Shapes: input any shape, e.g. ``(N, D)`` or ``(N, H, W, C)``; output the same.
    Params ``()``, state ``()``.
    """
    return _elementwise("ReLU", ops.relu)


@described
def Sigmoid() -> Layer:
    """``y = 1 / (1 + exp(-x))`` elementwise (:func:`funcnet.ops.sigmoid`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("Sigmoid", ops.sigmoid)


@described
def Tanh() -> Layer:
    """``y = tanh(x)`` elementwise (:func:`funcnet.ops.tanh`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("Tanh", ops.tanh)


@described
def Softmax(axis=-1) -> Layer:
    """``y_i = exp(x_i) / sum_j exp(x_j)`` along ``axis`` (:func:`funcnet.ops.softmax`).

    Put it only at the end of an inference model: for training, feed logits to
    :func:`funcnet.ops.softmax_cross_entropy`, which fuses softmax and the loss.

    Shapes: input ``(N, C)`` (any rank with ``axis`` in range, checked by the op at
    ``init``); output the same. Params ``()``, state ``()``.

    Args:
      axis: an int, a tuple of ints (one softmax over those axes together) or ``None``
        (all axes), as ``jax.nn.softmax``.

    Raises:
      TypeError: at construction, an ``axis`` that is not an int, a tuple of ints or
        ``None``.
    """
    return _softmax_layer("Softmax", ops.softmax, axis)


@described
def LogSoftmax(axis=-1) -> Layer:
    """``y_i = x_i - log sum_j exp(x_j)`` along ``axis`` (:func:`funcnet.ops.log_softmax`,
    PyTorch's ``nn.LogSoftmax``): log-probabilities, e.g. for a model whose outputs feed a
    negative log-likelihood.

    Shapes: input ``(N, C)`` (any rank with ``axis`` in range); output the same. Params
    ``()``, state ``()``.

    Args:
      axis: an int, a tuple of ints or ``None``, as ``jax.nn.log_softmax``.

    Raises:
      TypeError: at construction, an ``axis`` that is not an int, a tuple of ints or
        ``None``.
    """
    return _softmax_layer("LogSoftmax", ops.log_softmax, axis)


def _softmax_layer(name: str, op: Callable, axis) -> Layer:
    """The layer ``op(x, axis=axis)``; ``axis`` checked for its type here (the op checks
    its range against the input at ``init``)."""
    try:
        if isinstance(axis, tuple):
            axis = tuple(_checks.static_int(name, "axis", a) for a in axis)
        elif axis is not None:
            axis = _checks.static_int(name, "axis", axis)
    except TypeError:
        raise TypeError(f"{name}: axis must be an int, a tuple of ints or None, got "
                        f"{type(axis).__name__} {axis!r}") from None
    return _elementwise(name if axis == -1 else f"{name}(axis={axis})",
                        lambda x: op(x, axis=axis))


@described
def GELU(approximate: bool = True) -> Layer:
    """``y = x Phi(x)`` elementwise (:func:`funcnet.ops.gelu`), ``Phi`` the standard normal
    CDF; ``approximate=True`` (the default, as ``jax.nn.gelu`` and Flax) uses the tanh
    form ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, ``False`` the exact erf form
    (PyTorch's default).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("GELU" if approximate is True else f"GELU(approximate={approximate})",
                        lambda x: ops.gelu(x, approximate=approximate), check_now=True)


@described
def SiLU() -> Layer:
    """``y = x sigmoid(x)`` elementwise, a.k.a. swish (:func:`funcnet.ops.silu`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("SiLU", ops.silu)


@described
def LeakyReLU(negative_slope: float = 0.01) -> Layer:
    """``y = x`` for ``x >= 0``, ``negative_slope * x`` below (:func:`funcnet.ops.leaky_relu`;
    the default slope is ``jax.nn.leaky_relu``'s and PyTorch's).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    default = isinstance(negative_slope, float) and negative_slope == 0.01
    name = "LeakyReLU" if default else f"LeakyReLU({negative_slope!r:.20})"
    return _elementwise(name, lambda x: ops.leaky_relu(x, negative_slope=negative_slope),
                        check_now=True)


@described
def Softplus() -> Layer:
    """``y = log(1 + exp(x))`` elementwise, computed stably (:func:`funcnet.ops.softplus`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("Softplus", ops.softplus)


# --------------------------------------------------- the rest of jax.nn's activations
@described
def ReLU6() -> Layer:
    """``y = min(max(x, 0), 6)`` elementwise (:func:`funcnet.ops.relu6`; MobileNet's).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("ReLU6", ops.relu6)


@described
def HardTanh() -> Layer:
    """``y = clip(x, -1, 1)`` elementwise (:func:`funcnet.ops.hard_tanh`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("HardTanh", ops.hard_tanh)


@described
def HardSigmoid() -> Layer:
    """``y = relu6(x + 3) / 6`` elementwise (:func:`funcnet.ops.hard_sigmoid`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("HardSigmoid", ops.hard_sigmoid)


@described
def HardSiLU() -> Layer:
    """``y = x relu6(x + 3) / 6`` elementwise, a.k.a. hard swish (MobileNetV3;
    :func:`funcnet.ops.hard_silu`). ``nn.HardSwish`` is the same layer.

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("HardSiLU", ops.hard_silu)


HardSwish = HardSiLU


@described
def ELU(alpha: float = 1.0) -> Layer:
    """``y = x`` for ``x > 0``, ``alpha (exp(x) - 1)`` below (:func:`funcnet.ops.elu`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.

    Raises:
      TypeError, ValueError: at construction, a bad ``alpha`` (the op's check).
    """
    return _elementwise("ELU" if _is_one(alpha) else f"ELU({alpha!r:.20})",
                        lambda x: ops.elu(x, alpha), check_now=True)


@described
def CELU(alpha: float = 1.0) -> Layer:
    """``y = max(x, 0) + alpha (exp(min(x, 0) / alpha) - 1)`` (:func:`funcnet.ops.celu`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.

    Raises:
      TypeError, ValueError: at construction, a bad ``alpha`` (zero included).
    """
    return _elementwise("CELU" if _is_one(alpha) else f"CELU({alpha!r:.20})",
                        lambda x: ops.celu(x, alpha), check_now=True)


@described
def SELU() -> Layer:
    """``y = scale * elu(x, alpha)`` with SELU's constants (:func:`funcnet.ops.selu`); pair
    it with ``nn.initializers.lecun_normal()`` weights for self-normalising networks.

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("SELU", ops.selu)


@described
def Mish() -> Layer:
    """``y = x tanh(softplus(x))`` elementwise (:func:`funcnet.ops.mish`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("Mish", ops.mish)


@described
def LogSigmoid() -> Layer:
    """``y = log sigmoid(x) = -softplus(-x)``, computed stably (:func:`funcnet.ops.log_sigmoid`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("LogSigmoid", ops.log_sigmoid)


@described
def SoftSign() -> Layer:
    """``y = x / (|x| + 1)`` elementwise (:func:`funcnet.ops.soft_sign`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("SoftSign", ops.soft_sign)


@described
def Squareplus(b: float = 4.0) -> Layer:
    """``y = (x + sqrt(x^2 + b)) / 2`` elementwise (:func:`funcnet.ops.squareplus`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.

    Raises:
      TypeError, ValueError: at construction, ``b`` not a positive finite number.
    """
    default = isinstance(b, (int, float)) and not isinstance(b, bool) and b == 4
    return _elementwise("Squareplus" if default else f"Squareplus({b!r:.20})",
                        lambda x: ops.squareplus(x, b), check_now=True)


@described
def SparsePlus() -> Layer:
    """``y = 0, (x + 1)^2 / 4, x`` on ``x <= -1, |x| < 1, x >= 1``
    (:func:`funcnet.ops.sparse_plus`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("SparsePlus", ops.sparse_plus)


@described
def SparseSigmoid() -> Layer:
    """``y = clip(x + 1, 0, 2) / 2`` elementwise (:func:`funcnet.ops.sparse_sigmoid`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("SparseSigmoid", ops.sparse_sigmoid)


@described
def GLU(axis: int = -1) -> Layer:
    """Gated linear unit: ``x`` split in halves ``(a, g)`` along ``axis``, ``y = a *
    sigmoid(g)`` (:func:`funcnet.ops.glu`; Dauphin et al. 2017). After a ``Dense(2F)``
    it is a gated ``F``-wide layer.

    Shapes: input ``(..., 2F)`` (the size along ``axis`` even); output ``(..., F)``.
    Params ``()``, state ``()``.

    Raises:
      TypeError: at construction, a non-int ``axis``.
      ValueError: at ``init``, an odd size along ``axis`` (the op's check).
    """
    axis = _checks.static_int("GLU", "axis", axis)
    return _elementwise("GLU" if axis == -1 else f"GLU(axis={axis})",
                        lambda x: ops.glu(x, axis))


def _is_one(alpha) -> bool:
    return isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha == 1


@described
def SoftCap(cap: float) -> Layer:
    """``y = cap tanh(x / cap)`` elementwise: values (logits) soft-capped to ``(-cap, cap)``,
    about ``x`` where ``|x| << cap``; Gemma 2 caps its final logits at 30 (the attention
    layers' ``logit_soft_cap`` caps the attention logits inside the op). Built from
    :func:`funcnet.ops.tanh`, whose backward rule gives ``dy/dx = 1 - tanh^2(x / cap)``.

    ``cap``: a Python float, or a traced scalar (the layer built inside ``jax.vmap`` over
    caps, a learnable cap: ``dy/dcap = tanh(u) - u (1 - tanh^2 u)``, ``u = x / cap``, by
    autodiff of the product and the quotient), cast to a floating input's dtype.

    Shapes: output has the input's shape. Params ``()``, state ``()``.

    Raises:
      TypeError, ValueError: at construction, a ``cap`` that is not a number or a real
        scalar array, or (concrete) not finite and ``> 0``.
    """
    cap = _checks.hyperparameter("SoftCap", "cap", cap, 0.0, low_inclusive=False)
    traced = _checks.is_traced(cap)

    def soft_cap(x):
        c = cap.astype(x.dtype) if traced and jnp.issubdtype(x.dtype, jnp.floating) else cap
        return c * ops.tanh(x / c)
    return _elementwise(f"SoftCap({'traced' if traced else repr(cap):.20})", soft_cap)
