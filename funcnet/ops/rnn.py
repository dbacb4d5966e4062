"""Vanilla (Elman) RNN primitive with a BPTT backward rule (note 004, "RNN").

Row-vector, time-major convention: ``xs`` is ``(T, N, D)``. Note 004 writes the cell with
column vectors, ``a = W h + U x``; funcnet's ``wh`` is ``W^T`` and ``wx`` is ``U^T``, and
adds a bias ``b`` (see ``docs/formulas.md``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._arrays import as_rows, previous, project, rows_sum, rows_t_dot
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp, split_like, vary_like


def _rnn_forward(xs, h0, wx, wh, b, valid):
    """``(h_T, hs)``. The input projection is one big matmul outside the scan; the scan
    is serial."""
    def step(h, inp):
        a_x, *m = inp
        new = jnp.tanh(a_x + h @ wh)
        if m:  # padded sequences: past its length a sequence keeps its state, outputs 0
            return freeze_padded(m[0], (new,), (h,))[0], zero_padded(m[0], new)[0]
        return new, new

    h0 = vary_like(h0, xs, wx, wh, b, valid)
    return lax.scan(step, h0, (project(xs, wx, b), *mask_steps(valid)))


@jax.custom_vjp
def _rnn(xs, h0, wx, wh, b, valid):
    h_last, hs = _rnn_forward(xs, h0, wx, wh, b, valid)
    return hs, h_last


def _rnn_fwd(xs, h0, wx, wh, b, valid):
    h_last, hs = _rnn_forward(xs, h0, wx, wh, b, valid)
    return (hs, h_last), (xs, h0, wx, wh, hs, valid)


def _rnn_bwd(res, cts):
    xs, h0, wx, wh, hs, valid = res
    dhs, dh_last = cts

    def step(dh_next, inp):
        dh_out, h, *m = inp
        da = (dh_out + dh_next) * (1 - h * h)       # tanh'(a) = 1 - h^2
        if m:  # a padded step: no gradient into its unit, the state's passes through
            (da,) = zero_padded(m[0], da)
            return freeze_padded(m[0], (da @ wh.T,), (dh_next,))[0], da
        return da @ wh.T, da

    dh_last = vary_like(dh_last, dhs, hs, wh, valid)
    dh0, das = lax.scan(step, dh_last, (dhs, hs, *mask_steps(valid)), reverse=True)
    h_prev = previous(h0, hs)                      # (T, N, H): h_{t-1} (real steps: a prefix)
    da2 = as_rows(das)
    dxs = (da2 @ wx.T).reshape(xs.shape)
    dwx = rows_t_dot(real_inputs(valid, xs), da2, wx)
    dwh = rows_t_dot(h_prev, da2, wh)
    return dxs, dh0, dwx, dwh, rows_sum(da2), None


defvjp(_rnn, _rnn_fwd, _rnn_bwd)


def check_recurrent_args(fn, gates, xs, carries, weights):
    """The checks of ``rnn`` (1 gate), ``lstm`` (4), ``gru`` (3) and their twins.

    ``carries``: ``{name: array}`` each ``(N, H)``; ``weights``: ``{"wx": .., "wh": ..,
    bias names: ..}`` with ``wx (D, G*H)``, ``wh (H, G*H)``, biases ``(G*H,)``. ``T >= 1``
    steps; an empty batch, ``D = 0`` or ``H = 0`` is computed.
    """
    named = {"xs": xs, **carries, **weights}
    for name, a in named.items():
        _checks.check_float(fn, name, a)
    for name, a in list(named.items())[1:]:
        _checks.check_same_dtype(fn, "xs", xs, name, a)
    _checks.check_rank(fn, "xs", xs, 3, "(T, N, D)")
    first = next(iter(carries))
    _checks.check_rank(fn, first, carries[first], 2, "(N, H)")
    t, n, d = _checks.shape_of(xs)
    h = _checks.shape_of(carries[first])[1]
    _checks.check_nonempty(fn, "xs", xs, "T >= 1 steps", (0,))
    for name, a in carries.items():
        _checks.check_shape(fn, name, a, (n, h), f"batch N={n} of xs {(t, n, d)}, H={h}")
    g = f"{gates}" if gates > 1 else ""
    layout = f"{gates} gates of H={h}" if gates > 1 else f"H={h}"
    layout += f" from {first}"
    for name, a in weights.items():
        if name == "wx":
            _checks.check_shape(fn, name, a, (d, gates * h), f"(D, {g}H): D={d}, {layout}")
        elif name == "wh":
            _checks.check_shape(fn, name, a, (h, gates * h), f"(H, {g}H): {layout}")
        else:
            _checks.check_shape(fn, name, a, (gates * h,), f"({g}H,): {layout}")


def padded_steps(fn, xs, lengths):
    """``(valid, bad)`` for ``lengths`` of the sequences of ``xs`` ``(T, N, D)``
    (``(None, None)`` without ``lengths``).

    ``valid`` ``(T, N, 1)``: ``t < lengths[n]``, the real steps; ``bad`` ``(N,)``: a
    length outside ``[0, T]``, only possible under ``jit`` (concrete lengths are
    checked). Such a sequence runs every step from a NaN carry (:func:`nan_carry`), so
    its outputs and final carry are NaN and the error is seen.
    """
    if lengths is None:
        return None, None
    lengths = _checks.check_lengths(fn, xs, lengths)
    bad = (lengths < 0) | (lengths > xs.shape[0])
    return _checks.valid_steps(lengths, xs.shape) | bad[None, :, None], bad


def nan_carry(bad, *carries):
    """The initial carries ``(N, H)`` with NaN for the sequences flagged ``bad``.

    An added ``(N, 1)`` column (0 or NaN), not a select: its derivative keeps nothing
    (a select would keep its ``(N, H)`` mask and zeros for the backward pass)."""
    if bad is None:
        return carries
    return tuple(c + jnp.where(bad[:, None], jnp.asarray(jnp.nan, c.dtype),
                               jnp.zeros((), c.dtype)) for c in carries)


def freeze_padded(valid, new, old):
    """The carries of the real steps (``valid`` True); a padded step keeps ``old``."""
    return tuple(jnp.where(valid, a, b) for a, b in zip(new, old))


def zero_padded(valid, *arrays):
    """Each array with zeros at the padded steps (``valid`` False); ``None`` stays.

    Selects, not products: what the padding holds (even inf or NaN) does not pass, where
    ``0 * nan`` would (e.g. the padded inputs in a weight gradient ``xs^T dz``)."""
    return tuple(None if a is None else jnp.where(valid, a, jnp.zeros((), a.dtype))
                 for a in arrays)


def mask_steps(valid):
    """The extra scanned inputs of a recurrence: the ``(T, N, 1)`` mask of real steps of
    padded sequences, if any (``()`` without ``lengths``)."""
    return () if valid is None else (valid,)


def real_inputs(valid, xs):
    """``xs`` with its padding read as zeros (for the weight gradients ``xs^T dz``)."""
    return xs if valid is None else zero_padded(valid, xs)[0]


def check_rnn_args(fn, xs, h0, wx, wh, b):
    """The checks of :func:`rnn` (and its twin)."""
    check_recurrent_args(fn, 1, xs, {"h0": h0}, {"wx": wx, "wh": wh, "b": b})


@has_twin
def rnn(xs, h0, wx, wh, b, lengths=None, *, return_carry=False):
    """Vanilla tanh RNN over a whole sequence; returns every hidden state.

    Forward (note 004, row vectors)::

        a_t = x_t wx + h_{t-1} wh + b,     h_t = tanh(a_t),     t = 1..T

    The input projection ``xs wx + b`` is one ``(T*N, D) @ (D, H)`` matmul before the
    ``lax.scan`` over time.

    Backward (BPTT), with ``dy_t`` the cotangent of ``h_t``, in ONE reverse ``lax.scan``
    carrying ``g`` (the gradient flowing into ``h_t`` from step ``t+1``; after the last
    step ``g`` is the cotangent of the returned final state, 0 without ``return_carry``)::

        da_t = (dy_t + g_t) * (1 - h_t^2),     g_{t-1} = da_t wh^T,     dh0 = g_0

    and after the scan, as one matmul each over all ``T*N`` rows::

        dxs = da wx^T,   dwx = xs^T da,   dwh = h_{prev}^T da,   db = sum_{t, n} da_t

    where ``h_prev`` stacks ``h_0 .. h_{T-1}``. Residuals: the inputs and the hidden
    states ``hs`` (no per-step pre-activations; ``tanh'`` is rebuilt as ``1 - h^2``).

    With ``lengths`` (a padded batch, as :func:`lstm`; ``m = [t < lengths[n]]``):
    ``h_t = m h_t + (1 - m) h_{t-1}`` and ``hs[t] = m h_t``, so the final state is each
    sequence's after its last real step; a padded step of the backward loop sets
    ``da = 0`` and passes ``g`` on unchanged, and ``dwx`` reads the padding of ``xs`` as
    zeros (selects: inf or NaN in the padding reaches no value and no gradient). The
    extra residuals are the ``(T, N, 1)`` mask and the initial state.

    Args:
      xs: ``(T, N, D)`` inputs, time-major, ``T >= 1``.
      h0: ``(N, H)`` initial state.
      wx: ``(D, H)`` input weights (note 004's ``U^T``).
      wh: ``(H, H)`` recurrent weights (note 004's ``W^T``).
      b: ``(H,)`` bias (absent from note 004's formula).
      All the same floating dtype.
      lengths: ``None`` (every step is real) or ``(N,)`` integers in ``[0, T]``: sequence
        ``n`` is ``xs[:lengths[n], n]``, the rest padding.
      return_carry: also return the final state (as :func:`gru`), whose cotangent flows
        into the backward pass (chunked, stateful use).

    Returns:
      ``hs``: ``(T, N, H)``, ``hs[t]`` is ``h_{t+1}`` (0 at padded steps); with
      ``return_carry=True`` the pair ``(hs, h_T)``, ``h_T`` ``(N, H)`` (``== hs[-1]``
      without ``lengths``; with them each sequence's state after its last real step,
      ``h0`` for a length 0).

    Raises:
      ValueError: wrong ranks, inconsistent ``T, N, D, H``, ``T = 0``; ``lengths`` not
        ``(N,)`` or (known values) outside ``[0, T]``: under ``jit`` such a sequence's
        outputs and state are NaN instead. (An empty batch, ``D = 0`` or ``H = 0`` is
        computed.)
      TypeError: non-floating or mismatched dtypes; non-integer ``lengths``; a
        ``return_carry`` that is not a bool.

    References:
      Note 004 ("RNN"); Elman, "Finding Structure in Time", 1990; Werbos,
      "Backpropagation Through Time: What It Does and How to Do It", 1990.
      See ``docs/formulas.md``.
    """
    check_rnn_args("rnn", xs, h0, wx, wh, b)
    return_carry = _checks.static_bool("rnn", "return_carry", return_carry)
    valid, bad = padded_steps("rnn", xs, lengths)
    (h0,) = split_like(nan_carry(bad, h0), xs)
    hs, h_last = _rnn(xs, h0, wx, wh, b, valid)
    return (hs, h_last) if return_carry else hs
