"""Adaptive directions: Adam, RMSProp (plain and centered) and AdaGrad's blocks, and
Adam's pieces shared with :mod:`.adaptive_more` (moments, ``m_hat``, the ratio).

Each has optax's name, signature, defaults and state classes. Second moments accumulate
``|g|^2 = real(conj(g) g)`` (complex parameters as in optax), stored in the parameters'
dtype; bias corrections are formed in at least the default float dtype (``b2^t`` rounds
to 1 in bfloat16).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    Updates, abs_sq, bias_correction as _debias, cast_like, check_decay, check_nonnegative,
    check_optional_dtype, check_state, moment, one_minus, optimizer, promote_dtypes,
    safe_increment, split, zero_count, zeros_like)
from funcnet._describe import described

_map = jax.tree_util.tree_map


# --------------------------------------------------------------------------- Adam


class ScaleByAdamState(NamedTuple):
    """Step count and the two moment estimates (optax's ``ScaleByAdamState``)."""

    count: jax.Array  # int32 scalar: number of updates done so far
    mu: Updates  # first moment m_t
    nu: Updates  # second moment v_t


@described
def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *,
                  nesterov: bool = False, form: str = "standard"):
    """Adam's direction (Kingma & Ba, 2015), before the learning rate.

    With ``m_0 = v_0 = 0`` and ``t = 1, 2, ...``::

        m_t = b1 m_{t-1} + (1 - b1) g_t,          v_t = b2 v_{t-1} + (1 - b2) |g_t|^2
        standard: u_t = m_hat / (sqrt(v_hat + eps_root) + eps),
                  m_hat = m_t / (1 - b1^t),  v_hat = v_t / (1 - b2^t)
        nesterov: m_hat = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)  (NAdam)
        folded:   u_t = sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t + eps_root) + eps)

    ``folded`` (a funcnet extension) is note 000's "modified" form
    ``alpha_t = alpha sqrt(1-b2^t)/(1-b1^t)`` with the constant ``eps`` as its
    ``eps_hat``. The forms are equal when ``eps = eps_root = 0``; with ``eps > 0`` the
    standard form is the folded one with ``eps_hat_t = eps sqrt(1 - b2^t)``, so the
    folded form's epsilon acts ``1/sqrt(1 - b2^t)`` times larger (31.6x at t=1).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0 (0 as in the paper).
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nesterov: Dozat's NAdam (keyword-only).
      form: ``"standard"`` (= optax) or ``"folded"`` (keyword-only; not with nesterov).

    Returns:
      An ``Optimizer`` with state :class:`ScaleByAdamState`.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980 (Algorithm 1 and the end of Section 2). Dozat,
      "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016. Notes 000, 004.
    """
    fn = "scale_by_adam"
    check_decay(fn, "b1", b1)
    check_decay(fn, "b2", b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)
    nesterov = _checks.static_bool(fn, "nesterov", nesterov)
    _checks.static_choice(fn, "form", form, ("standard", "folded"))
    if nesterov and form == "folded":
        raise ValueError(f"{fn}: form='folded' is defined for nesterov=False only")

    def init(params):
        return init_adam_state(params, mu_dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count, mu, nu = adam_moments(fn, ScaleByAdamState, b1, b2, updates, state)

        def direction(g, m, v):
            dt = promote_dtypes(m.dtype, v.dtype)
            m, v = m.astype(dt), v.astype(dt)
            if form == "folded":
                w = jnp.zeros((), promote_dtypes(jnp.result_type(float), jnp.finfo(dt).dtype))
                c1, c2 = _debias(b1, count, w), _debias(b2, count, w)
                return adam_ratio((jnp.sqrt(c2) / c1).astype(dt) * m, v, eps, eps_root)
            m_hat = debiased_mean(b1, m, count, nesterov, g.astype(dt))
            # in the promoted dtype of g and the moments, as optax
            return adam_ratio(m_hat, v / _debias(b2, count, v), eps, eps_root)

        out = _map(direction, updates, mu, nu)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                   nu=keep_dtypes(nu, state.nu))

    return optimizer(init, update)


def init_adam_state(params, mu_dtype=None) -> ScaleByAdamState:
    """Count 0 and zero moments; ``mu`` in ``mu_dtype`` (default: the parameters')."""
    # Two separate trees: a shared one could not be donated to a jitted step.
    return ScaleByAdamState(count=zero_count(), mu=zeros_like(params, mu_dtype),
                            nu=zeros_like(params))


