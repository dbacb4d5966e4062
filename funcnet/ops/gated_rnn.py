"""Gated recurrences, LSTM and GRU, with BPTT backward rules (beyond the notes).

Conventions as :func:`funcnet.ops.rnn`: row vectors, time-major ``xs`` of shape
``(T, N, D)``, the input projection ``xs wx + b`` done as one ``(T*N, D)`` matmul before
the ``lax.scan`` on accelerators and step by step inside it on CPUs (faster there: see
``funcnet.ops._arrays.scan_projected``), and the backward pass (BPTT) as ONE reverse
``lax.scan`` followed by one matmul per weight over all ``T*N`` rows. Both ops return
every hidden state AND the final carry, and the cotangents of both flow into the
backward pass, so a sequence can be processed in chunks (stateful use: feed the final
carry of one chunk as the initial carry of the next).

Residuals are the gate activations (plus the cell states for the LSTM and the hidden
states for the GRU), not JAX's per-step tape of pre-activations, products and tanh's.

Padded batches (``lengths``, as Flax's ``seq_lengths`` and PyTorch's packed sequences):
with ``m_t = [t < lengths[n]]`` per sequence, a padded step keeps the carry and outputs 0,
``carry_t = m_t new_t + (1 - m_t) carry_{t-1}``, ``y_t = m_t h_t``, so the returned carry
is each sequence's state after its last real step. Backward: at a padded step the
carry's cotangent passes through unchanged and the gates get none (``dz = 0``). The
masks are selects, not products, and the weight gradient reads the padding of ``xs`` as
zeros: whatever it holds (even inf or NaN) reaches no value and no gradient. All of it
is inside the rules: beyond the unpadded op's residuals only the ``(T, N, 1)`` mask and
the initial carries (NaN for an out-of-range length under ``jit``) are kept.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from funcnet.ops._arrays import as_rows, previous, rows_sum, rows_t_dot, scan_projected
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp, split_like, vary_like
from funcnet.ops.rnn import (check_recurrent_args, freeze_padded, mask_steps, nan_carry,
                             padded_steps, real_inputs, zero_padded)

__all__ = ["lstm", "gru"]


# ------------------------------------------------------------------------------ LSTM
def lstm_cell(carry, a_x, wh):
    """One LSTM step from the projected input ``a_x = x wx + b``: ``(h, c), acts``."""
    h, c = carry
    k = h.shape[-1]
    z = a_x + h @ wh
    s = lax.logistic(z)
    i, f, o = s[:, :k], s[:, k:2 * k], s[:, 3 * k:]
    g = jnp.tanh(z[:, 2 * k:3 * k])
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), (i, f, g, o)


def _lstm_forward(xs, h0, c0, wx, wh, b, keep, valid):
    def step(carry, a_x, *m):
        new, gates = lstm_cell(carry, a_x, wh)
        h, acts = new[0], (jnp.concatenate(gates, axis=1) if keep else None)
        if m:  # padded sequences: past its length a sequence keeps its carry, outputs 0
            new = freeze_padded(m[0], new, carry)
            h, acts = zero_padded(m[0], h, acts)
        return new, ((h, acts, new[1]) if keep else h)

    init = vary_like((h0, c0), xs, wx, wh, b, valid)
    return scan_projected(step, init, xs, wx, b, *mask_steps(valid))


@jax.custom_vjp
def _lstm(xs, h0, c0, wx, wh, b, valid):
    carry, hs = _lstm_forward(xs, h0, c0, wx, wh, b, False, valid)
    return hs, carry


def _lstm_fwd(xs, h0, c0, wx, wh, b, valid):
    carry, (hs, acts, cs) = _lstm_forward(xs, h0, c0, wx, wh, b, True, valid)
    return (hs, carry), (xs, h0, c0, wx, wh, acts, cs, valid)


def _lstm_bwd(res, cts):
    xs, h0, c0, wx, wh, acts, cs, valid = res
    dhs, (dh_last, dc_last) = cts
    k = h0.shape[1]
    tcs = jnp.tanh(cs)

    def step(carry, inp):
        dh_next, dc_next = carry
        dh_out, a, tc, c_prev, *m = inp
        i, f, g, o = a[:, :k], a[:, k:2 * k], a[:, 2 * k:3 * k], a[:, 3 * k:]
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                              dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        if m:  # a padded step: no gradient into its gates, the carry's passes through
            (dz,) = zero_padded(m[0], dz)
            return freeze_padded(m[0], (dz @ wh.T, dc * f), carry), dz
        return (dz @ wh.T, dc * f), dz

    init = vary_like((dh_last, dc_last), dhs, acts, cs, wh, valid)
    (dh0, dc0), dzs = lax.scan(step, init,
                               (dhs, acts, tcs, previous(c0, cs), *mask_steps(valid)),
                               reverse=True)
    h_prev = previous(h0, acts[..., 3 * k:] * tcs)      # h_t = o_t tanh(c_t), recomputed
    dz = as_rows(dzs)
    return ((dz @ wx.T).reshape(xs.shape), dh0, dc0,
            rows_t_dot(real_inputs(valid, xs), dz, wx), rows_t_dot(h_prev, dz, wh),
            rows_sum(dz), None)


defvjp(_lstm, _lstm_fwd, _lstm_bwd)


@has_twin
def lstm(xs, h0, c0, wx, wh, b, lengths=None):
    """LSTM over a whole sequence; returns every hidden state and the final carry.

    Gates are stacked along the last axis of ``wx``, ``wh`` and ``b`` in the order
    ``[i, f, g, o]`` (input, forget, cell candidate, output; PyTorch's and cuDNN's
    order): columns ``[0, H)`` are ``i``, ``[H, 2H)`` are ``f``, and so on. Forward, for
    ``t = 1..T`` (row vectors, ``sigma`` the logistic sigmoid)::

        z_t = x_t wx + h_{t-1} wh + b                      (N, 4H)
        i = sigma(z_i), f = sigma(z_f), g = tanh(z_g), o = sigma(z_o)
        c_t = f * c_{t-1} + i * g,        h_t = o * tanh(c_t)

    One bias ``b`` (PyTorch's ``b_ih + b_hh``); no peepholes.

    Backward (BPTT) in ONE reverse ``lax.scan`` carrying ``(gh, gc)``, the gradients
    flowing into ``h_t`` and ``c_t`` from step ``t+1``, started at the cotangents of the
    returned final carry ``(dh_T, dc_T)``; ``dy_t`` is the cotangent of ``hs[t]``::

        dh = dy_t + gh,     dc = gc + dh * o * (1 - tanh(c_t)^2)
        dz_i = dc g i (1 - i),   dz_f = dc c_{t-1} f (1 - f)
        dz_g = dc i (1 - g^2),   dz_o = dh tanh(c_t) o (1 - o)
        gh <- dz wh^T,   gc <- dc * f;     finally dh0 = gh, dc0 = gc

    then, over all ``T*N`` rows at once::

        dxs = dz wx^T,   dwx = xs^T dz,   dwh = h_prev^T dz,   db = sum_{t,n} dz

    Residuals: the gate activations ``[i, f, g, o]`` ``(T, N, 4H)``, the cell states
    ``(T, N, H)`` and the inputs; ``tanh(c_t)`` and ``h_{t-1} = o tanh(c_{t-1})`` are
    recomputed (elementwise, vectorised over all steps).

    With ``lengths`` (a padded batch; ``m = [t < lengths[n]]``): ``(h_t, c_t) = m
    (h_t, c_t) + (1 - m) (h_{t-1}, c_{t-1})`` and ``hs[t] = m h_t``; in the backward
    loop a padded step sets ``dz = 0`` and passes ``(gh, gc)`` on unchanged.

    Args:
      xs: ``(T, N, D)`` inputs, time-major, ``T >= 1``.
      h0, c0: ``(N, H)`` initial hidden and cell states.
      wx: ``(D, 4H)`` input weights. wh: ``(H, 4H)`` recurrent weights. b: ``(4H,)``.
      All the same floating dtype.
      lengths: ``None`` (every step is real) or ``(N,)`` integers in ``[0, T]``: sequence
        ``n`` is ``xs[:lengths[n], n]``, the rest padding.

    Returns:
      ``(hs, (h_T, c_T))``: ``hs`` ``(T, N, H)`` with ``hs[t] = h_{t+1}``, and the final
      carry, two ``(N, H)`` arrays (``h_T == hs[-1]``). With ``lengths``: ``hs`` is 0 at
      the padded steps and the carry is each sequence's after its last real step
      (``(h0, c0)`` for a length 0), exactly as if each had been run alone.

    Raises:
      ValueError: wrong ranks, ``T = 0`` or inconsistent ``T, N, D, H``; ``lengths`` not
        ``(N,)`` or (known values) outside ``[0, T]``; under ``jit`` such a sequence's
        outputs and carry are NaN instead.
      TypeError: non-floating or mismatched dtypes; non-integer ``lengths``.

    References:
      Hochreiter & Schmidhuber (1997), "Long Short-Term Memory", Neural Computation 9;
      Gers, Schmidhuber & Cummins (2000), "Learning to Forget" (the forget gate).
      ``docs/formulas.md``, "Beyond the notes".
    """
    check_recurrent_args("lstm", 4, xs, {"h0": h0, "c0": c0}, {"wx": wx, "wh": wh, "b": b})
    valid, bad = padded_steps("lstm", xs, lengths)
    return _lstm(xs, *split_like(nan_carry(bad, h0, c0), xs), wx, wh, b, valid)


# ------------------------------------------------------------------------------- GRU
def gru_cell(h, a_x, wh, bh):
    """One GRU step from ``a_x = x wx + bx``: ``h_new, (r, z, n, hn)``."""
    k = h.shape[-1]
    a_h = h @ wh + bh[None, :]
    rz = lax.logistic(a_x[:, :2 * k] + a_h[:, :2 * k])
    r, z = rz[:, :k], rz[:, k:]
    hn = a_h[:, 2 * k:]
    n = jnp.tanh(a_x[:, 2 * k:] + r * hn)
    return (1 - z) * n + z * h, (r, z, n, hn)


def _gru_forward(xs, h0, wx, wh, bx, bh, keep, valid):
    def step(h, a_x, *m):
        new, (r, z, n, _) = gru_cell(h, a_x, wh, bh)
        out, acts = new, (jnp.concatenate([r, z, n], axis=1) if keep else None)
        if m:  # padded sequences: past its length a sequence keeps its state, outputs 0
            (new,) = freeze_padded(m[0], (new,), (h,))
            out, acts = zero_padded(m[0], out, acts)
        return new, ((out, acts) if keep else out)

    h0 = vary_like(h0, xs, wx, wh, bx, bh, valid)
    return scan_projected(step, h0, xs, wx, bx, *mask_steps(valid))


@jax.custom_vjp
def _gru(xs, h0, wx, wh, bx, bh, valid):
    h_last, hs = _gru_forward(xs, h0, wx, wh, bx, bh, False, valid)
    return hs, h_last


def _gru_fwd(xs, h0, wx, wh, bx, bh, valid):
    h_last, (hs, acts) = _gru_forward(xs, h0, wx, wh, bx, bh, True, valid)
    return (hs, h_last), (xs, h0, wx, wh, bh, acts, hs, valid)


def _gru_bwd(res, cts):
    xs, h0, wx, wh, bh, acts, hs, valid = res
    dhs, dh_last = cts
    k = h0.shape[1]
    h_prev = previous(h0, hs)
    wh_n, bh_n = wh[:, 2 * k:], bh[None, 2 * k:]

    def step(dh_next, inp):
        dh_out, a, hp, *m = inp
        hn = hp @ wh_n + bh_n   # h_{t-1} wh_n + bh_n, recomputed (not kept by the forward)
        r, z, n = a[:, :k], a[:, k:2 * k], a[:, 2 * k:]
        dh = dh_out + dh_next
        dan = dh * (1 - z) * (1 - n * n)
        dar = dan * hn * r * (1 - r)
        daz = dh * (hp - n) * z * (1 - z)
        dah = jnp.concatenate([dar, daz, dan * r], axis=1)
        if m:  # a padded step: no gradient into its gates, the state's passes through
            dah, dan = zero_padded(m[0], dah, dan)
            (dh_prev,) = freeze_padded(m[0], (dh * z + dah @ wh.T,), (dh_next,))
            return dh_prev, (dah, dan)
        return dh * z + dah @ wh.T, (dah, dan)

    dh_last = vary_like(dh_last, dhs, acts, h_prev, wh, bh, valid)
    dh0, (dah, dan) = lax.scan(step, dh_last, (dhs, acts, h_prev, *mask_steps(valid)),
                               reverse=True)
    # dax = [dar, daz, dan] differs from dah only in its last block: assembled once for
    # all steps instead of a second (T, N, 3H) output of the loop
    dah = as_rows(dah)
    dax = jnp.concatenate([dah[..., :2 * k], as_rows(dan)], axis=-1)
    return ((dax @ wx.T).reshape(xs.shape), dh0, rows_t_dot(real_inputs(valid, xs), dax, wx),
            rows_t_dot(h_prev, dah, wh), rows_sum(dax), rows_sum(dah), None)


defvjp(_gru, _gru_fwd, _gru_bwd)


@has_twin
def gru(xs, h0, wx, wh, bx, bh, lengths=None):
    """GRU over a whole sequence; returns every hidden state and the final state.

    Gates stacked ``[r, z, n]`` (reset, update, candidate) along the last axis of ``wx``
    ``(D, 3H)``, ``wh`` ``(H, 3H)``, ``bx`` and ``bh`` ``(3H,)``. The variant of PyTorch,
    cuDNN and ``flax.linen.GRUCell``, where the reset gate multiplies the recurrent term
    *after* its matmul, ``r * (h wh_n + bh_n)`` (Cho et al. 2014's original form is
    ``(r * h) wh_n``; the two differ in value, not in capacity)::

        r = sigma(x wx_r + bx_r + h_{t-1} wh_r + bh_r)
        z = sigma(x wx_z + bx_z + h_{t-1} wh_z + bh_z)
        n = tanh(x wx_n + bx_n + r * (h_{t-1} wh_n + bh_n))
        h_t = (1 - z) * n + z * h_{t-1}

    Backward (BPTT) in ONE reverse ``lax.scan`` carrying ``gh`` (the gradient flowing
    into ``h_t`` from step ``t+1``, started at the cotangent of the returned ``h_T``);
    ``hn = h_{t-1} wh_n + bh_n``::

        dh = dy_t + gh
        dan = dh (1 - z)(1 - n^2),  dar = dan hn r (1 - r),  daz = dh (h_{t-1} - n) z (1 - z)
        dax = [dar, daz, dan],      dah = [dar, daz, dan * r]
        gh <- dh z + dah wh^T;      finally dh0 = gh

    then ``dxs = dax wx^T``, ``dwx = xs^T dax``, ``dbx = sum dax``, ``dwh = h_prev^T
    dah``, ``dbh = sum dah`` over all ``T*N`` rows.

    Residuals: the gate activations ``[r, z, n]`` ``(T, N, 3H)``, the hidden states
    ``(T, N, H)`` and the inputs; ``hn`` is recomputed at each step of the backward loop
    (one ``(N, H) @ (H, H)`` matmul, which stays in cache on a CPU).

    With ``lengths`` (``m = [t < lengths[n]]``): ``h_t = m h_t + (1 - m) h_{t-1}``,
    ``hs[t] = m h_t``; a padded step of the backward loop sets ``dax = dah = 0`` and
    passes ``gh`` on unchanged.

    Args:
      xs: ``(T, N, D)`` inputs, time-major, ``T >= 1``.
      h0: ``(N, H)`` initial state.
      wx: ``(D, 3H)``; wh: ``(H, 3H)``; bx, bh: ``(3H,)`` input and recurrent biases
        (both are needed: ``bh_n`` is multiplied by ``r``). All the same floating dtype.
      lengths: ``None`` or ``(N,)`` integers in ``[0, T]``, as :func:`lstm`.

    Returns:
      ``(hs, h_T)``: ``hs`` ``(T, N, H)`` and the final state ``(N, H)`` (``== hs[-1]``).
      With ``lengths``: ``hs`` is 0 at the padded steps and ``h_T`` each sequence's state
      after its last real step.

    Raises:
      ValueError: wrong ranks, ``T = 0`` or inconsistent ``T, N, D, H``; bad ``lengths``
        as :func:`lstm` (NaN for that sequence under ``jit``).
      TypeError: non-floating or mismatched dtypes; non-integer ``lengths``.

    References:
      Cho et al. (2014), "Learning Phrase Representations using RNN Encoder-Decoder for
      Statistical Machine Translation", https://arxiv.org/abs/1406.1078 (the GRU);
      PyTorch ``torch.nn.GRU`` and cuDNN for the reset-after-matmul variant.
      ``docs/formulas.md``, "Beyond the notes".
    """
    check_recurrent_args("gru", 3, xs, {"h0": h0}, {"wx": wx, "wh": wh, "bx": bx, "bh": bh})
    valid, bad = padded_steps("gru", xs, lengths)
    (h0,) = split_like(nan_carry(bad, h0), xs)
    return _gru(xs, h0, wx, wh, bx, bh, valid)
