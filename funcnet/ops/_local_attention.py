"""Sliding-window (local) attention: the forward and backward passes of
:func:`funcnet.ops.dot_product_attention` with ``window=W``, in ``O(T (block + W))`` work.

Query ``i`` attends keys ``i - W < j <= i`` (causal; Mistral, Gemma 2) or ``|i - j| < W``
(not causal; Longformer's symmetric window), besides the mask. The queries are split into
blocks of ``block`` rows; the keys a block can attend lie in one span of ``span = min(block
+ left + right, S)`` keys (``left = W - 1``; ``right = 0`` causal, ``W - 1`` otherwise),
which starts at ``clip(r0 - left, 0, S - span)`` for the block's first row ``r0``. Each
block is one ``lax.scan`` step with an ordinary (two-pass) softmax over its span: every
key outside it has weight exactly 0, so the keys outside the window are never computed.

A row that attends nothing (its window fully masked) is, as in the unwindowed op and
``jax.nn``, the uniform average of all ``S`` values with zero gradient to ``q`` and ``k``:
its ``log l`` residual is ``+inf`` (so the recomputed probabilities are 0) and the backward
pass adds ``dO_i / S`` to every ``dV_j``.

A ``bias`` (the op's ``bias=``, e.g. T5's relative positions: LongT5's local attention)
is read per block, its rows and the block's span where it is not of size 1, and its
gradient ``dS`` is added back at the same place in the backward scan's carry (a bias's
gradient has the bias's size: ``O(T S)`` only when the bias itself is).

ALiBi (the op's ``alibi_slopes``) adds ``-m |i - j|`` to a block's logits from the same
row and column positions as the window, and its slopes' gradient ``-sum dS |i - j|`` is
summed in the backward scan's carry.

Dropout (``dropping = (key, rate)``) drops the probabilities of a block's span with
:func:`window_keep_probabilities` (row ``i`` from ``fold_in(key, i)``, over the offsets
``i - j`` of its window: only the block's rows are drawn, and the mask does not depend on
the block size); a row that attends nothing stays the plain mean of the values (not
dropped: its mask would need all ``S`` keys).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet.ops._arrays import compute_dtype, einsum
from funcnet.ops._attention_block_fns import add_grads, block_values, zero_grads
from funcnet.ops._attention_dropout import drop, window_keep_probabilities
from funcnet.ops._attention_plan import (BLOCK_ELEMENTS, MIN_BLOCK, Plan, alibi_distance,
                                         alibi_slope_grad, cap_gradient, logit_cap, mask5,
                                         merge_heads, reduce_to, slopes5, soft_capped,
                                         split_heads, uncapped)
from funcnet.ops._mesh import vary_like
from funcnet.ops.dropout import keep_probability

__all__: list[str] = []


def plan(q_shape, s, causal: bool, scale: float, block_size: int | None, window: int,
         dropout: float = 0.0, traced_rate: bool = False) -> Plan:
    """``Plan.block`` = queries per block: ``block_size``, or by default ``W`` rounded up
    to a multiple of 8 (a span of about ``2 W`` keys: at most twice the work of the
    window itself), fewer if a block's ``B N block span`` scores pass ``BLOCK_ELEMENTS``,
    never under ``MIN_BLOCK``; evened out over the blocks, one block if ``T`` fits. One
    block of all ``T`` queries and ``S`` keys if ``T`` or ``S`` is symbolic
    (``jax.export``: a block count must be static)."""
    t = q_shape[1]
    if not (isinstance(t, int) and isinstance(s, int)):
        return Plan(causal, scale, t, s, dropout, window, traced_rate)
    if block_size is None:
        heads = q_shape[2] * (q_shape[0] if isinstance(q_shape[0], int) else 1)
        wide = (1 if causal else 2) * (window - 1) + window
        budget = BLOCK_ELEMENTS // (heads * wide) // 8 * 8
        target = max(MIN_BLOCK, min(-(-window // 8) * 8, budget))
        blocks = -(-t // target)
        block_size = t if blocks == 1 else -(-t // (blocks * 8)) * 8
    return Plan(causal, scale, min(block_size, t), s, dropout, window, traced_rate)


def _span(plan: Plan) -> int:
    """Keys a block of queries can attend (``<= S``)."""
    if not (isinstance(plan.s, int) and isinstance(plan.block, int)):
        return plan.s     # symbolic: one block
    return min(plan.block + (1 if plan.causal else 2) * (plan.window - 1), plan.s)


def _tiles(x, plan: Plan, value=0):
    """Pad axis 3 (queries) of ``(B, K, G, T, ...)`` to whole blocks and split it: blocks
    first, for ``lax.scan``."""
    t = x.shape[3]
    n = -(-t // plan.block)
    if n * plan.block != t:
        pads = [(0, 0, 0)] * x.ndim
        pads[3] = (0, n * plan.block - t, 0)
        x = lax.pad(x, jnp.asarray(value, x.dtype), pads)
    x = x.reshape(x.shape[:3] + (n, plan.block) + x.shape[4:])
    return jnp.moveaxis(x, 3, 0)


def _untile(x, t: int):
    """``(blocks, B, K, G, block, ...)`` -> ``(B, K, G, T, ...)``."""
    x = jnp.moveaxis(x, 0, 3)
    return x.reshape(x.shape[:3] + (x.shape[3] * x.shape[4],) + x.shape[5:])[:, :, :, :t]


def _scan(body, carry, xs, inputs):
    """``lax.scan``, or the body itself for one block; ``inputs``: the arrays the body
    reads (the carry is typed like them in ``shard_map``)."""
    if xs[0].shape[0] == 1:
        carry, y = body(carry, tuple(a[0] for a in xs))
        return carry, tuple(a[None] for a in y)
    return lax.scan(body, vary_like(carry, xs, inputs), xs)


def _start(i, plan: Plan):
    """The first key of query block ``i``'s span."""
    return jnp.clip(i * plan.block - (plan.window - 1), 0, plan.s - _span(plan))


