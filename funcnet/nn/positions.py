"""Positional encodings added to a sequence of feature vectors: learned
(``PositionEmbedding``) or the fixed sinusoids (``SinusoidalPositions``).

References:
  Vaswani et al. (2017), "Attention Is All You Need", https://arxiv.org/abs/1706.03762
  (learned positions: §3.5); Devlin et al. (2019), BERT; Dosovitskiy et al. (2021), ViT.
  Flax ``AddPositionEmbs`` (the ViT and lm1b examples).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet import _checks, ops
from funcnet.nn import decoding, initializers
from funcnet.nn.packing import packed_arg, segment_positions_of
from funcnet.nn.base import (Layer, apply_shape, check_dtype, check_input_shape,
                             check_no_params, check_weight_args, init_checked, is_shape_pair,
                             split_pair, weights_and_input)
from funcnet._describe import described

__all__ = ["PositionEmbedding", "SinusoidalPositions"]


def _packed_init_shapes(name: str, key, input_shape, packed: bool):
    """``init``'s ``input_shape``: ``x``'s shape, or with ``packed`` also ``(x_shape,
    ids_shape)`` (the ids' shape, ``x``'s without its features, by default)."""
    if packed and is_shape_pair(input_shape):
        x_shape = check_input_shape(name, key, input_shape[0], range(2, 64), "(..., T, F)",
                                    needs=2)
        return x_shape, tuple(check_input_shape(name, key, input_shape[1], None))
    x_shape = check_input_shape(name, key, input_shape, range(2, 64), "(..., T, F)", needs=2)
    return x_shape, x_shape[:-1]


def _packed_positions(name: str, x, packed: bool, check):
    """``(x, positions)`` of ``apply``'s input: with ``packed``, ``(x, segment_ids)`` and
    :func:`segment_positions` ``(..., T)``; else ``x`` and ``None`` (the rows' steps).
    ``check(name, "x", x)``, the layer's check of ``x``, runs once on either path, before
    the ids are read against ``x``'s shape."""
    if packed:
        x, ids = split_pair(name, x, "x", "segment_ids")
    check(name, "x", x)
    return (x, segment_positions_of(name, x, ids)) if packed else (x, None)


@described(added=("packed",))
def PositionEmbedding(max_length: int, *, embedding_init=None, dtype=None,
                      decode: bool = False, packed: bool = False) -> Layer:
    """``y[..., t, :] = x[..., t, :] + pos_embedding[t, :]``: a learned vector per position.

    With ``decode=True`` (autoregressive decoding, with
    ``MultiHeadAttention(..., decode=True)``), the layer keeps the position of the next
    step in its state, ``{"index": int32 ()}`` (0 after ``init``), and a chunk of ``T``
    steps gets the rows ``index .. index + T - 1``:
    ``y[..., t, :] = x[..., t, :] + pos_embedding[index + t, :]``; the returned state holds
    ``index + T``. Feeding a sequence chunk by chunk thus adds the same rows as one call
    on the whole sequence. Past ``max_length``: a ``ValueError`` for a concrete ``index``,
    a NaN output under ``jit`` (see :mod:`funcnet.nn.decoding`).

    With ``packed=True`` (sequences packed in a row, as ``MultiHeadAttention(...,
    packed=True)``) the input is ``(x, segment_ids)`` and each sequence gets the rows of
    its own steps, ``pos_embedding[segment_positions(segment_ids)[..., t]]``
    (:func:`segment_positions`): a packed row adds what its sequences alone would.

    The table has ``max_length`` rows; a sequence of ``T <= max_length`` steps uses the
    first ``T``, so one model takes shorter sequences too (the rows past ``T`` get a zero
    gradient). The addition is plain JAX (its backward rule is the sum of the output
    cotangent over the leading axes, which autodiff gets exactly).

    Shapes:
      input: ``(..., T, F)``, rank >= 2: batch-major tokens ``(N, T, F)`` (as
        :func:`~funcnet.nn.MultiHeadAttention`), one sequence ``(T, F)``, or more leading
        axes; in ``init`` one leading axis (the batch) may be ``-1``, ``T`` and ``F`` may
        not. For time-major ``(T, N, F)`` put :func:`~funcnet.nn.SwapAxes` ``(0, 1)``
        before it.
      output: the input's shape, in the common dtype of the input and the table.
      segment_ids (``packed=True``): integers ``(..., T)``, ``x``'s shape without ``F``;
        ``init`` takes ``x``'s shape or ``(x_shape, ids_shape)``.
      params: ``{"pos_embedding": (max_length, F)}`` (Flax's name; Flax's table has an
        extra leading axis of 1); state ``()``, or ``{"index": ()}`` (int32) with
        ``decode=True``.

    Args:
      max_length: the longest sequence, an int >= 1.
      embedding_init: initializer of the table; ``None`` (default) draws ``N(0, 0.02^2)``
        (``initializers.normal(0.02)``, the ``posemb_init`` of Flax's ViT and BERT's).
      dtype: dtype of the table; ``None`` is JAX's default float dtype. The input and
        the table are promoted to their common dtype.
      decode: keep the next position in the state (see above).
      packed: take ``(x, segment_ids)``, positions restart with each sequence (not with
        ``decode``).

    Returns:
      A :class:`Layer` named ``"PositionEmbedding(max_length)"``.

    Raises:
      TypeError: at construction a non-int ``max_length``, a non-callable initializer or
        a non-float ``dtype``; in ``apply`` a non-float input (ids need an
        :func:`~funcnet.nn.Embedding` first).
      ValueError: at construction ``max_length < 1``; in ``init`` and ``apply`` an input
        of rank < 2, ``T > max_length``, or (``apply``) a last axis that is not the
        table's ``F``, and params of another shape; with ``decode=True``, a state that is
        not ``{"index": int scalar}`` and a concrete ``index + T > max_length``; with
        ``packed=True``, no or non-integer segment ids, ids of another shape than ``x``'s
        without ``F``, ``decode=True`` too.

    Example::

        model = nn.serial(nn.Embedding(V, 64), nn.PositionEmbedding(128), block)
        _, params, state = model.init(key, (-1, 128))      # ids (N, T), T <= 128
    """
    L = _checks.static_int("PositionEmbedding", "max_length", max_length, minimum=1)
    name = f"PositionEmbedding({L})"
    decode = _checks.static_bool(name, "decode", decode)
    packed = packed_arg(name, packed, decode)
    if embedding_init is None:
        embedding_init = initializers.normal(0.02)
    check_weight_args(name, dtype, embedding_init=embedding_init)

    def check_length(what: str, shape: tuple) -> int:
        if len(shape) < 2:
            raise ValueError(f"{name}: {what} has shape {shape}, expected rank >= 2 "
                             f"(..., T, F)")
        if shape[-2] > L:
            raise ValueError(f"{name}: {what} has shape {shape}: T = {shape[-2]} steps but "
                             f"max_length is {L}")
        return shape[-2]

    def init(key, input_shape):
        shape, ids = _packed_init_shapes(name, key, input_shape, packed)
        check_length("input_shape", shape)
        dt = check_dtype(name, dtype)
        state = {"index": jnp.zeros((), jnp.int32)} if decode else ()

        def make(k):
            return {"pos_embedding": embedding_init(k, (L, shape[-1]), dt)}, state
        if packed:
            return init_checked(name, apply, make, key, (shape, ids), (dt, jnp.int32))
        return init_checked(name, apply, make, key, shape, dt)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, positions = _packed_positions(name, x, packed, _checks.check_array)
        T = check_length("x", _checks.shape_of(x))
        if decode:
            decoding.check_state(name, state, {"index": ()})
        x, params = weights_and_input(name, params, () if decode else state, x,
                                      {"pos_embedding": (L, None)})
        F = params["pos_embedding"].shape[1]
        if x.shape[-1] != F:
            raise ValueError(f"{name}: x has shape {x.shape}, expected F = {F} features on "
                             f"the last axis (the table's)")
        if positions is not None:   # each sequence's own steps (all < T <= max_length)
            return x + jnp.take(params["pos_embedding"], positions, axis=0), state
        if not decode:
            table = params["pos_embedding"][:T]
            return x + table.reshape((1,) * (x.ndim - 2) + table.shape), state
        index = state["index"]
        fits = decoding.room(name, index, T, L, "the position table (max_length)")
        table = lax.dynamic_slice_in_dim(params["pos_embedding"], index, T)
        y = x + table.reshape((1,) * (x.ndim - 2) + table.shape)
        return decoding.guard(y, fits), {"index": index + T}

    return Layer(init, apply, name)


@described(added=("packed",))
def SinusoidalPositions(max_period: float = 10000.0, *, decode: bool = False,
                        packed: bool = False) -> Layer:
    """``y[..., t, :] = x[..., t, :] + e(t)``: the Transformer's fixed sinusoidal encoding
    (:func:`funcnet.ops.sinusoidal_embedding` of the positions ``0 .. T-1``; no params).

    With ``decode=True`` the layer keeps the position of the next step in its state,
    ``{"index": int32 ()}``, as :func:`PositionEmbedding` does: a chunk of ``T`` steps
    gets positions ``index .. index + T - 1``, so feeding a sequence chunk by chunk adds
    what one call on the whole sequence adds. There is no ``max_length``. With
    ``packed=True`` the input is ``(x, segment_ids)`` and each sequence packed in a row
    gets the positions of its own steps, :func:`segment_positions`.

    Shapes:
      input: ``(..., T, F)``, rank >= 2, ``F`` even (a sine and a cosine per frequency);
        output the same shape and dtype (the encoding computed in at least float32, cast to
        the input's dtype).
      segment_ids (``packed=True``): integers ``(..., T)``, ``x``'s shape without ``F``.
      params ``()``; state ``()``, or ``{"index": ()}`` with ``decode=True``.

    Args:
      max_period: the longest wavelength ``2 pi max_period``, a Python float ``> 0``
        (default 10000; a concrete NumPy or JAX scalar is read as its float, a traced one
        refused), in the layer's name unless 10000.
      decode: keep the next position in the state.
      packed: take ``(x, segment_ids)`` (not with ``decode``).

    Raises:
      TypeError, ValueError: at construction a bad ``max_period`` (checked first:
        ``TypeError`` for a non-number, a bool, an array that is not a scalar or a traced
        value, ``ValueError`` for a non-finite value or one ``<= 0``) or ``decode``; in
        ``init`` and ``apply`` a non-float input, rank < 2, an odd ``F``; with
        ``decode=True``, a state that is not ``{"index": int scalar}``; with
        ``packed=True``, segment ids as :func:`PositionEmbedding`'s.

    References:
      Vaswani et al. (2017), https://arxiv.org/abs/1706.03762, section 3.5.
    """
    period = _checks.static_float("SinusoidalPositions", "max_period", max_period, 0.0,
                                  low_inclusive=False)
    name = "SinusoidalPositions" if period == 10000.0 else f"SinusoidalPositions({period!r})"
    decode = _checks.static_bool(name, "decode", decode)
    packed = packed_arg(name, packed, decode)

    def init(key, input_shape):
        shape, ids = _packed_init_shapes(name, key, input_shape, packed)
        state = {"index": jnp.zeros((), jnp.int32)} if decode else ()
        dt = check_dtype(name, None)
        if packed:
            return apply_shape(name, apply, (), state, (shape, ids), (dt, jnp.int32)), (), state
        return apply_shape(name, apply, (), state, shape, dt), (), state

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, packed_positions = _packed_positions(name, x, packed, _checks.check_float)
        shape = _checks.shape_of(x)
        if len(shape) < 2:
            raise ValueError(f"{name}: x has shape {shape}, expected rank >= 2 (..., T, F)")
        check_no_params(name, params, () if decode else state)
        start = 0
        if decode:
            decoding.check_state(name, state, {"index": ()})
            start = state["index"]
        positions = start + jnp.arange(shape[-2], dtype=jnp.int32)
        if packed_positions is not None:
            positions = packed_positions
        with _checks.context(name):
            table = ops.sinusoidal_embedding(positions, shape[-1], max_period=period,
                                             dtype=jnp.result_type(x))
        y = x + table.reshape((1,) * (len(shape) - table.ndim) + table.shape)
        return y, ({"index": state["index"] + shape[-2]} if decode else state)

    return Layer(init, apply, name)
