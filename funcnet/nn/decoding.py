"""Autoregressive decoding: the state that :func:`~funcnet.nn.MultiHeadAttention`,
:func:`~funcnet.nn.CrossAttention` and :func:`~funcnet.nn.PositionEmbedding` keep with
``decode=True``.

A layer built with ``decode=True`` keeps in its ``state`` what it needs to process a
sequence a chunk at a time: the next position ``index`` (an int32 scalar) and, for causal
self-attention, a key/value cache of ``L`` positions (Flax's ``decode=True`` cache)::

    PositionEmbedding:   {"index": ()}
    MultiHeadAttention:  {"k": (N, L, K, dh), "v": (N, L, K, dh), "index": ()}

``init`` with the input shape ``(N, L, ...)`` allocates it (zeros, ``index = 0``); each
``apply`` on a chunk of ``T`` new positions reads positions ``index .. index + T - 1``
(writes them into the cache) and returns the state with ``index + T``. The state flows
through ``serial``, ``Residual``, ``OnFirst``/``KeepRest`` and ``Repeat`` (stacked per
layer) like batch norm's statistics, so a whole model decodes with its ordinary
``apply``, and the fixed shapes make a generation loop one ``lax.scan``. Every such
layer keeps its own ``index``; they agree since every layer sees the same chunks.

The decode model is the training model built again with ``decode=True`` in its attention
and position layers; it takes the same params. A greedy loop, ``gpt(decode)`` building
the README's GPT::

    dec = gpt(decode=True)
    _, _, cache = dec.init(key, (N, L))          # zeros, index 0: N sequences of <= L

    @jax.jit
    def generate(params, cache, prompt):         # (N, P) ids -> (N, L - P) new ids
        logits, cache = dec.apply(params, cache, prompt)     # the prompt in one chunk
        def step(carry, _):
            tok, cache = carry
            logits, cache = dec.apply(params, cache, tok[:, None])
            return (jnp.argmax(logits[:, -1], axis=-1), cache), tok
        first = jnp.argmax(logits[:, -1], axis=-1)
        _, toks = lax.scan(step, (first, cache), None, length=L - prompt.shape[1])
        return toks.T

The state is a value: the same empty ``cache`` starts every generation. Positions are
absolute. Which cache positions a chunk's queries see (:func:`visible_fn`), and a position
bias (ALiBi, T5: :func:`funcnet.nn.position_bias.positioned_bias_fn`), go to the op as
functions of a block's positions (its ``mask_fn``/``bias_fn``) with the chunk's start and
the keys' positions as their params: a prompt of ``T`` positions in a cache of ``L``
never builds a ``T x L`` mask or ``(N, heads, T, L)`` bias, only the caller's ``mask``.

Sliding window (``MultiHeadAttention(..., window=W)``) with ``L >= W``: the cache is a ring
buffer of ``W`` slots, slot ``s`` holding the latest position ``p = s (mod W)`` (keys
rotated at ``p`` by rope), so generation runs for any number of steps. A chunk attends
the ring as it was plus its own keys (``W + T`` keys, so a chunk may be longer than ``W``),
then the ring keeps the latest ``W`` positions; no mask, no overflow. With ``L < W`` the
window never masks anything inside the ``L`` positions and the cache is the ordinary one.

Encoder-decoder models (T5, Whisper): ``CrossAttention(..., decode=True)`` projects the
encoder's output (the context, ``(N, S, Fc)``) to keys and values once, and caches them::

    CrossAttention:      {"k": (N, S, K, dh), "v": (N, S, K, dh), "primed": bool ()}

``init`` with the shapes ``((N, T, F), (N, S, Fc)[, mask])`` allocates it (zeros, not
primed). A call whose input carries the context, ``(x, context)`` or ``(x, context,
mask)``, projects it, writes the cache and attends (the first decoding step: the start
token or a prompt); a call with ``None`` in its place, ``(x, None)`` or ``(x, None,
mask)``, reads the cache, so a generated token costs no ``S x Fc`` projection (the mask
over the ``S`` context positions is passed at every call, as without ``decode``). In a
decoder stack the tuple ``(x, context, mask)`` flows through ``KeepRest`` / ``OnFirst``
/ ``Repeat`` as in training; the generation loop passes ``(tok, None, mask)``::

    logits, cache = dec.apply(params, cache, (start, memory, memory_mask))   # primes
    logits, cache = dec.apply(params, cache, (tok, None, memory_mask))       # reads

Reading a cache that was never primed is a ``ValueError`` where ``state['primed']`` is
concrete and a NaN output under ``jit`` (as an overflow below); a context of another
length than the ``init`` shape's ``S`` is a ``ValueError`` (pad it to ``S`` and mask the
padding).

Overflow of the ordinary cache (``index + T > L``, or ``index < 0``): refused with a
``ValueError`` when ``index`` is concrete (an eager call outside ``Repeat``); under
``jax.jit``, ``vmap`` or a ``lax.scan`` (``Repeat``, a generation loop) its value is
unknown at trace time, and the layer's output is NaN instead (the state still advances,
so every later output is NaN too): never silently wrong values.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.nn.base import check_params, fmt

__all__: list[str] = []

_HINT = ("decode=True keeps its decoding state in state: pass the state that the decode "
         "model's init returns (init with the input shape (N, L, ...), L the longest "
         "sequence), then the state each apply returns")


def check_state(name: str, state, shapes: dict) -> None:
    """``state`` must be the decode state: a dict with exactly the keys of ``shapes``
    (an integer scalar ``"index"`` or a bool scalar ``"primed"`` among them), arrays of
    those shapes (``None`` matches any size; :func:`~funcnet.nn.base.check_params`)."""
    if not isinstance(state, dict):
        got = f"{type(state).__name__} {state!r}" if not state else type(state).__name__
        raise ValueError(f"{name}: state must be a dict with keys {sorted(shapes)}, got "
                         f"{got}; {_HINT}")
    check_params(name, "state", state, shapes)
    if "index" in shapes:
        _checks.check_integer(name, "state['index']", state["index"])
    if "primed" in shapes and _checks.dtype_of(state["primed"]) != jnp.bool_:
        raise TypeError(f"{name}: state['primed'] must have dtype bool, got "
                        f"{_checks.dtype_of(state['primed'])}; {_HINT}")


def room(name: str, index, t: int, length: int, what: str):
    """Whether ``t`` more positions from ``index`` fit in ``length``: a ``ValueError`` for
    a concrete ``index`` that overflows, else the (traced) boolean ``0 <= index <=
    length - t`` for :func:`guard`."""
    if t > length:
        raise ValueError(f"{name}: the input has {t} positions, more than the {length} of "
                         f"{what}")
    value = _checks.concrete(index)
    if value is not None and not 0 <= int(value) <= length - t:
        raise ValueError(f"{name}: state['index'] is {int(value)}: {t} more positions do not "
                         f"fit in the {length} of {what} (index must be in [0, {length - t}]); "
                         f"init the decode state with a longer sequence")
    return (index >= 0) & (index <= length - t)


def guard(y, fits):
    """``y``, or NaN everywhere when the positions did not fit (see :func:`room`; ``None``:
    a ring buffer, which never overflows)."""
    return y if fits is None else jnp.where(fits, y, jnp.asarray(jnp.nan, y.dtype))


def init_cache(lead: tuple, length: int, kv_heads: int, head_dim: int, dtype) -> dict:
    """An empty key/value cache: zeros ``(*lead, length, kv_heads, head_dim)``, index 0."""
    zeros = jnp.zeros(lead + (length, kv_heads, head_dim), dtype)
    return {"k": zeros, "v": zeros, "index": jnp.zeros((), jnp.int32)}


def attend_cached(name: str, state, q, k, v, mask, heads: int, single: bool,
                  rotate=None, window: int | None = None):
    """Write the new keys/values ``k, v`` ``(N, T, K, dh)`` into the cache at ``index``.

    ``rotate(positions, q, k) -> (q, k)`` (rotary position embedding), if given, is
    applied first with the chunk's positions ``index + arange(T)``, so the cache holds
    rotated keys. Returns ``(q, k_all, v_all, mask, new_state, fits, positions)``: the
    (rotated) queries, the whole cache ``(N, L, K, dh)`` in ``k``'s dtype, the caller's
    boolean ``mask`` over the ``L`` cache positions as ``(N or 1, heads or 1, T, L)`` (or
    ``None``), the state with ``index + T``, the overflow flag of :func:`room`, and the
    ``positions = (start, keys)`` of :func:`visible_fn`: the chunk's first position
    ``index`` (int32 ``()``) and the int32 positions ``(L,)`` of the keys (``arange(L)``;
    with a ring buffer the positions its slots hold, then the chunk's; ``-1``: unwritten).
    ``single``: the state holds one sequence (no ``N``). ``window``: query ``i`` sees only
    positions ``j > index + i - window`` too (:func:`visible_fn`).
    """
    n, t, kh, dh = k.shape
    lead = () if single else (n,)
    _check_sequences(name, state, lead, kh, dh)
    check_state(name, state, {"k": lead + (None, kh, dh), "v": lead + (None, kh, dh),
                              "index": ()})
    cache_k, cache_v, index = state["k"], state["v"], state["index"]
    length = cache_k.shape[-3]
    ring = window is not None and length == window
    if ring and mask is not None:
        raise ValueError(f"{name}: decode=True with window={window} keeps the last {window} "
                         "positions in a ring buffer, which takes no mask (pass x alone, or "
                         "init the decode model with a length L < window for a mask over L "
                         "positions)")
    fits = None if ring else room(name, index, t, length, "the key/value cache")
    if rotate is not None:
        with _checks.context(name):
            q, k = rotate(index + jnp.arange(t, dtype=index.dtype), q, k)
    if single:
        cache_k, cache_v = cache_k[None], cache_v[None]
    if ring:
        return (q,) + _ring(cache_k, cache_v, k, v, index, window, single)
    cache_k, cache_v = (lax.dynamic_update_slice_in_dim(c, a.astype(c.dtype), index, axis=1)
                        for c, a in ((cache_k, k), (cache_v, v)))
    if mask is not None:
        _checks.check_array(name, "mask", mask)
        if _checks.dtype_of(mask) != jnp.bool_:
            raise TypeError(f"{name}: mask must have dtype bool (True = attend), got "
                            f"{_checks.dtype_of(mask)}")
        _checks.check_rank(name, "mask", mask, (2, 4), "(N, heads, T, L) or (T, L) over "
                           "the L cache positions")
        mask = mask.reshape((1,) * (4 - mask.ndim) + _checks.shape_of(mask))
        _checks.check_broadcastable(name, "mask", mask, (n, heads, t, length),
                                    "over the L cache positions; key padding is (N, 1, 1, L)")
    new = {"k": cache_k[0] if single else cache_k, "v": cache_v[0] if single else cache_v,
           "index": index + t}
    dt = k.dtype
    return (q, cache_k.astype(dt), cache_v.astype(dt), mask, new, fits,
            (index.astype(jnp.int32), jnp.arange(length, dtype=jnp.int32)))


@functools.lru_cache(maxsize=None)
def visible_fn(window: int | None):
    """The op's ``mask_fn(positions, rows, cols)`` of decoding (one function per
    ``window``): with ``positions = (start, keys)`` of :func:`attend_cached`, the query of
    row ``r`` (at ``p = start + r``) sees the key of column ``c`` (at ``j = keys[c]``) when
    ``0 <= j <= p`` (written, not in its future) and, with a window, ``j > p - window``;
    ``(t, s)`` for a block's ``rows`` ``(t,)`` and ``cols`` ``(s,)``."""
    def visible(positions, rows, cols):
        start, keys = positions
        p, j = start + rows[:, None], keys[cols][None, :]
        seen = (j >= 0) & (j <= p)
        return seen if window is None else seen & (j > p - window)
    return visible


