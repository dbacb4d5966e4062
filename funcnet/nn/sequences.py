"""Padded batches of sequences: :func:`flip_sequences` and the :func:`Bidirectional` wrapper.

Recurrent layers are time-major, ``(T, N, D)``. A batch of sequences of different lengths
is padded at the end to ``T`` steps, with ``lengths`` ``(N,)`` the number of real steps of
each. A recurrence is causal, so the states of a forward layer at ``t < lengths[n]`` do
not depend on the padding and are exact; :func:`RNN`, :func:`LSTM` and :func:`GRU` given
``(xs, carry or None, lengths)`` also stop each sequence's carry at its last real step (its final
``(h, c)``) and output 0 on the padding. A backward (reversed)
recurrence must instead start at each sequence's own last step: :func:`flip_sequences`
reverses the real steps of every sequence in place, and :func:`Bidirectional` runs one
layer forward and one on the flipped input, flipping its outputs back.

References:
  Schuster & Paliwal (1997), "Bidirectional Recurrent Neural Networks", IEEE Transactions
  on Signal Processing 45(11). Graves & Schmidhuber (2005), "Framewise phoneme
  classification with bidirectional LSTM". Flax's ``flip_sequences`` and
  ``Bidirectional`` (the same semantics).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.nn.base import (Layer, apply_child, check_input_shape, check_train, fmt,
                             init_child, is_shape_pair, split_pair)
from funcnet.nn.combinators import _check_entries, _check_layers, _split
from funcnet.nn.recurrent import one_sequence_lengths
from funcnet._describe import described

__all__ = ["flip_sequences", "Bidirectional"]

_MERGES = ("concat", "sum")


def flip_sequences(xs, lengths=None):
    """Reverses the first ``lengths[n]`` steps of every sequence ``n``, padding in place.

    ``out[t, n] = xs[lengths[n] - 1 - t, n]`` for ``t < lengths[n]`` and ``xs[t, n]``
    otherwise, so a recurrence run on ``out`` starts at each sequence's last real step.
    The function is its own inverse. ``lengths=None`` reverses the whole time axis.
    Differentiable (a gather; its gradient is the same permutation).

    Args:
      xs: time-major ``(T, N, ...)``.
      lengths: ``(N,)`` integers in ``[0, T]``, or ``None``.

    Returns:
      An array of ``xs``'s shape and dtype.

    Raises:
      TypeError: ``xs`` or ``lengths`` not an array, ``lengths`` not integers.
      ValueError: ``xs`` of rank < 2, ``lengths`` not of shape ``(N,)``, or (when the
        values are known, outside ``jit``) a length outside ``[0, T]``. Under ``jit`` a
        sequence with such a length comes out as NaN (floating ``xs``) so that it is seen.
    """
    fn = "flip_sequences"
    if lengths is None:
        _checks.check_array(fn, "xs", xs)
        _checks.check_min_rank(fn, "xs", xs, 2)
    else:
        lengths = _checks.check_lengths(fn, xs, lengths)
    return _flip(xs, lengths)


def _flip(xs, lengths):
    """:func:`flip_sequences` of checked arguments."""
    if lengths is None:
        return jnp.flip(xs, axis=0)
    t = xs.shape[0]
    steps = jnp.arange(t, dtype=lengths.dtype)[:, None]
    valid = (lengths >= 0) & (lengths <= t)
    lengths = lengths[None, :]
    idx = jnp.where(steps < lengths, lengths - 1 - steps, steps)
    idx = jnp.where(valid[None, :], idx, t)   # out of bounds: filled (NaN for floats)
    idx = idx.reshape(idx.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, idx, axis=0, mode="fill")


@described
def Bidirectional(forward: Layer, backward: Layer, *, merge: str = "concat",
                  return_lengths: bool = False) -> Layer:
    """Runs ``forward`` on the sequences and ``backward`` on them reversed; merges both.

    For an input ``xs`` ``(T, N, D)`` (time-major) or a pair ``(xs, lengths)``::

        f = forward(xs)
        b = flip_sequences(backward(flip_sequences(xs, lengths)), lengths)
        y = concatenate([f, b], -1)   (merge="concat")   or   f + b   (merge="sum")

    so that ``b[t]`` has seen the steps ``t .. lengths[n] - 1`` of its sequence and
    ``f[t]`` the steps ``0 .. t``, each exactly as if the sequence had been run alone. With
    ``lengths``, the outputs at padded steps (``t >= lengths[n]``) are 0. Both layers
    must map ``(T, N, D)`` to ``(T, N, H)`` (e.g. :func:`LSTM`, :func:`GRU`, :func:`RNN`
    without ``return_carry``); a ``key`` is split between them.

    Example (a bidirectional LSTM encoder of padded token sequences)::

        encoder = nn.Bidirectional(nn.LSTM(64), nn.LSTM(64))
        _, params, state = encoder.init(key, ((T, -1, D), (-1,)))
        hs, _ = encoder.apply(params, state, (embedded, lengths))     # (T, N, 128)

    Stacked layers over a padded batch: every layer needs the lengths, but a layer's
    output is one array, so ``serial(Bidirectional(...), Bidirectional(...))`` on
    ``(xs, lengths)`` would run the second one WITHOUT them (its backward direction would
    start on the padding, and each sequence's outputs would depend on how much padding
    its batch has). ``return_lengths=True`` outputs the triple ``(y, None, lengths)``,
    the padded-batch input of every sequence layer (this one, :func:`RNN`, :func:`LSTM`,
    :func:`GRU`; ``None`` is their default initial carry)::

        encoder = nn.serial(nn.Bidirectional(nn.LSTM(64), nn.LSTM(64), return_lengths=True),
                            nn.Bidirectional(nn.LSTM(64), nn.LSTM(64)))
        _, params, state = encoder.init(key, ((T, -1, D), (-1,)))
        hs, _ = encoder.apply(params, state, (embedded, lengths))     # (T, N, 128)

    Shapes:
      input: ``xs`` ``(T, N, D)`` or ``(xs, lengths)`` with ``lengths`` ``(N,)`` ints in
        ``[0, T]``, or the recurrent layers' ``(xs, None, lengths)``; or, as the
        recurrent layers, one sequence ``(T, D)`` with its length ``()`` (what
        ``jax.vmap`` over the examples gives; the two layers then see ``(T, 1, D)``);
        ``init`` takes ``(T, N, D)`` or the pair of shapes ``((T, N, D), (N,))`` (``-1``
        for an unknown ``N``), ``((T, N, D), None, (N,))``, or ``((T, D), ())``.
      output: ``(T, N, H_f + H_b)`` (``concat``) or ``(T, N, H)`` (``sum``, equal widths);
        ``(T, H_f + H_b)`` for one sequence; with ``return_lengths=True`` and an input
        with lengths, the triple ``(y, None, lengths)`` (the same ``lengths``; ``init``
        returns ``(y_shape, None, lengths_shape)``).
      params, state: ``(forward's, backward's)``.

    Args:
      forward, backward: the two :class:`Layer` s (two instances, even of the same kind:
        they get their own params).
      merge: ``"concat"`` (last axis) or ``"sum"``.
      return_lengths: given lengths, output ``(y, None, lengths)`` instead of ``y``, for a
        next sequence layer that needs them (a stack); an input without lengths still
        gives ``y``.

    Returns:
      A :class:`Layer` named ``"Bidirectional(<forward>, <backward>)"``.

    Raises:
      TypeError: at construction, a non-Layer or a non-bool ``return_lengths``; in
        ``init``, a layer whose output is not one array.
      ValueError: at construction, an unknown ``merge``; a carry in ``(xs, carry,
        lengths)`` other than ``None``; in ``init``, outputs of different time or batch
        sizes, or widths that differ with ``merge="sum"``; in ``apply``, bad ``lengths``
        (:func:`flip_sequences`) and the layers' own errors, with their place.
    """
    layers = _check_layers("Bidirectional", (forward, backward))
    merge = _checks.static_choice("Bidirectional", "merge", merge, _MERGES)
    return_lengths = _checks.static_bool("Bidirectional", "return_lengths", return_lengths)
    name = f"Bidirectional({forward.name}, {backward.name})"
    names = [layer.name for layer in layers]
    where = [f"{name}.forward", f"{name}.backward"]

    def merged_shape(shapes):
        for i, s in enumerate(shapes):
            if not (isinstance(s, tuple) and len(s) >= 2
                    and all(isinstance(d, (int, np.integer)) for d in s)):
                raise TypeError(f"{name}: {('forward', 'backward')[i]} must output one "
                                f"(T, N, H) array, got output shape {s!r} (a layer with "
                                f"return_carry=True returns a pair)")
        (*lead, hf), (*lead2, hb) = shapes
        if lead != lead2:
            raise ValueError(f"{name}: forward outputs {fmt(shapes[0])} but backward "
                             f"{fmt(shapes[1])}; both must keep (T, N)")
        if merge == "sum" and hf != hb:
            raise ValueError(f"{name}: merge='sum' needs outputs of one width, got "
                             f"{hf} (forward) and {hb} (backward); use merge='concat'")
        return (*lead, hf + hb if merge == "concat" else hf)

    def init(key, input_shape):
        keys = _split(f"{name}.init", key, 2, required=True)
        triple = (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3
                  and isinstance(input_shape[0], (tuple, list)))
        paired = triple or is_shape_pair(input_shape)
        if triple:
            _no_carry(name, input_shape[1], "input_shape")
        x_shape = tuple(input_shape[0] if paired else input_shape)
        outs = [init_child(where[i], i, layer, k, x_shape)
                for i, (layer, k) in enumerate(zip(layers, keys))]
        out = merged_shape([o[0] for o in outs])
        if paired:   # (N,) lengths for (T, N, D), () for one sequence (T, D)
            lengths = check_input_shape(name, key, input_shape[-1],
                                        (max(len(x_shape) - 2, 0),),
                                        "(N,) lengths, () for one sequence (T, D)")
            if return_lengths:
                out = (out, None, lengths)
        return out, tuple(o[1] for o in outs), tuple(o[2] for o in outs)

    def apply(params, state, x, *, key=None, train=False):
        train = check_train(name, train)
        if isinstance(x, (tuple, list)) and len(x) == 3:   # the recurrent layers' triple
            _no_carry(name, x[1], "x")
            x = (x[0], x[2])
        xs, lengths = split_pair(name, x, "xs", "lengths")
        given = lengths
        single = (lengths is not None and _checks.is_array(xs)
                  and len(_checks.shape_of(xs)) == 2)
        if single:   # one sequence (T, D) and its length (), e.g. under jax.vmap
            lengths, xs = one_sequence_lengths(name, lengths), xs[:, None]
        if lengths is not None:
            with _checks.context(name):
                lengths = _checks.check_lengths("flip_sequences", xs, lengths)
        _check_entries(name, "params", params, names)
        _check_entries(name, "state", state, names)
        kf, kb = _split(name, key, 2)
        f, sf = apply_child(where[0], forward, params[0], state[0], xs, kf, train)
        b, sb = apply_child(where[1], backward, params[1], state[1], _flip(xs, lengths),
                            kb, train)
        for i, y in enumerate((f, b)):
            _checks.check_array(name, ("forward", "backward")[i] + " output", y)
        merged_shape([tuple(f.shape), tuple(b.shape)])
        b = _flip(b, lengths)
        if lengths is not None:
            keep = _checks.valid_steps(lengths, f.shape)
            f, b = (jnp.where(keep, y, jnp.zeros((), y.dtype)) for y in (f, b))
        y = jnp.concatenate([f, b], axis=-1) if merge == "concat" else f + b
        y = y[:, 0] if single else y
        return ((y, None, given) if return_lengths and given is not None else y), (sf, sb)

    return Layer(init, apply, name, layers)


def _no_carry(name: str, carry, what: str) -> None:
    """The carry slot of ``(xs, carry, lengths)`` must be ``None`` for Bidirectional."""
    if carry is not None:
        raise ValueError(f"{name}: {what} is a triple (xs, carry, lengths) whose carry is "
                         f"{type(carry).__name__}, expected None (both directions start from "
                         f"their own initial carry); pass (xs, lengths) or (xs, None, "
                         f"lengths)")

