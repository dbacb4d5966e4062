"""Activation layers: ``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax`` (note 004).

Each is parameter-free and stateless (params ``()``, state ``()``), keeps the input shape
and calls the matching :mod:`funcnet.ops` primitive, whose hand-written backward rule is
the notes' derivative.

References:
  Note 004 (Activation Functions); note 002 (Sigmoid, Softmax).
"""
from __future__ import annotations

from typing import Callable

from funcnet import ops
from funcnet.nn.base import Layer, check_float_input, check_init_shape, check_no_params

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax"]


def _elementwise(name: str, fn: Callable) -> Layer:
    def init(key, input_shape):
        del key
        shape = check_init_shape(name, input_shape, range(0, 32), "any rank")
        return shape, (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        check_float_input(name, x)
        return fn(x), state

    return Layer(init, apply, name)


def ReLU() -> Layer:
    """``y = max(x, 0)`` elementwise (:func:`funcnet.ops.relu`; ``relu'(0) = 0``).

    Shapes: input any shape, e.g. ``(N, D)`` or ``(N, H, W, C)``; output the same.
    Params ``()``, state ``()``.
    """
    return _elementwise("ReLU", ops.relu)


def Sigmoid() -> Layer:
    """``y = 1 / (1 + exp(-x))`` elementwise (:func:`funcnet.ops.sigmoid`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("Sigmoid", ops.sigmoid)


def Tanh() -> Layer:
    """``y = tanh(x)`` elementwise (:func:`funcnet.ops.tanh`).

    Shapes: output has the input's shape. Params ``()``, state ``()``.
    """
    return _elementwise("Tanh", ops.tanh)


def Softmax(axis: int = -1) -> Layer:
    """``y_i = exp(x_i) / sum_j exp(x_j)`` along ``axis`` (:func:`funcnet.ops.softmax`).

    Put it only at the end of an inference model: for training, feed logits to
    :func:`funcnet.ops.softmax_cross_entropy`, which fuses softmax and the loss.

    Shapes: input ``(N, C)`` (any rank with ``axis`` in range); output the same.
    Params ``()``, state ``()``.
    """
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"Softmax: axis must be a Python int, got {axis!r}")
    return _elementwise("Softmax" if axis == -1 else f"Softmax(axis={axis})",
                        lambda x: ops.softmax(x, axis=axis))
