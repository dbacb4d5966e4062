"""Adan, Yogi, AdaDelta and NovoGrad's blocks (optax's ``scale_by_adan``,
``scale_by_yogi``, ``scale_by_adadelta``, ``scale_by_novograd``).

Each has optax's name, signature, defaults and state class (``ScaleByAdanState``,
``ScaleByAdamState`` for Yogi as in optax, ``ScaleByAdaDeltaState``,
``ScaleByNovogradState``), so states move between the libraries; they share Adam's
pieces (:mod:`.adaptive`) and the conventions of :mod:`.adaptive_more` (updates in the
promoted dtype of gradients and state, the state keeps its dtypes; ``|g|^2`` is
``real(conj(g) g)`` for complex gradients).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet.optim.adaptive import (ScaleByAdamState, adam_moments, adam_ratio,
                                     debiased_mean, keep_dtypes)
from funcnet.optim.adaptive_more import _check_betas
from funcnet.optim.base import (
    Updates, abs_sq, cast_like, check_decay, check_hyperparameter,
    check_nonnegative, check_optional_dtype, check_state, moment, one_minus, optimizer,
    promote_dtypes, safe_increment, split, zero_count, zeros_like)
from funcnet.optim.regularization import _check_params
from funcnet._describe import described

_map = jax.tree_util.tree_map


# ---------------------------------------------------------------------------- Adan


class ScaleByAdanState(NamedTuple):
    """optax's ``ScaleByAdanState``: the moments of the gradients ``m``, of their
    differences ``v`` and of the squared term ``n``, the last gradients ``g`` and the
    step count ``t`` (int32, last as in optax)."""

    m: Updates
    v: Updates
    n: Updates
    g: Updates
    t: jax.Array


@described
def scale_by_adan(b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=0.0):
    """Adan's direction (Xie et al., 2022), optax's ``scale_by_adan`` (optax's b's are
    the paper's ``1 - beta``)::

        d_t = g_t - g_{t-1}                 (0 at the first step)
        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = b2 v_{t-1} + (1 - b2) d_t
        n_t = b3 n_{t-1} + (1 - b3) |g_t + (1 - b2) d_t|^2
        u_t = (m_hat + (1 - b2) v_hat) / (sqrt(n_hat + eps_root) + eps)   (hats: / (1 - b^t))

    Args:
      b1, b2, b3: decays in [0, 1) (optax's 0.98, 0.92, 0.99).
      eps: >= 0, outside the square root.
      eps_root: >= 0, inside it.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByAdanState`.

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
      Deep Models", 2022, https://arxiv.org/abs/2208.06677.
    """
    fn = "scale_by_adan"
    _check_betas(fn, b1, b2)
    check_decay(fn, "b3", b3)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)

    def init(params):
        return ScaleByAdanState(m=zeros_like(params), v=zeros_like(params),
                                n=zeros_like(params), g=zeros_like(params), t=zero_count())

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByAdanState, updates, "m")
        t = safe_increment(state.t)

        def leaf(g, m, v, n, g_old):
            dt = promote_dtypes(g.dtype, g_old.dtype)
            d = jnp.where(state.t == 0, jnp.zeros((), dt), g.astype(dt) - g_old.astype(dt))
            m, v = moment(b1, g, m), moment(b2, d, v)
            n = moment(b3, g + one_minus(b2, d) * d, n, squared=True)
            u = debiased_mean(b1, m, t) + one_minus(b2, v) * debiased_mean(b2, v, t)
            return adam_ratio(u, debiased_mean(b3, n, t), eps, eps_root), m, v, n

        u, m, v, n = split(updates, _map(leaf, updates, state.m, state.v, state.n, state.g), 4)
        return u, state._replace(m=keep_dtypes(m, state.m), v=keep_dtypes(v, state.v),
                                 n=keep_dtypes(n, state.n), g=keep_dtypes(updates, state.g),
                                 t=t)

    return optimizer(init, update)


# ---------------------------------------------------------------------------- Yogi


@described
def scale_by_yogi(b1=0.9, b2=0.999, eps=1e-3, eps_root=0.0, initial_accumulator_value=1e-6):
    """Yogi's direction (Zaheer et al., 2018), optax's ``scale_by_yogi``: Adam whose
    second moment moves additively towards ``|g|^2``::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = v_{t-1} - (1 - b2) sign(v_{t-1} - |g_t|^2) |g_t|^2
        u_t = m_hat / (sqrt(v_hat + eps_root) + eps)      (hats: / (1 - b^t))

    (``m_0 = v_0 = initial_accumulator_value``; the state is optax's ``ScaleByAdamState``.)

    Args:
      b1, b2: decays in [0, 1).
      eps: >= 0 (optax's 1e-3).
      eps_root: >= 0.
      initial_accumulator_value: >= 0, the moments' start (optax's 1e-6).

    Returns:
      An ``Optimizer`` with state :class:`~funcnet.optim.ScaleByAdamState`.

    References:
      Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018.
    """
    fn = "scale_by_yogi"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    check_nonnegative(fn, "initial_accumulator_value", initial_accumulator_value)

    def init(params):
        full = lambda p: jnp.full_like(p, cast_like(initial_accumulator_value, p))  # noqa: E731
        return ScaleByAdamState(count=zero_count(), mu=_map(full, params),
                                nu=_map(full, params))

    def second(g, v):
        dt = promote_dtypes(g.dtype, v.dtype)
        g2 = abs_sq(g).astype(dt)
        return v.astype(dt) - one_minus(b2, g2) * jnp.sign(v.astype(dt) - g2) * g2

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count, mu, nu = adam_moments(fn, ScaleByAdamState, b1, b2, updates, state, second)
        out = _map(lambda m, v: adam_ratio(debiased_mean(b1, m, count),
                                           debiased_mean(b2, v, count), eps, eps_root), mu, nu)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                   nu=keep_dtypes(nu, state.nu))

    return optimizer(init, update)


# ------------------------------------------------------------------------ AdaDelta


class ScaleByAdaDeltaState(NamedTuple):
    """optax's ``ScaleByAdaDeltaState``: running averages of the squared gradients
    ``e_g`` and of the squared updates ``e_x``."""

    e_g: Updates
    e_x: Updates


@described
def scale_by_adadelta(rho=0.9, eps=1e-6):
    """AdaDelta's direction (Zeiler, 2012), optax's ``scale_by_adadelta``::

        E[g^2]_t = rho E[g^2]_{t-1} + (1 - rho) |g_t|^2
        u_t = sqrt(E[u^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[u^2]_t = rho E[u^2]_{t-1} + (1 - rho) |u_t|^2

    (optax squares complex gradients as ``g**2``; here ``|g|^2``, the same for reals.)

    Args:
      rho: decay in [0, 1).
      eps: >= 0 (optax's 1e-6); with 0 the first step is 0.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByAdaDeltaState`.

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012,
      https://arxiv.org/abs/1212.5701.
    """
    fn = "scale_by_adadelta"
    check_decay(fn, "rho", rho)
    check_nonnegative(fn, "eps", eps)

    def init(params):
        return ScaleByAdaDeltaState(e_g=zeros_like(params), e_x=zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByAdaDeltaState, updates, "e_g")
        e_g = _map(lambda g, e: moment(rho, g, e, squared=True), updates, state.e_g)

        def step(g, eg, ex):
            dt = promote_dtypes(g.dtype, eg.dtype, ex.dtype)
            e = cast_like(eps, jnp.zeros((), dt))
            return (jnp.sqrt(ex.astype(dt) + e) / jnp.sqrt(eg.astype(dt) + e)) * g.astype(dt)

        out = _map(step, updates, e_g, state.e_x)
        e_x = _map(lambda u, e: moment(rho, u, e, squared=True), out, state.e_x)
        return out, state._replace(e_g=keep_dtypes(e_g, state.e_g),
                                   e_x=keep_dtypes(e_x, state.e_x))

    return optimizer(init, update)


# ------------------------------------------------------------------------ NovoGrad


class ScaleByNovogradState(NamedTuple):
    """optax's ``ScaleByNovogradState``: the count, the momentum ``mu`` (the
    parameters' shapes) and one scalar second moment ``nu`` per leaf."""

    count: jax.Array
    mu: Updates
    nu: Updates


@described
def scale_by_novograd(b1=0.9, b2=0.25, eps=1e-8, eps_root=0.0, weight_decay=0.0,
                      mu_dtype=None):
    """NovoGrad's direction (Ginsburg et al., 2019), optax's ``scale_by_novograd``: a
    per-leaf (layer-wise) second moment of the gradient norm::

        nu_t = ||g_t||^2 at t = 1, then b2 nu_{t-1} + (1 - b2) ||g_t||^2   (per leaf)
        a_t = g_t / (sqrt(nu_t + eps_root) + eps) + weight_decay * W
        m_t = a_t at t = 1, then b1 m_{t-1} + a_t;   u_t = m_t

    Args:
      b1, b2: decays in [0, 1) (optax's 0.9, 0.25).
      eps, eps_root: >= 0.
      weight_decay: >= 0 (a number, not a schedule, as optax's block).
      mu_dtype: dtype of ``m`` (and of the updates, as optax; default: the parameters').

    Returns:
      An ``Optimizer`` with state :class:`ScaleByNovogradState`; ``update`` needs
      ``params``.

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", 2019, https://arxiv.org/abs/1905.11286.
    """
    fn = "scale_by_novograd"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    check_hyperparameter(fn, "weight_decay", weight_decay, 0.0)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)

    def init(params):
        return ScaleByNovogradState(count=zero_count(), mu=zeros_like(params, mu_dtype),
                                    nu=_map(lambda p: jnp.zeros((), p.dtype), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, ScaleByNovogradState, updates, "mu")
        count = safe_increment(state.count)
        first = count == 1

        def second(g, v):
            sq = (jnp.linalg.norm(g) ** 2).astype(v.dtype)
            return jnp.where(first, sq, moment(b2, sq, v))

        nu = _map(second, updates, state.nu)

        def first_moment(g, p, v, m):
            a = adam_ratio(g, v.astype(g.dtype), eps, eps_root)
            a = a + cast_like(weight_decay, p) * p
            dt = promote_dtypes(a.dtype, m.dtype)
            return jnp.where(first, a.astype(dt), (cast_like(b1, m) * m).astype(dt) + a)

        mu = _map(first_moment, updates, params, nu, state.mu)
        mu = mu if mu_dtype is None else _map(lambda m: m.astype(mu_dtype), mu)
        return mu, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                  nu=keep_dtypes(nu, state.nu))

    return optimizer(init, update)
