"""Coin-betting optimizers: COCOB (``optax.contrib``'s ``cocob``, ``scale_by_cocob``) and
Mechanic (``optax.contrib.mechanize``), which bet a "wealth" on the sign of the
gradients instead of following a learning rate.

Names, signatures, defaults and state classes are optax 0.2.8's (``COCOBState``,
``MechanicState``); both states copy the initial parameters, and keep their dtypes.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    OptState, Updates, cast_like, check_hyperparameter, check_nonnegative, check_state,
    optimizer, promote_dtypes, safe_increment, select_tree, split, tree_dtype, zero_count,
    zeros_like)
from funcnet.optim.combine import call_update
from funcnet.optim.contrib_common import chain_under, times, tree_vdot
from funcnet.optim.regularization import _check_params, add_decayed_weights, squared_norm
from funcnet.optim.transforms import scale_by_learning_rate
from funcnet._describe import described

_map = jax.tree_util.tree_map


# -------------------------------------------------------------------------- COCOB


class COCOBState(NamedTuple):
    """optax's ``optax.contrib.COCOBState``, per leaf: the initial parameters ``x_0``,
    the negated sum of gradients ``C``, the largest gradient seen ``L`` (``eps`` at
    first), the sum of absolute gradients ``G`` and the reward ``R``."""

    init_particles: Updates
    cumulative_gradients: Updates
    scale: Updates
    subgradients: Updates
    reward: Updates


@described
def scale_by_cocob(alpha=100.0, eps=1e-8):
    """COCOB-Backprop's step (Orabona & Tommasi, 2017, Algorithm 2), optax's
    ``optax.contrib.scale_by_cocob``, elementwise::

        L_t = max(L_{t-1}, |g_t|),   G_t = G_{t-1} + |g_t|,   C_t = C_{t-1} - g_t
        R_t = max(R_{t-1} - g_t (x_t - x_0), 0)
        x_{t+1} = x_0 + C_t / (L_t max(G_t + L_t, alpha L_t)) (L_t + R_t)

    and the update is ``x_{t+1} - x_t`` (already descent).

    Args:
      alpha: > 0, bounds the fraction of the wealth bet (100).
      eps: > 0, the initial ``L`` (no division by zero).

    Returns:
      An ``Optimizer`` with state :class:`COCOBState`; ``update`` needs ``params``.

    References:
      Orabona, Tommasi, "Training Deep Networks without Learning Rates Through Coin
      Betting", NeurIPS 2017, https://arxiv.org/abs/1705.07795.
    """
    fn = "scale_by_cocob"
    check_hyperparameter(fn, "alpha", alpha, 0.0, low_inclusive=False)
    check_hyperparameter(fn, "eps", eps, 0.0, low_inclusive=False)

    def init(params):
        zeros = zeros_like(params)
        return COCOBState(init_particles=_map(jnp.array, params), cumulative_gradients=zeros,
                          scale=_map(lambda x: cast_like(eps, x) * jnp.ones_like(x), params),
                          subgradients=zeros, reward=zeros)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, COCOBState, updates, "scale")

        def leaf(g, p, p0, c, l_, g_abs, r):
            dt = promote_dtypes(g.dtype, p.dtype, l_.dtype)
            g, p, p0 = g.astype(dt), p.astype(dt), p0.astype(dt)
            l_ = jnp.maximum(l_.astype(dt), jnp.abs(g))
            g_abs = g_abs.astype(dt) + jnp.abs(g)
            r = jnp.maximum(r.astype(dt) - g * (p - p0), 0)
            c = c.astype(dt) - g
            bet = c / (l_ * jnp.maximum(g_abs + l_, cast_like(alpha, l_) * l_)) * (l_ + r)
            return -p + (p0 + bet), c, l_, g_abs, r

        u, c, l_, g_abs, r = split(updates, _map(
            leaf, updates, params, state.init_particles, state.cumulative_gradients,
            state.scale, state.subgradients, state.reward), 5)
        keep = lambda new, old: _map(lambda a, b: a.astype(b.dtype), new, old)  # noqa: E731
        return u, state._replace(
            cumulative_gradients=keep(c, state.cumulative_gradients),
            scale=keep(l_, state.scale), subgradients=keep(g_abs, state.subgradients),
            reward=keep(r, state.reward))

    return optimizer(init, update)


@described
def cocob(learning_rate=1.0, alpha=100.0, eps=1e-8, weight_decay=0.0, mask=None):
    """COCOB, optax's ``optax.contrib.cocob``: ``chain(add_decayed_weights(weight_decay,
    mask), scale_by_learning_rate(learning_rate, flip_sign=False), scale_by_cocob(alpha,
    eps))``: the (decayed) gradients, times ``learning_rate``, are COCOB's gradients;
    see :func:`scale_by_cocob`.

    Args:
      learning_rate: >= 0, a scalar array or a schedule: scales the gradients (1).
      alpha, eps: see :func:`scale_by_cocob`.
      weight_decay: >= 0 (a schedule too), an L2 term on the gradients.
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    References:
      Orabona & Tommasi, NeurIPS 2017, https://arxiv.org/abs/1705.07795.
    """
    return chain_under("cocob", lambda: add_decayed_weights(weight_decay, mask),
                       lambda: scale_by_learning_rate(learning_rate, flip_sign=False),
                       lambda: scale_by_cocob(alpha, eps))


# ----------------------------------------------------------------------- Mechanic


class MechanicState(NamedTuple):
    """optax's ``optax.contrib.MechanicState``: the base optimizer's state, the count
    (int32), the per-beta statistics ``r, m, v, s`` (shape ``(num_betas,)``, the
    parameters' lowest dtype) and the initial parameters ``x0``."""

    base_optimizer_state: OptState
    count: jax.Array
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: Updates


@described
def mechanize(base_optimizer, weight_decay=1e-2, eps=1e-8, s_init=1e-6, num_betas=6):
    """Mechanic (Cutkosky, Defazio, Mehta, 2023), optax's ``optax.contrib.mechanize``:
    learns the scale ``sum(s)`` of the base optimizer's updates by coin betting, with
    ``betas_i = 1 - 0.1^i`` (``i = 1..num_betas``). With ``d_t`` the base update and
    ``S = sum(s_{t-1})``::

        g'  = g + weight_decay S ||g|| / (||x|| + eps) x
        D   = (x_0 - x) / (S + eps),     h = <g', D>
        m_t = max(betas m, |h| + eps),   v_t = betas^2 v + h^2
        r_t = betas r + clip(h, -m_{t-1}, m_{t-1}) s_{t-1}
        s_t = (s_init / num_betas m_t + max(r_t, 0)) / (sqrt(v_t) + eps)
        x_{t+1} = x_0 - sum(s_t) (D - d_t)

    ``x_0`` is the parameters at the first update. Extra arguments of ``update`` go to
    the base optimizer.

    Args:
      base_optimizer: an optimizer (funcnet's or optax's), e.g. ``adam(1.0)``.
      weight_decay: >= 0, Mechanic's own decay (not the base optimizer's).
      eps: >= 0.
      s_init: > 0, the initial scales.
      num_betas: int >= 1.

    Returns:
      An ``Optimizer`` with state :class:`MechanicState`; ``update`` needs ``params``.

    References:
      Cutkosky, Defazio, Mehta, "Mechanic: A Learning Rate Tuner", NeurIPS 2023,
      https://arxiv.org/abs/2306.00144.
    """
    fn = "mechanize"
    _checks.check_optimizer(fn, "base_optimizer", base_optimizer)
    check_nonnegative(fn, "weight_decay", weight_decay)
    check_nonnegative(fn, "eps", eps)
    check_hyperparameter(fn, "s_init", s_init, 0.0, low_inclusive=False)
    num_betas = _checks.static_int(fn, "num_betas", num_betas, minimum=1)

    def init(params):
        dt = tree_dtype(fn, params, "lowest")
        zeros = jnp.zeros([num_betas], dt)
        return MechanicState(
            base_optimizer_state=base_optimizer.init(params), count=zero_count(), r=zeros,
            m=zeros, v=zeros, s=jnp.ones([num_betas], dt) * cast_like(s_init, zeros),
            x0=_map(jnp.array, params))

    def update(updates, state, params=None, **extra_args):
        _check_params(fn, updates, params)
        check_state(fn, state, MechanicState, updates, "x0")
        with _checks.context(fn):
            base_updates, base_state = call_update(
                base_optimizer, updates, state.base_optimizer_state, params, extra_args)
        x0 = select_tree(state.count == 0, params, state.x0)
        st = state.s
        s_sum = jnp.sum(st)
        grad_norm = jnp.sqrt(squared_norm(updates))
        param_norm = jnp.sqrt(squared_norm(params))
        decay = (cast_like(weight_decay, s_sum) * s_sum * grad_norm.astype(st.dtype)
                 / (param_norm.astype(st.dtype) + cast_like(eps, st)))
        grads = _map(lambda g, p: g + times(decay, p).astype(promote_dtypes(
            g.dtype, p.dtype)), updates, params)
        denom = s_sum + cast_like(eps, st)

        def moved(p, p0):        # (x_0 - x) / (S + eps)
            dt = promote_dtypes(p.dtype, p0.dtype, denom.dtype)
            return (p0.astype(dt) - p.astype(dt)) / denom.astype(dt)

        delta_prev = _map(moved, params, x0)
        delta = _map(lambda dp, u: dp - u.astype(dp.dtype), delta_prev, base_updates)
        h = tree_vdot(grads, delta_prev).astype(st.dtype)
        clipped_h = jnp.clip(h, -state.m, state.m)
        betas = jnp.array([1.0 - 0.1 ** i for i in range(1, num_betas + 1)], st.dtype)
        m = jnp.maximum(betas * state.m, jnp.abs(h) + cast_like(eps, st))
        v = betas ** 2 * state.v + h ** 2
        r = betas * state.r + clipped_h * st
        wealth = cast_like(s_init / num_betas, st) * m + jnp.maximum(0.0, r)
        s = wealth / (jnp.sqrt(v) + cast_like(eps, st))
        total = jnp.sum(s)
        out = _map(lambda p0, d, p: (p0 - times(total, d)) - p.astype(
            promote_dtypes(p.dtype, d.dtype)), x0, delta, params)
        return out, state._replace(base_optimizer_state=base_state,
                                   count=safe_increment(state.count), r=r, m=m, v=v, s=s,
                                   x0=x0)

    return optimizer(init, update)
