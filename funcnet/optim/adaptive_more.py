"""More adaptive directions: Lion, AdaMax, AMSGrad, AdaBelief and RAdam's blocks.

Each has optax's name, signature, defaults and state class (``ScaleByLionState``,
``ScaleByAdamState`` for AdaMax and RAdam as in optax, ``ScaleByAmsgradState``,
``ScaleByBeliefState``), so states move between the two libraries. They share Adam's
pieces (:func:`~funcnet.optim.adaptive.debiased_mean`, ``adam_ratio``, the moment and
bias-correction helpers of :mod:`.base`); updates have the promoted dtype of the
gradients and the state, and the state keeps its dtypes, as in :mod:`.adaptive`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.adaptive import (
    ScaleByAdamState, adam_moments, adam_ratio, debiased_mean, init_adam_state, keep_dtypes)
from funcnet.optim.base import (
    Updates, bias_correction as _debias, cast_like, check_decay, check_hyperparameter,
    check_nonnegative, check_optional_dtype, check_state, moment, optimizer, promote_dtypes,
    safe_increment, split, zero_count, zeros_like)
from funcnet._describe import described

_map = jax.tree_util.tree_map


def _check_betas(fn, b1, b2):
    check_decay(fn, "b1", b1)
    check_decay(fn, "b2", b2)


# --------------------------------------------------------------------------- Lion


class ScaleByLionState(NamedTuple):
    """Step count and momentum (optax's ``ScaleByLionState``)."""

    count: jax.Array  # int32 scalar
    mu: Updates


_LION_MODES = ("hard", "smooth", "refined")


@described
def scale_by_lion(b1=0.9, b2=0.99, mu_dtype=None, *, mode: str = "hard",
                  smooth_beta=1.0):
    """Lion's direction (Chen et al., 2023), optax's ``scale_by_lion``::

        c_t = b1 m_{t-1} + (1 - b1) g_t
        u_t = sign(c_t)                        (mode "hard", the paper's)
              tanh(smooth_beta c_t)            (mode "smooth")
              c_t if |c_t| < 1 else sign(c_t)  (mode "refined")
        m_t = b2 m_{t-1} + (1 - b2) g_t        (m_0 = 0)

    Every leaf of ``g`` and ``m`` has the parameters' shape; ``u_t`` too.

    Args:
      b1: interpolation between momentum and gradient for the step, in [0, 1).
      b2: decay of the momentum, in [0, 1).
      mu_dtype: dtype of ``m`` (default: the parameters').
      mode: ``"hard"``, ``"smooth"`` or ``"refined"`` (keyword-only; checked here, at
        construction, where optax raises at the first update).
      smooth_beta: > 0, the slope of ``tanh`` in mode ``"smooth"`` (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`ScaleByLionState`.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
      https://arxiv.org/abs/2302.06675 (Algorithm 2).
    """
    fn = "scale_by_lion"
    _check_betas(fn, b1, b2)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)
    _checks.static_choice(fn, "mode", mode, _LION_MODES)
    check_hyperparameter(fn, "smooth_beta", smooth_beta, 0.0, low_inclusive=False)

    def direction(g, m):
        c = moment(b1, g, m)
        if mode == "smooth":
            return jnp.tanh(cast_like(smooth_beta, c) * c)
        if mode == "refined":
            return jnp.where(jnp.abs(c) < 1, c, jnp.sign(c))
        return jnp.sign(c)

    def init(params):
        return ScaleByLionState(count=zero_count(), mu=zeros_like(params, mu_dtype))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByLionState, updates, "mu")
        out = _map(direction, updates, state.mu)
        mu = _map(lambda g, m: moment(b2, g, m), updates, state.mu)
        return out, state._replace(count=safe_increment(state.count),
                                   mu=keep_dtypes(mu, state.mu))

    return optimizer(init, update)


# ------------------------------------------------------------------------- AdaMax