def _of_block(a5, i, plan: Plan):
    """Query block ``i``'s part ``(b, K|1, G|1, block|1, span|1)`` of a mask or bias
    ``(b, K|1, G|1, T|1, S|1)`` (its query axis padded to whole blocks): its rows and its
    span's keys, where the array is not of size 1."""
    if a5.shape[3] != 1:
        a5 = lax.dynamic_slice_in_dim(a5, i * plan.block, plan.block, axis=3)
    if a5.shape[4] != 1:
        a5 = lax.dynamic_slice_in_dim(a5, _start(i, plan), _span(plan), axis=4)
    return a5


def _fn_positions(i, t: int, plan: Plan):
    """The ``(block,)`` query and ``(span,)`` key positions that ``plan.bias_fn`` and
    ``plan.mask_fn`` get for query block ``i`` (the padding past ``T`` reads query ``T -
    1``: its rows are dropped)."""
    rows = i * plan.block + jnp.arange(plan.block, dtype=jnp.int32)
    return (jnp.minimum(rows, t - 1),
            _start(i, plan) + jnp.arange(_span(plan), dtype=jnp.int32))


def _fn_blocks(bp, mp, i, t: int, qb, plan: Plan):
    """``plan.bias_fn``'s bias and ``plan.mask_fn``'s mask of query block ``i``, ``(b|1,
    K|1, G|1, block, span)`` each (``None`` without the function)."""
    at = _fn_positions(i, t, plan) + (qb.shape[0], qb.shape[1] * qb.shape[2], qb.shape[1])
    return tuple(None if f is None else block_values(name, f, p, *at)
                 for name, f, p in (("bias_fn", plan.bias_fn, bp),
                                    ("mask_fn", plan.mask_fn, mp)))


