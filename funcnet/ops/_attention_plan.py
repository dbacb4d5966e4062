"""The static side of :func:`funcnet.ops.dot_product_attention`, shared by its blockwise
passes (:mod:`funcnet.ops.attention`), its sliding-window passes
(:mod:`funcnet.ops._local_attention`) and its twin (:mod:`funcnet.ops.reference.attention`):
the argument checks, the :class:`Plan` of one call, the default block budget, the masked
logit and the head layout. It imports neither of the two modules of passes, so both
import it at top level.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax.numpy as jnp

from funcnet import _checks

__all__: list[str] = []

#: Default blocks hold about this many scores ``B * N * T * block`` (1 MiB in float32):
#: the logits, probabilities and their gradients of a block stay in a CPU's caches.
#: Measured on a 2-core AMD EPYC (1 MiB L2 per core, 32 MiB L3), block sizes 32..2048 at
#: T = 256..4096 (4 heads of 64): 64 keys were the fastest from T = 1024 up, 2-3x faster
#: than 512 keys or one block.
BLOCK_ELEMENTS = 2 ** 18
#: Smallest default block (keys); smaller blocks make the matmuls too thin.
MIN_BLOCK = 64

_LAYOUT = "(B, T, N, H) or (T, N, H)"


# ------------------------------------------------------------------------- arguments
class Plan(NamedTuple):
    """Static shape facts of one call (hashable: a ``nondiff_argnums`` argument)."""

    causal: bool
    scale: float
    block: int       # keys per block
    s: int           # true number of keys S (the rest of the last block is padding)
    dropout: float = 0.0   # drop probability of the attention probabilities
    window: int | None = None   # sliding window; then block = queries per block
    traced_rate: bool = False   # a traced drop probability: it travels with the key
    soft_cap: float | None = None   # a static logit soft cap c: c tanh(scale q.k / c)
    bias_fn: Callable | None = None   # bias_fn(bias_params, rows, cols): a bias per block
    mask_fn: Callable | None = None   # mask_fn(mask_params, rows, cols): a mask per block

    @property
    def blocks(self) -> int:
        """The number of key blocks, ``ceil(S / block)`` (``blocks * block >= S``)."""
        return -(-self.s // self.block)


def large_negative(dtype) -> float:
    """The logit a masked position gets: ``-0.7 * min(finfo(dtype).max, float32 max)``.

    ``jax.nn.dot_product_attention``'s value: finite (so a fully masked row is a softmax
    of equal logits, i.e. the uniform average of the values, never NaN) and far below
    any real logit (so ``exp`` of it underflows to exactly 0 in any other row).
    """
    return float(-0.7 * min(float(jnp.finfo(dtype).max), float(jnp.finfo(jnp.float32).max)))


def check_attention_args(fn, q, k, v, mask, causal, scale, block_size, dropout_rate=0.0,
                         dropout_key=None, window=None, bias=None):
    """Shared checks of the op and its twin; returns ``(causal, scale, block_size,
    dropout_rate, dropout_key, window)``.

    ``scale`` comes back as a Python float (``1/sqrt(H)`` for ``None``), or a traced
    scalar (:func:`funcnet._checks.hyperparameter`); ``dropout_key``
    is required when ``dropout_rate > 0`` (and checked whenever given); ``window`` is
    ``None`` or an int >= 1. ``bias`` (optional) is
    a floating array of the mask's shapes (:func:`_check_mask_shape`).
    """
    for name, a in (("q", q), ("k", k), ("v", v)):
        _checks.check_float(fn, name, a)
    _checks.check_rank(fn, "q", q, (3, 4), _LAYOUT)
    layout = "(B, S, K, H)" if q.ndim == 4 else "(S, K, H)"
    _checks.check_rank(fn, "k", k, q.ndim, f"{layout}, as q {_checks.shape_of(q)}")
    _checks.check_same_dtype(fn, "q", q, "k", k)
    _checks.check_same_dtype(fn, "q", q, "v", v)
    _checks.check_shape(fn, "v", v, _checks.shape_of(k), f"k's shape {layout}")
    qs, ks = _checks.shape_of(q), _checks.shape_of(k)
    if any(d < 1 for d in qs + ks):   # not min(): a symbolic batch (jax.export) has no order
        raise ValueError(f"{fn}: q has shape {qs} and k has shape {ks}; every size must be "
                         ">= 1 (at least one query, one key, one head)")
    lead = qs[:-3]
    _checks.check_shape(fn, "k", k, lead + (None, None, qs[-1]),
                        f"{layout} with the batch and head size H={qs[-1]} of q {qs}")
    n, kh = qs[-2], ks[-2]
    if n % kh:
        raise ValueError(f"{fn}: q has {n} heads and k has {kh}; the number of query heads "
                         "must be a multiple of the number of key/value heads")
    if mask is not None:
        _checks.check_array(fn, "mask", mask)
        if _checks.dtype_of(mask) != jnp.bool_:
            raise TypeError(f"{fn}: mask must have dtype bool (True = attend), got "
                            f"{_checks.dtype_of(mask)} with shape {_checks.shape_of(mask)}; "
                            "pass an additive float array as bias= (jax.nn's 4th argument)")
        _check_mask_shape(fn, mask, qs, ks)
    if bias is not None:
        _checks.check_array(fn, "bias", bias)
        if _checks.dtype_of(bias) == jnp.bool_:
            raise TypeError(f"{fn}: bias must be a floating array added to the logits, got "
                            f"bool with shape {_checks.shape_of(bias)}; pass a boolean mask "
                            "as mask= (True = attend)")
        _checks.check_float(fn, "bias", bias)
        _check_mask_shape(fn, bias, qs, ks, "bias")
    causal = _checks.static_bool(fn, "causal", causal)
    scale = 1.0 / math.sqrt(qs[-1]) if scale is None else _checks.hyperparameter(
        fn, "scale", scale)
    if block_size is not None:
        block_size = _checks.static_int(fn, "block_size", block_size, minimum=1)
    rate = _checks.check_rate(fn, "dropout_rate", dropout_rate)
    if dropout_key is not None:
        dropout_key = _checks.check_key(fn, dropout_key, name="dropout_key")
    elif _checks.may_drop(rate):
        raise ValueError(f"{fn}: dropout_rate={_checks.value_text(rate)} needs dropout_key, "
                         "a PRNG key (pass dropout_rate=0.0 for evaluation)")
    if window is not None:
        window = _checks.static_int(fn, "window", window, minimum=1)
    return causal, scale, block_size, rate, dropout_key, window


def check_alibi_slopes(fn, slopes, q):
    """``alibi_slopes``: ``None``, or a floating ``(N,)`` or (batched ``q``) ``(B, N)``
    array of per-head slopes. Returns it as an array (or ``None``)."""
    if slopes is None:
        return None
    qs = _checks.shape_of(q)
    _checks.check_array(fn, "alibi_slopes", slopes)
    _checks.check_float(fn, "alibi_slopes", slopes)
    n = qs[-2]
    shapes = [(n,)] + ([(qs[0], n)] if len(qs) == 4 else [])
    if _checks.shape_of(slopes) not in shapes:
        raise ValueError(f"{fn}: alibi_slopes has shape {_checks.shape_of(slopes)}, expected "
                         f"{' or '.join(str(s) for s in shapes)}: one slope per query head "
                         f"(N = {n}){', per sequence or shared' if len(qs) == 4 else ''}, "
                         f"for q of shape {qs}")
    return jnp.asarray(slopes)


def logit_cap(plan: Plan, cap, dtype):
    """The cap a pass applies: the op's traced ``cap`` argument in the compute ``dtype``,
    or (``cap`` ``None``) ``plan.soft_cap``, a Python float or ``None``."""
    return plan.soft_cap if cap is None else cap.astype(dtype)


def soft_capped(s, cap):
    """Logits ``s`` soft-capped to ``(-cap, cap)`` (``cap`` from :func:`logit_cap`):
    ``(cap tanh(u), (1 - tanh^2 u, tanh u - u (1 - tanh^2 u)))`` with ``u = s / cap``, the
    capped logits and their derivatives in ``s`` and in ``cap`` (the latter ``None`` for a
    static cap); ``(s, None)`` for ``cap = None``."""
    if cap is None:
        return s, None
    u = s / cap
    t = jnp.tanh(u)
    ds = 1 - t * t
    return cap * t, (ds, None if isinstance(cap, float) else t - u * ds)


def uncapped(ds, dcap):
    """``dL/d(scale q . k)`` from ``dS``, the gradient of the capped logits: ``dS (1 -
    tanh^2)`` (``dS`` itself without a cap: ``dcap = None``)."""
    return ds if dcap is None else ds * dcap[0]


def cap_gradient(acc, ds, dcap):
    """``acc`` plus one block's part of ``dL/dc`` for a traced cap, ``sum dS (tanh u - u
    (1 - tanh^2 u))`` (``dS`` of the capped logits: the bias, ALiBi and the mask come
    after the cap; a masked logit's ``dS`` is 0); ``acc`` (``None``) without one."""
    if acc is None:
        return None
    return acc + jnp.sum(ds * dcap[1])


def slopes5(slopes, n: int, kh: int, dtype):
    """ALiBi's ``(N,)`` or ``(B, N)`` slopes as ``(b, K, G, 1, 1)`` in ``dtype``."""
    return mask5(slopes.reshape(slopes.shape + (1, 1)), n, kh).astype(dtype)


def alibi_distance(rows, cols, dtype):
    """``|i - j|`` of query positions ``rows`` and key positions ``cols`` (int32 arrays
    that broadcast), in ``dtype``: ALiBi's bias is ``-m_n`` times it."""
    return jnp.abs(rows - cols).astype(dtype)


def reduce_to(x, shape):
    """``x`` summed (keeping the axes) over the axes where ``shape`` has size 1."""
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape)) if b == 1 and a != 1)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def alibi_slope_grad(ds, distance, shape):
    """One block's part of ``dm``, ALiBi's slope gradient ``-sum_ij dS_ij |i - j|``, in
    the slopes' ``(b, K, G, 1, 1)`` ``shape`` (``dS`` before the scale: the bias is added
    after it)."""
    return -reduce_to(jnp.sum(ds * distance, axis=(3, 4), keepdims=True), shape)


