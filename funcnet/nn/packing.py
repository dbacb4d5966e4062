"""Sequences packed in a row (``packed=True`` layers): the checked flag, the segment ids of
a layer's input and the position of each step within its sequence.

A row of ``T`` steps may hold several sequences one after another; ``segment_ids``
``(..., T)`` (integers) gives the sequence of each step, a sequence being a run of equal
consecutive ids (an id that comes back after another run starts a new sequence).
:func:`~funcnet.nn.MultiHeadAttention` then lets a query see the keys of its own sequence
only, :func:`~funcnet.nn.CrossAttention` lets a step of ``x`` read the steps of the context
with the same id (ids matched by equality there: the pairs of an encoder-decoder), and
:func:`~funcnet.nn.PositionEmbedding` / :func:`~funcnet.nn.SinusoidalPositions` restart
the positions with each sequence (:func:`segment_positions`).

References:
  Raffel et al. (2020), T5 (packed examples); T5X's ``segment_positions``.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet import _checks

__all__ = ["segment_positions"]

_WHAT = "the sequence of each step"


def segment_positions(segment_ids):
    """The position of each step within its sequence, for sequences packed in a row.

    ``segment_ids`` ``(..., T)`` (integers, the input of ``packed=True`` layers): a
    sequence is a run of equal consecutive ids, and ``positions[..., t] = t - s`` with
    ``s`` the first step of the run that holds ``t`` (T5X's ``segment_positions``), int32
    of the same shape. ``[7, 7, 7, 2, 2, 0, 0, 0] -> [0, 1, 2, 0, 1, 0, 1, 2]``; an id that
    comes back after another run starts a new sequence (padding is a sequence too).
    """
    ids = jnp.asarray(segment_ids)
    _checks.check_integer("segment_positions", "segment_ids", ids, _WHAT)
    return _positions("segment_positions", ids)


def _positions(name: str, ids):
    """:func:`segment_positions` of integer ids (their rank checked here)."""
    if ids.ndim < 1:
        raise ValueError(f"{name}: segment_ids has shape (), expected (..., T)")
    axis = ids.ndim - 1
    steps = lax.broadcasted_iota(jnp.int32, ids.shape, axis)
    return steps - lax.cummax(jnp.where(_starts(ids), steps, 0), axis=axis)


def _starts(ids):
    """Where a sequence starts in integer ids ``(..., T)`` (rank >= 1): ``(..., T)`` bool,
    true at step 0 and where the id differs from the previous step's."""
    first = min(ids.shape[-1], 1)      # no step 0 in an empty row
    return jnp.concatenate([jnp.ones(ids.shape[:-1] + (first,), bool),
                            ids[..., 1:] != ids[..., :-1]], axis=ids.ndim - 1)


def sequence_numbers(ids):
    """The number of the sequence of each step in integer ids ``(..., T)`` (rank >= 1):
    int32 of the same shape, ``0`` for the first run of equal consecutive ids, then one
    more at every change, ``[1, 1, 2, 2, 1, 1] -> [0, 0, 1, 1, 2, 2]``: ids equal exactly
    where the steps are in the same sequence (an id that comes back after another run is a
    new sequence), what :func:`funcnet.ops.same_segment` compares in self-attention."""
    return jnp.cumsum(_starts(ids), axis=ids.ndim - 1, dtype=jnp.int32) - 1


def packed_arg(name: str, packed, decode: bool) -> bool:
    """The checked ``packed`` of layer ``name`` (not with ``decode``)."""
    packed = _checks.static_bool(name, "packed", packed)
    if packed and decode:
        raise ValueError(f"{name}: packed=True (segment ids of sequences packed in a row) "
                         "is for training and scoring; decode=True decodes one sequence per "
                         "row (pass packed=False)")
    return packed


def segments(name: str, x, ids, ctx=None):
    """``packed=True``'s segment ids, the mask's entry of the input: integers of ``x``'s
    shape without its features, ``(N, T)`` (or ``(T,)`` for one sequence); with a context
    (``CrossAttention``) a pair ``(x_ids (N, T), context_ids (N, S))``."""
    cross = ctx is not None
    what = "(x, context, (x_ids, context_ids))" if cross else "(x, segment_ids)"
    if ids is None:
        raise ValueError(f"{name}: packed=True takes {what} with integer segment ids "
                         f"(N, T{', and (N, S)' if cross else ''}) of the sequences packed "
                         f"in each row, got no ids")
    if cross and not (isinstance(ids, (tuple, list)) and len(ids) == 2):
        raise TypeError(f"{name}: packed=True takes {what}: a pair of segment ids, got "
                        f"{type(ids).__name__}")
    pairs = zip(ids, (x, ctx), ("x_ids", "context_ids")) if cross else ((ids, x,
                                                                         "segment_ids"),)
    out = []
    for a, of, label in pairs:
        _checks.check_integer(name, label, a, _WHAT)
        _checks.check_shape(name, label, a, _checks.shape_of(of)[:-1],
                            f"{_checks.shape_of(of)} without its features")
        out.append(jnp.asarray(a))
    return tuple(out) if cross else out[0]


def segment_positions_of(name: str, x, ids):
    """:func:`segment_positions` of layer ``name``'s checked ids for input ``x``."""
    return _positions(name, segments(name, x, ids))
