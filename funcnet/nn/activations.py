"""Activation layers: ``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax`` (note 004), and
``GELU``, ``SiLU``, ``LeakyReLU``, ``Softplus``.

Each is parameter-free and stateless (params ``()``, state ``()``), keeps the input shape
and calls the matching :mod:`funcnet.ops` primitive, whose hand-written backward rule is
the derivative (and whose checks, prefixed with the layer name, are the layer's). The
op's static arguments (``approximate``, ``negative_slope``) are checked at construction
by a shape-only trace of the op.

References:
  Note 004 (Activation Functions); note 002 (Sigmoid, Softmax). Hendrycks & Gimpel (2016),
  "Gaussian Error Linear Units (GELUs)", https://arxiv.org/abs/1606.08415. Elfwing,
  Uchibe, Doya (2018), "Sigmoid-Weighted Linear Units", https://arxiv.org/abs/1702.03118.
  Maas, Hannun, Ng (2013), "Rectifier Nonlinearities Improve Neural Network Acoustic
  Models" (leaky ReLU).
"""
from __future__ import annotations

from typing import Callable

from funcnet import _checks, ops
from funcnet.nn.base import (Layer, apply_shape, check_dtype, check_input_shape,
                             check_no_params, probe)
from funcnet._describe import described

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax", "GELU", "SiLU", "LeakyReLU", "Softplus"]


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
def Softmax(axis: int = -1) -> Layer:
    """``y_i = exp(x_i) / sum_j exp(x_j)`` along ``axis`` (:func:`funcnet.ops.softmax`).

    Put it only at the end of an inference model: for training, feed logits to
    :func:`funcnet.ops.softmax_cross_entropy`, which fuses softmax and the loss.

    Shapes: input ``(N, C)`` (any rank with ``axis`` in range, checked by the op at
    ``init``); output the same. Params ``()``, state ``()``.

    Raises:
      TypeError: at construction, a non-int ``axis``.
    """
    axis = _checks.static_int("Softmax", "axis", axis)
    return _elementwise("Softmax" if axis == -1 else f"Softmax(axis={axis})",
                        lambda x: ops.softmax(x, axis=axis))


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