def _ring(cache_k, cache_v, k, v, index, window: int, single: bool):
    """Attend and update a ring buffer of the last ``window`` positions: slot ``s`` holds
    the latest position ``p = s (mod window)`` before ``index`` (unwritten if ``p < 0``).
    The chunk's queries attend the buffer as it was and the chunk itself (``window + T``
    keys, so a chunk may be longer than the buffer, at the positions returned last), then
    the buffer keeps the latest."""
    t = k.shape[1]
    slots = jnp.arange(window, dtype=index.dtype)
    chunk = index + jnp.arange(t, dtype=index.dtype)
    held = index - 1 - jnp.mod(index - 1 - slots, window)
    keys = jnp.concatenate([held, chunk]).astype(jnp.int32)
    latest = index + t - 1 - jnp.mod(index + t - 1 - slots, window)
    take = jnp.clip(latest - index, 0, t - 1)
    fresh = (latest >= index)[None, :, None, None]
    new = [jnp.where(fresh, a[:, take].astype(c.dtype), c)
           for c, a in ((cache_k, k), (cache_v, v))]
    both = [jnp.concatenate([c.astype(a.dtype), a], axis=1)
            for c, a in ((cache_k, k), (cache_v, v))]
    state = {"k": new[0][0] if single else new[0], "v": new[1][0] if single else new[1],
             "index": index + t}
    return both[0], both[1], None, state, None, (index.astype(jnp.int32), keys)


