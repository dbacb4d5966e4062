"""Position biases of self-attention logits, for ``nn.MultiHeadAttention(position_bias=...)``.

Both add to the scaled logit of query position ``i`` and key position ``j`` a per-head
term that depends on the positions only (``p = i``, ``q = j``; absolute positions, so a
decoding chunk's queries are ``index + t``)::

    alibi:  b[n, i, j] = -m_n |i - j|                       (fixed, no params)
    t5:     b[n, i, j] = rel_bias[bucket(j - i), n]          (learned, (num_buckets, N))

ALiBi's slopes (Press et al. 2022, section 3 and the authors' ``get_slopes``; BLOOM's
``build_alibi_tensor``): for ``N`` a power of 2, ``m_k = 2^(-8k/N)``, ``k = 1..N`` (``N =
8``: ``1/2, 1/4, ..., 1/256``); otherwise the ``P`` slopes of the largest power of 2 ``P <
N``, then every other slope of ``2P`` heads, ``2^(-8k/(2P))`` for ``k = 1, 3, 5, ...``, the
first ``N - P`` of them. The paper defines the causal bias ``-m (i - j)`` (``j <= i``);
``-m |i - j|`` is the same on those keys and the symmetric extension for a bidirectional
layer (as MosaicBERT), so one formula serves both. (BLOOM adds ``m j``, which differs by
``-m i``, a constant of the row: the same softmax.)

T5's buckets (Raffel et al. 2020, section 2.1; Mesh TensorFlow's and HF's
``_relative_position_bucket``), ``r = j - i`` the key's position relative to the query's:
bidirectional (an encoder) uses ``B = num_buckets // 2`` buckets per sign (``B`` more for
``r > 0``) on ``n = |r|``; unidirectional (a causal decoder) ``B = num_buckets`` on ``n =
max(-r, 0)``. With ``E = B // 2``: ``bucket = n`` for ``n < E``, else
``min(E + floor(log(n / E) / log(max_distance / E) * (B - E)), B - 1)``: exact for short
distances, logarithmic up to ``max_distance``, one bucket beyond. The floor is taken in
exact integer arithmetic (``(n/E)^(B-E) >= (max_distance/E)^k``), a table of
``max_distance + 1`` entries built once, so a distance whose log ratio times ``B - E``
is an integer (``n = 16, 32, 64`` for ``(32, 128)`` bidirectional) is never rounded into
the bucket below, whatever the rounding of ``log`` (flaxformer adds an epsilon inside the
log for that; XLA's float64 ``log`` puts ``n = 64`` one bucket low without it). Elsewhere
it equals the float formula (tests: every distance, several bucket specs).
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from funcnet import _checks

__all__ = ["KINDS", "alibi_slopes", "positioned_bias_fn", "relative_position_bucket",
           "t5_bias_fn"]

KINDS = ("alibi", "t5")


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi's slope of each head, ``(num_heads,)`` float64 (module docstring)."""
    p = 1 << (int(num_heads).bit_length() - 1)          # the largest power of 2 <= N
    slopes = [2.0 ** (-8.0 * k / p) for k in range(1, p + 1)]
    slopes += [2.0 ** (-8.0 * k / (2 * p)) for k in range(1, 2 * p, 2)][:num_heads - p]
    return np.asarray(slopes, np.float64)


@functools.lru_cache(maxsize=None)
def _log_table(buckets: int, max_distance: int) -> np.ndarray:
    """``bucket(n)`` of one sign for ``n = 0 .. max_distance`` (``B = buckets``)."""
    exact, span = buckets // 2, buckets - buckets // 2
    table = np.arange(max_distance + 1, dtype=np.int32)
    k = 0
    for n in range(exact, max_distance + 1):     # k = floor(log(n/E) / log(M/E) * (B - E))
        while k < span and n ** span * exact ** (k + 1) >= max_distance ** (k + 1) * exact ** span:
            k += 1
        table[n] = min(exact + k, buckets - 1)
    return table


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int,
                             max_distance: int):
    """T5's bucket (int32, ``relative_position``'s shape) of ``r = key - query`` positions."""
    r = jnp.asarray(relative_position, jnp.int32)
    buckets = num_buckets // 2 if bidirectional else num_buckets
    if bidirectional:
        side, n = jnp.where(r > 0, jnp.int32(buckets), jnp.int32(0)), jnp.abs(r)
    else:
        side, n = jnp.zeros_like(r), jnp.maximum(-r, 0)
    table = jnp.asarray(_log_table(buckets, max_distance))
    return side + table[jnp.minimum(n, max_distance)]


