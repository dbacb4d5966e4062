"""Adam's relatives from ``optax.contrib``: ADOPT, AdEMAMix, simplified AdEMAMix and
Prodigy (their blocks and named optimizers).

Names, signatures, defaults and state classes are optax 0.2.8's (``ScaleByAdamState``
for ADOPT as in optax, ``ScaleByAdemamixState``, ``ScaleBySimplifiedAdEMAMixState``,
``ProdigyState``), so states move between the libraries; they sit flat in
``funcnet.optim`` (``funcnet.optim.adopt`` for ``optax.contrib.adopt``). As in
:mod:`.adaptive`, updates have the promoted dtype of the gradients and the state, and a
state keeps its dtypes.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.adaptive import (
    ScaleByAdamState, adam_ratio, debiased_mean, init_adam_state, keep_dtypes)
from funcnet.optim.adaptive_more import _check_betas
from funcnet.optim.aliases_more import _named
from funcnet.optim.base import (
    Updates, abs_sq, bias_correction as _debias, cast_like, check_decay,
    check_hyperparameter, check_nonnegative, check_optional_dtype, check_scalar_or_schedule,
    check_state, moment, one_minus, optimizer, promote_dtypes, safe_increment, split,
    scheduled, tree_dtype, zero_count, zeros_like)
from funcnet.optim.regularization import _check_params
from funcnet._describe import described

_map = jax.tree_util.tree_map


def _check_decay_or_schedule(fn, name, value):
    if not callable(value):
        check_decay(fn, name, value)


# ---------------------------------------------------------------------------- ADOPT


@described
def scale_by_adopt(b1=0.9, b2=0.9999, eps=1e-6, mu_dtype=None, *, nesterov=False,
                   use_clipping=True, clip_value_fn=lambda x: x**0.25):
    """ADOPT's direction (Taniguchi et al., 2024), optax's
    ``optax.contrib.scale_by_adopt``: Adam with the second moment of the *previous*
    steps in the normalisation, and the momentum taken after it::

        step 0:   v_1 = |g_0|^2,  m_1 = 0,  u = 0
        then:     r_t = clip(g_t / max(sqrt(v_{t-1}), eps), -c(t), c(t))
                  m_t = b1 m_{t-1} + (1 - b1) r_t,   v_t = b2 v_{t-1} + (1 - b2) |g_t|^2
                  u_t = m_t   (nesterov: b1 m_t + (1 - b1) r_t)

    with ``c(t) = clip_value_fn(t)`` (``t`` the int32 count before the step; ``t^0.25``
    by default) when ``use_clipping``. The first update is zero.

    Args:
      b1, b2: decays in [0, 1).
      eps: >= 0, the floor of ``sqrt(v)``.
      mu_dtype: dtype of ``m`` (default: the parameters').
      nesterov: keyword-only.
      use_clipping: keyword-only; clip ``r_t`` to ``[-c(t), c(t)]``.
      clip_value_fn: keyword-only; ``int32 count -> clip value`` (called under standard
        dtype promotion, as optax's ``x**0.25`` of an int32 needs).

    Returns:
      An ``Optimizer`` with state :class:`~funcnet.optim.ScaleByAdamState`.

    References:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2 with the
      Optimal Rate", NeurIPS 2024, https://arxiv.org/abs/2411.02853.
    """
    fn = "scale_by_adopt"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)
    nesterov = _checks.static_bool(fn, "nesterov", nesterov)
    use_clipping = _checks.static_bool(fn, "use_clipping", use_clipping)
    _checks.check_callable(fn, "clip_value_fn", clip_value_fn, "count -> value")

    def init(params):
        return init_adam_state(params, mu_dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByAdamState, updates, "mu")
        started = state.count > 0
        b1_ = jnp.where(started, jnp.asarray(b1, float), 1.0)   # optax's where-s, in
        b2_ = jnp.where(started, jnp.asarray(b2, float), 0.0)   # the default float
        if use_clipping:
            with jax.numpy_dtype_promotion("standard"):
                clip = clip_value_fn(state.count)

        def ratio(g, v):
            dt = promote_dtypes(g.dtype, v.dtype)
            r = g.astype(dt) / jnp.maximum(jnp.sqrt(v.astype(dt)), cast_like(eps, v).astype(dt))
            if use_clipping:
                c = cast_like(clip, r)
                r = jnp.clip(r, -c, c)
            return r

        r = _map(ratio, updates, state.nu)
        nu = _map(lambda g, v: moment(b2_, g, v, squared=True), updates, state.nu)
        mu = _map(lambda x, m: moment(b1_, x, m), r, state.mu)
        out = _map(lambda x, m: moment(b1_, x, m), r, mu) if nesterov else mu
        return out, state._replace(count=safe_increment(state.count),
                                   mu=keep_dtypes(mu, state.mu), nu=keep_dtypes(nu, state.nu))

    return optimizer(init, update)


@described
def adopt(learning_rate, b1=0.9, b2=0.9999, eps=1e-6, mu_dtype=None, *, nesterov=False,
          use_clipping=True, clip_value_fn=lambda x: x**0.25):
    """ADOPT, optax's ``optax.contrib.adopt``: ``chain(scale_by_adopt(...),
    scale_by_learning_rate(learning_rate))``; see :func:`scale_by_adopt`.

    References:
      Taniguchi et al., NeurIPS 2024, https://arxiv.org/abs/2411.02853.
    """
    return _named("adopt", lambda: scale_by_adopt(
        b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping,
        clip_value_fn=clip_value_fn), learning_rate=learning_rate)


# ------------------------------------------------------------------------- AdEMAMix


class ScaleByAdemamixState(NamedTuple):
    """optax's ``ScaleByAdemamixState``: the counts of the fast moments and of the slow
    EMA (int32), the fast EMA ``m1``, the slow EMA ``m2`` and the second moment ``nu``
    (all three in ``mu_dtype``)."""

    count: jax.Array
    count_m2: jax.Array
    m1: Updates
    m2: Updates
    nu: Updates


@described
def scale_by_ademamix(b1=0.9, b2=0.999, b3=0.9999, alpha=6.0, eps=1e-8, eps_root=0.0,
                      mu_dtype=None):
    """AdEMAMix's direction (Pagliardini et al., 2024), optax's
    ``optax.contrib.scale_by_ademamix``: Adam's fast momentum plus ``alpha`` times a
    slow, not debiased, EMA of the gradients::

        m1_t = b1 m1_{t-1} + (1 - b1) g_t,      m2_t = b3 m2_{t-1} + (1 - b3) g_t
        v_t = b2 v_{t-1} + (1 - b2) |g_t|^2
        u_t = (m1_t / (1 - b1^t) + alpha m2_t) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

    ``b3`` and ``alpha`` may be schedules of ``count_m2`` (the paper warms both up).

    Args:
      b1, b2: decays in [0, 1).
      b3: decay of the slow EMA in [0, 1), or a schedule.
      alpha: >= 0, the slow EMA's weight (optax's 6 here, 5 in :func:`ademamix`), or a
        schedule.
      eps, eps_root: >= 0, outside and inside the square root.
      mu_dtype: dtype of the three accumulators (default: the parameters').

    Returns:
      An ``Optimizer`` with state :class:`ScaleByAdemamixState`.

    References:
      Pagliardini, Ablin, Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      2024, https://arxiv.org/abs/2409.03137.
    """
    fn = "scale_by_ademamix"
    _check_betas(fn, b1, b2)
    _check_decay_or_schedule(fn, "b3", b3)
    if not callable(alpha):
        check_nonnegative(fn, "alpha", alpha)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)

    def init(params):
        return ScaleByAdemamixState(
            count=zero_count(), count_m2=zero_count(), m1=zeros_like(params, mu_dtype),
            m2=zeros_like(params, mu_dtype), nu=zeros_like(params, mu_dtype))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByAdemamixState, updates, "m1")
        b3_ = scheduled(fn, "b3", b3, state.count_m2)
        alpha_ = scheduled(fn, "alpha", alpha, state.count_m2)
        count = safe_increment(state.count)

        def leaf(g, m1, m2, v):
            m1, m2 = moment(b1, g, m1), moment(b3_, g, m2)
            v = moment(b2, g, v, squared=True)
            num = debiased_mean(b1, m1, count) + cast_like(alpha_, m2) * m2
            return adam_ratio(num, debiased_mean(b2, v, count), eps, eps_root), m1, m2, v

        u, m1, m2, nu = split(updates, _map(leaf, updates, state.m1, state.m2, state.nu), 4)
        return u, state._replace(count=count, count_m2=safe_increment(state.count_m2),
                                 m1=keep_dtypes(m1, state.m1), m2=keep_dtypes(m2, state.m2),
                                 nu=keep_dtypes(nu, state.nu))

    return optimizer(init, update)


@described
def ademamix(learning_rate, b1=0.9, b2=0.999, b3=0.9999, alpha=5.0, eps=1e-8, eps_root=0.0,
             mu_dtype=None, weight_decay=0.0, mask=None):
    """AdEMAMix, optax's ``optax.contrib.ademamix``: ``W_t = W_{t-1} - lr *
    (scale_by_ademamix(g)_t + wd * W_{t-1})``; see :func:`scale_by_ademamix`.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: see :func:`scale_by_ademamix`
        (``alpha`` 5 here, as optax).
      weight_decay: >= 0 or a schedule, decoupled (multiplied by the learning rate).
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    Returns:
      ``chain(scale_by_ademamix(...), add_decayed_weights(weight_decay, mask),
      scale_by_learning_rate(learning_rate))``.

    References:
      Pagliardini et al., 2024, https://arxiv.org/abs/2409.03137.
    """
    return _named("ademamix", lambda: scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root,
                                                        mu_dtype),
                  learning_rate=learning_rate, decay=(weight_decay, mask))


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """optax's ``ScaleBySimplifiedAdEMAMixState``: the count ``t`` (int32), the
    momentum ``m`` and the second moment ``n``."""

    t: jax.Array
    m: Updates
    n: Updates


@described
def scale_by_simplified_ademamix(b1=0.99, b2=0.95, alpha=0.0, eps=1e-8, eps_root=0.0):
    """Simplified AdEMAMix's direction (Morwani et al., 2025), optax's
    ``optax.contrib.scale_by_simplified_ademamix``: one undamped momentum and the
    current gradient::

        m_t = b1 m_{t-1} + g_t
        n_t = |g_t|^2 + b2 (n_{t-1} - |g_t|^2)          (optax's lerp)
        u_t = (m_t + alpha g_t) / (sqrt(n_t / (1 - b2^t) + eps_root) + eps)

    (optax squares complex gradients as ``g * g``; here ``|g|^2``, the same for reals.)

    Args:
      b1, b2: decays in [0, 1).
      alpha: >= 0 or a schedule of the count, the current gradient's weight.
      eps, eps_root: >= 0.

    Returns:
      An ``Optimizer`` with state :class:`ScaleBySimplifiedAdEMAMixState`.

    References:
      Morwani et al., "Connections between Schedule-Free Optimizers, AdEMAMix, and
      Accelerated SGD Variants", 2025, https://arxiv.org/abs/2502.02431.
    """
    fn = "scale_by_simplified_ademamix"
    _check_betas(fn, b1, b2)
    if not callable(alpha):
        check_nonnegative(fn, "alpha", alpha)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)

    def init(params):
        return ScaleBySimplifiedAdEMAMixState(t=zero_count(), m=zeros_like(params),
                                              n=zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleBySimplifiedAdEMAMixState, updates, "m")
        alpha_ = scheduled(fn, "alpha", alpha, state.t)
        t = safe_increment(state.t)

        def leaf(g, m, n):
            dt = promote_dtypes(g.dtype, m.dtype, n.dtype)
            g, m, n = g.astype(dt), m.astype(dt), n.astype(dt)
            m = g + cast_like(b1, m) * m
            g2 = abs_sq(g).astype(n.dtype)
            n = g2 + cast_like(b2, n) * (n - g2)
            num = m + cast_like(alpha_, g) * g
            return adam_ratio(num, n / _debias(b2, t, n), eps, eps_root), m, n

        u, m, n = split(updates, _map(leaf, updates, state.m, state.n), 3)
        return u, state._replace(t=t, m=keep_dtypes(m, state.m), n=keep_dtypes(n, state.n))

    return optimizer(init, update)


@described
def simplified_ademamix(learning_rate, b1=0.99, b2=0.95, alpha=0.0, eps=1e-8, eps_root=0.0,
                        weight_decay=0.0, mask=None):
    """Simplified AdEMAMix, optax's ``optax.contrib.simplified_ademamix``:
    ``chain(scale_by_simplified_ademamix(...), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``; ``alpha = 0`` is Adam with an undamped
    momentum. See :func:`scale_by_simplified_ademamix`.

    References:
      Morwani et al., 2025, https://arxiv.org/abs/2502.02431.
    """
    return _named("simplified_ademamix", lambda: scale_by_simplified_ademamix(
        b1, b2, alpha, eps, eps_root), learning_rate=learning_rate, decay=(weight_decay, mask))


# ---------------------------------------------------------------------------- Prodigy


class ProdigyState(NamedTuple):
    """optax's ``optax.contrib.ProdigyState``: Adam's moments of ``d g``, the weighted
    sum of ``d g``, the initial parameters, the distance estimate ``d`` and the
    numerator's weighted sum (scalars of the parameters' lowest dtype), the count."""

    exp_avg: Updates
    exp_avg_sq: Updates
    grad_sum: Updates
    params0: Updates
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


def _vdot(a, b):
    """optax's tree vdot of one leaf: ``sum(conj(a) b)`` as a tensordot."""
    a = jnp.conj(a) if jnp.iscomplexobj(a) else a
    return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST)


@described
def prodigy(learning_rate=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, estim_lr0=1e-6,
            estim_lr_coef=1.0, weight_decay=0.0, safeguard_warmup=False):
    """Prodigy (Mishchenko & Defazio, 2023), optax's ``optax.contrib.prodigy``: AdamW
    whose step size ``d`` estimates the distance to the solution (D-Adaptation's
    faster variant). With ``s = learning_rate(t)`` (a schedule around 1),
    ``c_t = sqrt(1 - b2^t) / (1 - b1^t)``, ``dlr = d s c_t`` and ``d = d_{t-1}``::

        m_t = b1 m + (1 - b1) d g,          v_t = b2 v + (1 - b2) (d g)^2
        r_t = b3 r + dlr d g / d_0          (safeguard_warmup: d d g / d_0)
        N_t = b3 N + (d / d_0) dlr <g, W_0 - W>
        d_t = max(d, estim_lr_coef N_t / sum |r_t|)
        u_t = -wd dlr W - dlr m_t / (sqrt(v_t) + d_t eps)

    The update is already descent (no learning-rate block follows). The state copies
    the initial parameters ``W_0``.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule (the multiplier of
        ``d``; 1 by default).
      betas: ``(b1, b2)``, each in [0, 1).
      beta3: in [0, 1) or None (``sqrt(b2)``).
      eps: >= 0.
      estim_lr0: > 0, ``d_0``, the initial under-estimate.
      estim_lr_coef: >= 0, multiplies the estimates.
      weight_decay: >= 0, decoupled (AdamW's).
      safeguard_warmup: leave ``s`` out of ``r``'s increment.

    Returns:
      An ``Optimizer`` with state :class:`ProdigyState`; ``update`` needs ``params``.

    References:
      Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
      Learner", ICML 2024, https://arxiv.org/abs/2306.06101.
    """
    fn = "prodigy"
    check_scalar_or_schedule(fn, "learning_rate", learning_rate)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"{fn}: betas must be a pair (b1, b2), got {betas!r:.60}")
    beta1, beta2 = betas
    _check_betas(fn, beta1, beta2)
    if beta3 is None:
        beta3 = beta2 ** 0.5
    check_decay(fn, "beta3", beta3)
    check_nonnegative(fn, "eps", eps)
    check_hyperparameter(fn, "estim_lr0", estim_lr0, 0.0, low_inclusive=False)
    check_nonnegative(fn, "estim_lr_coef", estim_lr_coef)
    check_nonnegative(fn, "weight_decay", weight_decay)
    safeguard_warmup = _checks.static_bool(fn, "safeguard_warmup", safeguard_warmup)

    def init(params):
        dt = tree_dtype(fn, params, "lowest")
        return ProdigyState(
            exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params),
            grad_sum=zeros_like(params), params0=_map(jnp.array, params),   # a copy
            estim_lr=jnp.asarray(estim_lr0, dt), numerator_weighted=jnp.zeros((), dt),
            count=zero_count())

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, ProdigyState, updates, "exp_avg")
        count = safe_increment(state.count)
        d, nw = state.estim_lr, state.numerator_weighted
        wide = jnp.zeros((), promote_dtypes(jnp.result_type(float), d.dtype))
        sched = jnp.asarray(scheduled(fn, "learning_rate", learning_rate, state.count))
        bc = _debias(beta2, count, wide) ** 0.5 / _debias(beta1, count, wide)
        dlr = (d.astype(wide.dtype) * sched.astype(wide.dtype) * bc).astype(d.dtype)
        dg = _map(lambda g: cast_like(d, g) * g, updates)
        acc = sum((_vdot(g, p0 - p) for g, p0, p in zip(
            *map(jax.tree_util.tree_leaves, (updates, state.params0, params)))),
            jnp.zeros((), d.dtype))
        exp_avg = _map(lambda m, x: moment(beta1, x, m), state.exp_avg, dg)
        exp_avg_sq = _map(lambda v, x: (cast_like(beta2, v) * v
                                        + one_minus(beta2, x) * x * x), state.exp_avg_sq, dg)
        step = d if safeguard_warmup else dlr
        grad_sum = _map(lambda r, x: (cast_like(beta3, r) * r
                                      + cast_like(step, x) * x / cast_like(estim_lr0, x)),
                        state.grad_sum, dg)
        nw = (cast_like(beta3, nw) * nw
              + (d / cast_like(estim_lr0, d) * dlr).astype(acc.dtype) * acc).astype(nw.dtype)
        den = sum((jnp.sum(jnp.abs(r)) for r in jax.tree_util.tree_leaves(grad_sum)),
                  jnp.zeros((), d.dtype))
        d_new = jnp.maximum(d, (cast_like(estim_lr_coef, nw) * nw / den).astype(d.dtype))

        def direction(m, v, p):
            dt = promote_dtypes(m.dtype, p.dtype)
            lr = dlr.astype(dt)
            return (cast_like(-weight_decay, lr) * lr * p.astype(dt)
                    - lr * m.astype(dt) / (jnp.sqrt(v.astype(dt))
                                           + d_new.astype(dt) * cast_like(eps, lr)))

        out = _map(direction, exp_avg, exp_avg_sq, params)
        return out, state._replace(
            exp_avg=keep_dtypes(exp_avg, state.exp_avg),
            exp_avg_sq=keep_dtypes(exp_avg_sq, state.exp_avg_sq),
            grad_sum=keep_dtypes(grad_sum, state.grad_sum), estim_lr=d_new,
            numerator_weighted=nw, count=count)

    def current(state):
        check_state(fn, state, ProdigyState)
        return jnp.asarray(scheduled(fn, "learning_rate", learning_rate, state.count))

    return optimizer(init, update, current)
