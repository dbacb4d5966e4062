"""Builders of elementwise ``jax.custom_vjp`` ops: ``dx = dy * f'(x)`` from one residual.

:func:`input_vjp` keeps the input ``x`` (an op whose derivative needs it: ``elu``,
``mish``, ...); :func:`mask_vjp` keeps a boolean mask (1 byte per element) for a
piecewise-linear op whose derivative is one slope inside an interval and 0 outside
(``relu6``, ``hard_tanh``, ``hard_sigmoid``). Static hyperparameters (``alpha``, ``b``)
are a tuple of Python floats, a ``nondiff_argnums`` argument (hashable, so each value
compiles once). The backward rules are plain ``jnp``, so second order works.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mesh import defvjp

__all__ = ["float_input", "input_vjp", "mask_vjp"]


def float_input(fn: str, x):
    """The activations' one input check: ``x`` floating (``TypeError`` naming ``fn``),
    returned as an array."""
    _checks.check_float(fn, "x", x)
    return as_array(x)


def input_vjp(forward: Callable, derivative: Callable) -> Callable:
    """``op(x, params)``: ``forward(x, *params)``, backward ``dy * derivative(x, *params)``;
    residual ``x``."""
    @partial(jax.custom_vjp, nondiff_argnums=(1,))
    def op(x, params):
        return forward(x, *params)

    def fwd(x, params):
        return forward(x, *params), x

    def bwd(params, x, g):
        return (g * derivative(x, *params).astype(g.dtype),)

    defvjp(op, fwd, bwd)
    return op


def mask_vjp(forward: Callable, inside: Callable, slope: float) -> Callable:
    """``op(x)``: ``forward(x)``, backward ``dy * slope`` where ``inside(x)``, else 0;
    residual the boolean mask ``inside(x)``."""
    @jax.custom_vjp
    def op(x):
        return forward(x)

    def fwd(x):
        return forward(x), inside(x)

    def bwd(mask, g):
        return (jnp.where(mask, g * slope, jnp.zeros((), g.dtype)),)

    defvjp(op, fwd, bwd)
    return op