def check(name: str, kind, buckets, causal: bool) -> tuple | None:
    """The validated spec ``(kind, num_buckets, max_distance, bidirectional)`` (``None``:
    no bias) of ``position_bias=kind, position_bias_buckets=buckets``."""
    if kind is not None and not isinstance(kind, str):
        raise ValueError(f"{name}: position_bias must be one of None, 'alibi', 't5', got "
                         f"{type(kind).__name__} {kind!r:.60}")
    _checks.static_choice(name, "position_bias", kind, (None,) + KINDS)
    if not isinstance(buckets, (tuple, list)):
        raise TypeError(f"{name}: position_bias_buckets must be a pair of ints (num_buckets, "
                        f"max_distance), got {type(buckets).__name__} {buckets!r:.60}")
    if len(buckets) != 2:
        raise ValueError(f"{name}: position_bias_buckets must be a pair (num_buckets, "
                         f"max_distance), got {len(buckets)} entries {tuple(buckets)!r:.60}")
    nb, md = (_checks.static_int(name, f"position_bias_buckets[{i}]", v, minimum=1)
              for i, v in enumerate(buckets))
    if kind != "t5":
        if (nb, md) != (32, 128):
            raise ValueError(f"{name}: position_bias_buckets={(nb, md)} is for "
                             f"position_bias='t5' only, got position_bias={kind!r}")
        if kind is None:
            return None
    if kind == "alibi":
        return (kind, None, None, not causal)
    per_sign = nb // 2 if not causal else nb
    if per_sign < 2 or md <= per_sign // 2:
        raise ValueError(
            f"{name}: position_bias_buckets=({nb}, {md}) leaves {per_sign} buckets per sign "
            f"({'bidirectional: num_buckets // 2' if not causal else 'causal'}), expected >= 2 "
            f"of them and max_distance > {max(per_sign // 2, 1)} (half of them are exact "
            f"distances, the rest logarithmic up to max_distance)")
    return (kind, nb, md, not causal)


def bias(spec: tuple, table, q_positions, k_positions, heads: int, dtype):
    """The ``(1, heads, T, S)`` bias of queries at ``q_positions`` ``(T,)`` and keys at
    ``k_positions`` ``(S,)`` (int32): ALiBi's in ``dtype``, at least float32, T5's
    gathered from ``table`` ``(num_buckets, heads)`` in its dtype (differentiable)."""
    kind, nb, md, bidirectional = spec
    rel = k_positions[None, :] - q_positions[:, None]                    # (T, S): j - i
    if kind == "alibi":
        ct = _checks.compute_dtype(dtype)
        slopes = jnp.asarray(alibi_slopes(heads), ct)
        return -(slopes[:, None, None] * jnp.abs(rel).astype(ct)[None])[None]
    return _t5(spec, table, rel)[None]


def _t5(spec: tuple, table, rel):
    """T5's ``(heads, T, S)`` bias ``table[bucket(rel)]`` of relative positions ``rel``."""
    _, nb, md, bidirectional = spec
    b = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb,
                                 max_distance=md)
    return jnp.take(table, b, axis=0).transpose(2, 0, 1)


@functools.lru_cache(maxsize=None)
def t5_bias_fn(spec: tuple):
    """T5's bias as the op's ``bias_fn(table, rows, cols)`` (``spec`` of :func:`check`,
    one function per spec): ``(heads, t, s)`` gathered from ``table`` ``(num_buckets,
    heads)`` for a block's query positions ``rows`` ``(t,)`` and key positions ``cols``
    ``(s,)``, so the op never builds the ``(1, heads, T, S)`` array nor keeps it."""
    def t5_bias(table, rows, cols):
        return _t5(spec, table, cols[None, :] - rows[:, None])
    return t5_bias


@functools.lru_cache(maxsize=None)
def positioned_bias_fn(spec: tuple, heads: int, dtype):
    """The bias at absolute positions as the op's ``bias_fn(params, rows, cols)`` (one
    function per ``spec``, ``heads`` and ``dtype``), for decoding: ``params = (table,
    (start, keys))``, T5's ``(num_buckets, heads)`` table (``None`` for ALiBi) and the
    positions of :func:`funcnet.nn.decoding.visible_fn`; the ``(heads, t, s)`` :func:`bias`
    of queries at ``start + rows`` and keys at ``keys[cols]``, gathered per block."""
    def positioned_bias(params, rows, cols):
        table, (start, keys) = params
        return bias(spec, table, start + rows, keys[cols], heads, dtype)[0]
    return positioned_bias