def _check_mask_shape(fn, mask, qs, ks, name="mask"):
    """A mask (or a bias: ``name``) has the full rank of the logits, each size 1 or full,
    or is ``(T, S)``.

    Batched ``q``: rank 4 ``(B, N, T, S)`` or rank 2 ``(T, S)``; unbatched ``q``: rank 3
    ``(N, T, S)`` (``jax.nn``'s form), rank 4 with ``B = 1``, or rank 2. No rank 1 or 3
    for a batched ``q``: ``jax.nn`` aligns such a mask to the right, which silently reads
    a ``(B, S)`` or ``(B, 1, S)`` key-padding mask as ``(T, S)`` or ``(N, 1, S)`` when
    ``B`` equals ``T`` or ``N``.
    """
    t, n, s = qs[-3], qs[-2], ks[-3]
    batched = len(qs) == 4
    target = (qs[0] if batched else 1, n, t, s)
    shape = _checks.shape_of(mask)
    if name == "mask":
        hint, pad4, pad3 = "a key-padding mask is", (qs[0], 1, 1, s), (1, 1, s)
        what = ("(B, 1, 1, S)", "(1, 1, S)", "a (B, S) or (B, 1, S) mask")
    else:   # a bias shared over the batch (T5's relative positions, ALiBi)
        hint, pad4, pad3 = "a bias shared over the batch is", (1, n, t, s), (n, t, s)
        what = ("(1, N, T, S)", "(N, T, S)", "a (B, T, S) or (B, 1, S) bias")
    if len(shape) not in ((2, 4) if batched else (2, 3, 4)):
        if batched:
            full, pad = f"4 (B, N, T, S) = {target}", f"{what[0]} = {pad4}"
            why = f" (no right-aligned broadcasting: it misreads {what[2]})"
        else:
            full, pad, why = f"3 (N, T, S) = {target[1:]}", f"{what[1]} = {pad3}", ""
        raise ValueError(
            f"{fn}: {name} has shape {shape} (rank {len(shape)}), expected rank {full} (each "
            f"size 1 or full) or rank 2 (T, S) = {(t, s)}; {hint} {pad}{why}")
    _checks.check_broadcastable(fn, name, mask, target, f"(B, N, T, S); {hint} {what[0]}")


