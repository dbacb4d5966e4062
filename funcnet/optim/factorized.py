"""Adafactor's factored second-moment estimate (optax's ``scale_by_factored_rms`` and
``FactoredState``, same fields and placeholder shapes, so states move between the two)."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from funcnet import _checks
from funcnet.optim.base import (
    Updates, abs_sq, cast_like, check_hyperparameter, check_nonnegative, check_state,
    check_trees_match, optimizer, promote_dtypes, safe_increment, split, zero_count)
from funcnet.optim.regularization import _check_params
from funcnet._describe import described

_map = jax.tree_util.tree_map


class FactoredState(NamedTuple):
    """Step count and the second-moment statistics (optax's ``FactoredState``).

    For a factored leaf of shape ``S``, ``v_row`` has ``S`` without its largest axis
    and ``v_col`` ``S`` without its second-largest, ``v`` is a ``(1,)`` placeholder; for
    any other leaf ``v`` has ``S`` and ``v_row``, ``v_col`` are ``(1,)``.
    """

    count: jax.Array  # int32 scalar
    v_row: Updates
    v_col: Updates
    v: Updates


def _decay_rate_pow(i, exponent=0.8):
    """Adafactor's second-moment decay ``1 - (i + 1)^(-exponent)`` at step ``i`` (0, 1,
    ...), in float32 as optax's (a heuristic schedule: its rounding, 6e-8 relative, is
    harmless, and the trajectories stay optax's to the last bit)."""
    t = jnp.asarray(i + 1).astype(jnp.float32)
    return 1 - t ** (-jnp.asarray(exponent).astype(t.dtype))


def _average(decay, new, old):
    """``decay * old + (1 - decay) * new`` with ``1 - decay`` formed in ``decay``'s own
    dtype (as optax: ``decay`` comes from ``decay_rate_fn``, float32 by default), each
    product in its operand's dtype, the sum in the promoted one."""
    decay = jnp.asarray(decay)
    dt = promote_dtypes(new.dtype, old.dtype)
    return ((cast_like(decay, old) * old).astype(dt)
            + (cast_like(1 - decay, new) * new).astype(dt))