def adam_moments(fn: str, cls: type, b1, b2, updates, state, second=None):
    """Check ``state`` (fields of ``cls``, ``mu`` matching ``updates``); return the next
    count and Adam's moments ``m_t = b1 m + (1 - b1) g``, ``v_t = b2 v + (1 - b2) |g|^2``
    (in the promoted dtypes; :func:`keep_dtypes` casts them back for the state).
    ``second(g, v)``, if given, replaces ``v_t``'s rule (AdaMax's, Yogi's)."""
    check_state(fn, state, cls, updates, "mu")
    mu = _map(lambda g, m: moment(b1, g, m), updates, state.mu)
    if second is None:
        second = lambda g, v: moment(b2, g, v, squared=True)  # noqa: E731
    return safe_increment(state.count), mu, _map(second, updates, state.nu)


def keep_dtypes(new, old):
    """``new`` cast leaf by leaf to the dtypes of the state tree ``old``."""
    return _map(lambda n, o: n.astype(o.dtype), new, old)


def debiased_mean(b1, m: jax.Array, count: jax.Array, nesterov: bool = False,
                  g: jax.Array | None = None) -> jax.Array:
    """Adam's bias-corrected first moment ``m_hat`` at step ``count`` (>= 1)::

        m_hat = m_t / (1 - b1^t)
        nesterov (Dozat's NAdam): b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)

    ``g`` (needed with ``nesterov``) of ``m``'s dtype; shared by Adam, AdaMax, AMSGrad,
    AdaBelief and RAdam.
    """
    if not nesterov:
        return m / _debias(b1, count, m)
    return (cast_like(b1, m) * (m / _debias(b1, safe_increment(count), m))
            + one_minus(b1, m) * (g / _debias(b1, count, m)))


def adam_ratio(m_hat: jax.Array, v_hat: jax.Array, eps, eps_root) -> jax.Array:
    """``m_hat / (sqrt(v_hat + eps_root) + eps)``, in ``m_hat``'s dtype (Adam's step)."""
    return m_hat / (jnp.sqrt(v_hat + cast_like(eps_root, m_hat)) + cast_like(eps, m_hat))


# ------------------------------------------------------------------ RMSProp family


class ScaleByRmsState(NamedTuple):
    """Moving average of squared gradients (optax's ``ScaleByRmsState``)."""

    nu: Updates


class ScaleByRmsWithCountState(NamedTuple):
    """The same with an update count, for ``bias_correction=True``."""

    count: jax.Array
    nu: Updates


class ScaleByRStdDevState(NamedTuple):
    """Moving averages of gradients and squared gradients (``scale_by_stddev``)."""

    mu: Updates
    nu: Updates


class ScaleByRStdDevWithCountState(NamedTuple):
    """The same with an update count, for ``bias_correction=True``."""

    count: jax.Array
    mu: Updates
    nu: Updates


def _rms_family(fn, decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered):
    """RMSProp's direction, plain (``scale_by_rms``) or centered (``scale_by_stddev``)."""
    check_decay(fn, "decay", decay)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "initial_scale", initial_scale)
    eps_in_sqrt = _checks.static_bool(fn, "eps_in_sqrt", eps_in_sqrt)
    counted = _checks.static_bool(fn, "bias_correction", bias_correction)
    cls = {(False, False): ScaleByRmsState, (False, True): ScaleByRmsWithCountState,
           (True, False): ScaleByRStdDevState, (True, True): ScaleByRStdDevWithCountState}[
        (centered, counted)]

    def init(params):
        fields = {"nu": _map(lambda p: jnp.full_like(p, initial_scale), params)}
        if centered:
            fields["mu"] = zeros_like(params)
        if counted:
            fields["count"] = zero_count()
        return cls(**fields)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, cls, updates, "nu")
        new = {"nu": _map(lambda g, v: moment(decay, g, v, squared=True), updates, state.nu)}
        if centered:
            new["mu"] = _map(lambda g, m: moment(decay, g, m), updates, state.mu)
        hats = dict(new)
        if counted:
            new["count"] = count = safe_increment(state.count)
            hats = {k: _map(lambda x: x / _debias(decay, count, x), v) for k, v in hats.items()}

        def direction(g, v, m=None):
            den = v if m is None else _variance(v, m)
            e = cast_like(eps, den)
            s = jax.lax.rsqrt(den + e) if eps_in_sqrt else 1 / (jnp.sqrt(den) + e)
            return s * g.astype(s.dtype)  # in the promoted dtype of g and v, as optax

        out = (_map(direction, updates, hats["nu"], hats["mu"]) if centered
               else _map(direction, updates, hats["nu"]))
        stored = {k: (v if k == "count" else
                      _map(lambda x, s: x.astype(s.dtype), v, getattr(state, k)))
                  for k, v in new.items()}
        return out, state._replace(**stored)

    return optimizer(init, update)