def _logits(qb, kt, m5, i, plan: Plan, al, b5, cap, fns=(None, None)):
    """Scaled logits of query block ``i`` over its span, ``(B, K, G, block, span)`` (soft
    capped with ``cap`` of :func:`logit_cap`, plus the bias ``b5`` of :func:`_padded` and
    the block's bias of :func:`_fn_blocks`, the first of ``fns`` (either ``None``),
    then ALiBi's ``-m |i - j|`` for the slopes ``al`` ``(b, K, G, 1, 1)``, or ``None``),
    the attend mask (window, causal, user mask, the block's mask of :func:`_fn_blocks`, the
    second of ``fns``), the span's keys and first key,
    ``|i - j|`` (``None`` without ``al``) and the cap's derivatives (``None`` without a
    cap)."""
    span = _span(plan)
    r0 = i * plan.block
    start = _start(i, plan)
    kb = lax.dynamic_slice_in_dim(kt, start, span, axis=2)
    ct = compute_dtype(qb.dtype)
    s, dcap = soft_capped(einsum("bkgth,bksh->bkgts", qb, kb, ct) * plan.scale, cap)
    if b5 is not None:
        s = s + _of_block(b5, i, plan).astype(ct)
    fb, fm = fns
    if fb is not None:
        s = s + fb.astype(ct)
    rows = r0 + lax.broadcasted_iota(jnp.int32, (1, 1, 1, plan.block, 1), 3)
    cols = start + lax.broadcasted_iota(jnp.int32, (1, 1, 1, 1, span), 4)
    distance = None if al is None else alibi_distance(rows, cols, ct)
    if al is not None:
        s = s - al * distance
    attend = cols > rows - plan.window
    attend = attend & ((cols <= rows) if plan.causal else (cols < rows + plan.window))
    if m5 is not None:
        attend = attend & _of_block(m5, i, plan)
    if fm is not None:
        attend = attend & fm
    return s, attend, kb, start, distance, dcap


def _keep(dropping, qb, i, start, plan: Plan):
    """The keep mask ``(B, K, G, block, span)`` of query block ``i`` over its span (keys
    from ``start``), ``None`` without dropout."""
    if dropping is None:
        return None
    key, rate = dropping
    rows = i * plan.block + jnp.arange(plan.block, dtype=jnp.int32)
    cols = start + jnp.arange(_span(plan), dtype=jnp.int32)
    return window_keep_probabilities(key, rate, qb.shape[:3], rows, cols, plan.window,
                                     plan.causal)


