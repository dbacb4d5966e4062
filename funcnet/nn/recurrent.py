"""Recurrent layers, time-major: the vanilla :func:`RNN` here, :func:`~funcnet.nn.LSTM`
and :func:`~funcnet.nn.GRU` in :mod:`funcnet.nn.gated`; all three share one calling
convention (:func:`recurrent_layer`).

Stateful use (carry in, carry out) without a second protocol: the input may be the
sequence ``xs``, a pair ``(xs, carry)`` or a triple ``(xs, carry, lengths)`` (``carry``
``None`` for the default initial state; ``lengths`` ``(N,)`` for a padded batch of
sequences, see :func:`funcnet.ops.lstm`), and with ``return_carry=True`` the output is the
pair ``(hs, carry)``. So the layers compose with :func:`~funcnet.nn.serial` and
:func:`~funcnet.nn.parallel` (a carry is a tuple branch like any other), and a long
sequence is processed chunk by chunk, each chunk starting from the previous final
carry::

    lstm = nn.LSTM(128, return_carry=True)
    _, params, _ = lstm.init(key, (T, -1, D))
    carry = None
    for chunk in chunks:                                   # (T, N, D) each
        x = chunk if carry is None else (chunk, carry)
        (hs, carry), _ = lstm.apply(params, (), x)

``init(key, (T, -1, D))`` returns ``(T, -1, H)``, which the next layer of a ``serial``
(a Dense head, Dropout, a norm) takes as it is: ``-1`` may mark an unknown size on any
axis a layer does not read. The carry is data, not layer ``state``: its batch size is
the input's, unknown at ``init``; a model that must keep it between calls returns it
(``jax.lax.stop_gradient`` it for truncated BPTT).

A padded batch of sequences of different lengths (an encoder's final state)::

    encoder = nn.LSTM(128, return_carry=True)
    _, params, _ = encoder.init(key, ((T, -1, D), None, (-1,)))
    (hs, (h, c)), _ = encoder.apply(params, (), (xs, None, lengths))
    # h, c: each sequence's state after its last real step; hs is 0 at padded steps

The output is ``hs`` (or ``(hs, carry)``), without the lengths: in a stack over a padded
batch, ``serial(LSTM(h), LSTM(h, return_carry=True))`` on ``(xs, None, lengths)`` runs
the second layer WITHOUT them (its ``hs`` at real steps are still exact, a recurrence
being causal, but its final carry runs on over the padding). Pass ``(hs, None, lengths)``
to each layer of such a stack, or build it with ``return_lengths=True`` (every layer but
the last), which outputs ``(hs, None, lengths)``, the next layer's input, as
:func:`~funcnet.nn.Bidirectional` does::

    encoder = nn.serial(nn.LSTM(128, return_lengths=True), nn.LSTM(128, return_carry=True))
    (hs, (h, c)), _ = encoder.apply(params, (), (xs, None, lengths))

Note 004 writes the vanilla RNN with column vectors, ``a_t = W h_{t-1} + U x_t``,
``h_t = act(a_t)``, ``o_t = V h_t``. In funcnet's row-vector convention the same network
is::

    h_t = tanh(x_t @ wx + h_{t-1} @ wh + b)        wx = U^T, wh = W^T   (RNN)
    o_t = h_t @ v                                   v = V^T   (a Dense head)

References:
  Elman (1990), "Finding Structure in Time", Cognitive Science 14. Note 004 (RNN).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_weight_args,
                             init_checked, is_shape_pair, weights_and_input)
from funcnet._describe import described

__all__ = ["RNN", "recurrent_layer", "one_sequence_lengths"]

_LAYOUT = "(T, D) or (T, N, D)"


def _promote_carry(name, c, dtype, single, H, what):
    """A given carry array ``what`` in the compute dtype (a non-float one is left to the
    op's error), with a unit batch axis for a single sequence. Its width must be this
    layer's ``H`` (the layer's own check: the op would blame its weights instead); its
    batch size is the op's to check against ``xs``."""
    _checks.check_array(name, what, c)
    _checks.check_shape(name, what, c, (H,) if single else (None, H),
                        f"{'(H,) for one sequence' if single else '(N, H)'}, H={H}")
    c = c.astype(dtype) if jnp.issubdtype(_checks.dtype_of(c), jnp.floating) else c
    return c[None] if single else c