def _variance(v, m):
    """``v - |m|^2``, at least 0: where the variance is 0 (every step so far saw the same
    gradient, e.g. the first one with ``bias_correction``) rounding can make it negative,
    and ``eps`` (1e-8) is smaller than that rounding, so ``rsqrt`` would give NaN. A NaN
    stays NaN."""
    den = v - abs_sq(m).astype(v.dtype)
    return jnp.where(jnp.real(den) < 0, jnp.zeros_like(den), den)


@described
def scale_by_rms(decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True,
                 bias_correction=False):
    """RMSProp's direction (Tieleman & Hinton, 2012), optax's defaults::

        v_t = decay v_{t-1} + (1 - decay) |g_t|^2,   v_0 = initial_scale
        v_hat = v_t / (1 - decay^t) if bias_correction else v_t
        u_t = g_t / sqrt(v_hat + eps)   (eps_in_sqrt)   or   g_t / (sqrt(v_hat) + eps)

    Args:
      decay: in [0, 1).
      eps: >= 0.
      initial_scale: ``v_0`` >= 0 (PyTorch 0, TF1 1).
      eps_in_sqrt: put ``eps`` inside the square root (optax's default) or outside
        (PyTorch's).
      bias_correction: divide ``v_t`` by ``1 - decay^t`` (the state then has a count).

    Returns:
      An ``Optimizer`` with state :class:`ScaleByRmsState` (or
      :class:`ScaleByRmsWithCountState` with ``bias_correction``).

    References:
      Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
      Learning, 2012.
    """
    return _rms_family("scale_by_rms", decay, eps, initial_scale, eps_in_sqrt,
                       bias_correction, centered=False)


@described
def scale_by_stddev(decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True,
                    bias_correction=False):
    """Centered RMSProp's direction (Graves, 2013): :func:`scale_by_rms` with the
    variance ``max(v_hat - |m_hat|^2, 0)`` in place of ``v_hat``, ``m_t = decay m_{t-1} +
    (1 - decay) g_t`` (the clamp at 0 keeps rounding from giving NaN; optax has none).
    Same arguments; state :class:`ScaleByRStdDevState` (or
    :class:`ScaleByRStdDevWithCountState`).

    References:
      Graves, "Generating Sequences With Recurrent Neural Networks", 2013,
      https://arxiv.org/abs/1308.0850 (eq. 38-41).
    """
    return _rms_family("scale_by_stddev", decay, eps, initial_scale, eps_in_sqrt,
                       bias_correction, centered=True)


class ScaleByRssState(NamedTuple):
    """Running sum of squared gradients (optax's ``ScaleByRssState``)."""

    sum_of_squares: Updates


@described
def scale_by_rss(initial_accumulator_value=0.1, eps=1e-7):
    """AdaGrad's direction (Duchi et al., 2011), optax's defaults::

        G_t = G_{t-1} + |g_t|^2,    G_0 = initial_accumulator_value
        u_t = g_t / sqrt(G_t + eps)   where G_t > 0, else 0

    Args:
      initial_accumulator_value: ``G_0`` >= 0.
      eps: >= 0, inside the square root.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByRssState`.

    References:
      Duchi, Hazan, Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 2011.
    """
    fn = "scale_by_rss"
    check_nonnegative(fn, "initial_accumulator_value", initial_accumulator_value)
    check_nonnegative(fn, "eps", eps)

    def init(params):
        return ScaleByRssState(
            sum_of_squares=_map(lambda p: jnp.full_like(p, initial_accumulator_value), params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByRssState, updates, "sum_of_squares")

        def step(g, s):
            dt = promote_dtypes(g.dtype, s.dtype)  # the updates' dtype, as optax
            acc = abs_sq(g).astype(dt) + s.astype(dt)
            inv = jnp.where(jnp.real(acc) > 0, jax.lax.rsqrt(acc + cast_like(eps, acc)),
                            jnp.zeros_like(acc))
            return inv * g.astype(dt), acc.astype(s.dtype)

        out, acc = split(updates, _map(step, updates, state.sum_of_squares), 2)
        return out, state._replace(sum_of_squares=acc)

    return optimizer(init, update)


scale_by_adagrad = scale_by_rss  # funcnet's earlier name
ScaleByAdagradState = ScaleByRssState
