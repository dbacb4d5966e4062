"""Gradient transformations: the blocks that the named optimizers chain together.

Each ``scale_by_*`` returns an :class:`~funcnet.optim.base.Optimizer` and has its
``<Name>State`` NamedTuple right above it. States hold arrays only (``count`` is an int32
scalar). Hyperparameters may be Python numbers or (traced) JAX arrays; they are cast to
the dtype of the gradients. ``scale_by_*`` blocks produce a *direction*; the learning
rate and the sign are applied by :func:`scale_by_learning_rate`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet.optim.base import (
    EmptyState, Optimizer, Updates, cast_like, check_learning_rate, check_nonnegative,
    check_trees_match, check_unit_interval, one_minus, promote_dtypes, safe_increment,
    zero_count)

_map = jax.tree_util.tree_map


def scale(step_size) -> Optimizer:
    """Multiply every update by a constant: ``u <- step_size * u``.

    Args:
      step_size: a number or a scalar (possibly traced) array.

    Returns:
      A stateless ``Optimizer`` (state ``EmptyState()``).
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return _map(lambda g: g * cast_like(step_size, g), updates), state

    return Optimizer(init, update)


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the number of updates done so far."""

    count: jax.Array  # int32 scalar


def scale_by_schedule(step_size_fn) -> Optimizer:
    """Multiply updates by ``step_size_fn(count)``, ``count`` = updates done so far (0, 1, ...).

    Args:
      step_size_fn: a function ``int32 step -> scalar``, e.g. from
        :mod:`funcnet.optim.schedules`.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByScheduleState`.
    """

    def init(params):
        del params
        return ScaleByScheduleState(count=zero_count())

    def update(updates, state, params=None):
        del params
        step = step_size_fn(state.count)
        updates = _map(lambda g: g * cast_like(step, g), updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return Optimizer(init, update)


def scale_by_learning_rate(learning_rate, *, flip_sign: bool = True) -> Optimizer:
    """``u <- -lr * u`` (descent), with ``lr`` a number, an array or a schedule ``step -> lr``.

    Args:
      learning_rate: a non-negative number, a scalar (possibly traced) array, or a
        schedule. A schedule is evaluated at the number of updates done so far.
      flip_sign: multiply by ``-lr`` (default) rather than ``lr``.

    Returns:
      ``scale(-lr)`` for a constant, ``scale_by_schedule(lambda t: -lr(t))`` for a schedule.

    Raises:
      ValueError: if a concrete ``learning_rate`` is negative.
    """
    check_learning_rate("scale_by_learning_rate", learning_rate)
    if callable(learning_rate):
        sign = -1.0 if flip_sign else 1.0
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(-learning_rate if flip_sign else learning_rate)


class MomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`: the velocity / trace, one leaf per parameter."""

    velocity: Updates


def scale_by_momentum(beta=0.9, *, form: str = "classic", nesterov: bool = False) -> Optimizer:
    """Momentum, in the classic (trace) form or the moving-average (EMA) form.

    ``classic`` (note 003; Polyak 1964, optax ``trace``)::

        v_t = beta * v_{t-1} + g_t,      u_t = v_t       (nesterov: u_t = g_t + beta * v_t)

    Followed by ``scale_by_learning_rate(lr)`` this is exactly note 003's
    ``v <- beta v - lr g; W <- W + v`` for a constant ``lr`` (its velocity is ``-lr * v_t``).
    With a schedule, ``lr_t`` multiplies the accumulated trace (optax / PyTorch convention).

    ``ema`` (note 004)::

        v_t = beta * v_{t-1} + (1 - beta) * g_t,   u_t = v_t   (nesterov: beta v_t + (1-beta) g_t)

    then ``W_t = W_{t-1} - lr * u_t``. The two forms differ by the factor ``1 - beta`` in
    the effective step: ``ema`` with ``lr`` equals ``classic`` with ``(1 - beta) * lr``.
    ``v_0 = 0`` in both.

    Args:
      beta: momentum coefficient in [0, 1).
      form: ``"classic"`` or ``"ema"`` (keyword-only).
      nesterov: Nesterov's look-ahead variant (Sutskever et al., 2013) (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`MomentumState`.

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
      Sutskever, Martens, Dahl, Hinton, "On the importance of initialization and momentum
      in deep learning", ICML 2013. Notes 003 (classic) and 004 (moving average).
    """
    fn = "scale_by_momentum"
    check_unit_interval(fn, "beta", beta)
    if form not in ("classic", "ema"):
        raise ValueError(f"{fn}: form must be 'classic' or 'ema', got {form!r}")

    def init(params):
        return MomentumState(velocity=_map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        check_trees_match(fn, "grads", updates, "state.velocity", state.velocity)
        if form == "classic":
            def step(g, v):
                b = cast_like(beta, g)
                v = b * v + g
                return (g + b * v if nesterov else v), v
        else:
            def step(g, v):
                b = cast_like(beta, g)
                c = one_minus(beta, g)  # formed in >= float32 (bf16 safe)
                v = b * v + c * g
                return (b * v + c * g if nesterov else v), v
        out = _map(step, updates, state.velocity)
        treedef = jax.tree_util.tree_structure(updates)
        pairs = treedef.flatten_up_to(out)
        new_u = treedef.unflatten([p[0] for p in pairs])
        new_v = treedef.unflatten([p[1] for p in pairs])
        return new_u, MomentumState(velocity=new_v)

    return Optimizer(init, update)


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`: step count and the two moment estimates."""

    count: jax.Array  # int32 scalar: number of updates done so far
    mu: Updates  # first moment m_t
    nu: Updates  # second moment v_t


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, *, eps_root=0.0,
                  form: str = "standard") -> Optimizer:
    """Adam's direction (Kingma & Ba, 2015), before the learning rate.

    With ``m_0 = v_0 = 0`` and ``t = 1, 2, ...``::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = b2 v_{t-1} + (1 - b2) g_t^2
        standard: u_t = m_hat / (sqrt(v_hat + eps_root) + eps),
                  m_hat = m_t / (1 - b1^t),  v_hat = v_t / (1 - b2^t)
        folded:   u_t = sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t + eps_root) + eps)

    ``folded`` is note 000's "modified" form ``alpha_t = alpha sqrt(1-b2^t)/(1-b1^t)``
    with the constant ``eps`` as its ``eps_hat``. The two forms are equal when
    ``eps = eps_root = 0``; with ``eps > 0`` (and ``eps_root = 0``) the standard form is
    the folded form with ``eps_hat_t = eps * sqrt(1 - b2^t)``, so the folded form's
    epsilon acts ``1/sqrt(1 - b2^t)`` times larger (about 31.6x at t=1 for b2=0.999).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root (keyword-only), >= 0; 0 as in the paper.
      form: ``"standard"`` (default, = optax) or ``"folded"`` (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`ScaleByAdamState`.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980 (Algorithm 1 and the end of Section 2).
      Notes 000 (both forms) and 004.
    """
    fn = "scale_by_adam"
    check_unit_interval(fn, "b1", b1)
    check_unit_interval(fn, "b2", b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)
    if form not in ("standard", "folded"):
        raise ValueError(f"{fn}: form must be 'standard' or 'folded', got {form!r}")

    def init(params):
        # Two separate trees: a shared one could not be donated to a jitted step.
        return ScaleByAdamState(count=zero_count(), mu=_map(jnp.zeros_like, params),
                                nu=_map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        check_trees_match(fn, "grads", updates, "state.mu", state.mu)
        count = safe_increment(state.count)
        # (1 - b) is formed in >= float32 before the cast to the gradient dtype, so that
        # b2 = 0.999 does not become 1.0 - 1.0 = 0 in bfloat16.
        mu = _map(lambda g, m: cast_like(b1, g) * m + one_minus(b1, g) * g,
                  updates, state.mu)
        nu = _map(lambda g, v: cast_like(b2, g) * v + one_minus(b2, g) * g * g,
                  updates, state.nu)

        def direction(m, v):
            # Bias corrections in at least float32, then cast to the moments' dtype.
            cdt = promote_dtypes(jnp.float32, m.dtype)
            t = count.astype(cdt)
            c1 = 1 - jnp.asarray(b1).astype(cdt) ** t
            c2 = 1 - jnp.asarray(b2).astype(cdt) ** t
            e, er = cast_like(eps, m), cast_like(eps_root, m)
            if form == "standard":
                return (m / c1.astype(m.dtype)) / (jnp.sqrt(v / c2.astype(m.dtype) + er) + e)
            step = (jnp.sqrt(c2) / c1).astype(m.dtype)
            return step * m / (jnp.sqrt(v + er) + e)

        return _map(direction, mu, nu), ScaleByAdamState(count=count, mu=mu, nu=nu)

    return Optimizer(init, update)


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: moving average of squared gradients."""

    nu: Updates


def scale_by_rms(decay=0.9, eps=1e-8, *, initial_scale=0.0) -> Optimizer:
    """RMSProp's direction (Tieleman & Hinton, 2012), optax's defaults::

        v_t = decay v_{t-1} + (1 - decay) g_t^2,   v_0 = initial_scale
        u_t = g_t / sqrt(v_t + eps)                 (eps inside the square root)

    Args:
      decay: in [0, 1); default 0.9.
      eps: >= 0; default 1e-8.
      initial_scale: initial value of ``v`` (keyword-only); default 0.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByRmsState`.

    References:
      Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
      Learning, 2012. (Not in the notes.)
    """
    fn = "scale_by_rms"
    check_unit_interval(fn, "decay", decay)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "initial_scale", initial_scale)

    def init(params):
        return ScaleByRmsState(
            nu=_map(lambda p: jnp.full_like(p, initial_scale), params))

    def update(updates, state, params=None):
        del params
        check_trees_match(fn, "grads", updates, "state.nu", state.nu)
        nu = _map(lambda g, v: cast_like(decay, g) * v + one_minus(decay, g) * g * g,
                  updates, state.nu)
        out = _map(lambda g, v: g * jax.lax.rsqrt(v + cast_like(eps, g)), updates, nu)
        return out, ScaleByRmsState(nu=nu)

    return Optimizer(init, update)


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`: running sum of squared gradients."""

    sum_of_squares: Updates


def scale_by_adagrad(initial_accumulator_value=0.1, eps=1e-7) -> Optimizer:
    """AdaGrad's direction (Duchi et al., 2011), optax's defaults::

        G_t = G_{t-1} + g_t^2,    G_0 = initial_accumulator_value
        u_t = g_t / sqrt(G_t + eps)   where G_t > 0, else 0

    Args:
      initial_accumulator_value: ``G_0``, >= 0; default 0.1.
      eps: >= 0, inside the square root; default 1e-7.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByAdagradState`.

    References:
      Duchi, Hazan, Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 2011.
    """
    fn = "scale_by_adagrad"
    check_nonnegative(fn, "initial_accumulator_value", initial_accumulator_value)
    check_nonnegative(fn, "eps", eps)

    def init(params):
        return ScaleByAdagradState(
            sum_of_squares=_map(lambda p: jnp.full_like(p, initial_accumulator_value), params))

    def update(updates, state, params=None):
        del params
        check_trees_match(fn, "grads", updates, "state.sum_of_squares", state.sum_of_squares)
        acc = _map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        out = _map(lambda g, s: jnp.where(s > 0, g * jax.lax.rsqrt(s + cast_like(eps, g)),
                                          jnp.zeros_like(g)), updates, acc)
        return out, ScaleByAdagradState(sum_of_squares=acc)

    return Optimizer(init, update)
