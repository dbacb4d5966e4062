"""The compiled pieces of ``fit``: a guarded step, an epoch as one ``lax.scan``, one step.

Epoch ``e`` (0-based) draws its keys from :func:`funcnet.data.epoch_keys` ``(key, e)``: a
shuffling key (the permutation of :func:`funcnet.data.epoch_batches`) and a dropout key,
folded with the step index ``i`` for step ``i``. The scan path (the training set on the
device, the whole epoch one jitted call) and the per-step path (one jitted call per
batch) run the same steps on the same batches with the same keys.

Every step is *guarded*: when its loss or the new params / state / optimizer state hold
a NaN or an infinity, the update is dropped and every later step of the epoch leaves the carry
unchanged; the carry's ``bad`` counter records the 1-based index of that first step. So
``fit`` sees the last finite params, state and optimizer state after the epoch, and
never checkpoints non-finite ones. The cost is one reduction and one select per step.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import data
from funcnet.train import sharding
from funcnet.train._cache import compile_cache
from funcnet.train.metrics import KEPT
from funcnet.train.step import batch_kept, train_step

__all__ = ["all_finite", "compiled"]

_tree_map = jax.tree_util.tree_map


def all_finite(tree) -> jax.Array:
    """A bool scalar: every floating leaf of ``tree`` is free of NaN and infinities.

    Leaves of one shape share one reduction (``all(isfinite(p) & isfinite(mu) & ...)``,
    one fused pass over them): the params and an Adam state's two moments of each layer
    are one reduction, not three, which on XLA:CPU is what a small model's step pays for
    (each reduction is a thunk of a few microseconds). One reduction over the concatenated
    leaves instead costs a copy: ``fit``'s guarded step of a 130k-parameter MLP then took
    3.3 ms instead of 0.4 ms.
    """
    return finite_leaves((a, None) for a in jax.tree_util.tree_leaves(tree))


def finite_leaves(pairs) -> jax.Array:
    """:func:`all_finite` of ``(new, old)`` leaf pairs, grouped by shape alike: where
    ``old`` is not ``None`` (the value ``new`` replaces), an element that was already
    non-finite may stay so, and only values that *became* non-finite count (an optimizer
    state can hold one on purpose: ``reduce_on_plateau``'s best loss starts at ``inf``)."""
    groups: dict = {}
    for a, b in pairs:
        if jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            ok = jnp.isfinite(a) if b is None else jnp.isfinite(a) | ~jnp.isfinite(b)
            groups.setdefault(jnp.shape(a), []).append(ok)
    flags = [jnp.all(functools.reduce(jnp.logical_and, g)) for g in groups.values()]
    return functools.reduce(jnp.logical_and, flags, jnp.array(True))


@compile_cache(maxsize=32)
def compiled(model, opt, loss_fn, metrics_fn, compute_dtype, batch_size, mesh,
             layout=None):
    """``(jitted epoch scan, jitted guarded step)`` for one configuration (cached).

    - ``epoch_scan(params, state, opt_state, x, y, key, epoch) -> ((params, state,
      opt_state, counters), metrics)`` with ``metrics`` leaves of shape ``(num_batches,)``;
    - ``one_step(params, state, opt_state, counters, x, y, dropout_key) -> ((params,
      state, opt_state, counters), metrics)``.

    ``counters`` is the int32 pair ``(bad, i)``: the 1-based first non-finite step (0:
    none) and the index of the next step (one array rather than two: every argument and
    result of a jitted call costs host time, ~1 µs, on the per-step path). Both donate
    params, state and optimizer state; the step donates ``counters`` too. With a
    ``mesh`` every input and output is replicated except the batches, split over the
    mesh's devices, and the leaves of params / state / optimizer state that ``layout``
    (:func:`funcnet.train.sharding.layout`; ``None``: all replicated) lays out
    otherwise, which keep their sharding in and out.
    """
    step = train_step(model, opt, loss_fn, metrics_fn=metrics_fn, compute_dtype=compute_dtype)

    def guarded(params, state, opt_state, counters, x, y, dropout_key):
        bad, i = counters[0], counters[1]
        new_p, new_s, new_o, metrics = step(params, state, opt_state, x, y,
                                            jax.random.fold_in(dropout_key, i))
        kept = batch_kept(y)
        if kept is not None and len(metrics) > 1:   # the step's weight in the epoch metrics
            metrics = {**metrics, KEPT: kept}
        # the optimizer state too: a NaN gradient can enter an accumulator (accumulate,
        # MultiSteps) on a step that leaves the params unchanged; a scalar it held
        # non-finite already may stay so (reduce_on_plateau's inf best loss; params and
        # state start finite; for arrays, reading the old values cost 5 % of a small MLP's
        # step: benchmarks/fit_guard.py)
        checked = jax.tree_util.tree_leaves((new_p, new_s, metrics["loss"]))
        ok = (bad == 0) & finite_leaves(
            [(a, None) for a in checked]
            + [(a, b if jnp.size(a) == 1 else None) for a, b in
               zip(jax.tree_util.tree_leaves(new_o), jax.tree_util.tree_leaves(opt_state))])
        kept = _tree_map(lambda n, o: jnp.where(ok, n, o), (new_p, new_s, new_o),
                         (params, state, opt_state))
        bad = jnp.where((bad == 0) & ~ok, i + 1, bad)
        return (*kept, jnp.stack([bad, i + 1])), metrics

    def epoch_scan(params, state, opt_state, x, y, key, epoch):
        shuffle_key, dropout_key = data.epoch_keys(key, epoch)
        xb, yb = data.epoch_batches(x, y, batch_size, shuffle_key)
        if mesh is not None:   # each step's batch split over the devices
            rows = sharding.batch_sharding(mesh, leading=1)
            xb, yb = (lax.with_sharding_constraint(a, rows) for a in (xb, yb))

        def body(carry, batch):
            return guarded(*carry, *batch, dropout_key)

        counters = jnp.zeros((2,), jnp.int32)
        (p, s, o, counters), metrics = lax.scan(body, (params, state, opt_state, counters),
                                                (xb, yb))
        return (p, s, o, counters), metrics

    if mesh is None:
        return (jax.jit(epoch_scan, donate_argnums=(0, 1, 2)),
                jax.jit(guarded, donate_argnums=(0, 1, 2, 3)))
    rep, rows = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    carry = (rep,) * 3 if layout is None else jax.tree_util.tree_unflatten(*layout)
    out = ((*carry, rep), rep)
    return (jax.jit(epoch_scan, donate_argnums=(0, 1, 2),
                    in_shardings=(*carry, rep, rep, rep, rep), out_shardings=out),
            jax.jit(guarded, donate_argnums=(0, 1, 2, 3),
                    in_shardings=(*carry, rep, rows, rows, rep), out_shardings=out))
