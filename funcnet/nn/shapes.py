"""Shape layers: ``Reshape`` (per example, the batch axis kept) and ``SwapAxes``.

ViT patches to tokens, and batch-major tokens ``(N, T, D)`` to the time-major
``(T, N, D)`` of the recurrent layers::

    nn.serial(nn.Reshape((H // p, p, W // p, p * C)), nn.SwapAxes(2, 3),
              nn.Reshape((-1, p * p * C)), nn.Dense(D))          # (N, H, W, C) -> (N, T, D)
    nn.serial(nn.Embedding(V, D), nn.SwapAxes(0, 1), nn.LSTM(H))  # (N, T) ids -> (T, N, H)

Invariant: neither layer has params or state, computes anything or changes a dtype; a
size mismatch is a ``ValueError`` at ``init`` and again at ``apply`` (from the same
shape rule), never a silent broadcast.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from funcnet import _checks
from funcnet.nn.base import Layer, check_input_shape, check_no_params, fmt
from funcnet._describe import described

__all__ = ["Reshape", "SwapAxes"]


@described
def Reshape(shape) -> Layer:
    """Reshape each example: ``(N, *in_shape) -> (N, *shape)``, row-major (C order).

    As Keras's ``Reshape(target_shape)``: the leading axis is the batch and is kept;
    ``shape`` is the per-example shape, with at most one ``-1`` inferred from the others
    as in ``jnp.reshape``. :func:`~funcnet.nn.Flatten` is ``Reshape((-1,))``.

    Shapes:
      input: ``(N, d1, ..., dk)``, rank >= 1 (``k`` may be 0: ``(N,)``), any dtype; in
        ``init`` the batch ``N`` may be ``-1`` (only it: the other sizes decide the
        ``-1`` of ``shape``).
      output: ``(N, *shape)``, the ``-1`` of ``shape`` resolved. Params ``()``, state ``()``.

    The leading axis is always the batch: under a per-example ``jax.vmap`` (where an
    example has no batch axis) apply the model to ``x[None]``.

    Args:
      shape: an int or a tuple of ints, each >= 1 or one ``-1``; ``()`` makes each example
        a scalar (from ``(N, 1)``).

    Returns:
      A :class:`Layer` named ``"Reshape(shape)"``, e.g. ``"Reshape((7, -1))"``.

    Raises:
      TypeError: at construction a non-int size (``2.0``, ``True``); in ``apply`` a
        non-array input.
      ValueError: at construction a size < 1 other than one ``-1``; in ``init`` and
        ``apply`` an input whose per-example size (the product of ``d1 ... dk``) does not
        fit ``shape`` (is not its product, or with ``-1`` not a multiple of it).

    Example::

        layer = nn.Reshape((4, -1))
        layer.init(key, (-1, 2, 6))[0]          # (-1, 4, 3)
        y, _ = layer.apply((), (), x)           # x (5, 2, 6) -> y (5, 4, 3)
    """
    if not isinstance(shape, (tuple, list)):
        shape = (shape,)
    shape = tuple(_checks.static_int("Reshape", f"shape[{i}]", d) for i, d in enumerate(shape))
    name = f"Reshape({fmt(shape)})"
    if any(d < 1 and d != -1 for d in shape) or shape.count(-1) > 1:
        raise ValueError(f"{name}: shape {fmt(shape)} must have sizes >= 1, except one -1 "
                         f"(inferred)")
    known = math.prod(d for d in shape if d != -1)

    def resolve(what: str, full: tuple) -> tuple:
        size = math.prod(full[1:])
        if -1 in shape:
            if size % known:
                raise ValueError(f"{name}: {what} has shape {fmt(full)}: {size} values per "
                                 f"example are not a multiple of {known}, the product of "
                                 f"shape {fmt(shape)} without its -1")
            return tuple(size // known if d == -1 else d for d in shape)
        if size != known:
            raise ValueError(f"{name}: {what} has shape {fmt(full)}: {size} values per example "
                             f"cannot be reshaped to {fmt(shape)} ({known} values)")
        return shape

    def init(key, input_shape):
        full = check_input_shape(name, key, input_shape, range(1, 64), "(N, ...)",
                                 batch_axis=0)
        return (full[0], *resolve("input_shape", full)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        _checks.check_array(name, "x", x)
        _checks.check_min_rank(name, "x", x, 1)
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], *resolve("x", x.shape)), state

    return Layer(init, apply, name)


@described
def SwapAxes(axis1: int = 0, axis2: int = 1) -> Layer:
    """Swap two axes of the whole array, batch included: ``jnp.swapaxes(x, axis1, axis2)``.

    The default ``SwapAxes(0, 1)`` turns batch-major ``(N, T, D)`` into the time-major
    ``(T, N, D)`` of :func:`~funcnet.nn.RNN` / ``LSTM`` / ``GRU``, and back (a swap is its
    own inverse). The axes count from the first axis of the array (the batch, when there
    is one), as in ``jnp.swapaxes`` and unlike Keras's ``Permute``, which cannot move the
    batch and so cannot make a sequence time-major. Negative axes count from the end, so
    ``SwapAxes(-2, -3)`` works for any number of leading batch axes.

    Why a swap rather than a full ``Transpose(perm)``: the layers here are rank-polymorphic
    (``Dense`` and the norms act on ``(..., D)``), and a swap keeps that: ``SwapAxes(-2,
    -3)`` needs no rank, where a permutation fixes it. Every layout change the library's
    conventions need (batch-major <-> time-major, ``(N, h, p, w, p, C)`` patches) is one
    swap; compose two for a 3-cycle.

    Shapes:
      input: any array of rank > max(axis1, axis2) (for negative axes, >= -min), any
        dtype; in ``init`` one size may be ``-1``, and it moves with its axis
        (``(-1, T, D) -> (T, -1, D)``, which the recurrent layers accept).
      output: the input's shape with the two sizes swapped. Params ``()``, state ``()``.

    Args:
      axis1, axis2: static ints, in ``[-rank, rank)`` of the input.

    Returns:
      A :class:`Layer` named ``"SwapAxes(axis1, axis2)"``.

    Raises:
      TypeError: at construction a non-int axis; in ``apply`` a non-array input.
      ValueError: in ``init`` and ``apply`` an axis out of range for the input's rank.

    Example::

        layer = nn.SwapAxes(0, 1)
        layer.init(key, (-1, 16, 8))[0]          # (16, -1, 8)
        hs, _ = nn.LSTM(32).apply(p, (), layer.apply((), (), x)[0])
    """
    a = _checks.static_int("SwapAxes", "axis1", axis1)
    b = _checks.static_int("SwapAxes", "axis2", axis2)
    name = f"SwapAxes({a}, {b})"

    def swapped(shape: tuple) -> tuple:
        i = _checks.check_axis(name, a, len(shape), "axis1")
        j = _checks.check_axis(name, b, len(shape), "axis2")
        out = list(shape)
        out[i], out[j] = shape[j], shape[i]
        return tuple(out)

    def init(key, input_shape):
        return swapped(check_input_shape(name, key, input_shape, None)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        _checks.check_array(name, "x", x)
        swapped(_checks.shape_of(x))
        return jnp.swapaxes(x, a, b), state

    return Layer(init, apply, name)
