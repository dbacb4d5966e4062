"""Plain-JAX twin of :func:`funcnet.ops.dot_product_attention`: the whole ``T x S`` softmax,
differentiated by JAX (its backward pass keeps the probabilities)."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._arrays import compute_dtype, einsum
from funcnet.ops._attention_plan import (alibi_distance, check_alibi_slopes,
                                         check_attention_args, large_negative, mask5,
                                         seq_length_masks, slopes5)
from funcnet.ops._attention_block_fns import (block_values, check_block_fn,  # noqa: F401
                                              same_segment)   # a mask_fn: its own twin
from funcnet.ops._attention_dropout import (drop, keep_probabilities,
                                            window_keep_probabilities)
from funcnet.ops.dropout import keep_probability


def dot_product_attention(q, k, v, mask=None, *, bias=None, alibi_slopes=None, causal=False,
                          scale=None, block_size=None, dropout_rate=0.0, dropout_key=None,
                          window=None, logit_soft_cap=None, bias_fn=None, bias_params=None,
                          mask_fn=None, mask_params=None, query_seq_lengths=None,
                          key_value_seq_lengths=None):
    """Reference attention ``softmax(q k^T * scale + bias, masked with L) v``, one ``T x S``
    block.

    Args:
      q: ``(B, T, N, H)`` or ``(T, N, H)``; k, v: ``(B, S, K, H)`` or ``(S, K, H)``.
      mask: boolean ``(B, N, T, S)`` (sizes 1 or full) or ``(T, S)`` (also ``(N, T, S)``
        for an unbatched ``q``), as the op; ``True`` = attend.
      bias: optional float array of the mask's shapes, added to the scaled logits before
        the mask (cast to the compute dtype); its gradient comes from JAX's autodiff.
      alibi_slopes: as the op: ``-m_n |i - j|`` added to the logits, here as one
        ``(b, N, T, S)`` array.
      causal, scale: as the op (a traced scale differentiated by JAX). block_size:
        checked and ignored (one block).
      dropout_rate, dropout_key: as the op (the same mask for the same key, with a window
        too).
      window: as the op: query ``i`` attends keys ``i - window < j`` (and ``j <= i``
        causal, ``j < i + window`` otherwise), one more term of the boolean mask.
      logit_soft_cap: as the op: ``c tanh(s / c)`` of the scaled logits ``s``, before the
        bias; differentiated by JAX (in ``c`` too when traced).
      bias_fn, bias_params: as the op, here one ``bias_fn(bias_params, arange(T),
        arange(S))`` array added with ``bias`` (its params differentiated by JAX).
      mask_fn, mask_params: as the op, here one ``mask_fn(mask_params, arange(T),
        arange(S))`` array and-ed with ``mask``.
      query_seq_lengths, key_value_seq_lengths: as the op (padded keys masked, padded
        queries' outputs 0).

    Returns:
      ``q``'s shape and dtype.
    """
    causal, scale, _, rate, key, window = check_attention_args(
        "dot_product_attention", q, k, v, mask, causal, scale, block_size, dropout_rate,
        dropout_key, window, bias)
    alibi = check_alibi_slopes("dot_product_attention", alibi_slopes, q)
    cap = _checks.check_soft_cap("dot_product_attention", logit_soft_cap)
    for name, f, params in (("bias_fn", bias_fn, bias_params),
                            ("mask_fn", mask_fn, mask_params)):
        check_block_fn("dot_product_attention", name, f, params, q, k, params is not None)
    mask, real = seq_length_masks("dot_product_attention", q, k, mask, query_seq_lengths,
                                  key_value_seq_lengths)
    single = q.ndim == 3
    if single:
        q, k, v = q[None], k[None], v[None]
    b, t, n, h = q.shape
    s_len, kh = k.shape[1], k.shape[2]
    ct = compute_dtype(q.dtype)
    qg = q.reshape(b, t, kh, n // kh, h)
    s = einsum("btkgh,bskh->bkgts", qg, k, ct) * jnp.asarray(scale, ct)   # maybe traced
    if cap is not None:     # a traced cap in the compute dtype (strict promotion)
        c = jnp.asarray(cap, ct)
        s = c * jnp.tanh(s / c)
    if bias is not None:
        s = s + mask5(jnp.asarray(bias), n, kh).astype(ct)
    at = (jnp.arange(t, dtype=jnp.int32), jnp.arange(s_len, dtype=jnp.int32), b, n, kh)
    if bias_fn is not None:
        s = s + block_values("bias_fn", bias_fn, bias_params, *at).astype(ct)
    if alibi is not None:
        dist = alibi_distance(jnp.arange(t)[:, None], jnp.arange(s_len)[None, :], ct)
        s = s - slopes5(alibi, n, kh, ct) * dist[None, None, None]
    attend = None if mask is None else mask5(jnp.asarray(mask), n, kh)
    if mask_fn is not None:
        fm = block_values("mask_fn", mask_fn, mask_params, *at)
        attend = fm if attend is None else attend & fm
    if causal:
        c = jnp.tril(jnp.ones((t, s_len), bool))[None, None, None]
        attend = c if attend is None else attend & c
    if window is not None:   # |i - j| < window (j <= i also, with causal, above)
        c = jnp.abs(jnp.arange(t)[:, None] - jnp.arange(s_len)[None, :]) < window
        attend = c[None, None, None] if attend is None else attend & c[None, None, None]
    if attend is not None:
        s = jnp.where(attend, s, large_negative(ct))
    e = jnp.exp(s - lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    kept = keep_probability(rate, ct)      # 1 - rate: applied after the product (as the op)
    if _checks.may_drop(rate):
        cols = jnp.arange(s_len, dtype=jnp.int32)
        if window is None:
            keep = keep_probabilities(key, rate, p.shape[:-1], cols)
        else:     # row i's window offsets; a row whose window is fully masked is not dropped
            keep = window_keep_probabilities(key, rate, p.shape[:3],
                                             jnp.arange(t, dtype=jnp.int32), cols, window,
                                             causal)
            hit = jnp.any(attend, axis=-1, keepdims=True)
            keep = keep | ~hit
            kept = jnp.moveaxis(jnp.where(hit, kept, jnp.ones((), ct)), 3, 1)  # (b, t, K, G, 1)
        p = drop(p, keep, 0.0)
    o = einsum("bkgts,bskh->btkgh", p.astype(v.dtype), v, ct) / kept
    o = o.reshape(b, t, n, h).astype(q.dtype)
    if real is not None:
        o = jnp.where(real, o, jnp.zeros((), o.dtype))
    return o[0] if single else o