def forward(q, k, v, mask, bias, alibi, cap, bp, mp, dropping, plan: Plan):
    """``o`` ``(B, T, N, H)`` in the compute dtype, and ``m, log l`` ``(B, K, G, T)``
    (``m = 0, log l = +inf`` in a row that attends nothing). ``bias``, ``alibi``, ``cap``,
    ``bp``, ``mp``: ``None`` or the op's bias, slopes, traced cap and the params of
    ``plan.bias_fn`` and ``plan.mask_fn``; ``dropping``: ``None`` or ``(key, rate)``."""
    ct = compute_dtype(q.dtype)
    t, n = q.shape[1], q.shape[2]
    kh = k.shape[2]
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    m5, b5 = _padded(mask, n, kh, t, plan, False), _padded(bias, n, kh, t, plan, 0)
    mean = jnp.mean(vt.astype(ct), axis=2)[:, :, None, None, :]     # a row that sees nothing
    keep = keep_probability(0.0 if dropping is None else dropping[1], ct)
    al = None if alibi is None else slopes5(alibi, n, kh, ct)
    capc = logit_cap(plan, cap, ct)

    def body(_, x):
        i, qb = x
        s, attend, _, start, _, _ = _logits(qb, kt, m5, i, plan, al, b5, capc,
                                            _fn_blocks(bp, mp, i, t, qb, plan))
        hit = jnp.any(attend, axis=-1)
        m = lax.stop_gradient(jnp.max(jnp.where(attend, s, -jnp.inf), axis=-1))
        m = jnp.where(hit, m, jnp.zeros((), ct))
        p = jnp.exp(jnp.where(attend, s - m[..., None], -jnp.inf))
        l = jnp.where(hit, jnp.sum(p, axis=-1), jnp.ones((), ct))
        vb = lax.dynamic_slice_in_dim(vt, start, _span(plan), axis=2)
        # dropped after the normaliser l, scaled by 1/(1 - r) with it (as the blockwise op)
        p = drop(p, _keep(dropping, qb, i, start, plan), 0.0)
        o = einsum("bkgts,bksh->bkgth", p.astype(v.dtype), vb, ct) / (l[..., None] * keep)
        o = jnp.where(hit[..., None], o, mean)
        return None, (o, m, jnp.where(hit, jnp.log(l), jnp.asarray(jnp.inf, ct)))

    qh = split_heads(q, kh)
    xs = (jnp.arange(-(-t // plan.block), dtype=jnp.int32), _tiles(qh, plan))
    _, (o, m, log_l) = _scan(body, None, xs, (k, v, mask, bias, alibi, cap, bp, mp, dropping))
    return merge_heads(_untile(o, t)), _untile(m, t), _untile(log_l, t)


def backward(q, k, v, mask, bias, alibi, cap, bp, mp, o, m, log_l, do, dropping,
             plan: Plan):
    """``(dq, dk, dv, dbias, dalibi, dcap, drate, dbp)`` (Dao et al. 2022, Algorithms 2 and 4,
    per query block over its span); ``dbias = dS`` (summed over the bias's axes of size 1,
    each block's part added in the scan's carry) and ``dalibi = -sum dS |i - j|`` in the
    bias's and the slopes' shapes and dtypes (``None`` without them); ``dcap``, a traced
    cap's gradient in the compute dtype (:func:`cap_gradient`; ``None`` without one);
    ``drate = sum_i D_i
    / (1 - r)`` over the rows that attend something (the others are not dropped),
    ``None`` unless ``plan.traced_rate``; ``dbp``, ``plan.bias_fn``'s params' gradients
    (:func:`funcnet.ops._attention_block_fns.add_grads`, summed over the blocks)."""
    ct = compute_dtype(q.dtype)
    t, n = q.shape[1], q.shape[2]
    s_len, kh = k.shape[1], k.shape[2]
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    m5, b5 = _padded(mask, n, kh, t, plan, False), _padded(bias, n, kh, t, plan, 0)
    qh, doh = split_heads(q, kh), split_heads(do, kh)
    d = jnp.sum(doh.astype(ct) * split_heads(o, kh).astype(ct), axis=-1)      # (B, K, G, T)
    span = _span(plan)
    rate = 0.0 if dropping is None else dropping[1]
    al = None if alibi is None else slopes5(alibi, n, kh, ct)
    capc = logit_cap(plan, cap, ct)

    def body(carry, x):
        dk, dv, dbias, dal, dc, dbp = carry
        i, qb, dob, db, mb, lb = x
        s, attend, kb, start, distance, dcap = _logits(qb, kt, m5, i, plan, al, b5, capc,
                                                       _fn_blocks(bp, mp, i, t, qb, plan))
        vb = lax.dynamic_slice_in_dim(vt, start, span, axis=2)
        p = jnp.exp(jnp.where(attend, (s - mb[..., None]) - lb[..., None], -jnp.inf))
        keep = _keep(dropping, qb, i, start, plan)
        dvb = einsum("bkgts,bkgth->bksh", drop(p, keep, rate).astype(q.dtype), dob, ct)
        dp = drop(einsum("bkgth,bksh->bkgts", dob, vb, ct), keep, rate)
        ds = p * (dp - db[..., None])
        if b5 is not None:     # dbias = dS: this block's rows and span, where not size 1
            dbias = _add_block(dbias, ds, i, plan)
        if al is not None:     # d/dm_n of -m_n |i - j|
            dal = dal + alibi_slope_grad(ds, distance, al.shape)
        if plan.bias_fn is not None:     # d bias_params: the vjp of this block's bias
            dbp = add_grads(dbp, plan.bias_fn, bp, *_fn_positions(i, t, plan), ds, n, kh)
        dc = cap_gradient(dc, ds, dcap)
        ds = (uncapped(ds, dcap) * plan.scale).astype(q.dtype)
        dqb = einsum("bkgts,bksh->bkgth", ds, kb, ct)
        dkb = einsum("bkgts,bkgth->bksh", ds, qb, ct)

        def add(acc, part):
            old = lax.dynamic_slice_in_dim(acc, start, span, axis=2)
            return lax.dynamic_update_slice_in_dim(acc, old + part, start, axis=2)
        return (add(dk, dkb), add(dv, dvb), dbias, dal, dc, dbp), (dqb,)

    xs = (jnp.arange(-(-t // plan.block), dtype=jnp.int32), _tiles(qh, plan), _tiles(doh, plan),
          _tiles(d, plan), _tiles(m, plan), _tiles(log_l, plan, jnp.inf))
    zeros = jnp.zeros_like(kt, ct)      # *_like: k's sharding on a mesh with Explicit axes
    init = (zeros, zeros, None if b5 is None else jnp.zeros_like(b5, ct),
            None if al is None else jnp.zeros_like(al),
            None if cap is None else jnp.zeros((), ct), zero_grads(bp, ct))
    (dk, dv, dbias, dal, dc, dbp), (dq,) = _scan(
        body, init, xs, (k, v, mask, bias, alibi, cap, bp, mp, do, dropping))
    # rows that attend nothing are the mean of all S values: dV_j += dO_i / S
    blind = jnp.isinf(log_l)
    dv = dv + jnp.sum(jnp.where(blind[..., None], doh.astype(ct), jnp.zeros((), ct)),
                      axis=(2, 3))[:, :, None, :] / s_len
    dk, dv = (x.transpose(0, 2, 1, 3).astype(q.dtype) for x in (dk, dv))
    drate = None
    if plan.traced_rate:     # o_i = sum_j p_ij Z_ij v_j / (1 - r) in the rows that attend
        drate = jnp.sum(jnp.where(blind, jnp.zeros((), ct), d)) / keep_probability(rate, ct)
    dalibi = None if alibi is None else dal.reshape(alibi.shape).astype(alibi.dtype)
    if bias is not None:
        dbias = dbias[:, :, :, :t].reshape(bias.shape).astype(bias.dtype)
    return merge_heads(_untile(dq, t)).astype(q.dtype), dk, dv, dbias, dalibi, dc, drate, dbp


def _add_block(acc, ds, i, plan: Plan):
    """``acc`` (a bias's gradient, :func:`_padded`'s shape) plus query block ``i``'s
    ``dS`` ``(B, K, G, block, span)``, summed over the axes where ``acc`` has size 1 and
    added at the block's rows and span."""
    shape = acc.shape[:3] + tuple(1 if acc.shape[a] == 1 else ds.shape[a] for a in (3, 4))
    zero = jnp.zeros((), jnp.int32)
    at = (zero, zero, zero, zero if shape[3] == 1 else i * plan.block,
          zero if shape[4] == 1 else _start(i, plan))
    return lax.dynamic_update_slice(
        acc, lax.dynamic_slice(acc, at, shape) + reduce_to(ds, shape), at)


def _padded(a, n: int, kh: int, t: int, plan: Plan, value):
    """:func:`mask5` of a mask or a bias, with the query axis (if full) padded to whole
    blocks with ``value`` (False, or 0)."""
    a5 = mask5(a, n, kh)
    if a5 is None or a5.shape[3] == 1:
        return a5
    extra = -(-t // plan.block) * plan.block - t
    return a5 if not extra else jnp.pad(a5, [(0, 0)] * 3 + [(0, extra), (0, 0)],
                                        constant_values=value)
