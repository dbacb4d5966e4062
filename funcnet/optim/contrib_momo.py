"""MoMo: momentum models with a Polyak-type step size (``optax.contrib``'s ``momo`` and
``momo_adam``). ``update`` needs ``value=`` the (batch) loss, which
:func:`funcnet.train.fit`'s step passes.

Names, signatures, defaults and state classes are optax 0.2.8's (``MomoState``,
``MomoAdamState``); the scalars of a state have the parameters' lowest dtype and keep
it.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.adaptive import keep_dtypes
from funcnet.optim.adaptive_more import _check_betas
from funcnet.optim.base import (
    Updates, bias_correction, cast_like, check_decay, check_hyperparameter,
    check_nonnegative, check_scalar_or_schedule, check_state, moment, optimizer,
    promote_dtypes, safe_increment, scheduled, tree_dtype, zero_count, zeros_like)
from funcnet.optim.contrib_common import check_value, times, tree_vdot
from funcnet.optim.regularization import _check_params
from funcnet._describe import described

_map = jax.tree_util.tree_map
_TINY = float(np.finfo(float).eps)     # optax's jnp.finfo(float).eps (float64's)


class MomoState(NamedTuple):
    """optax's ``optax.contrib.MomoState``: the momentum ``d``, the averaged loss
    ``f_bar`` and ``gamma = avg <g, x>`` and the lower bound (scalars of the parameters'
    lowest dtype), the count (int32)."""

    exp_avg: Updates
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


class MomoAdamState(NamedTuple):
    """optax's ``optax.contrib.MomoAdamState``: Adam's moments, then as
    :class:`MomoState`."""

    exp_avg: Updates
    exp_avg_sq: Updates
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


def _init_scalars(fn, params, lower_bound):
    dt = tree_dtype(fn, params, "lowest")
    return jnp.zeros((), dt), jnp.zeros((), dt), jnp.asarray(lower_bound).astype(dt)


def _polyak_step(lb, barf, gamma, iprod, norm, alpha, weight_decay, lower_bound,
                 adapt_lower_bound, bc1=1.0):
    """MoMo's step ``tau``, the lower bound it used and the next one (``bc1`` is
    MoMo-Adam's bias correction, 1 for MoMo)."""
    bc1 = jnp.asarray(bc1).astype(barf.dtype)
    lower = cast_like(lower_bound, barf)
    wd = 1 + alpha * cast_like(weight_decay, barf)
    if adapt_lower_bound:
        cap = wd * (barf - gamma) + iprod
        lb = jnp.where(cap < wd * bc1 * lb, jnp.maximum(cap / (2 * bc1 * wd), lower), lb)
    t1 = jnp.maximum(wd * (barf - bc1 * lb - gamma) + iprod, 0.0) / norm
    t1 = jnp.where(norm <= _TINY, jnp.zeros_like(t1), t1)
    tau = jnp.minimum(alpha / bc1, t1)
    new_lb = lb
    if adapt_lower_bound:
        new_lb = jnp.maximum(((barf + iprod - gamma) - tau * norm / 2) / bc1, lower)
    return tau, new_lb


def _check_momo(fn, learning_rate, lower_bound, weight_decay, adapt_lower_bound):
    check_scalar_or_schedule(fn, "learning_rate", learning_rate)
    check_hyperparameter(fn, "lower_bound", lower_bound)
    check_nonnegative(fn, "weight_decay", weight_decay)
    return _checks.static_bool(fn, "adapt_lower_bound", adapt_lower_bound)


def _decayed(alpha, weight_decay, p, step):
    """``-(alpha wd) / (1 + alpha wd) p - step`` in the promoted dtype."""
    a = alpha * cast_like(weight_decay, alpha)
    dt = promote_dtypes(p.dtype, step.dtype)
    return times(-a / (1 + a), p).astype(dt) - step.astype(dt)


