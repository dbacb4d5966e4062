"""Scaled dot-product attention whose backward rule keeps O(T), not the T x S probabilities.

The forward pass runs over blocks of keys with the online-softmax recurrence (Rabe &
Staats 2021); the backward pass recomputes the probabilities block by block from the
saved row statistics (Dao et al. 2022, Algorithm 2). Autodiff of ``softmax(q k^T) v``
keeps the ``(B, N, T, S)`` probabilities for its backward pass; this op keeps ``q``,
``k``, ``v``, the output (in float32 for bfloat16/float16 inputs) and two ``(B, N, T)``
float32 rows, so the memory a training step saves grows linearly in the sequence length.

Internally the heads are grouped as ``N = K * G`` (``K`` key/value heads, ``G`` query
heads per key/value head; ``G = 1`` for ordinary multi-head attention), and the scores of
one key block have the layout ``(B, K, G, T, block)``.

References:
  Rabe & Staats (2021), "Self-attention Does Not Need O(n^2) Memory",
  https://arxiv.org/abs/2112.05682.
  Dao, Fu, Ermon, Rudra & Re (2022), "FlashAttention: Fast and Memory-Efficient Exact
  Attention with IO-Awareness", https://arxiv.org/abs/2205.14135 (Algorithm 2).
  Vaswani et al. (2017), "Attention Is All You Need", https://arxiv.org/abs/1706.03762.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops import _local_attention
from funcnet.ops._arrays import compute_dtype, einsum
from funcnet.ops._attention_plan import (BLOCK_ELEMENTS, MIN_BLOCK, Plan, alibi_distance,
                                         alibi_slope_grad, cap_gradient,
                                         check_alibi_slopes, check_attention_args,
                                         large_negative, logit_cap, mask5, merge_heads,
                                         reduce_to, seq_length_masks, slopes5, soft_capped,
                                         split_heads, uncapped)
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp, vary_like
from funcnet.ops._attention_block_fns import (add_grads, block_values, check_block_fn,
                                              cotangent, zero_grads)
from funcnet.ops._attention_dropout import drop, keep_probabilities
from funcnet.ops.dropout import keep_probability

__all__ = ["dot_product_attention"]


# ----------------------------------------------------------------------------- plans
def _plan(s: int, rows: int, causal: bool, scale: float, block_size: int | None,
          dropout: float = 0.0, traced_rate: bool = False) -> Plan:
    """Blocks of ``block_size`` keys, or by default about ``BLOCK_ELEMENTS / rows`` keys
    (``rows = B * N * T``, at least ``MIN_BLOCK``) evened out over the blocks so that the
    last one is not mostly padding (a multiple of 8 keys); one block if ``S`` fits.

    A symbolic ``S`` (``jax.export`` with a symbolic sequence length) takes one block of
    all ``S`` keys whatever ``block_size``: a block count must be static."""
    if not isinstance(s, int):
        return Plan(causal, scale, s, s, dropout, traced_rate=traced_rate)
    if block_size is None:
        blocks = -(-s // max(MIN_BLOCK, BLOCK_ELEMENTS // max(rows, 1)))
        block_size = s if blocks == 1 else -(-s // (blocks * 8)) * 8
    block = min(block_size, s)
    return Plan(causal, scale, block, s, dropout, traced_rate=traced_rate)


def _dropout_of(key, plan: Plan):
    """``(PRNG key, drop probability)``: a traced probability travels with the key (a
    pair in the op's key argument), a static one is the plan's."""
    if plan.traced_rate:
        return key
    return key, plan.dropout


def _dropping(key, plan: Plan):
    """:func:`_dropout_of`, or ``None`` when nothing is dropped."""
    if plan.dropout == 0.0 and not plan.traced_rate:
        return None
    return _dropout_of(key, plan)


# -------------------------------------------------------------------------- blockwise
# Internal layout, heads first so that every product is a batched matmul over (B, K):
# q, o, dq: (B, K, G, T, H); k, v: (B, K, S, H); scores of a block: (B, K, G, T, block).

def _key_blocks(x, plan: Plan, axis: int, value=0):
    """Pad ``axis`` (keys) to ``blocks * block`` and split it: blocks first, for ``lax.scan``."""
    extra = plan.blocks * plan.block - x.shape[axis]
    if extra:
        pads = [(0, 0, 0)] * x.ndim
        pads[axis] = (0, extra, 0)
        x = lax.pad(x, jnp.asarray(value, x.dtype), pads)
    x = x.reshape(x.shape[:axis] + (plan.blocks, plan.block) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)


def _blocks(k, v, mask, bias, n, plan: Plan):
    """Scan inputs ``(j, k block, v block, mask block, bias block)`` (``(B, K, block, H)``
    for k, v; ``(b, K|1, G|1, t, block)`` for the mask and the bias, which is padded with
    0) and ``(mask, bias)`` that are the same for every block: a mask or bias of size 1
    along S (as ``(b, K|1, G|1, t, 1)``), else None; both None when not given."""
    kh = k.shape[2]
    xs = (jnp.arange(plan.blocks, dtype=jnp.int32),
          _key_blocks(k.transpose(0, 2, 1, 3), plan, 2),
          _key_blocks(v.transpose(0, 2, 1, 3), plan, 2))
    fixed = ()
    for a, pad in ((mask5(mask, n, kh), False), (mask5(bias, n, kh), 0)):
        if a is not None and a.shape[-1] != 1:
            xs, fixed = xs + (_key_blocks(a, plan, 4, pad),), fixed + (None,)
        else:
            xs, fixed = xs + (None,), fixed + (a,)
    return xs, fixed


def _positions(qh, j, plan: Plan):
    """The int32 positions of the ``T`` queries ``(1, 1, 1, T, 1)`` and of key block
    ``j``'s keys ``(1, 1, 1, 1, block)``."""
    rows = lax.broadcasted_iota(jnp.int32, (1, 1, 1, qh.shape[3], 1), 3)
    cols = j * plan.block + lax.broadcasted_iota(jnp.int32, (1, 1, 1, 1, plan.block), 4)
    return rows, cols


def _fn_positions(qh, j, plan: Plan):
    """The ``(T,)`` query and ``(block,)`` key positions that ``plan.bias_fn`` and
    ``plan.mask_fn`` get for key block ``j`` (the padding past ``S`` reads key ``S - 1``:
    its logits are ``-inf``)."""
    cols = j * plan.block + jnp.arange(plan.block, dtype=jnp.int32)
    return jnp.arange(qh.shape[3], dtype=jnp.int32), jnp.minimum(cols, plan.s - 1)


def _logits(qh, kb, j, mb, bb, plan: Plan, al, cap, bp=None, mp=None):
    """Masked, scaled, biased logits of key block ``j``: ``(B, K, G, T, block)``, the
    attend mask, ALiBi's ``|i - j|`` ``(1, 1, 1, T, block)`` (``None`` without ``al``)
    and the soft cap's derivatives (:func:`soft_capped`; ``None`` without a cap).

    The soft cap ``cap`` (:func:`logit_cap`) applies to the scaled ``q . k`` only;
    ``bb``, the bias of the block (or ``None``), is added after it, before the mask, and
    so are ``plan.bias_fn``'s bias of the block (params ``bp``, positions of
    :func:`_fn_positions`) and ALiBi's ``-m |i - j|`` with ``al`` the slopes ``(b, K, G,
    1, 1)`` in the compute dtype (or ``None``). ``attend`` (user mask, ``plan.mask_fn``'s
    with params ``mp``, and causal) is ``None`` when nothing is masked. Masked logits are
    :func:`large_negative`; key padding is ``-inf`` (weight exactly 0, even in a fully
    masked row, whose average runs over the ``S`` real keys only).
    """
    ct = compute_dtype(qh.dtype)
    s, dcap = soft_capped(einsum("bkgth,bksh->bkgts", qh, kb, ct) * plan.scale, cap)
    if bb is not None:
        s = s + bb.astype(ct)
    at = _fn_positions(qh, j, plan) + qh.shape[:1] + (qh.shape[1] * qh.shape[2], qh.shape[1])
    if plan.bias_fn is not None:
        s = s + block_values("bias_fn", plan.bias_fn, bp, *at).astype(ct)
    rows, cols = _positions(qh, j, plan)
    distance = None if al is None else alibi_distance(rows, cols, ct)
    if al is not None:
        s = s - al * distance
    attend = mb
    if plan.mask_fn is not None:
        fm = block_values("mask_fn", plan.mask_fn, mp, *at)
        attend = fm if attend is None else attend & fm
    if plan.causal:
        attend = cols <= rows if attend is None else attend & (cols <= rows)
    if attend is not None:
        s = jnp.where(attend, s, large_negative(ct))
    if plan.blocks * plan.block != plan.s:
        s = jnp.where(cols < plan.s, s, -jnp.inf)
    return s, attend, distance, dcap


def _loop(body, carry, xs, plan: Plan, inputs):
    """``lax.scan`` over the key blocks (the body itself, no loop, for one block);
    ``inputs``: the arrays the body reads (the carry is typed like them in ``shard_map``)."""
    if plan.blocks == 1:
        carry, y = body(carry, jax.tree_util.tree_map(lambda a: a[0], xs))
        return carry, jax.tree_util.tree_map(lambda a: a[None], y)
    return lax.scan(body, vary_like(carry, xs, inputs), xs)


def _block_keep(key, plan: Plan, qh, j):
    """The keep mask of key block ``j`` (``None`` without dropout)."""
    dropping = _dropping(key, plan)
    if dropping is None:
        return None
    key, rate = dropping
    cols = j * plan.block + jnp.arange(plan.block, dtype=jnp.int32)
    return keep_probabilities(key, rate, qh.shape[:-1], cols)


def _forward(q, k, v, mask, bias, alibi, cap, key, bp, mp, plan: Plan):
    """Online softmax over key blocks. Returns ``o`` ``(B, T, N, H)`` in the compute dtype
    (not yet cast to ``q``'s) and ``m, log l``. ``bp``, ``mp``: ``plan.bias_fn``'s and
    ``plan.mask_fn``'s params."""
    ct = compute_dtype(q.dtype)
    cap = logit_cap(plan, cap, ct)
    qh = split_heads(q, k.shape[2])
    xs, (fixed, fixed_bias) = _blocks(k, v, mask, bias, q.shape[2], plan)
    al = None if alibi is None else slopes5(alibi, q.shape[2], k.shape[2], ct)

    def body(carry, x):
        m, l, acc = carry
        j, kb, vb, mb, bb = x
        s = _logits(qh, kb, j, fixed if mb is None else mb,
                    fixed_bias if bb is None else bb, plan, al, cap, bp, mp)[0]
        # the shift m is a constant for autodiff (grad of grad): o and m + log l do not
        # depend on it, and a differentiated m would leak into the backward's m, log l
        m_new = lax.stop_gradient(jnp.maximum(m, jnp.max(s, axis=-1)))
        shift = m_new
        if bias is not None or plan.bias_fn is not None:   # -inf so far: shift by 0
            shift = jnp.where(jnp.isneginf(m_new), jnp.zeros((), ct), m_new)
        alpha = jnp.exp(m - shift)
        p = jnp.exp(s - shift[..., None])
        l = alpha * l + jnp.sum(p, axis=-1)         # the normaliser: before dropout
        # dropped, not yet scaled by 1/(1 - r) (after the loop, in the compute dtype: a
        # kept p = 1 stays exact when cast to v's dtype, so D = dO . o cancels exactly
        # against dP in the backward pass where the softmax saturates)
        p = drop(p, _block_keep(key, plan, qh, j), 0.0)
        pv = einsum("bkgts,bksh->bkgth", p.astype(v.dtype), vb, ct)
        return (m_new, l, alpha[..., None] * acc + pv), None

    # *_like: on a mesh with Explicit axes the carry takes the queries' sharding
    row = qh[..., 0]
    init = (jnp.full_like(row, -jnp.inf, ct), jnp.zeros_like(row, ct), jnp.zeros_like(qh, ct))
    (m, l, acc), _ = _loop(body, init, xs, plan, (q, key, bias, alibi, cap, bp, mp))
    keep = keep_probability(_dropout_of(key, plan)[1], ct)
    return merge_heads(acc / (l[..., None] * keep)), m, jnp.log(l)


@partial(jax.custom_vjp, nondiff_argnums=(10,))
def _attention(q, k, v, mask, bias, alibi, cap, key, bp, mp, plan):
    return _any_forward(q, k, v, mask, bias, alibi, cap, key, bp, mp, plan)[0].astype(q.dtype)


def _attention_fwd(q, k, v, mask, bias, alibi, cap, key, bp, mp, plan):
    o, m, log_l = _any_forward(q, k, v, mask, bias, alibi, cap, key, bp, mp, plan)
    # o is kept in the compute dtype: D = dO . o cancels against dP = dO . v_j where the
    # softmax saturates, and o rounded to bfloat16 leaves an error of eps |dO| |v| there.
    # mask, bias, bp, mp: the caller's arrays, not copies.
    return o.astype(q.dtype), (q, k, v, mask, bias, alibi, cap, key, bp, mp, o, m, log_l)


def _attention_bwd(plan, res, do):
    q, k, v, mask, bias, alibi, cap, key, bp, mp, o, m, log_l = res
    if plan.window is not None:
        dq, dk, dv, dbias, dalibi, dcap, drate, dbp = _local_attention.backward(
            q, k, v, mask, bias, alibi, cap, bp, mp, o, m, log_l, do, _dropping(key, plan),
            plan)
        return (dq, dk, dv, None, dbias, dalibi, _cap_cotangent(dcap, cap),
                _rate_cotangent(drate, key, plan), _bias_fn_cotangent(bp, dbp, plan), None)
    b, s_len, kh, h = k.shape
    ct = compute_dtype(q.dtype)
    qh, doh = split_heads(q, kh), split_heads(do, kh)
    d = jnp.sum(doh.astype(ct) * split_heads(o, kh).astype(ct), axis=-1)      # (B, K, G, T)
    rate = _dropout_of(key, plan)[1]
    xs, (fixed, fixed_bias) = _blocks(k, v, mask, bias, q.shape[2], plan)
    # dbias: per block (a bias of size 1 along S: summed in the carry)
    b5 = None if bias is None else mask5(bias, q.shape[2], kh).shape
    carry_db = b5 is not None and b5[4] == 1
    al = None if alibi is None else slopes5(alibi, q.shape[2], kh, ct)
    capc = logit_cap(plan, cap, ct)

    def body(carry, x):
        dq, db_acc, dal, dc, dbp = carry
        j, kb, vb, mb, bb = x
        s, attend, distance, dcap = _logits(qh, kb, j, fixed if mb is None else mb,
                                            fixed_bias if bb is None else bb, plan, al, capc,
                                            bp, mp)
        p = jnp.exp((s - m[..., None]) - log_l[..., None])
        keep = _block_keep(key, plan, qh, j)
        dv = einsum("bkgts,bkgth->bksh", drop(p, keep, rate).astype(q.dtype), doh, ct)
        dp = drop(einsum("bkgth,bksh->bkgts", doh, vb, ct), keep, rate)
        ds = p * (dp - d[..., None])
        if attend is not None:  # a masked logit is a constant: no gradient to q, k, bias
            ds = jnp.where(attend, ds, jnp.zeros((), ct))
        dbb = None     # dbias = dS (before the scale), summed where the bias has size 1
        if carry_db:
            db_acc = db_acc + reduce_to(ds, b5)
        elif b5 is not None:
            dbb = reduce_to(ds, b5[:4] + (plan.block,)).astype(bias.dtype)
        if al is not None:     # d/dm_n of -m_n |i - j|: -sum dS |i - j|
            dal = dal + alibi_slope_grad(ds, distance, al.shape)
        if plan.bias_fn is not None:     # d bias_params: the vjp of this block's bias
            dbp = add_grads(dbp, plan.bias_fn, bp, *_fn_positions(qh, j, plan), ds,
                            q.shape[2], kh)
        dc = cap_gradient(dc, ds, dcap)
        ds = (uncapped(ds, dcap) * plan.scale).astype(q.dtype)
        dq = dq + einsum("bkgts,bksh->bkgth", ds, kb, ct)
        dk = einsum("bkgts,bkgth->bksh", ds, qh, ct)
        return (dq, db_acc, dal, dc, dbp), (dk.astype(q.dtype), dv.astype(q.dtype), dbb)

    init = (jnp.zeros_like(qh, ct), jnp.zeros(b5, ct) if carry_db else None,
            None if al is None else jnp.zeros_like(al),
            None if cap is None else jnp.zeros((), ct), zero_grads(bp, ct))
    (dq, db_acc, dal, dc, dbp), (dk, dv, dbias) = _loop(
        body, init, xs, plan, (q, do, m, log_l, key, bias, alibi, cap, bp, mp))

    def unblock(x):  # (blocks, B, K, block, H) -> (B, S, K, H)
        x = x.transpose(1, 0, 3, 2, 4).reshape(b, plan.blocks * plan.block, kh, h)
        return x[:, :s_len]

    if carry_db:
        dbias = db_acc.reshape(bias.shape).astype(bias.dtype)
    elif dbias is not None:   # (blocks, b, K|1, G|1, t, block) -> the bias's shape
        dbias = jnp.moveaxis(dbias, 0, 4)
        dbias = dbias.reshape(dbias.shape[:4] + (plan.blocks * plan.block,))[..., :s_len]
        dbias = dbias.reshape(bias.shape)
    dalibi = None if alibi is None else dal.reshape(alibi.shape).astype(alibi.dtype)
    drate = None
    if plan.traced_rate:    # o = (sum_j p_j m_j v_j) / (1 - r), the mask held fixed
        drate = jnp.sum(d) / keep_probability(rate, ct)
    return (merge_heads(dq).astype(q.dtype), unblock(dk), unblock(dv), None, dbias, dalibi,
            _cap_cotangent(dc, cap), _rate_cotangent(drate, key, plan),
            _bias_fn_cotangent(bp, dbp, plan), None)


def _cap_cotangent(dc, cap):
    """The cotangent of the op's traced ``cap`` argument in its dtype (``None`` for a
    static cap or none)."""
    return None if cap is None else dc.astype(cap.dtype)


def _bias_fn_cotangent(bp, dbp, plan: Plan):
    """The cotangent of ``plan.bias_fn``'s params (``None`` without a ``bias_fn``)."""
    return None if plan.bias_fn is None else cotangent(bp, dbp)


def _rate_cotangent(drate, key, plan: Plan):
    """The cotangent of the op's key argument: ``(None, dL/drate)`` for a traced rate
    (which travels with the key), else ``None``."""
    return (None, drate.astype(key[1].dtype)) if plan.traced_rate else None


defvjp(_attention, _attention_fwd, _attention_bwd)


def _any_forward(q, k, v, mask, bias, alibi, cap, key, bp, mp, plan: Plan):
    """:func:`_forward`, or the sliding-window forward pass with ``plan.window``."""
    if plan.window is None:
        return _forward(q, k, v, mask, bias, alibi, cap, key, bp, mp, plan)
    return _local_attention.forward(q, k, v, mask, bias, alibi, cap, bp, mp,
                                    _dropping(key, plan), plan)


def _fn_params(f, params):
    """A ``bias_fn``'s or ``mask_fn``'s params as arrays (``None`` without the function)."""
    return None if f is None else jax.tree_util.tree_map(jnp.asarray, params)


# ---------------------------------------------------------------------------- public op
@has_twin
def dot_product_attention(q, k, v, mask=None, *, bias=None, alibi_slopes=None, causal=False,
                          scale=None, block_size=None, dropout_rate=0.0, dropout_key=None,
                          window=None, logit_soft_cap=None, bias_fn=None, bias_params=None,
                          mask_fn=None, mask_params=None, query_seq_lengths=None,
                          key_value_seq_lengths=None):
    r"""Scaled dot-product attention, ``softmax(q k^T * scale + bias + mask) v``, in O(T) memory.

    Layout and semantics of ``jax.nn.dot_product_attention`` (``B`` batch, ``T`` queries,
    ``S`` keys, ``N`` query heads, ``K`` key/value heads, ``H`` head size), with which it
    agrees in value and gradient (tests). Departures from its signature: the 4th
    positional argument is the boolean ``mask`` (``jax.nn``'s is the additive ``bias``,
    here keyword-only ``bias=``; a float array in 4th place is refused with
    ``TypeError``), ``causal`` instead of ``is_causal``, ``window`` instead of
    ``local_window_size``, a mask or bias of rank 1 or 3 (batched
    ``q``) is refused instead of right-aligned, and an empty axis is refused. For each
    batch ``b`` and head ``n`` (served by key/value head ``n // (N/K)``)::

        s_ij = cap(scale * q_i . k_j) + bias[b, n, i, j]  (i < T, j < S; bias 0 if None)
                 - m[b, n] |i - j|                    (ALiBi: alibi_slopes m, if given)
                 + f(p, i, j)[n]                      (bias_fn f, bias_params p, if given)
        cap(x) = c tanh(x / c)                        (logit_soft_cap c; x if None)
        z_ij = s_ij if attend(i, j) else L                attend = mask[b, n, i, j] and
                                                                   (not causal or j <= i) and
                                                                   (no window or |i-j| < W)
                                                                   and g(p', i, j)[b, n]
                                                       (mask_fn g, mask_params p', if given)
        P_ij = exp(z_ij) / sum_j' exp(z_ij')              o_i = sum_j P_ij v_j

    With ``dropout_rate = r > 0`` (training), the probabilities are dropped after the
    softmax, as in Flax's and PyTorch's attention (Vaswani et al. 2017, section 5.4;
    Srivastava et al. 2014)::

        o_i = sum_j P_ij Z_ij v_j / (1 - r),     Z_ij ~ Bernoulli(1 - r)

    where the column ``Z[:, :, :, j]`` (``(B, N, T)``) is drawn from
    ``fold_in(dropout_key, j)`` (:func:`keep_probabilities`): the same key gives the same
    mask whatever ``block_size``, and the backward pass regenerates it (no ``T x S``
    mask is kept). ``jax.nn.dot_product_attention`` has no dropout.

    ``L = -0.7 * min(finfo(dtype).max, finfo(float32).max)`` is jax.nn's large negative
    number (:func:`large_negative`): finite, so a FULLY MASKED row is a softmax of equal
    logits, the uniform average of all ``S`` values ``o_i = mean_j v_j`` (not NaN), with
    zero gradient to ``q`` and ``k`` (as ``jax.nn``); in any other row ``exp(L - m)``
    underflows to exactly 0. ``causal`` is aligned top-left like ``jax.nn`` (query ``i``
    sees keys ``0..i`` also when ``T != S``). Logits, softmax and accumulation run in
    ``promote_types(dtype, float32)``; probabilities are cast to ``v``'s dtype for the
    ``P v`` product (as ``jax.nn``). ``jax.nn`` rounds the softmax to float32 even for
    float64 inputs; this op stays in float64.

    Forward (Rabe & Staats 2021), over key blocks ``J`` of ``block`` keys (``S`` padded to
    a multiple with keys of logit ``-inf``), per row ``i``, from ``m = -inf, l = 0,
    acc = 0``::

        m' = max(m, max_{j in J} z_ij),   a = exp(m - m'),   p_ij = exp(z_ij - m')
        l  = a l + sum_{j in J} p_ij,     acc = a acc + sum_{j in J} p_ij Z_ij v_j,   m = m'
        o_i = acc / (l (1 - r))

    (``Z = 1`` without dropout): the normaliser ``l`` sums the probabilities before
    dropout, and ``1/(1 - r)`` is applied to the sum in the compute dtype, not to each
    probability before its cast to ``v``'s dtype (a kept ``p = 1`` stays exact).

    Residuals: ``q, k, v`` (the arguments), ``mask``, ``bias`` and ``alibi_slopes`` (the
    caller's arrays; the backward pass splits the bias into key blocks again and computes
    ALiBi's ``(T, block)`` distances per block, so ALiBi costs O(N) memory where a ``(1,
    N, T, S)`` bias costs O(N T S)), ``bias_params`` (a ``bias_fn``'s bias is recomputed
    per block: T5's costs its ``(num_buckets, N)`` table), the output ``o`` in the compute
    dtype (float32 for bfloat16/float16 inputs: ``D_i`` below cancels against ``dP_ij``
    where the softmax saturates, and ``o`` rounded to bfloat16 left an error of
    ``eps |dO| |v|`` in gradients that are near 0 there) and the row
    log-sum-exp ``lse_i = m_i + log l_i`` kept as its two float32 terms ``m`` and
    ``log l`` (``(B, N, T)`` each): in a fully masked row ``m = L ~ -2.4e38`` and
    ``m + log l`` rounds to ``m``, which would recompute ``P = 1`` instead of ``1/S``.
    Never the ``T x S`` probabilities.

    Backward (Dao et al. 2022, Algorithm 2), ``D_i = sum_h dO_ih O_ih``; per key block,
    recomputing the probabilities::

        P_ij  = exp((z_ij - m_i) - log l_i)
        dV_j  = sum_i P_ij Z'_ij dO_i          dP_ij = (dO_i . v_j) Z'_ij
        dS_ij = P_ij (dP_ij - D_i) attend(i, j)      (a masked logit is a constant)
        dX_ij = dS_ij (1 - (cap(x_ij) / c)^2)        (= dS_ij without a soft cap)
        dq_i += scale sum_j dX_ij k_j          dK_j  = scale sum_i dX_ij q_i
        dbias[b, n, i, j] = dS_ij                    (before the scale)
        dm[b, n] = -sum_ij dS_ij |i - j|             (ALiBi's slopes)
        dc = sum_bnij dS_ij (tanh u_ij - u_ij (1 - tanh^2 u_ij)),  u = x / c  (a traced cap)
        dp += vjp(f(., rows, cols))(sum_b dS[b, :, rows, cols])   (bias_fn, per block)

    summed over the ``N/K`` query heads of a key/value head (grouped-query attention);
    ``dbias`` is summed over the axes where ``bias`` has size 1 (within a key block, and
    over the blocks in the scan's carry for a bias of size 1 along ``S``), returned in the
    bias's shape and dtype; a masked or fully masked position gets 0.
    ``D_i = dO_i . O_i`` still equals ``sum_j P_ij dP_ij`` with dropout, since ``O`` is
    the dropped output (Dao et al. 2022, Algorithm 4).
    Each key block is one ``lax.scan`` step (no loop for one block); queries are not
    tiled, so the working memory of a step is ``O(B N T block)``, and causal attention
    computes the masked blocks too (as ``jax.nn``'s XLA path). Work: one extra ``q k^T``
    product and ``exp`` per score in the backward pass compared with autodiff. The
    backward rule is ordinary ``jnp``/``lax`` code, so ``grad(grad)`` works (it
    differentiates through the scans, and that second-order pass does keep blockwise
    probabilities).

    Sliding window (``window=W``; Mistral, Gemma 2): with ``causal``, query ``i`` attends
    keys ``i - W < j <= i``; without, ``|i - j| < W`` (Longformer's symmetric window;
    ``jax.nn``'s ``local_window_size=(W-1, W-1)``). The queries are then split into blocks
    (``block_size`` = queries per block) and each block, one scan step, takes the span of
    ``block + W - 1`` keys (``block + 2W - 2`` not causal) that its window can reach, with
    one softmax over it: keys outside the window are never computed, the work is
    ``O(T (block + W))`` and the residuals are the same. A row whose window is fully
    masked is still the mean of all ``S`` values (the backward pass adds ``dO_i / S`` to
    every ``dV_j``). With dropout, a block draws only the keep masks of its rows' windows:
    row ``i`` draws ``Z_i`` of shape ``(B, N, width)`` from ``fold_in(dropout_key, i)``
    over the offsets its window spans, ``Z_ij = Z_i[..., i - j]`` (``width = W``, causal)
    or ``Z_i[..., i - j + W - 1]`` (``width = 2W - 1``): not the unwindowed op's mask for
    the same key, again independent of ``block_size``, ``O(T W)`` random bits. A row
    whose window is fully masked stays the undropped mean. ALiBi's ``-m |i - j|`` is
    computed per block over its span; a ``bias`` is read per block (its rows and span)
    and its gradient added back block by block in the backward scan's carry (LongT5's
    local attention: T5's relative bias with a symmetric window).

    Args:
      q: queries ``(B, T, N, H)``, or ``(T, N, H)``.
      k: keys ``(B, S, K, H)`` (or ``(S, K, H)``), ``K`` dividing ``N``; ``K == N`` is
        multi-head attention, ``K < N`` grouped-query (``K == 1`` multi-query).
      v: values, ``k``'s shape. ``q, k, v`` share one floating dtype.
      mask: optional boolean array, ``True`` = attend; the 4th positional argument
        (``jax.nn``'s 4th is the additive ``bias``, here keyword-only). Rank 4
        ``(B, N, T, S)`` with each size 1 or full (a key-padding mask is ``(B, 1, 1, S)``),
        or rank 2 ``(T, S)``; for an unbatched ``q`` also rank 3 ``(N, T, S)``. Unlike
        ``jax.nn``, a mask of rank 1, or rank 3 with a batched ``q``, is refused rather
        than right-aligned: ``(B, 1, S)`` would silently be read as ``(N, 1, S)`` whenever
        ``B`` equals ``N``. A rank-2 mask is always read as ``(T, S)``, so a ``(B, S)``
        key-padding mask is refused unless ``B == T``, where it cannot be told from a
        ``(T, S)`` mask: pass key padding as ``(B, 1, 1, S)``.
      bias: optional floating array (keyword-only; ``jax.nn``'s ``bias``) added to the
        scaled logits before the mask and the softmax, e.g. T5's learned relative
        position biases ``(1, N, T, S)`` or ALiBi's ``-slope_n |i - j|``. The mask's
        shapes: rank 4 ``(B, N, T, S)`` with each size 1 or full, or rank 2 ``(T, S)``;
        for an unbatched ``q`` also rank 3 ``(N, T, S)`` (rank 1, or rank 3 with a batched
        ``q``, refused: write ``bias[None]`` for ``(1, N, T, S)``). Any float dtype, cast to
        the compute dtype for the logits. Differentiable: its gradient is ``dS`` above, in
        its shape and dtype. Padded keys of the last block stay ``-inf`` whatever the bias.
        A ``-inf`` bias is allowed (weight 0); a row whose every logit is ``-inf`` is NaN
        (as ``jax.nn``).
      alibi_slopes: optional floating ``(N,)`` or (batched ``q``) ``(B, N)`` array
        (keyword-only; FlashAttention's ``alibi_slopes``): ALiBi (Press et al. 2022) adds
        ``-m_n |i - j|`` to the scaled logits of head ``n``, computed per key block, never
        as a ``T x S`` array. Query ``i`` and key ``j`` sit at positions ``i`` and ``j``,
        the alignment of ``causal`` (for decoding at an offset, pass the bias as
        ``bias=``). ``-m |i - j|`` equals the paper's causal ``-m (i - j)`` on the keys
        ``j <= i`` and is its symmetric extension without ``causal``. With ``bias`` both
        are added. Differentiable (``dm`` above), in its shape and dtype; computed in the
        compute dtype (at least float32). With ``window`` too.
      causal: static bool, mask keys ``j > i``.
      scale: a Python float multiplying the logits; default ``1 / sqrt(H)``. Or a traced
        scalar (a ``jax.vmap`` sweep of temperatures, a learnable scale as in Henry et al.
        2020's QKNorm): it multiplies ``q`` before the op's rule (``(scale q) . k``, in
        ``q``'s dtype), so ``dL/dscale = sum dq' . q`` comes from autodiff of that product
        and the rule's ``dq'``; the residuals gain the scaled ``q``.
      block_size: static int, keys per block of the forward and backward loops (queries
        per block with ``window``; default ``W`` rounded up to 8, at least ``MIN_BLOCK``,
        fewer above ``BLOCK_ELEMENTS`` scores per block). Default:
        blocks of about ``BLOCK_ELEMENTS / (B N T)`` keys (2^18 scores, at least
        ``MIN_BLOCK`` = 64 keys; all ``S`` keys in one block when they fit), the fastest
        on CPU in a measurement of block sizes 32..2048 (tune it on an accelerator).
        Values and gradients do not depend on it (beyond rounding). A symbolic ``T`` or
        ``S`` (``jax.export`` with a symbolic sequence length) takes one block whatever
        ``block_size`` (a block count must be static).
      dropout_rate: a float in ``[0, 1)``, the drop probability of the attention
        probabilities (0: no dropout, the default; use 0 for evaluation). Static, or a
        traced scalar (a ``jax.vmap`` sweep of rates): the static rate's mask for the same
        key, and ``dL/drate = sum(dO . O) / (1 - rate)`` (the mask held fixed, as
        :func:`funcnet.ops.dropout`); a traced 0 still draws the mask (all kept).
      dropout_key: a PRNG key, required when ``dropout_rate > 0``; ignored otherwise.
      window: ``None`` (every key) or a static int ``W >= 1``, the sliding window above.
      logit_soft_cap: ``None`` (default) or a cap ``c > 0``: the scaled
        logits ``x = scale q . k`` become ``c tanh(x / c)``, within ``(-c, c)``, before the
        bias, ALiBi and the mask (Gemma 2's attention soft-capping, ``c = 50``;
        FlashAttention's ``softcap``). Recomputed per block in the backward pass, whose
        ``dS`` is multiplied by ``1 - tanh^2(x / c)`` before it reaches ``q`` and ``k``
        (``dbias`` and ALiBi's ``dm`` take ``dS`` itself). A Python float (checked), or a
        traced scalar (a ``jax.vmap`` sweep of caps, a jitted argument, a learnable cap;
        its value unchecked) with ``dL/dc = sum dS (tanh u - u (1 - tanh^2 u))``, ``u = x /
        c``, summed per block in the backward pass. ``jax.nn`` has no soft cap.
      bias_fn: ``None`` (default) or a pure function ``f(bias_params, rows, cols)`` of the
        int32 positions ``rows`` ``(t,)`` of some queries and ``cols`` ``(s,)`` of some keys
        returning their floating bias, ``(t, s)``, ``(N|1, t, s)`` or ``(B|1, N|1, t, s)``
        (per sequence and/or query head, or shared), added to the logits like ``bias``
        (after the soft cap, before the mask) but computed per block, never as a ``(B, N,
        T, S)`` array nor kept for the backward pass (PyTorch FlexAttention's
        ``score_mod`` for an additive bias): T5's relative buckets gathered from a
        ``(num_buckets, N)`` table (:func:`funcnet.nn.position_bias.t5_bias_fn`; LongT5 with
        ``window``), learned ALiBi slopes, Swin-style relative tables. Positions are those
        of ``causal`` (query ``i`` at ``i``, key ``j`` at ``j``; a block's padding reads
        the last real position). It must close over no traced value (``TypeError``): what
        ``jit``, ``grad`` or ``vmap`` traces goes in ``bias_params``. Its shape is checked
        at trace time for ``(T,)``, ``(S,)`` positions and for every block's.
      bias_params: the pytree ``bias_fn`` reads (its first argument): differentiable in
        its floating leaves, ``dp`` above (the vjp of ``f`` per block, summed over the
        blocks in the backward scan's carry, in the leaves' dtypes; integer leaves, e.g. an
        offset, are constants). ``jax.vmap`` over it sweeps the bias (tests).
      mask_fn: ``None`` (default) or a pure function ``g(mask_params, rows, cols)`` as
        ``bias_fn`` returning a boolean mask (``True`` = attend) of the same shapes,
        and-ed with ``mask``, ``causal`` and ``window`` per block (FlexAttention's
        ``mask_mod``): packed sequences from ``(B, T)`` segment ids, ``ids[:, rows][:, None,
        :, None] == ids[:, cols][:, None, None, :]``, keep the ids, not a ``(B, 1, T, T)``
        mask; a prefix LM's ``(cols <= rows) | (cols < prefix)``. Same rules as ``bias_fn``
        (positions, no traced closure, shapes checked at trace time).
      mask_params: the pytree ``mask_fn`` reads (any dtypes; no gradient).
      query_seq_lengths, key_value_seq_lengths: optional ``(B,)`` integer arrays
        (``jax.nn``'s; batched ``q`` only): sequence ``b`` has ``query_seq_lengths[b]``
        real queries and ``key_value_seq_lengths[b]`` real keys, the rest padding at the
        end. Padded keys are masked (a ``(B, 1, 1, S)`` mask and-ed with ``mask``: no
        ``T x S`` array is made for them); the outputs of padded queries are 0 (as
        ``jax.nn``), so they send no gradient back. Concrete lengths must lie in
        ``[0, T]`` / ``[0, S]``; a sequence with no real key averages all ``S`` values, as
        a fully masked row.

    Returns:
      ``(B, T, N, H)`` (or ``(T, N, H)``), ``q``'s dtype.

    Raises:
      ValueError: wrong ranks, inconsistent ``B, H`` or ``S``, ``N`` not a multiple of
        ``K``, an empty axis, a mask or bias of another rank or not broadcastable to
        ``(B, N, T, S)``, a NaN/inf ``scale``, ``block_size < 1``, ``dropout_rate``
        outside ``[0, 1)`` or without a ``dropout_key``, ``window < 1``, a
        ``logit_soft_cap`` that is not finite and ``> 0``, ``alibi_slopes`` not of shape
        ``(N,)`` or ``(B, N)``, sequence lengths not of shape ``(B,)``, outside their range
        or with an unbatched ``q``, ``bias_fn`` or ``mask_fn`` returning another shape than
        ``(t, s)``, ``(N|1, t, s)`` or ``(B|1, N|1, t, s)``, params without their function.
      TypeError: non-floating or mismatched ``q, k, v`` dtypes, a non-bool mask, a
        non-floating (e.g. bool) bias or ALiBi slopes, non-integer sequence lengths, a
        non-static ``causal``, ``block_size`` or ``window``, a ``scale``,
        ``dropout_rate`` or ``logit_soft_cap`` that is not a number or a real scalar
        array, a ``dropout_key`` that is not a PRNG key, a ``bias_fn`` or ``mask_fn`` that is
        not callable, returns another dtype (floating, bool) or not one array, or closes
        over a traced value.

    References:
      Rabe & Staats (2021), https://arxiv.org/abs/2112.05682; Dao et al. (2022),
      https://arxiv.org/abs/2205.14135, Algorithms 2 and 4; ``jax.nn.dot_product_attention``.
      See ``docs/formulas.md`` ("Beyond the notes").
    """
    fn = "dot_product_attention"
    causal, scale, block_size, rate, key, window = check_attention_args(
        fn, q, k, v, mask, causal, scale, block_size, dropout_rate, dropout_key, window, bias)
    alibi = check_alibi_slopes(fn, alibi_slopes, q)
    cap = _checks.check_soft_cap(fn, logit_soft_cap)
    check_block_fn(fn, "bias_fn", bias_fn, bias_params, q, k, bias_params is not None)
    check_block_fn(fn, "mask_fn", mask_fn, mask_params, q, k, mask_params is not None)
    mask, real = seq_length_masks(fn, q, k, mask, query_seq_lengths, key_value_seq_lengths)
    single = q.ndim == 3
    if single:
        q, k, v = q[None], k[None], v[None]
    if _checks.is_traced(scale):    # scale q . k = (scale q) . k: dL/dscale by autodiff
        q, scale = q * scale.astype(q.dtype), 1.0
    traced = _checks.is_traced(rate)
    static_rate = 0.0 if traced else rate
    if window is not None:
        plan = _local_attention.plan(q.shape, k.shape[1], causal, scale, block_size, window,
                                     static_rate, traced)
    else:
        rows = math.prod(d for d in q.shape[:3] if isinstance(d, int))  # symbolic B counts 1
        plan = _plan(k.shape[1], rows, causal, scale, block_size, static_rate, traced)
    traced_cap = _checks.is_traced(cap)
    plan = plan._replace(soft_cap=None if traced_cap else cap, bias_fn=bias_fn,
                         mask_fn=mask_fn)
    if traced:
        key = (key, rate)
    o = _attention(q, k, v, None if mask is None else jnp.asarray(mask),
                   None if bias is None else jnp.asarray(bias), alibi,
                   cap if traced_cap else None, key if _checks.may_drop(rate) else None,
                   _fn_params(bias_fn, bias_params), _fn_params(mask_fn, mask_params), plan)
    if real is not None:
        o = jnp.where(real, o, jnp.zeros((), o.dtype))
    return o[0] if single else o
