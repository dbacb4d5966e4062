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
from funcnet.ops._arrays import flat
from funcnet.ops._mode import has_twin


def _rnn_forward(xs, h0, wx, wh, b):
    """The input projection is one big matmul outside the scan; the scan is serial."""
    t, n, _ = xs.shape
    ax = (flat(xs) @ wx + b[None, :]).reshape(t, n, wx.shape[1])

    def step(h, a_x):
        h = jnp.tanh(a_x + h @ wh)
        return h, h

    _, hs = lax.scan(step, h0, ax)
    return hs


@jax.custom_vjp
def _rnn(xs, h0, wx, wh, b):
    return _rnn_forward(xs, h0, wx, wh, b)


def _rnn_fwd(xs, h0, wx, wh, b):
    hs = _rnn_forward(xs, h0, wx, wh, b)
    return hs, (xs, h0, wx, wh, hs)


def _rnn_bwd(res, dhs):
    xs, h0, wx, wh, hs = res

    def step(dh_next, inp):
        dh_out, h = inp
        da = (dh_out + dh_next) * (1 - h * h)       # tanh'(a) = 1 - h^2
        return da @ wh.T, da

    dh0, das = lax.scan(step, jnp.zeros_like(h0), (dhs, hs), reverse=True)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, N, H): h_{t-1}
    da2 = flat(das)
    dxs = (da2 @ wx.T).reshape(xs.shape)
    dwx = flat(xs).T @ da2
    dwh = flat(h_prev).T @ da2
    db = jnp.sum(da2, axis=0)
    return dxs, dh0, dwx, dwh, db


_rnn.defvjp(_rnn_fwd, _rnn_bwd)


def check_rnn_args(fn, xs, h0, wx, wh, b):
    """The checks of :func:`rnn` (and its twin). ``T >= 1`` steps; an empty batch,
    ``D = 0`` or ``H = 0`` is computed."""
    names = ("xs", "h0", "wx", "wh", "b")
    args = (xs, h0, wx, wh, b)
    for name, a in zip(names, args):
        _checks.check_float(fn, name, a)
    _checks.check_rank(fn, "xs", xs, 3, "(T, N, D)")
    _checks.check_rank(fn, "h0", h0, 2, "(N, H)")
    t, n, d = xs.shape
    hdim = h0.shape[1]
    _checks.check_nonempty(fn, "xs", xs, "T >= 1 steps", (0,))
    _checks.check_shape(fn, "h0", h0, (n, hdim), f"batch N={n} of xs {tuple(xs.shape)}")
    _checks.check_shape(fn, "wx", wx, (d, hdim),
                        f"(D, H) with D={d} from xs {tuple(xs.shape)}, H={hdim} from h0")
    _checks.check_shape(fn, "wh", wh, (hdim, hdim), f"(H, H) with H={hdim} from h0")
    _checks.check_shape(fn, "b", b, (hdim,), f"(H,) with H={hdim} from h0")
    for name, a in zip(names[1:], args[1:]):
        if a.dtype != xs.dtype:
            _checks.check_same_dtype(fn, "xs", xs, name, a)


@has_twin
def rnn(xs, h0, wx, wh, b):
    """Vanilla tanh RNN over a whole sequence; returns every hidden state.

    Forward (note 004, row vectors)::

        a_t = x_t wx + h_{t-1} wh + b,     h_t = tanh(a_t),     t = 1..T

    The input projection ``xs wx + b`` is one ``(T*N, D) @ (D, H)`` matmul before the
    ``lax.scan`` over time.

    Backward (BPTT), with ``dy_t`` the cotangent of ``h_t``, in ONE reverse ``lax.scan``
    carrying ``g`` (the gradient flowing into ``h_t`` from step ``t+1``, ``g = 0`` after
    the last step)::

        da_t = (dy_t + g_t) * (1 - h_t^2),     g_{t-1} = da_t wh^T,     dh0 = g_0

    and after the scan, as one matmul each over all ``T*N`` rows::

        dxs = da wx^T,   dwx = xs^T da,   dwh = h_{prev}^T da,   db = sum_{t, n} da_t

    where ``h_prev`` stacks ``h_0 .. h_{T-1}``. Residuals: the inputs and the hidden
    states ``hs`` (no per-step pre-activations; ``tanh'`` is rebuilt as ``1 - h^2``).

    Args:
      xs: ``(T, N, D)`` inputs, time-major, ``T >= 1``.
      h0: ``(N, H)`` initial state.
      wx: ``(D, H)`` input weights (note 004's ``U^T``).
      wh: ``(H, H)`` recurrent weights (note 004's ``W^T``).
      b: ``(H,)`` bias (absent from note 004's formula).
      All the same floating dtype.

    Returns:
      ``hs``: ``(T, N, H)``, ``hs[t]`` is ``h_{t+1}``.

    Raises:
      ValueError: wrong ranks, inconsistent ``T, N, D, H``, ``T = 0``. (An empty batch,
        ``D = 0`` or ``H = 0`` is computed.)
      TypeError: non-floating or mismatched dtypes.

    References:
      Note 004 ("RNN"); Elman, "Finding Structure in Time", 1990; Werbos,
      "Backpropagation Through Time: What It Does and How to Do It", 1990.
      See ``docs/formulas.md``.
    """
    check_rnn_args("rnn", xs, h0, wx, wh, b)
    return _rnn(xs, h0, wx, wh, b)
