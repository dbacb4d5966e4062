"""Plain-JAX twin of :func:`funcnet.ops.rnn`: a ``lax.scan`` differentiated by JAX.

With ``lengths``, the padded steps (``t >= lengths[n]``) keep the state and output 0
(``jnp.where``); without, every step is real.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._mesh import split_like, vary_like
from funcnet.ops.rnn import check_rnn_args, nan_carry, padded_steps, real_inputs

__all__ = ["rnn"]


def real_steps(fn, xs, lengths, *carries):
    """``(xs, valid, carries)``: the padding of ``xs`` zeroed (autodiff would otherwise
    multiply it by 0 in the weight gradients), the mask of real steps (all True without
    ``lengths``), the initial carries NaN for an out-of-range length."""
    valid, bad = padded_steps(fn, xs, lengths)
    if valid is None:
        return xs, jnp.ones(xs.shape[:2] + (1,), bool), carries
    return real_inputs(valid, xs), valid, nan_carry(bad, *carries)


def rnn(xs, h0, wx, wh, b, lengths=None, *, return_carry=False):
    """Reference tanh RNN, ``h_t = tanh(x_t @ wx + h_{t-1} @ wh + b)``.

    Args:
      xs: ``(T, N, D)``; h0: ``(N, H)``; wx: ``(D, H)``; wh: ``(H, H)``; b: ``(H,)``;
      lengths: ``None`` or ``(N,)``; return_carry: also return the final state.

    Returns:
      ``(T, N, H)``, every hidden state; with ``return_carry`` the pair ``(hs, h_T)``.
    """
    check_rnn_args("rnn", xs, h0, wx, wh, b)
    return_carry = _checks.static_bool("rnn", "return_carry", return_carry)
    xs, valid, (h0,) = real_steps("rnn", xs, lengths, h0)

    def step(h, inp):
        x, real = inp
        h_new = jnp.tanh(x @ wx + h @ wh + b[None, :])
        return jnp.where(real, h_new, h), jnp.where(real, h_new, 0)

    h_last, hs = lax.scan(step, split_like(vary_like(h0, xs, valid, wx, wh, b), xs),
                          (xs, valid))
    return (hs, h_last) if return_carry else hs
