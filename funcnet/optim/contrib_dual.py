"""Dual-averaging optimizers of Defazio et al.: D-Adaptation's AdamW
(``optax.contrib.dadapt_adamw``) and MADGRAD (``optax.contrib``'s ``madgrad``,
``scale_by_madgrad``).

Names, signatures, defaults and state classes are optax 0.2.8's (``DAdaptAdamWState``,
``MadgradState``); the states keep their dtypes. Prodigy, D-Adaptation's faster
variant, is in :mod:`.adaptive_contrib`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet.optim.adaptive import keep_dtypes
from funcnet.optim.adaptive_more import _check_betas
from funcnet.optim.base import (
    Updates, bias_correction, cast_like, check_decay, check_nonnegative,
    check_scalar_or_schedule, check_hyperparameter, check_state, moment, one_minus, optimizer,
    promote_dtypes, safe_increment, scheduled, split, tree_dtype, zero_count, zeros_like)
from funcnet.optim.contrib_common import chain_under, times, tree_l1, tree_vdot
from funcnet.optim.regularization import _check_params, add_decayed_weights
from funcnet._describe import described

_map = jax.tree_util.tree_map


# ------------------------------------------------------------------- D-Adaptation


class DAdaptAdamWState(NamedTuple):
    """optax's ``optax.contrib.DAdaptAdamWState``: Adam's moments of ``dlr g`` and
    ``g``, the weighted sum ``s`` of ``dlr g``, the distance estimate ``d`` and the
    numerator's weighted sum (scalars of the parameters' lowest dtype), the count."""

    exp_avg: Updates
    exp_avg_sq: Updates
    grad_sum: Updates
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


def _pair(fn, betas):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"{fn}: betas must be a pair (b1, b2), got {betas!r:.60}")
    _check_betas(fn, *betas)
    return betas


@described
def dadapt_adamw(learning_rate=1.0, betas=(0.9, 0.999), eps=1e-8, estim_lr0=1e-6,
                 weight_decay=0.0):
    """AdamW with D-Adaptation (Defazio & Mishchenko, 2023), optax's
    ``optax.contrib.dadapt_adamw``: the step ``d`` estimates the distance to the
    solution. With ``sched = learning_rate(t)`` (a schedule around 1), ``r = sqrt(b2)``,
    ``dlr = d sched sqrt(1 - b2^t) / (1 - b1^t)`` and ``d = d_{t-1}``::

        N_t = r N + (1 - r) dlr <g, s_{t-1} / (sqrt(v_{t-1}) + eps)>
        m_t = b1 m + (1 - b1) dlr g,     v_t = b2 v + (1 - b2) g^2
        s_t = r s + (1 - r) dlr g
        d_t = max(d, N_t / ((1 - r) sum |s_t|))
        u_t = -wd dlr x - m_t / (sqrt(v_t) + eps)

    The update is already descent (no learning-rate block follows).

    Args:
      learning_rate: >= 0, a scalar array or a schedule (the multiplier of ``d``).
      betas: ``(b1, b2)``, each in [0, 1).
      eps: >= 0.
      estim_lr0: > 0, ``d_0``, the initial under-estimate.
      weight_decay: >= 0, decoupled (AdamW's).

    Returns:
      An ``Optimizer`` with state :class:`DAdaptAdamWState`; ``update`` needs ``params``.

    References:
      Defazio, Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023,
      https://arxiv.org/abs/2301.07733.
    """
    fn = "dadapt_adamw"
    check_scalar_or_schedule(fn, "learning_rate", learning_rate)
    beta1, beta2 = _pair(fn, betas)
    check_nonnegative(fn, "eps", eps)
    check_hyperparameter(fn, "estim_lr0", estim_lr0, 0.0, low_inclusive=False)
    check_nonnegative(fn, "weight_decay", weight_decay)

    def init(params):
        dt = tree_dtype(fn, params, "lowest")
        return DAdaptAdamWState(
            exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params),
            grad_sum=zeros_like(params), estim_lr=jnp.asarray(estim_lr0).astype(dt),
            numerator_weighted=jnp.zeros((), dt), count=zero_count())

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, DAdaptAdamWState, updates, "exp_avg")
        d, nw = state.estim_lr, state.numerator_weighted
        count = safe_increment(state.count)
        wide = jnp.zeros((), promote_dtypes(jnp.result_type(float), d.dtype))
        sb2 = jnp.sqrt(jnp.asarray(beta2).astype(wide.dtype))
        bc = bias_correction(beta2, count, wide) ** 0.5 / bias_correction(beta1, count, wide)
        sched = jnp.asarray(scheduled(fn, "learning_rate", learning_rate,
                                      state.count)).astype(wide.dtype)
        dlr = (d.astype(wide.dtype) * sched * bc).astype(nw.dtype)
        acc = tree_vdot(updates, _map(
            lambda s, v: s / (jnp.sqrt(v) + cast_like(eps, v)), state.grad_sum,
            state.exp_avg_sq))

        def leaf(g, m, v, s):
            dg = times(dlr, g)
            return (moment(beta1, dg, m), moment(beta2, g, v, squared=True),
                    moment(sb2, dg, s))

        m, v, s = split(updates, _map(leaf, updates, state.exp_avg, state.exp_avg_sq,
                                      state.grad_sum), 3)
        one_minus_r = (1 - sb2).astype(nw.dtype)
        nw = (sb2.astype(nw.dtype) * nw + one_minus_r * dlr * acc.astype(nw.dtype))
        d_new = jnp.maximum(d, (nw / (one_minus_r * tree_l1(s).astype(nw.dtype))).astype(
            d.dtype))

        def direction(m, v, p):
            dt = promote_dtypes(m.dtype, p.dtype)
            return (times(cast_like(-weight_decay, dlr) * dlr, p)
                    - (m / (jnp.sqrt(v) + cast_like(eps, v))).astype(dt))

        out = _map(direction, m, v, params)
        return out, state._replace(
            exp_avg=keep_dtypes(m, state.exp_avg), exp_avg_sq=keep_dtypes(v, state.exp_avg_sq),
            grad_sum=keep_dtypes(s, state.grad_sum), estim_lr=d_new, numerator_weighted=nw,
            count=count)

    def current(state):
        check_state(fn, state, DAdaptAdamWState)
        return jnp.asarray(scheduled(fn, "learning_rate", learning_rate, state.count))

    return optimizer(init, update, current)


# ------------------------------------------------------------------------ MADGRAD


class MadgradState(NamedTuple):
    """optax's ``optax.contrib.MadgradState``: the count (int32), the weighted sums of
    squared gradients ``G`` and of gradients ``s``, and the initial parameters
    ``x0``."""

    count: jax.Array
    grad_sum_sq: Updates
    s: Updates
    x0: Updates


@described
def scale_by_madgrad(learning_rate, momentum=0.9, eps=1e-6):
    """MADGRAD's step (Defazio & Jelassi, 2021), optax's
    ``optax.contrib.scale_by_madgrad``: momentumized dual averaging with a cube-root
    preconditioner. With ``lambda_k = (lr_k + eps) sqrt(k + 1)`` (``k`` the count)::

        G_{k+1} = G_k + lambda_k g_k^2,      s_{k+1} = s_k + lambda_k g_k
        z_{k+1} = x_0 - s_{k+1} / (G_{k+1}^(1/3) + eps)
        x_{k+1} = (1 - momentum) z_{k+1} + momentum x_k

    and the update is ``x_{k+1} - x_k`` (already descent: no learning-rate block
    follows). ``lambda_k`` is formed in the parameters' precision (optax takes the
    square root of the int32 count in float32, so float64 runs agree with optax's to
    about 1e-6: 4.5e-7 after 8 steps in test_optim_contrib2_optax.py).

    Args:
      learning_rate: >= 0, a scalar array or a schedule of the count.
      momentum: in [0, 1).
      eps: >= 0, added to the learning rate and to the cube root.

    Returns:
      An ``Optimizer`` with state :class:`MadgradState`; ``update`` needs ``params``.

    References:
      Defazio, Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual
      Averaged Gradient Method for Stochastic Optimization", JMLR 2022,
      https://arxiv.org/abs/2101.11075.
    """
    fn = "scale_by_madgrad"
    check_scalar_or_schedule(fn, "learning_rate", learning_rate)
    check_decay(fn, "momentum", momentum)
    check_nonnegative(fn, "eps", eps)

    def init(params):
        return MadgradState(count=zero_count(), grad_sum_sq=zeros_like(params),
                            s=zeros_like(params), x0=_map(jnp.array, params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, MadgradState, updates, "s")
        lr = jnp.asarray(scheduled(fn, "learning_rate", learning_rate, state.count))
        k = state.count

        def leaf(g, gsq, s, x0, x):
            dt = promote_dtypes(g.dtype, x.dtype, gsq.dtype, x0.dtype)
            wide = promote_dtypes(dt, jnp.float32)
            lam = ((lr.astype(wide) + jnp.asarray(eps).astype(wide))
                   * jnp.sqrt((k + 1).astype(wide)))
            gw = g.astype(promote_dtypes(wide, g.dtype))
            gsq = gsq + (lam * gw * gw).astype(g.dtype).astype(gsq.dtype)
            s = s + (lam * gw).astype(g.dtype).astype(s.dtype)
            z = x0.astype(dt) - s.astype(dt) / (jnp.cbrt(gsq.astype(dt)) + cast_like(eps, g)
                                                .astype(dt))
            x = x.astype(dt)
            return one_minus(momentum, x) * z + cast_like(momentum, x) * x - x, gsq, s

        u, gsq, s = split(updates, _map(leaf, updates, state.grad_sum_sq, state.s,
                                        state.x0, params), 3)
        return u, state._replace(count=safe_increment(k), grad_sum_sq=gsq, s=s)

    def current(state):
        check_state(fn, state, MadgradState)
        return jnp.asarray(scheduled(fn, "learning_rate", learning_rate, state.count))

    return optimizer(init, update, current)


@described
def madgrad(learning_rate, momentum=0.9, weight_decay=0.0, eps=1e-6):
    """MADGRAD, optax's ``optax.contrib.madgrad``: ``chain(add_decayed_weights(
    weight_decay), scale_by_madgrad(learning_rate, momentum, eps))`` (an L2 term on the
    gradients); see :func:`scale_by_madgrad`.

    References:
      Defazio & Jelassi, https://arxiv.org/abs/2101.11075.
    """
    return chain_under("madgrad", lambda: add_decayed_weights(weight_decay),
                       lambda: scale_by_madgrad(learning_rate, momentum, eps))
