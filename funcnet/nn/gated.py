"""Gated recurrent layers, time-major like :func:`~funcnet.nn.RNN`: ``LSTM`` and ``GRU``.

They share the vanilla RNN's calling convention (:mod:`funcnet.nn.recurrent`: the input
``xs``, ``(xs, carry)`` or ``(xs, carry or None, lengths)``, and ``return_carry``), with
the carry ``(h, c)`` for the LSTM and ``h`` for the GRU.

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
from funcnet.nn.base import Layer, check_weight_args
from funcnet.nn.recurrent import recurrent_layer
from funcnet._describe import described

__all__ = ["LSTM", "GRU"]


def _gated_layer(name, gates, n_carry, H, return_carry, w_init, wh_init, b_init, bias_inits,
                 dtype, op, return_lengths):
    """:func:`recurrent_layer` for LSTM (4 gates, carry (h, c)) and GRU (3 gates, h).

    ``bias_inits``: ``{param name: init(key, dtype) -> (gates*H,)}`` (built on
    ``b_init``); ``op(xs, carry, p, lengths)`` returns ``(hs, carry)``.
    """
    check_weight_args(name, dtype, w_init=w_init, wh_init=wh_init, b_init=b_init)
    shapes = {"wx": (None, gates * H), "wh": (H, gates * H),
              **{k: (gates * H,) for k in bias_inits}}

    def stacked(init, key, rows, dt):
        """One ``(rows, H)`` block per gate (e.g. each recurrent block orthogonal)."""
        return jnp.concatenate([init(k, (rows, H), dt)
                                for k in jax.random.split(key, gates)], axis=1)

    def make_params(key, d, dt):
        kx, kh, kb = jax.random.split(key, 3)
        params = {"wx": stacked(w_init, kx, d, dt), "wh": stacked(wh_init, kh, H, dt)}
        for b_key, (b_name, b_init) in zip(jax.random.split(kb, len(bias_inits)),
                                           bias_inits.items()):
            params[b_name] = b_init(b_key, dt)
        return params

    return recurrent_layer(name, n_carry, H, return_carry, dtype, shapes, make_params, op,
                           return_lengths=return_lengths)


@described
def LSTM(hidden_size: int, *, return_carry: bool = False,
         w_init=initializers.lecun_normal(), wh_init=initializers.orthogonal(),
         b_init=initializers.zeros, forget_bias: float = 1.0, dtype=None,
         return_lengths: bool = False) -> Layer:
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
        ``(xs, (h0, c0))`` with ``h0``, ``c0`` of shape ``(N, H)`` (``(H,)``), ``(xs,
        None)`` being ``xs`` (zeros); or a triple ``(xs, (h0, c0) or None, lengths)`` for
        a padded batch, ``lengths`` ``(N,)`` integers in ``[0, T]`` (``()`` for one
        sequence): a sequence keeps its carry after its last real step and outputs 0 at
        its padded steps.
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
      return_lengths: given ``(xs, carry or None, lengths)``, output ``(hs, None,
        lengths)``, the input of the next layer of a stack over a padded batch
        (:mod:`funcnet.nn.recurrent`); not with ``return_carry``.

    Returns:
      A :class:`Layer` named ``"LSTM(hidden_size)"``.

    Raises:
      TypeError, ValueError: bad constructor arguments or ``input_shape``; params of
        another structure; an input that is not rank 2/3, not floating, or a carry that
        is neither a pair nor ``None``; and :func:`funcnet.ops.lstm`'s errors (``D``, ``N`` or ``H``
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
                            xs, *c, p["wx"], p["wh"], p["b"], lengths=lengths),
                        return_lengths)


@described
def GRU(hidden_size: int, *, return_carry: bool = False,
        w_init=initializers.lecun_normal(), wh_init=initializers.orthogonal(),
        b_init=initializers.zeros, dtype=None, return_lengths: bool = False) -> Layer:
    """Gated recurrent unit over a whole sequence, returning every hidden state.

    Runs :func:`funcnet.ops.gru`, the PyTorch/cuDNN/Flax variant of Cho et al. (2014)
    (gates ``[r, z, n]``, ``n = tanh(x wx_n + bx_n + r * (h wh_n + bh_n))``,
    ``h_t = (1 - z) n + z h_{t-1}``); backward: BPTT in one reverse ``lax.scan``. The
    initial state is zeros unless given as ``(xs, h0)``. Initialisation as
    :func:`LSTM` (per gate; no forget bias).

    Shapes:
      input: ``xs`` ``(T, N, D)`` or ``(T, D)``; or a pair ``(xs, h0)`` with ``h0``
        ``(N, H)`` (``(H,)``), ``(xs, None)`` being ``xs``; or a triple ``(xs, h0 or
        None, lengths)`` for a padded batch, as :func:`LSTM`.
      output: ``hs`` ``(T, N, H)``; with ``return_carry=True`` the pair ``(hs, h_T)``.
      ``init``'s ``input_shape``: ``(T, N, D)``, ``((T, N, D), (N, H))`` or
        ``((T, N, D), (N, H) or None, (N,))``.
      params: ``{"wx": (D, 3H), "wh": (H, 3H), "bx": (3H,), "bh": (3H,)}``; state ``()``.
        The bias layout is PyTorch's and cuDNN's (``b_ih``, ``b_hh``): ``bx`` and ``bh``
        each hold ``[r, z, n]``; the ``r`` and ``z`` slices of ``bh`` only add to those of
        ``bx`` (a redundant pair), while ``bh[2H:]`` sits inside ``r * (...)``. Flax's
        ``GRUCell`` has no recurrent ``r``/``z`` bias (``ir``, ``iz``, ``in`` biases are
        ``bx``, ``hn``'s is ``bh[2H:]``): 2H fewer parameters, and the same function as
        this layer when ``bh[:2H] = 0`` (as initialised by the default zeros).

    Args:
      hidden_size: ``H``, an int >= 1.
      return_carry: output ``(hs, h_T)`` instead of ``hs``.
      w_init, wh_init: initializers of each gate's input and recurrent block.
      b_init: initializer of ``bx`` and ``bh``.
      dtype: dtype of the params; ``None`` is JAX's default float dtype.
      return_lengths: as :func:`LSTM`.

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
                                                          p["bh"], lengths=lengths),
                        return_lengths)