def seq_length_masks(fn, q, k, mask, query_seq_lengths, key_value_seq_lengths):
    """``jax.nn``'s ``query_seq_lengths`` / ``key_value_seq_lengths`` (``(B,)`` integers:
    the real queries and keys of each sequence, the rest padding at the end): returns
    ``(mask, rows)``, the ``mask`` with the padded keys masked (``(B, 1, 1, S)`` and-ed
    in, so no ``T x S`` array is made for it) and ``rows``, ``(B, T, 1, 1)`` bools of the
    real queries (``None`` without query lengths), whose outputs the caller keeps (the
    padded queries' outputs are 0, as ``jax.nn``'s, so they send no gradient back).
    Concrete lengths must be in ``[0, T]`` / ``[0, S]``; a batched ``q`` is required."""
    if query_seq_lengths is None and key_value_seq_lengths is None:
        return mask, None
    qs, ks = _checks.shape_of(q), _checks.shape_of(k)
    given = [(n, a, size) for n, a, size in (("query_seq_lengths", query_seq_lengths, qs[-3]),
                                             ("key_value_seq_lengths", key_value_seq_lengths,
                                              ks[-3])) if a is not None]
    if len(qs) != 4:
        raise ValueError(f"{fn}: {given[0][0]} needs a batched q (B, T, N, H), got q of "
                         f"shape {qs}; for one sequence pass a mask, or q[None]")
    lengths = {}
    for name, a, size in given:
        _checks.check_integer(fn, name, a, "one length per sequence")
        _checks.check_shape(fn, name, a, (qs[0],), f"(B,) = ({qs[0]},): one per sequence")
        known = _checks.concrete(a)
        if known is not None and (known.min() < 0 or known.max() > size):
            raise ValueError(f"{fn}: {name} must be in [0, {size}] (the padded length), got "
                             f"min {known.min()}, max {known.max()}")
        lengths[name] = jnp.asarray(a)
    rows = None
    if "query_seq_lengths" in lengths:
        t = jnp.arange(qs[1], dtype=lengths["query_seq_lengths"].dtype)
        rows = (t[None, :] < lengths["query_seq_lengths"][:, None])[:, :, None, None]
    if "key_value_seq_lengths" in lengths:
        kv = lengths["key_value_seq_lengths"]
        keys = (jnp.arange(ks[1], dtype=kv.dtype)[None, :] < kv[:, None])[:, None, None, :]
        if mask is not None:
            mask = jnp.asarray(mask)
            keys = keys & rank4(mask)
        mask = keys
    return mask, rows