def _factored_dims(shape, factored, min_dim_size_to_factor):
    """``(d1, d0)``: the second-largest and the largest axis (ties as ``np.argsort``;
    optax's names), or None when the leaf is not factored (rank < 2, or
    ``shape[d1] < min_dim_size_to_factor``)."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _factor_zeros(p, axis: int) -> jax.Array:
    """Zeros of ``p``'s shape without ``axis``, in ``p``'s dtype; for a concrete ``p``
    laid out with a ``NamedSharding``, split like the axes of ``p`` it keeps (the mean
    over ``axis`` of a sharded leaf is sharded so)."""
    shape = p.shape[:axis] + p.shape[axis + 1:]
    s = None if isinstance(p, jax.core.Tracer) else getattr(p, "sharding", None)
    if not isinstance(s, NamedSharding):
        return jnp.zeros(shape, p.dtype)
    spec = tuple(s.spec) + (None,) * (p.ndim - len(s.spec))
    return jnp.zeros(shape, p.dtype,
                     device=NamedSharding(s.mesh, PartitionSpec(*spec[:axis], *spec[axis + 1:])))


def _static_size(fn, value) -> int:
    """``min_dim_size_to_factor``: an int (or a concrete integer array, as
    ``inject_hyperparams`` passes it eagerly) >= 0; a traced one cannot fix the state's
    shapes."""
    name = "min_dim_size_to_factor"
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{fn}: {name} must be a static int (it fixes the shapes of the "
                        f"state), got a traced array")
    return _checks.static_int(fn, name, _checks.int_of_array(value), minimum=0)


@described
def scale_by_factored_rms(factored=True, decay_rate=0.8, step_offset=0,
                          min_dim_size_to_factor=128, epsilon=1e-30,
                          decay_rate_fn=_decay_rate_pow):
    """Scale by a factored estimate of the gradients' root mean square (Adafactor)::

        b_t = decay_rate_fn(t - step_offset, decay_rate)    (t = 0, 1, ...: 1 - (t+1)^-0.8)
        G = |g_t|^2 + epsilon
        factored leaf, axes d0 (largest) and d1 (second largest):
          R_t = b_t R_{t-1} + (1 - b_t) mean_{d0} G       (v_row: shape without d0)
          C_t = b_t C_{t-1} + (1 - b_t) mean_{d1} G       (v_col: shape without d1)
          u_t = g_t / sqrt(R_t / mean_{d1}(R_t)) / sqrt(C_t)   (R_t broadcast along d0,
                                                              C_t along d1)
        other leaves:  V_t = b_t V_{t-1} + (1 - b_t) G,   u_t = g_t / sqrt(V_t)

    A ``(n, m)`` matrix with ``n, m >= min_dim_size_to_factor`` keeps ``n + m`` numbers
    instead of ``n m``: the rank-1 estimate ``V ~ R C / mean(R)`` of the paper.

    Sharded parameters (``init`` of concrete arrays with a ``NamedSharding``): ``v`` is
    laid out like its parameter, and ``v_row`` / ``v_col`` like the axes of the parameter
    they keep (a kernel split ``P(None, "model")`` whose largest axis is 0 gets ``v_row``
    ``P("model")``), so ``fit(mesh=)`` and ``sharded_train_step`` keep each factor where
    its reduction lands instead of gathering it on every device each step.

    Args:
      factored: factor leaves of rank >= 2 (else every leaf keeps a full ``V``).
      decay_rate: the exponent passed to ``decay_rate_fn`` (>= 0; optax's 0.8).
      step_offset: subtracted from the step (fine-tuning restarts the schedule), >= 0;
        with the default ``decay_rate_fn`` a state whose count is below it gives NaN
        (``(t + 1)^-0.8`` of a number <= 0), as in optax.
      min_dim_size_to_factor: factor only when the two largest axes are at least this
        long (a static int >= 0).
      epsilon: >= 0, added to ``|g|^2``.
      decay_rate_fn: ``(step, decay_rate) -> b_t``; the default is Adafactor's
        ``1 - (step + 1)^(-decay_rate)``.

    Returns:
      An ``Optimizer`` with state :class:`FactoredState`; ``update`` requires ``params``
      (as optax).

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, https://arxiv.org/abs/1804.04235 (Algorithms 4 and 5).
    """
    fn = "scale_by_factored_rms"
    factored = _checks.static_bool(fn, "factored", factored)
    check_nonnegative(fn, "decay_rate", decay_rate)
    check_hyperparameter(fn, "step_offset", step_offset, 0.0)
    min_dim = _static_size(fn, min_dim_size_to_factor)
    check_nonnegative(fn, "epsilon", epsilon)
    _checks.check_callable(fn, "decay_rate_fn", decay_rate_fn, "(step, decay_rate) -> decay")

    def placeholder(p):
        return jnp.zeros((1,), p.dtype)

    def init_leaf(p):
        dims = _factored_dims(p.shape, factored, min_dim)
        if dims is None:
            return placeholder(p), placeholder(p), jnp.zeros_like(p)
        d1, d0 = dims
        return _factor_zeros(p, d0), _factor_zeros(p, d1), placeholder(p)

    def init(params):
        v_row, v_col, v = split(params, _map(init_leaf, params), 3)
        return FactoredState(count=zero_count(), v_row=v_row, v_col=v_col, v=v)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, FactoredState)
        want = jax.eval_shape(init, params)  # shapes only: (1,) placeholders, factors
        for field in ("v_row", "v_col", "v"):
            check_trees_match(fn, f"state.{field}", getattr(state, field),
                              f"init(params).{field}", getattr(want, field))
        offset = jnp.asarray(step_offset)
        if jnp.issubdtype(offset.dtype, jnp.integer):
            offset = offset.astype(state.count.dtype)  # an int32 step, as optax's
        dt = promote_dtypes(state.count.dtype, offset.dtype)
        decay = decay_rate_fn(state.count.astype(dt) - offset.astype(dt), decay_rate)

        def update_leaf(g, r, c, v, p):
            sq = abs_sq(g)
            sq = sq + jnp.asarray(epsilon).astype(sq.dtype)
            dims = _factored_dims(p.shape, factored, min_dim)
            dt = promote_dtypes(g.dtype, p.dtype)  # the updates' dtype, as optax
            if dims is None:
                v = _average(decay, sq, v).astype(p.dtype)
                return g.astype(dt) * v.astype(dt) ** -0.5, r, c, v
            d1, d0 = dims
            r = _average(decay, jnp.mean(sq, axis=d0), r).astype(p.dtype)
            c = _average(decay, jnp.mean(sq, axis=d1), c).astype(p.dtype)
            row = (r / jnp.mean(r, axis=d1 - 1 if d1 > d0 else d1, keepdims=True)) ** -0.5
            out = (g.astype(dt) * jnp.expand_dims(row, d0).astype(dt)
                   * jnp.expand_dims(c ** -0.5, d1).astype(dt))
            return out, r, c, v

        out, v_row, v_col, v = split(updates, _map(update_leaf, updates, state.v_row,
                                                   state.v_col, state.v, params), 4)
        return out, state._replace(count=safe_increment(state.count), v_row=v_row,
                                   v_col=v_col, v=v)

    return optimizer(init, update)