@described
def scale_by_adamax(b1=0.9, b2=0.999, eps=1e-8):
    """AdaMax's direction (Kingma & Ba, 2015, Section 7.1), optax's ``scale_by_adamax``::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        u_t = max(|g_t| + eps, b2 u_{t-1})          (the infinity norm; u_0 = 0)
        step = (m_t / (1 - b1^t)) / u_t

    ``eps`` is inside the maximum, as in optax (with ``eps = 0`` a leaf whose gradients
    were all 0 gives 0/0). The state is optax's: ``ScaleByAdamState(count, mu, nu=u)``.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity norm, in [0, 1).
      eps: >= 0.

    Returns:
      An ``Optimizer`` with state :class:`~funcnet.optim.ScaleByAdamState`.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980 (Algorithm 2).
    """
    fn = "scale_by_adamax"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)

    def infinity_norm(g, v):
        dt = promote_dtypes(g.dtype, v.dtype)
        a = jnp.abs(g)
        return jnp.maximum((a + cast_like(eps, a)).astype(dt), (cast_like(b2, v) * v).astype(dt))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count, mu, nu = adam_moments(fn, ScaleByAdamState, b1, b2, updates, state,
                                     infinity_norm)
        out = _map(lambda m, v: debiased_mean(b1, m, count) / v, mu, nu)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                   nu=keep_dtypes(nu, state.nu))

    return optimizer(init_adam_state, update)


# ------------------------------------------------------------------------ AMSGrad


class ScaleByAmsgradState(NamedTuple):
    """Step count, moments and the running maximum of the second moment (optax's
    ``ScaleByAmsgradState``)."""

    count: jax.Array  # int32 scalar
    mu: Updates
    nu: Updates
    nu_max: Updates


@described
def scale_by_amsgrad(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None,
                     bias_correction_mu=True, bias_correction_nu=True):
    """AMSGrad's direction (Reddi et al., 2018), optax's ``scale_by_amsgrad``::

        m_t, v_t as in Adam;  m_hat = m_t / (1 - b1^t),  v_hat = v_t / (1 - b2^t)
        (each correction can be switched off)
        v_max_t = max(v_max_{t-1}, v_hat_t)            (v_max_0 = 0)
        u_t = m_hat / (sqrt(v_max_t + eps_root) + eps)

    The maximum is taken of the *bias-corrected* ``v_hat`` (optax's choice; the paper
    has no bias correction: pass ``bias_correction_nu=False``).

    Args:
      b1, b2: decays of the moments, in [0, 1).
      eps: >= 0, outside the square root.
      eps_root: >= 0, inside it.
      mu_dtype: dtype of the first moment (default: the parameters').
      bias_correction_mu: divide ``m_t`` by ``1 - b1^t``.
      bias_correction_nu: divide ``v_t`` by ``1 - b2^t`` before the maximum.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByAmsgradState`.

    References:
      Reddi, Kale, Kumar, "On the Convergence of Adam and Beyond", ICLR 2018,
      https://openreview.net/forum?id=ryQu7f-RZ.
    """
    fn = "scale_by_amsgrad"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)
    correct_mu = _checks.static_bool(fn, "bias_correction_mu", bias_correction_mu)
    correct_nu = _checks.static_bool(fn, "bias_correction_nu", bias_correction_nu)

    def init(params):
        return ScaleByAmsgradState(count=zero_count(), mu=zeros_like(params, mu_dtype),
                                   nu=zeros_like(params), nu_max=zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count, mu, nu = adam_moments(fn, ScaleByAmsgradState, b1, b2, updates, state)

        def step(m, v, v_max):
            v_eff = v / _debias(b2, count, v) if correct_nu else v
            v_max = jnp.maximum(v_max.astype(v_eff.dtype), v_eff)
            m_hat = debiased_mean(b1, m, count) if correct_mu else m
            dt = promote_dtypes(m_hat.dtype, v_max.dtype)
            return adam_ratio(m_hat.astype(dt), v_max.astype(dt), eps, eps_root), v_max

        out, nu_max = split(mu, _map(step, mu, nu, state.nu_max), 2)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                   nu=keep_dtypes(nu, state.nu),
                                   nu_max=keep_dtypes(nu_max, state.nu_max))

    return optimizer(init, update)


# ---------------------------------------------------------------------- AdaBelief


class ScaleByBeliefState(NamedTuple):
    """Step count, first moment and the "belief" (centred second moment) ``s``
    (optax's ``ScaleByBeliefState``; ``s`` is its field ``nu``)."""

    count: jax.Array  # int32 scalar
    mu: Updates
    nu: Updates