def _check_sequences(name: str, state, lead: tuple, kv_heads: int, head_dim: int) -> None:
    """A cache of these heads made for another number of sequences (``init`` with another
    ``N``, one sequence's cache for a batch, or the reverse): a ``ValueError`` that says
    so, before :func:`check_state`'s generic shape message."""
    k = state.get("k") if isinstance(state, dict) else None
    shape = _checks.shape_of(k) if hasattr(k, "shape") else None
    if shape is None or len(shape) < 3 or shape[-2:] != (kv_heads, head_dim):
        return
    if shape[:-3] == lead:
        return
    held = (f"{shape[0]} sequences" if len(shape) == 4 else
            "one sequence" if len(shape) == 3 else "a stack of caches")
    want = f"{lead[0]} sequences" if lead else "one sequence"
    expected = "(" + ", ".join(map(str, lead + ("*", kv_heads, head_dim))) + ")"
    raise ValueError(f"{name}: state['k'] has shape {shape}, expected {expected}: the "
                     f"key/value cache holds {held}, the input {want}; init the decode "
                     f"model with the input's batch size: (N, L, ...) for N sequences, "
                     f"(L, ...) for one (e.g. per-sequence caches under jax.vmap)")


def check_decode_shape(name: str, shape: tuple, what: str = "input_shape",
                       layout: str = "(N, L, F)", length: str = "L positions") -> None:
    """``init`` of a layer that allocates a cache per sequence needs every size."""
    if -1 in shape:
        raise ValueError(f"{name}: decode=True allocates a key/value cache of {length} "
                         f"for each of the N sequences: init with known sizes {layout}, got "
                         f"{what} {fmt(shape)}")


