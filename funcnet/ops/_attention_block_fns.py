"""Functions of a block's positions: the op's ``bias_fn(bias_params, rows, cols)`` and
``mask_fn(mask_params, rows, cols)``.

:func:`funcnet.ops.dot_product_attention` adds ``bias_fn``'s bias to the logits of each
block it computes (key blocks, or a sliding window's query blocks over their span), and
and-s ``mask_fn``'s mask into its attend mask, ``rows`` ``(t,)`` and ``cols`` ``(s,)`` the
int32 positions of the block's queries and keys: neither is ever a ``T x S`` array, in the
forward pass or as a residual (the residuals are the params: T5's ``(num_buckets, N)``
table, packed sequences' ``(B, T)`` segment ids). The backward pass recomputes a block's
bias with ``jax.vjp`` and sums ``d bias_params`` over the blocks in the scan's carry:

    d bias_params = sum_blocks vjp(bias_fn(., rows, cols))(dS[:, :, rows, cols])

(the cotangent summed over the axes where the bias has size 1: the batch, the heads). Only
the floating leaves of ``bias_params`` are differentiated; integer leaves (a decoding
offset) are constants with no cotangent. ``mask_params`` get none.

Each function must be pure and close over no traced value: a value to differentiate, or
one that a transformation traces or batches, travels in its params (checked at trace
time, with the dtype and shape of what it returns).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._attention_plan import mask5, reduce_to
from funcnet.ops._mesh import match_varying, varying_axes

__all__ = ["same_segment"]

_KIND = {"bias_fn": ("bias_params", "a floating", jnp.floating),
         "mask_fn": ("mask_params", "a boolean (True = attend)", jnp.bool_)}


def _signature(name: str) -> str:
    return f"{name}({_KIND[name][0]}, rows (t,) int32, cols (s,) int32)"


def check_block_fn(fn: str, name: str, f, params, q, k, params_given: bool):
    """``f``, the op's ``name`` (``"bias_fn"`` or ``"mask_fn"``, ``None`` or callable), and
    its params: ``f`` evaluated at the full ``(T,)`` and ``(S,)`` positions (traced,
    nothing computed) must return one array of its dtype and shape (:func:`_check_out`) and
    close over no traced value."""
    params_name = _KIND[name][0]
    if f is None:
        if params_given:
            raise ValueError(f"{fn}: {params_name} is given but {name} is None; pass "
                             f"{name}={_signature(name)} that reads them")
        return
    _checks.check_callable(fn, name, f, _signature(name))
    qs, ks = _checks.shape_of(q), _checks.shape_of(k)
    rows = jax.ShapeDtypeStruct((qs[-3],), jnp.int32)
    cols = jax.ShapeDtypeStruct((ks[-3],), jnp.int32)
    closed, out = jax.make_jaxpr(f, return_shape=True)(params, rows, cols)
    traced = [c for c in closed.consts if isinstance(c, jax.core.Tracer)]
    if traced:
        found = ", ".join(f"{_checks.dtype_of(c)}{_checks.shape_of(c)}" for c in traced[:3])
        raise TypeError(f"{fn}: {name} closes over {len(traced)} traced value(s) ({found}); "
                        "pass every array it reads that a transformation traces (jit, grad, "
                        f"vmap) in {params_name}, its first argument")
    _check_out(fn, name, out, qs[0] if len(qs) == 4 else 1, qs[-2], qs[-3], ks[-3])


def _check_out(fn: str, name: str, out, b: int, n: int, t: int, s: int):
    """``out``, what ``name`` returned for ``t`` rows and ``s`` columns, is one array of
    its dtype (floating for a bias, bool for a mask) and of shape ``(t, s)``, ``(N|1, t,
    s)`` or ``(B|1, N|1, t, s)`` (``B = 1`` for an unbatched ``q``)."""
    what, dtype = _KIND[name][1:]
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(f"{fn}: {_signature(name)} must return one array, got "
                        f"{type(out).__name__}")
    if not jnp.issubdtype(out.dtype, dtype):
        raise TypeError(f"{fn}: {_signature(name)} must return {what} array, got "
                        f"{out.dtype} with shape {tuple(out.shape)}")
    shape = tuple(out.shape)
    lead = shape[:-2]
    if (shape[-2:] != (t, s) or len(lead) > 2 or (lead and lead[-1] not in (1, n))
            or (len(lead) == 2 and lead[0] not in (1, b))):
        raise ValueError(f"{fn}: {_signature(name)} returned shape {shape} for t={t} rows "
                         f"and s={s} cols; expected (t, s), (N|1, t, s) or (B|1, N|1, t, s) "
                         f"with B = {b}, N = {n}")


def same_segment(segment_ids, rows, cols):
    """The ``mask_fn`` of packed sequences: query ``i`` attends key ``j`` of its segment.

    ``segment_ids`` (the op's ``mask_params``): integer ids ``(B, T)`` of the sequences
    packed in each row (self-attention, ``S = T``), or a pair ``(q_ids (B, T), kv_ids (B,
    S))``; for an unbatched ``q`` (or under ``jax.vmap`` over examples) ``(T,)`` or a pair
    ``((T,), (S,))``. Returns ``ids_q[.., rows] == ids_kv[.., cols]`` for the block's query
    positions ``rows`` ``(t,)`` and key positions ``cols`` ``(s,)``: ``(B, 1, t, s)``, or
    ``(t, s)`` unbatched. As Flax's ``make_attention_mask(ids, ids, jnp.equal)``, but
    evaluated per block by :func:`funcnet.ops.dot_product_attention` (``mask_fn=
    same_segment, mask_params=ids``): a step keeps the ids, not a ``(B, 1, T, S)`` mask.
    With ``causal`` a packed row equals its sequences attended one by one (tests).

    Raises (when the op traces it at the full ``(T,)``, ``(S,)`` positions):
      TypeError: ids that are not integers.
      ValueError: ids shorter than the positions (a gather past their end would read
        clamped ids silently).
    """
    q_ids, kv_ids = segment_ids if isinstance(segment_ids, (tuple, list)) else (
        segment_ids, segment_ids)
    q_ids, kv_ids = jnp.asarray(q_ids), jnp.asarray(kv_ids)
    for label, ids, positions in (("query", q_ids, rows), ("key", kv_ids, cols)):
        _checks.check_integer("same_segment", f"the {label} segment ids", ids,
                              "the sequence of each position")
        if ids.ndim < 1 or ids.shape[-1] < positions.shape[0]:
            raise ValueError(f"same_segment: the {label} segment ids have shape "
                             f"{tuple(ids.shape)}, fewer than the {positions.shape[0]} "
                             f"{label} positions; expected (B, {positions.shape[0]}) or "
                             f"({positions.shape[0]},): one id per position")
    if q_ids.ndim == 1:
        return q_ids[rows][:, None] == kv_ids[cols][None, :]
    return q_ids[:, rows][:, None, :, None] == kv_ids[:, cols][:, None, None, :]


def _rank4(y):
    return y.reshape((1,) * (4 - y.ndim) + y.shape)


def block_values(name: str, f, params, rows, cols, b: int, n: int, kh: int):
    """``f(params, rows, cols)`` (the op's ``name``) as ``(b|1, K|1, G|1, t, s)``
    (:func:`mask5`), in its dtype."""
    y = f(params, rows, cols)
    _check_out("dot_product_attention", name, y, b, n, rows.shape[0], cols.shape[0])
    return mask5(_rank4(y), n, kh)


def _split(params):
    """``(leaves, treedef, indices of the floating leaves)``."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    diff = [i for i, a in enumerate(leaves) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]
    return leaves, tree, diff


def zero_grads(params, dtype):
    """The scan carry of ``d bias_params``: zeros for each floating leaf, in ``dtype`` or the
    leaf's wider dtype (``[]`` without params)."""
    leaves, _, diff = _split(params)
    return [jnp.zeros_like(leaves[i], jnp.promote_types(leaves[i].dtype, dtype))
            for i in diff]


def add_grads(acc, bias_fn, params, rows, cols, ds, n: int, kh: int):
    """``acc`` (:func:`zero_grads`) plus one block's ``d bias_params``: the vjp of
    ``bias_fn(., rows, cols)`` at ``dS`` ``(B, K, G, t, s)`` summed over the axes where the
    bias has size 1."""
    leaves, tree, diff = _split(params)
    # in shard_map: the params and dS made to vary alike (the vjp's types must agree)
    axes = varying_axes(ds).union(*(varying_axes(leaves[i]) for i in diff))

    def of_floats(floats):
        full = list(leaves)
        for i, a in zip(diff, floats):
            full[i] = a
        return bias_fn(jax.tree_util.tree_unflatten(tree, full), rows, cols)

    y, vjp = jax.vjp(of_floats, [match_varying(leaves[i], axes) for i in diff])
    b5 = mask5(_rank4(y), n, kh).shape
    (grads,) = vjp(match_varying(reduce_to(ds, b5).reshape(y.shape).astype(y.dtype), axes))
    return [a + g.astype(a.dtype) for a, g in zip(acc, grads)]


def cotangent(params, grads):
    """The cotangent of ``bias_params`` from the summed ``grads`` (:func:`add_grads`): each
    floating leaf's in its dtype, ``None`` (zero) for the others."""
    leaves, tree, diff = _split(params)
    out = [None] * len(leaves)
    for i, g in zip(diff, grads):
        out[i] = g.astype(leaves[i].dtype)
    return jax.tree_util.tree_unflatten(tree, out)