@described
def scale_by_belief(b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, *,
                    nesterov: bool = False):
    """AdaBelief's direction (Zhuang et al., 2020), optax's ``scale_by_belief``::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        s_t = b2 s_{t-1} + (1 - b2) |g_t - m_t|^2 + eps_root     (stored with eps_root)
        u_t = m_hat / (sqrt(s_t / (1 - b2^t)) + eps)

    ``m_hat`` as in Adam (NAdam's with ``nesterov``, see
    :func:`~funcnet.optim.adaptive.debiased_mean`). ``eps_root`` is added to the stored
    ``s_t`` at every step (Algorithm 2 of the paper), ``eps`` outside the root.

    Args:
      b1, b2: decays, in [0, 1).
      eps: >= 0 (optax's 1e-16).
      eps_root: >= 0 (optax's 1e-16).
      nesterov: Nesterov momentum (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`ScaleByBeliefState`.

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020, https://arxiv.org/abs/2010.07468.
    """
    fn = "scale_by_belief"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    nesterov = _checks.static_bool(fn, "nesterov", nesterov)

    def init(params):
        return ScaleByBeliefState(count=zero_count(), mu=zeros_like(params),
                                  nu=zeros_like(params))

    def belief(g, m, s):
        dt = promote_dtypes(g.dtype, m.dtype)
        new = moment(b2, g.astype(dt) - m.astype(dt), s, squared=True)
        return new + cast_like(eps_root, new)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByBeliefState, updates, "mu")
        count = safe_increment(state.count)
        mu = _map(lambda g, m: moment(b1, g, m), updates, state.mu)
        nu = _map(belief, updates, mu, state.nu)

        def direction(g, m, s):
            dt = promote_dtypes(g.dtype, m.dtype, s.dtype)
            m, s = m.astype(dt), s.astype(dt)
            return adam_ratio(debiased_mean(b1, m, count, nesterov, g.astype(dt)),
                              s / _debias(b2, count, s), eps, 0.0)

        out = _map(direction, updates, mu, nu)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                   nu=keep_dtypes(nu, state.nu))

    return optimizer(init, update)


# -------------------------------------------------------------------------- RAdam


@described
def scale_by_radam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, threshold=5.0, *,
                   nesterov: bool = False):
    """Rectified Adam's direction (Liu et al., 2020), optax's ``scale_by_radam``::

        m_t, v_t, m_hat, v_hat as in Adam (m_hat: NAdam's with nesterov)
        rho_inf = 2 / (1 - b2) - 1,   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        rho_t >= threshold:  u_t = r_t m_hat / (sqrt(v_hat + eps_root) + eps),
            r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        else:                u_t = m_hat          (SGD with momentum while v is unreliable)

    ``rho_t`` and ``r_t`` are formed in at least the default float dtype. With the
    default ``b2 = 0.999``, ``rho_t >= 5`` from step 6 on.

    Args:
      b1, b2: decays, in [0, 1).
      eps: >= 0.
      eps_root: >= 0.
      threshold: the ``rho_t`` from which the adaptive step is used, >= 4 (optax's 5).
        optax accepts less, and then steps with ``4 > rho_t >= threshold`` are NaN
        (``r_t`` is the root of a negative number); funcnet refuses it.
      nesterov: Nesterov momentum (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`~funcnet.optim.ScaleByAdamState` (optax's).

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
      https://arxiv.org/abs/1908.03265 (Algorithm 2).
    """
    fn = "scale_by_radam"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    check_hyperparameter(fn, "threshold", threshold, 4.0)
    nesterov = _checks.static_bool(fn, "nesterov", nesterov)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count, mu, nu = adam_moments(fn, ScaleByAdamState, b1, b2, updates, state)
        wide = jnp.result_type(float)
        beta2, t = jnp.asarray(b2).astype(wide), count.astype(wide)
        rho_inf = 2 / (1 - beta2) - 1
        b2t = beta2 ** t
        rho = rho_inf - 2 * t * b2t / (1 - b2t)
        r = jnp.sqrt((rho - 4) * (rho - 2) * rho_inf
                     / ((rho_inf - 4) * (rho_inf - 2) * rho))
        rectify = rho >= cast_like(threshold, rho)

        def direction(g, m, v):
            dt = promote_dtypes(g.dtype, m.dtype, v.dtype)
            m, v = m.astype(dt), v.astype(dt)
            m_hat = debiased_mean(b1, m, count, nesterov, g.astype(dt))
            adaptive = adam_ratio(r.astype(dt) * m_hat, v / _debias(b2, count, v),
                                  eps, eps_root)
            return jnp.where(rectify, adaptive, m_hat)

        out = _map(direction, updates, mu, nu)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                   nu=keep_dtypes(nu, state.nu))

    return optimizer(init_adam_state, update)