def rank4(mask):
    """A mask (or bias) broadcastable to ``(B, N, T, S)`` with leading 1s up to rank 4."""
    return mask.reshape((1,) * (4 - mask.ndim) + mask.shape)


def mask5(mask, n: int, kh: int):
    """A boolean mask (or a float bias) broadcastable to ``(B, N, T, S)`` as
    ``(b, K|1, G|1, t, s)``: a reshape, so ``x.reshape(mask.shape)`` undoes it."""
    if mask is None:
        return None
    mask = rank4(mask)
    mb, mn, mt, ms = mask.shape
    return mask.reshape((mb, kh, n // kh, mt, ms) if mn == n else (mb, 1, 1, mt, ms))


# Internal layout, heads first so that every product is a batched matmul over (B, K):
# q, o, dq: (B, K, G, T, H); k, v: (B, K, S, H).

def split_heads(x, kh):
    """``(B, T, N, H)`` -> ``(B, K, N/K, T, H)``."""
    b, t, n, h = x.shape
    return x.reshape(b, t, kh, n // kh, h).transpose(0, 2, 3, 1, 4)


def merge_heads(x):
    """``(B, K, G, T, H)`` -> ``(B, T, K*G, H)``."""
    b, kh, g, t, h = x.shape
    return x.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g, h)
