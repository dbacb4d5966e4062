"""Gated recurrent layers, time-major like :func:`~funcnet.nn.RNN`: ``LSTM`` and ``GRU``.

Stateful use (carry in, carry out) without a second protocol: the input may be the
sequence ``xs``, a pair ``(xs, carry)`` or a triple ``(xs, carry, lengths)`` (``carry``
``None`` for zeros; ``lengths`` ``(N,)`` for a padded batch of sequences, see
:func:`funcnet.ops.lstm`), and with ``return_carry=True`` the output is the pair
``(hs, carry)``. So the layer composes with :func:`~funcnet.nn.serial` and
:func:`~funcnet.nn.parallel` (a carry is a tuple branch like any other), and a long
sequence is processed chunk by chunk, each chunk starting from the previous final
carry::

    lstm = nn.LSTM(128, return_carry=True)
    _, params, _ = lstm.init(key, (T, -1, D))
    carry = None
    for chunk in chunks:                                   # (T, N, D) each
        x = chunk if carry is None else (chunk, carry)
        (hs, carry), _ = lstm.apply(params, (), x)

The carry is data, not layer ``state``: its batch size is the input's, unknown at
``init``; a model that must keep it between calls returns it (``jax.lax.stop_gradient``
it for truncated BPTT).

A padded batch of sequences of different lengths (an encoder's final state)::

    encoder = nn.LSTM(128, return_carry=True)
    _, params, _ = encoder.init(key, ((T, -1, D), None, (-1,)))
    (hs, (h, c)), _ = encoder.apply(params, (), (xs, None, lengths))
    # h, c: each sequence's state after its last real step; hs is 0 at padded steps

References:
  Hochreiter & Schmidhuber (1997); Gers, Schmidhuber & Cummins (2000); Cho et al. (2014),
  https://arxiv.org/abs/1406.1078; Jozefowicz, Zaremba & Sutskever (2015), "An Empirical
  Exploration of Recurrent Network Architectures", ICML (forget-gate bias 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_weight_args,
                             is_shape_pair, weights_and_input)

__all__ = ["LSTM", "GRU"]

_LAYOUT = "(T, D) or (T, N, D)"


def _promote_carry(name, c, dtype, single):
    """A given carry array in the compute dtype (a non-float one is left to the op's
    error), with a unit batch axis for a single sequence."""
    _checks.check_array(name, "carry", c)
    c = c.astype(dtype) if jnp.issubdtype(_checks.dtype_of(c), jnp.floating) else c
    return c[None] if single else c


def _split_input(name, x):
    """``xs``, ``(xs, carry)`` or ``(xs, carry, lengths)`` -> ``(xs, carry, lengths,
    carry_given)`` (``carry`` may be ``None`` in the triple: zeros)."""
    if not isinstance(x, (tuple, list)):
        return x, None, None, False
    if len(x) not in (2, 3):
        raise ValueError(f"{name}: input must be xs, a pair (xs, carry) or a triple (xs, "
                         f"carry, lengths), got a {type(x).__name__} of {len(x)} entries")
    lengths = x[2] if len(x) == 3 else None
    return x[0], x[1], lengths, len(x) == 2 or x[1] is not None


def _split_input_shape(input_shape):
    """``init``'s ``input_shape`` as ``(x_shape, carry_shape or None, lengths_shape or
    None)``: a shape, a pair of shapes, or a triple ``(x_shape, carry_shape or None,
    lengths_shape)``."""
    if (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3
            and isinstance(input_shape[0], (tuple, list))):
        return tuple(input_shape)
    if is_shape_pair(input_shape):
        return input_shape[0], input_shape[1], None
    return input_shape, None, None


def _gated_layer(name, gates, n_carry, H, return_carry, w_init, wh_init, b_init, bias_inits,
                 dtype, op):
    """init/apply shared by LSTM (4 gates, carry (h, c)) and GRU (3 gates, carry h).

    ``bias_inits``: ``{param name: init(key, dtype) -> (gates*H,)}`` (built on
    ``b_init``); ``op(xs, carry, p, lengths)`` returns ``(hs, carry)`` with ``carry`` a
    tuple of ``n_carry`` arrays.
    """
    return_carry = _checks.static_bool(name, "return_carry", return_carry)
    check_weight_args(name, dtype, w_init=w_init, wh_init=wh_init, b_init=b_init)
    shapes = {"wx": (None, gates * H), "wh": (H, gates * H),
              **{k: (gates * H,) for k in bias_inits}}
    carry_doc = "((N, H), (N, H))" if n_carry == 2 else "(N, H)"

    def stacked(init, key, rows, dt):
        """One ``(rows, H)`` block per gate (e.g. each recurrent block orthogonal)."""
        return jnp.concatenate([init(k, (rows, H), dt)
                                for k in jax.random.split(key, gates)], axis=1)

    def as_tuple(carry):
        return tuple(carry) if n_carry == 2 else (carry,)

    def from_tuple(carry):
        return tuple(carry) if n_carry == 2 else carry[0]

    def check_carry(carry, what):
        if n_carry == 2 and not (isinstance(carry, (tuple, list)) and len(carry) == 2):
            raise TypeError(f"{name}: {what} must be a pair (h, c) of shape {carry_doc}, "
                            f"got {type(carry).__name__}")

    def init(key, input_shape):
        input_shape, carry_shape, lengths_shape = _split_input_shape(input_shape)
        if carry_shape is not None:
            check_carry(carry_shape, "the carry shape in input_shape")
            carry_shape = tuple(
                check_input_shape(name, key, s, (1, 2), "(H,) or (N, H)", batched_rank=2)
                for s in as_tuple(carry_shape))
        shape = check_input_shape(name, key, input_shape, (2, 3), _LAYOUT, batch_axis=1,
                                  batched_rank=3)
        if lengths_shape is not None:
            lengths_shape = check_input_shape(name, key, lengths_shape, (len(shape) - 2,),
                                              "(N,) lengths, () for one sequence")
        dt = check_dtype(name, dtype)
        kx, kh, kb = jax.random.split(key, 3)
        params = {"wx": stacked(w_init, kx, shape[-1], dt), "wh": stacked(wh_init, kh, H, dt)}
        for b_key, (b_name, b_init) in zip(jax.random.split(kb, len(bias_inits)),
                                           bias_inits.items()):
            params[b_name] = b_init(b_key, dt)
        return _output_shape(params, shape, carry_shape, lengths_shape, dt), params, ()

    def _output_shape(params, shape, carry_shape, lengths_shape, dt):
        """By tracing ``apply`` (the op's checks run at init); the batch -1 traced as 1."""
        unknown = len(shape) == 3 and shape[1] == -1

        def struct(s, axis):
            return jax.ShapeDtypeStruct(tuple(1 if (i == axis and d == -1) else d
                                              for i, d in enumerate(s)), dt)
        x = struct(shape, 1)
        carry = None if carry_shape is None else from_tuple(tuple(struct(s, 0)
                                                                   for s in carry_shape))
        if lengths_shape is not None:
            x = (x, carry, jax.ShapeDtypeStruct(tuple(1 if d == -1 else d
                                                      for d in lengths_shape), jnp.int32))
        elif carry is not None:
            x = (x, carry)
        out = jax.eval_shape(lambda p, x: apply(p, (), x)[0], params, x)

        def back(a, axis):
            s = tuple(a.shape)
            return s[:axis] + (-1,) + s[axis + 1:] if unknown else s
        if not return_carry:
            return back(out, 1)
        hs, carry = out
        return back(hs, 1), from_tuple(tuple(back(c, 0) for c in as_tuple(carry)))

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, carry, lengths, carry_given = _split_input(name, x)
        if carry_given:
            check_carry(carry, "the carry in (xs, carry)")
        x, params = weights_and_input(name, params, state, x, shapes)
        _checks.check_rank(name, "x", x, (2, 3), _LAYOUT)
        single = x.ndim == 2
        xs = x[:, None, :] if single else x
        if carry is None:
            carry = (jnp.zeros((xs.shape[1], H), x.dtype),) * n_carry
        else:
            carry = tuple(_promote_carry(name, c, x.dtype, single) for c in as_tuple(carry))
        if lengths is not None and single:
            _checks.check_array(name, "lengths", lengths)
            _checks.check_rank(name, "lengths", lengths, 0, "() for one sequence (T, D)")
            lengths = jnp.asarray(lengths)[None]
        with _checks.context(name):
            hs, carry = op(xs, carry, params, lengths)
        carry = as_tuple(carry)
        if single:
            hs, carry = hs[:, 0], tuple(c[0] for c in carry)
        return ((hs, from_tuple(carry)) if return_carry else hs), state

    return Layer(init, apply, name)


def LSTM(hidden_size: int, *, return_carry: bool = False,
         w_init=initializers.lecun_normal(), wh_init=initializers.orthogonal(),
         b_init=initializers.zeros, forget_bias: float = 1.0, dtype=None) -> Layer:
    """Long short-term memory over a whole sequence, returning every hidden state.

    Runs :func:`funcnet.ops.lstm` (gates ``[i, f, g, o]``, ``c_t = f c_{t-1} + i g``,
    ``h_t = o tanh(c_t)``; backward: BPTT in one reverse ``lax.scan``). The initial carry
    is zeros unless given as ``(xs, (h0, c0))``.

    Initialisation (Flax's ``LSTMCell`` defaults, per gate): each ``(D, H)`` block of
    ``wx`` from ``w_init`` (LeCun normal), each ``(H, H)`` block of ``wh`` from
    ``wh_init`` (orthogonal; Saxe et al. 2014), ``b`` from ``b_init`` (zeros) plus
    ``forget_bias`` on the forget gate's slice ``b[H:2H]``: 1.0 by default, so the cell
    remembers at the start of training (Gers et al. 2000; Jozefowicz et al. 2015, who
    found it closes most of the gap to the GRU; Keras's ``unit_forget_bias``). Pass
    ``forget_bias=0.0`` for Flax's and PyTorch's zero bias.

    Shapes:
      input: ``xs`` time-major ``(T, N, D)`` or one sequence ``(T, D)``; or a pair
        ``(xs, (h0, c0))`` with ``h0``, ``c0`` of shape ``(N, H)`` (``(H,)``); or a
        triple ``(xs, (h0, c0) or None, lengths)`` for a padded batch, ``lengths``
        ``(N,)`` integers in ``[0, T]`` (``()`` for one sequence): a sequence keeps its
        carry after its last real step and outputs 0 at its padded steps.
      output: ``hs`` ``(T, N, H)`` (``(T, H)``); with ``return_carry=True`` the pair
        ``(hs, (h_T, c_T))`` (with ``lengths``, each sequence's carry after its last
        real step).
      ``init``'s ``input_shape``: ``(T, N, D)`` (``N`` may be -1), or
        ``((T, N, D), ((N, H), (N, H)))``, or ``((T, N, D), carry shapes or None,
        (N,))``; the output shape follows the output.
      params: ``{"wx": (D, 4H), "wh": (H, 4H), "b": (4H,)}``; state ``()``.

    Args:
      hidden_size: ``H``, an int >= 1.
      return_carry: output ``(hs, carry)`` instead of ``hs``.
      w_init, wh_init: initializers of each gate's input and recurrent block.
      b_init: initializer of ``b``. forget_bias: added to ``b[H:2H]`` at init.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. The input (and
        a floating carry) and the params are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"LSTM(hidden_size)"``.

    Raises:
      TypeError, ValueError: bad constructor arguments or ``input_shape``; params of
        another structure; an input that is not rank 2/3, not floating, or a carry that
        is not a pair; and :func:`funcnet.ops.lstm`'s errors (``D``, ``N`` or ``H``
        mismatches), prefixed with the layer name.

    References:
      Hochreiter & Schmidhuber (1997); Gers et al. (2000); Jozefowicz et al. (2015).
    """
    H = _checks.static_int("LSTM", "hidden_size", hidden_size, minimum=1)
    name = f"LSTM({H})"
    forget_bias = _checks.static_float(name, "forget_bias", forget_bias)

    def bias(key, dt):
        return b_init(key, (4 * H,), dt).at[H:2 * H].add(jnp.asarray(forget_bias, dt))

    return _gated_layer(name, 4, 2, H, return_carry, w_init, wh_init, b_init, {"b": bias},
                        dtype, lambda xs, c, p, lengths: ops.lstm(
                            xs, *c, p["wx"], p["wh"], p["b"], lengths=lengths))


def GRU(hidden_size: int, *, return_carry: bool = False,
        w_init=initializers.lecun_normal(), wh_init=initializers.orthogonal(),
        b_init=initializers.zeros, dtype=None) -> Layer:
    """Gated recurrent unit over a whole sequence, returning every hidden state.

    Runs :func:`funcnet.ops.gru`, the PyTorch/cuDNN/Flax variant of Cho et al. (2014)
    (gates ``[r, z, n]``, ``n = tanh(x wx_n + bx_n + r * (h wh_n + bh_n))``,
    ``h_t = (1 - z) n + z h_{t-1}``); backward: BPTT in one reverse ``lax.scan``. The
    initial state is zeros unless given as ``(xs, h0)``. Initialisation as
    :func:`LSTM` (per gate; no forget bias).

    Shapes:
      input: ``xs`` ``(T, N, D)`` or ``(T, D)``; or a pair ``(xs, h0)`` with ``h0``
        ``(N, H)`` (``(H,)``); or a triple ``(xs, h0 or None, lengths)`` for a padded
        batch, as :func:`LSTM`.
      output: ``hs`` ``(T, N, H)``; with ``return_carry=True`` the pair ``(hs, h_T)``.
      ``init``'s ``input_shape``: ``(T, N, D)``, ``((T, N, D), (N, H))`` or
        ``((T, N, D), (N, H) or None, (N,))``.
      params: ``{"wx": (D, 3H), "wh": (H, 3H), "bx": (3H,), "bh": (3H,)}``; state ``()``.

    Args:
      hidden_size: ``H``, an int >= 1.
      return_carry: output ``(hs, h_T)`` instead of ``hs``.
      w_init, wh_init: initializers of each gate's input and recurrent block.
      b_init: initializer of ``bx`` and ``bh``.
      dtype: dtype of the params; ``None`` is JAX's default float dtype.

    Returns:
      A :class:`Layer` named ``"GRU(hidden_size)"``.

    Raises:
      TypeError, ValueError: as :func:`LSTM`, with :func:`funcnet.ops.gru`.

    References:
      Cho et al. (2014), https://arxiv.org/abs/1406.1078.
    """
    H = _checks.static_int("GRU", "hidden_size", hidden_size, minimum=1)
    name = f"GRU({H})"

    def bias(key, dt):
        return b_init(key, (3 * H,), dt)

    return _gated_layer(name, 3, 1, H, return_carry, w_init, wh_init, b_init,
                        {"bx": bias, "bh": bias}, dtype,
                        lambda xs, c, p, lengths: ops.gru(xs, *c, p["wx"], p["wh"], p["bx"],
                                                          p["bh"], lengths=lengths))