def one_sequence_lengths(name, lengths):
    """The length ``()`` of one sequence ``(T, D)`` (e.g. inside ``jax.vmap`` over the
    examples), as the ``(1,)`` lengths of a batch of one; the rule of every sequence layer
    (the recurrent layers and :func:`~funcnet.nn.Bidirectional`)."""
    _checks.check_array(name, "lengths", lengths)
    _checks.check_rank(name, "lengths", lengths, 0, "() for one sequence (T, D)")
    return jnp.asarray(lengths)[None]


def _split_input(name, x):
    """``xs``, ``(xs, carry)`` or ``(xs, carry, lengths)`` -> ``(xs, carry, lengths)``
    (``carry`` ``None``, in the pair or the triple, for the default initial state, as
    ``xs`` alone; ``lengths`` ``None`` without the triple)."""
    if not isinstance(x, (tuple, list)):
        return x, None, None
    if len(x) not in (2, 3):
        raise ValueError(f"{name}: input must be xs, a pair (xs, carry) or a triple (xs, "
                         f"carry, lengths), got a {type(x).__name__} of {len(x)} entries")
    return x[0], x[1], x[2] if len(x) == 3 else None


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


def recurrent_layer(name, n_carry, H, return_carry, dtype, shapes, make_params, op,
                    initial_carry=None, return_lengths=False) -> Layer:
    """init/apply shared by RNN (carry ``h``), LSTM (carry ``(h, c)``) and GRU (``h``).

    ``shapes``: the params' shapes (``None`` for the input width ``D``);
    ``make_params(key, D, dtype)`` draws them; ``op(xs, carry, params, lengths)`` returns
    ``(hs, carry)`` with ``carry`` a tuple of ``n_carry`` arrays ``(N, H)``;
    ``initial_carry(params, N, dtype)`` is that tuple when the input brings none (zeros
    by default). ``return_lengths``: given lengths, output ``(hs, None, lengths)`` (a
    stack's next layer's input); it excludes ``return_carry``.
    """
    return_carry = _checks.static_bool(name, "return_carry", return_carry)
    return_lengths = _checks.static_bool(name, "return_lengths", return_lengths)
    if return_carry and return_lengths:
        raise ValueError(f"{name}: return_carry=True and return_lengths=True exclude each "
                         f"other: return_lengths feeds the next layer of a stack (which "
                         f"starts from its own initial carry); the last layer returns the "
                         f"carry")
    carry_doc = "((N, H), (N, H))" if n_carry == 2 else "(N, H)"
    carry_names = ("carry[0] (h)", "carry[1] (c)") if n_carry == 2 else ("carry (h)",)

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
            carry_shape = from_tuple(tuple(
                check_input_shape(name, key, s, (1, 2), "(H,) or (N, H)", needs=1)
                for s in as_tuple(carry_shape)))
        shape = check_input_shape(name, key, input_shape, (2, 3), _LAYOUT, needs=1,
                                  batch_axis=1)
        dt = check_dtype(name, dtype)
        shapes, dtypes = shape, dt
        if lengths_shape is not None:
            lengths_shape = check_input_shape(name, key, lengths_shape, (len(shape) - 2,),
                                              "(N,) lengths, () for one sequence")
            shapes, dtypes = (shape, carry_shape, lengths_shape), (dt, dt, jnp.int32)
        elif carry_shape is not None:
            shapes = (shape, carry_shape)
        return init_checked(name, apply, lambda k: (make_params(k, shape[-1], dt), ()), key,
                            shapes, dtypes)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x_in = x
        x, carry, lengths = _split_input(name, x)
        if carry is not None:     # None: the default initial state
            check_carry(carry, "the carry in (xs, carry)")
        x, params = weights_and_input(name, params, state, x, shapes)
        _checks.check_rank(name, "x", x, (2, 3), _LAYOUT)
        single = x.ndim == 2
        xs = x[:, None, :] if single else x
        if carry is None and initial_carry is not None:
            carry = initial_carry(params, xs.shape[1], x.dtype)
        elif carry is None:
            carry = (jnp.zeros((xs.shape[1], H), x.dtype),) * n_carry
        else:
            carry = tuple(_promote_carry(name, c, x.dtype, single, H, what)
                          for c, what in zip(as_tuple(carry), carry_names))
        if lengths is not None and single:
            lengths = one_sequence_lengths(name, lengths)
        with _checks.context(name):
            hs, carry = op(xs, carry, params, lengths)
        carry = as_tuple(carry)
        if single:
            hs, carry = hs[:, 0], tuple(c[0] for c in carry)
        if return_lengths and lengths is not None:
            return (hs, None, x_in[2]), state
        return ((hs, from_tuple(carry)) if return_carry else hs), state

    return Layer(init, apply, name)


