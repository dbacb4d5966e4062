"""A bias computed per block: the op's ``bias_fn(bias_params, rows, cols)``.

:func:`funcnet.ops.dot_product_attention` adds ``bias_fn(bias_params, rows, cols)`` to the
logits of each block it computes (key blocks, or a sliding window's query blocks over their
span), ``rows`` ``(t,)`` and ``cols`` ``(s,)`` the int32 positions of the block's queries
and keys: the bias is never a ``(1, N, T, S)`` array, in the forward pass or as a
residual (the residual is ``bias_params``, e.g. T5's ``(num_buckets, N)`` table). The
backward pass recomputes a block's bias with ``jax.vjp`` and sums ``d bias_params`` over
the blocks in the scan's carry:

    d bias_params = sum_blocks vjp(bias_fn(., rows, cols))(sum_b dS[b, :, rows, cols])

(the cotangent summed over the batch, and over the heads where the bias has one). Only
the floating leaves of ``bias_params`` are differentiated; integer leaves (a decoding
offset) are constants with no cotangent.

``bias_fn`` must be pure and close over no traced value: a value to differentiate, or
one that a transformation batches, travels in ``bias_params`` (checked at trace time,
with the shape of what it returns).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._attention_plan import mask5, reduce_to
from funcnet.ops._mesh import match_varying, varying_axes

__all__: list[str] = []

_SIGNATURE = "bias_fn(bias_params, rows (t,) int32, cols (s,) int32)"


def check_bias_fn(fn: str, bias_fn, bias_params, q, k, bias_given_params: bool):
    """``bias_fn`` (``None`` or callable) and ``bias_params``: ``bias_fn`` evaluated at the
    full ``(T,)`` and ``(S,)`` positions (traced, nothing computed) must return a floating
    ``(N, T, S)``, ``(1, T, S)`` or ``(T, S)`` array and close over no traced value."""
    if bias_fn is None:
        if bias_given_params:
            raise ValueError(f"{fn}: bias_params is given but bias_fn is None; pass "
                             f"bias_fn={_SIGNATURE} that reads them")
        return
    _checks.check_callable(fn, "bias_fn", bias_fn, _SIGNATURE)
    qs, ks = _checks.shape_of(q), _checks.shape_of(k)
    t, n, s = qs[-3], qs[-2], ks[-3]
    rows = jax.ShapeDtypeStruct((t,), jnp.int32)
    cols = jax.ShapeDtypeStruct((s,), jnp.int32)
    closed, out = jax.make_jaxpr(bias_fn, return_shape=True)(bias_params, rows, cols)
    traced = [c for c in closed.consts if isinstance(c, jax.core.Tracer)]
    if traced:
        found = ", ".join(f"{_checks.dtype_of(c)}{_checks.shape_of(c)}" for c in traced[:3])
        raise TypeError(f"{fn}: bias_fn closes over {len(traced)} traced value(s) ({found}); "
                        "pass every array it reads that a transformation traces (jit, grad, "
                        "vmap) in bias_params, its first argument")
    _check_out(fn, out, n, t, s)


def _check_out(fn: str, out, n: int, t: int, s: int):
    """``out``, what ``bias_fn`` returned for ``t`` rows and ``s`` columns, is a floating
    ``(N|1, t, s)`` or ``(t, s)`` array."""
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(f"{fn}: {_SIGNATURE} must return one array, got "
                        f"{type(out).__name__}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{fn}: {_SIGNATURE} must return a floating array, got "
                        f"{out.dtype} with shape {tuple(out.shape)}")
    if tuple(out.shape) not in ((n, t, s), (1, t, s), (t, s)):
        raise ValueError(f"{fn}: {_SIGNATURE} returned shape {tuple(out.shape)} for t={t} "
                         f"rows and s={s} cols; expected (N, t, s) = {(n, t, s)}, (1, t, s) "
                         f"or (t, s): one bias per query head (N = {n}) or shared")


def block_bias(bias_fn, params, rows, cols, n: int, kh: int):
    """``bias_fn(params, rows, cols)`` as ``(1, K|1, G|1, t, s)`` (:func:`mask5`), in its
    dtype."""
    y = bias_fn(params, rows, cols)
    _check_out("dot_product_attention", y, n, rows.shape[0], cols.shape[0])
    return mask5(y.reshape((1,) * (4 - y.ndim) + y.shape), n, kh)


def _split(params):
    """``(leaves, treedef, indices of the floating leaves)``."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    diff = [i for i, a in enumerate(leaves) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]
    return leaves, tree, diff


def zero_grads(params, dtype):
    """The scan carry of ``d bias_params``: zeros for each floating leaf, in ``dtype`` or the
    leaf's wider dtype (``None`` without a ``bias_fn``)."""
    leaves, _, diff = _split(params)
    return [jnp.zeros_like(leaves[i], jnp.promote_types(leaves[i].dtype, dtype))
            for i in diff]


def add_grads(acc, bias_fn, params, rows, cols, ds, n: int, kh: int):
    """``acc`` (:func:`zero_grads`) plus one block's ``d bias_params``: the vjp of
    ``bias_fn(., rows, cols)`` at ``dS`` ``(B, K, G, t, s)`` summed over the batch (and the
    heads where the bias has one)."""
    leaves, tree, diff = _split(params)
    # in shard_map: the params and dS made to vary alike (the vjp's types must agree)
    axes = varying_axes(ds).union(*(varying_axes(leaves[i]) for i in diff))

    def of_floats(floats):
        full = list(leaves)
        for i, a in zip(diff, floats):
            full[i] = a
        return bias_fn(jax.tree_util.tree_unflatten(tree, full), rows, cols)

    y, vjp = jax.vjp(of_floats, [match_varying(leaves[i], axes) for i in diff])
    b5 = mask5(y.reshape((1,) * (4 - y.ndim) + y.shape), n, kh).shape
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