# ------------------------------------------------------------- cross-attention memory
def init_memory(lead: tuple, length: int, kv_heads: int, head_dim: int, dtype) -> dict:
    """An empty cache of a context's keys/values: zeros ``(*lead, S, K, dh)``, not primed."""
    zeros = jnp.zeros(lead + (length, kv_heads, head_dim), dtype)
    return {"k": zeros, "v": zeros, "primed": jnp.zeros((), jnp.bool_)}


def cached_memory(name: str, state, k, v, lead: tuple, kv_heads: int, head_dim: int, dtype):
    """The keys/values of a cross-attention's context, projected once (module docstring).

    ``k, v`` ``(N, S, K, dh)``, projected from the context of this call, are written into
    the cache (which is then primed) and returned as the cache holds them (in its dtype,
    cast back to ``dtype``); ``None`` (a call without a context) reads them from the cache.
    Returns ``(k, v, new_state, primed)``: ``primed`` is ``None`` after a write, else the
    (traced) flag for :func:`guard`; reading an unprimed cache is a ``ValueError`` where
    the flag is concrete. ``lead``: ``(N,)``, or ``()`` for one sequence's cache.
    """
    _check_sequences(name, state, lead, kv_heads, head_dim)
    check_state(name, state, {"k": lead + (None, kv_heads, head_dim),
                              "v": lead + (None, kv_heads, head_dim), "primed": ()})
    cache_k, cache_v, primed = state["k"], state["v"], state["primed"]
    if k is None:
        flag = _checks.concrete(primed)
        if flag is not None and not bool(flag):
            raise ValueError(f"{name}: the context's key/value cache is empty (state"
                             f"['primed'] is False): call apply with the context, (x, "
                             f"context) or (x, context, mask), first; later calls pass "
                             f"(x, None) or (x, None, mask) and read the cache")
        n = (1,) if not lead else ()
        return (cache_k.reshape(n + cache_k.shape).astype(dtype),
                cache_v.reshape(n + cache_v.shape).astype(dtype), state, primed)
    s, length = k.shape[1], cache_k.shape[-3]
    if s != length:
        raise ValueError(f"{name}: context has {s} positions, but the key/value cache of "
                         f"decode=True holds {length}: init the decode model with the "
                         f"context's shape (N, S, Fc) (pad a shorter context to S and mask "
                         f"the padding)")
    written = [a.reshape(cache_k.shape).astype(cache_k.dtype) for a in (k, v)]
    new = {"k": written[0], "v": written[1], "primed": jnp.ones((), jnp.bool_)}
    return (written[0].reshape(k.shape).astype(dtype), written[1].reshape(v.shape).astype(dtype),
            new, None)