@described
def RNN(hidden_size: int, *, return_carry: bool = False,
        w_init=initializers.xavier_normal(), wh_init=None, b_init=initializers.zeros,
        learn_h0: bool = False, dtype=None, return_lengths: bool = False) -> Layer:
    """Vanilla RNN returning every hidden state: ``h_t = tanh(x_t wx + h_{t-1} wh + b)``.

    Runs :func:`funcnet.ops.rnn` (backward: BPTT in one reverse ``lax.scan``). The initial
    state ``h_0`` is zeros, or the learned vector ``params["h0"]`` (broadcast over the
    batch) when ``learn_h0=True``, unless given as ``(xs, h0)``. For the note's output
    ``o_t = V h_t`` apply a :func:`Dense` head to ``hs.reshape(T * N, H)`` (every step)
    or to the final state (``return_carry=True``).

    Shapes:
      input: time-major ``(T, N, D)``, or one sequence ``(T, D)`` (e.g. inside
        ``jax.vmap``); or a pair ``(xs, h0)`` with ``h0`` ``(N, H)`` (``(H,)``), ``(xs,
        None)`` being ``xs``; or a triple ``(xs, h0 or None, lengths)`` for a padded
        batch, ``lengths`` ``(N,)`` integers in ``[0, T]`` (``()`` for one sequence): a
        sequence keeps its state after its last real step and outputs 0 at its padded
        steps (as :func:`LSTM`).
      output: all hidden states ``(T, N, H)`` (or ``(T, H)``); with
        ``return_carry=True`` the pair ``(hs, h_T)`` (with ``lengths``, each sequence's
        state after its last real step).
      ``init``'s ``input_shape``: ``(T, N, D)`` (``N`` may be -1), ``((T, N, D), (N,
        H))`` or ``((T, N, D), (N, H) or None, (N,))``.
      params: ``{"wx": (D, H), "wh": (H, H), "b": (H,)}`` plus ``"h0": (H,)`` if
        ``learn_h0``; state ``()``.

    Args:
      hidden_size: ``H``, a positive int.
      return_carry: output ``(hs, h_T)`` instead of ``hs``.
      w_init: initializer of ``wx``; default Xavier normal (tanh units, Glorot 2010).
      wh_init: initializer of ``wh``; defaults to ``w_init``.
      b_init: initializer of ``b`` (and of ``h0``); default zeros.
      learn_h0: make ``h_0`` a trained parameter instead of zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. The input (and
        a floating ``h0``) and the params are promoted to their common dtype.
      return_lengths: given ``(xs, h0 or None, lengths)``, output ``(hs, None, lengths)``,
        the input of the next layer of a stack over a padded batch (module docstring);
        not with ``return_carry``.

    Returns:
      A :class:`Layer` named ``"RNN(hidden_size)"``.

    Raises:
      TypeError, ValueError: bad constructor arguments or ``input_shape``; an input that
        is not rank 2/3 or not floating, or params of another shape or structure; and
        :func:`funcnet.ops.rnn`'s errors (``D``, ``N`` or ``H`` mismatches, bad
        ``lengths``), prefixed with the layer name.

    References:
      Elman (1990); Glorot & Bengio (2010); note 004 (RNN).
    """
    H = _checks.static_int("RNN", "hidden_size", hidden_size, minimum=1)
    name = f"RNN({H})"
    learn_h0 = _checks.static_bool(name, "learn_h0", learn_h0)
    wh_init = w_init if wh_init is None else wh_init
    check_weight_args(name, dtype, w_init=w_init, wh_init=wh_init, b_init=b_init)
    shapes = {"wx": (None, H), "wh": (H, H), "b": (H,)}
    if learn_h0:
        shapes["h0"] = (H,)

    def make_params(key, d, dt):
        kx, kh, kb, k0 = jax.random.split(key, 4)
        params = {"wx": w_init(kx, (d, H), dt), "wh": wh_init(kh, (H, H), dt),
                  "b": b_init(kb, (H,), dt)}
        if learn_h0:
            params["h0"] = b_init(k0, (H,), dt)
        return params

    def learned_h0(params, n, dt):
        del dt
        return (jnp.broadcast_to(params["h0"][None, :], (n, H)),)   # promoted already

    return recurrent_layer(name, 1, H, return_carry, dtype, shapes, make_params,
                           lambda xs, c, p, lengths: ops.rnn(
                               xs, *c, p["wx"], p["wh"], p["b"], lengths=lengths,
                               return_carry=True),
                           learned_h0 if learn_h0 else None, return_lengths)