@described
def momo(learning_rate=1.0, beta=0.9, lower_bound=0.0, weight_decay=0.0,
         adapt_lower_bound=False):
    """MoMo (Schaipp et al., 2023), optax's ``optax.contrib.momo``: SGD with momentum
    and the step ``tau = min(lr, Polyak's step of a model of the loss)``. With
    ``b = 0`` at the first step and ``beta`` after, ``f`` the loss (``value=``),
    ``a = lr wd``::

        d_t = b d + (1 - b) g,    f_bar = b f_bar + (1 - b) f,
        gamma = b gamma + (1 - b) <g, x>
        tau = min(lr, max((1 + a)(f_bar - lb - gamma) + <d_t, x>, 0) / ||d_t||^2)
              (0 where ||d_t||^2 <= float64 machine epsilon)
        u = -a / (1 + a) x - tau d_t

    With ``adapt_lower_bound`` the bound ``lb`` is estimated on the fly (never below
    ``lower_bound``). The update is already descent.

    Args:
      learning_rate: >= 0, a scalar array or a schedule: the largest step (1).
      beta: momentum in [0, 1).
      lower_bound: a finite number, a lower bound of the loss (0).
      weight_decay: >= 0.
      adapt_lower_bound: a bool.

    Returns:
      An ``Optimizer`` with state :class:`MomoState`; ``update`` needs ``params`` and
      ``value=``.

    References:
      Schaipp, Ohana, Eickenberg, Defazio, Gower, "MoMo: Momentum Models for Adaptive
      Learning Rates", ICML 2024, https://arxiv.org/abs/2305.07583.
    """
    fn = "momo"
    adapt = _check_momo(fn, learning_rate, lower_bound, weight_decay, adapt_lower_bound)
    check_decay(fn, "beta", beta)

    def init(params):
        barf, gamma, lb = _init_scalars(fn, params, lower_bound)
        return MomoState(zeros_like(params), barf, gamma, lb, zero_count())

    def update(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_value(fn, value)
        check_state(fn, state, MomoState, updates, "exp_avg")
        dt = state.barf.dtype
        b = jnp.where(state.count == 0, jnp.zeros((), dt), cast_like(beta, state.barf))
        barf = moment(b, jnp.asarray(value).astype(dt), state.barf)
        d = _map(lambda m, g: moment(b, g, m), state.exp_avg, updates)
        gamma = moment(b, tree_vdot(updates, params).astype(dt), state.gamma)
        norm = sum((jnp.sum(x * x).astype(dt) for x in jax.tree_util.tree_leaves(d)),
                   jnp.zeros((), dt))
        iprod = tree_vdot(d, params).astype(dt)
        alpha = jnp.asarray(scheduled(fn, "learning_rate", learning_rate,
                                      state.count)).astype(dt)
        tau, lb = _polyak_step(state.lb, barf, gamma, iprod, norm, alpha, weight_decay,
                               lower_bound, adapt)
        out = _map(lambda m, p: _decayed(alpha, weight_decay, p, times(tau, m)), d, params)
        return out, state._replace(exp_avg=keep_dtypes(d, state.exp_avg), barf=barf,
                                   gamma=gamma, lb=lb, count=safe_increment(state.count))

    def current(state):
        check_state(fn, state, MomoState)
        return jnp.asarray(scheduled(fn, "learning_rate", learning_rate, state.count))

    return optimizer(init, update, current)


@described
def momo_adam(learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8, lower_bound=0.0,
              weight_decay=0.0, adapt_lower_bound=False):
    """MoMo-Adam (Schaipp et al., 2023), optax's ``optax.contrib.momo_adam``: Adam(W)
    with MoMo's step. With ``t`` the step number, ``f`` the loss (``value=``), ``a =
    lr wd``, ``bc1 = 1 - b1^t``::

        m_t, v_t: Adam's moments (b1, b2; no zero start),  P = eps + sqrt(v_t / (1 - b2^t))
        f_bar = b1 f_bar + (1 - b1) f,   gamma = b1 gamma + (1 - b1) <g, x>
        n = <m_t, m_t / P>
        tau = min(lr / bc1, max((1 + a)(f_bar - bc1 lb - gamma) + <m_t, x>, 0) / n)
        u = -a / (1 + a) x - tau m_t / P

    Args:
      learning_rate: >= 0, a scalar array or a schedule (1e-2).
      b1, b2: in [0, 1).
      eps: >= 0.
      lower_bound, weight_decay, adapt_lower_bound: see :func:`momo`.

    Returns:
      An ``Optimizer`` with state :class:`MomoAdamState`; ``update`` needs ``params``
      and ``value=``.

    References:
      Schaipp et al., ICML 2024, https://arxiv.org/abs/2305.07583.
    """
    fn = "momo_adam"
    adapt = _check_momo(fn, learning_rate, lower_bound, weight_decay, adapt_lower_bound)
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)

    def init(params):
        barf, gamma, lb = _init_scalars(fn, params, lower_bound)
        return MomoAdamState(zeros_like(params), zeros_like(params), barf, gamma, lb,
                             zero_count())

    def update(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_value(fn, value)
        check_state(fn, state, MomoAdamState, updates, "exp_avg")
        dt = state.barf.dtype
        count = safe_increment(state.count)
        barf = moment(b1, jnp.asarray(value).astype(dt), state.barf)
        m = _map(lambda m, g: moment(b1, g, m), state.exp_avg, updates)
        v = _map(lambda v, g: moment(b2, g, v, squared=True), state.exp_avg_sq, updates)
        bc2 = bias_correction(b2, count, state.barf)
        precond = _map(lambda x: cast_like(eps, x) + jnp.sqrt(x / bc2.astype(x.dtype)), v)
        norm = tree_vdot(m, _map(lambda a, p: a / p, m, precond)).astype(dt)
        gamma = moment(b1, tree_vdot(updates, params).astype(dt), state.gamma)
        iprod = tree_vdot(m, params).astype(dt)
        alpha = jnp.asarray(scheduled(fn, "learning_rate", learning_rate,
                                      state.count)).astype(dt)
        bc1 = bias_correction(b1, count, state.barf)
        tau, lb = _polyak_step(state.lb, barf, gamma, iprod, norm, alpha, weight_decay,
                               lower_bound, adapt, bc1)
        out = _map(lambda a, pc, p: _decayed(alpha, weight_decay, p, times(tau, a / pc)),
                   m, precond, params)
        return out, state._replace(exp_avg=keep_dtypes(m, state.exp_avg),
                                   exp_avg_sq=keep_dtypes(v, state.exp_avg_sq), barf=barf,
                                   gamma=gamma, lb=lb, count=count)

    def current(state):
        check_state(fn, state, MomoAdamState)
        return jnp.asarray(scheduled(fn, "learning_rate", learning_rate, state.count))

    return optimizer(init, update, current)
