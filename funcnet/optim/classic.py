"""Rprop, optimistic gradient descent (and optimistic Adam), Polyak's step size, SM3 and
Fromage: their blocks and named optimizers, with optax 0.2.8's names, signatures,
defaults and state classes (``ScaleByRpropState``, ``ScaleByOptimisticGradientState``,
``ScaleBySM3State``), so states move between the libraries.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.adaptive import scale_by_adam
from funcnet.optim.aliases import sgd
from funcnet.optim.aliases_more import _named
from funcnet.optim.base import (
    EmptyState, Updates, cast_like, check_decay, check_empty_state, check_hyperparameter,
    check_nonnegative, check_scalar_or_schedule, check_state, moment, optimizer,
    promote_dtypes, split, zeros_like)
from funcnet.optim.combine import chain
from funcnet.optim.regularization import decayed_weights, scale_by_trust_ratio, squared_norm
from funcnet.optim.transforms import _scale, scale_by_learning_rate
from funcnet._describe import described

_map = jax.tree_util.tree_map


# ---------------------------------------------------------------------------- Rprop


class ScaleByRpropState(NamedTuple):
    """optax's ``ScaleByRpropState``: the per-coordinate step sizes and the last
    updates (signs times step sizes)."""

    step_sizes: Updates
    prev_updates: Updates


@described
def scale_by_rprop(learning_rate, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6,
                   max_step_size=50.0):
    """Rprop's step (Riedmiller & Braun, 1993; iRprop- of Igel & Husken, 2003), optax's
    ``scale_by_rprop``. Per coordinate, with ``s = g_t u_{t-1}``::

        d_t = d_{t-1}                                            if s = 0
              clip(d_{t-1} * (eta_plus if s > 0 else eta_minus), min, max)   otherwise
        u_t = 0 if s < 0 else d_t sign(g_t)        (stored; the next step's u_{t-1})
        out = 0 if s < 0 else u_{t-1}

    ``d_0 = learning_rate``, ``u_0 = 0``. As optax's, the output is the *previous*
    step's ``u`` (so the first update is 0) and is ascent: :func:`rprop` flips it.

    Args:
      learning_rate: >= 0, the initial step size ``d_0`` (a number: it fills the
        state, optax's too).
      eta_minus: in [0, 1], the step's factor after a sign change.
      eta_plus: >= 1, the factor while the sign stays.
      min_step_size, max_step_size: 0 <= min <= max, the step's bounds.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByRpropState`.

    References:
      Riedmiller & Braun, "A direct adaptive method for faster backpropagation learning:
      the RPROP algorithm", ICNN 1993. Igel & Husken, "Empirical evaluation of the
      improved Rprop learning algorithms", Neurocomputing 2003.
    """
    fn = "scale_by_rprop"
    check_nonnegative(fn, "learning_rate", learning_rate)
    check_hyperparameter(fn, "eta_minus", eta_minus, 0.0, 1.0)
    check_hyperparameter(fn, "eta_plus", eta_plus, 1.0)
    check_nonnegative(fn, "min_step_size", min_step_size)
    check_hyperparameter(fn, "max_step_size", max_step_size, 0.0)
    lo, hi = _checks.concrete(min_step_size), _checks.concrete(max_step_size)
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise ValueError(f"{fn}: min_step_size {float(lo):g} is above max_step_size "
                         f"{float(hi):g}")

    def init(params):
        return ScaleByRpropState(
            step_sizes=_map(lambda p: jnp.full_like(p, cast_like(learning_rate, p)), params),
            prev_updates=zeros_like(params))

    def leaf(g, d, u_old):
        dt = promote_dtypes(g.dtype, d.dtype, u_old.dtype)
        g, d, u_old = g.astype(dt), d.astype(dt), u_old.astype(dt)
        s = g * u_old
        grown = d * jnp.where(s > 0, cast_like(eta_plus, d), cast_like(eta_minus, d))
        d = jnp.where(s == 0, d, jnp.clip(grown, cast_like(min_step_size, d),
                                          cast_like(max_step_size, d)))
        u = jnp.where(s < 0, jnp.zeros_like(g), d * jnp.sign(g))
        return jnp.where(s < 0, jnp.zeros_like(u_old), u_old), d, u

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByRpropState, updates, "step_sizes")
        out, d, u = split(updates, _map(leaf, updates, state.step_sizes,
                                        state.prev_updates), 3)
        keep = lambda new, old: _map(lambda n, o: n.astype(o.dtype), new, old)  # noqa: E731
        return out, state._replace(step_sizes=keep(d, state.step_sizes),
                                   prev_updates=keep(u, state.prev_updates))

    return optimizer(init, update)


@described
def rprop(learning_rate, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6, max_step_size=50.0):
    """Rprop, optax's ``rprop``: ``chain(scale_by_rprop(...), scale(-1))``; see
    :func:`scale_by_rprop` (``learning_rate`` is the initial step size; a number).

    References:
      Riedmiller & Braun, ICNN 1993; Igel & Husken, Neurocomputing 2003.
    """
    with _checks.context("rprop"):
        return chain(scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size,
                                    max_step_size), _scale(-1.0), name="rprop")


# ----------------------------------------------------------- optimistic gradient


class ScaleByOptimisticGradientState(NamedTuple):
    """optax's ``ScaleByOptimisticGradientState``: whether no step was taken yet (a
    bool) and the last gradients."""

    is_initial_step: jax.Array
    previous_gradient: Updates


@described
def scale_by_optimistic_gradient(alpha=1.0, beta=1.0):
    """Generalized optimistic gradients, optax's ``scale_by_optimistic_gradient``::

        u_t = (alpha + beta) g_t - beta g_{t-1}        (g_0's predecessor: g_0 itself)

    Args:
      alpha, beta: numbers or scalar arrays (possibly traced); ``beta`` is the
        negative momentum.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByOptimisticGradientState`.

    References:
      Mokhtari, Ozdaglar, Pattathil, "A Unified Analysis of Extra-gradient and
      Optimistic Gradient Methods for Saddle Point Problems: Proximal Point Approach",
      AISTATS 2020, https://arxiv.org/abs/1901.08511.
    """
    fn = "scale_by_optimistic_gradient"
    check_hyperparameter(fn, "alpha", alpha)
    check_hyperparameter(fn, "beta", beta)
    with jax.numpy_dtype_promotion("standard"):     # optax's alpha + beta
        both = alpha + beta

    def init(params):
        return ScaleByOptimisticGradientState(is_initial_step=jnp.array(True),
                                              previous_gradient=zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByOptimisticGradientState, updates, "previous_gradient")

        def leaf(g, prev):
            dt = promote_dtypes(g.dtype, prev.dtype)
            g, prev = g.astype(dt), prev.astype(dt)
            prev = jnp.where(state.is_initial_step, g, prev)
            return cast_like(both, g) * g - cast_like(beta, g) * prev

        out = _map(leaf, updates, state.previous_gradient)
        return out, state._replace(
            is_initial_step=jnp.zeros_like(state.is_initial_step),
            previous_gradient=_map(lambda g, p: g.astype(p.dtype), updates,
                                   state.previous_gradient))

    return optimizer(init, update)


@described
def optimistic_gradient_descent(learning_rate, alpha=1.0, beta=1.0):
    """Optimistic gradient descent, optax's ``optimistic_gradient_descent``::

        W_t = W_{t-1} - lr ((alpha + beta) g_t - beta g_{t-1})

    an approximation of extra-gradient with last-iterate convergence in min-max games.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      alpha, beta: numbers (see :func:`scale_by_optimistic_gradient`).

    Returns:
      ``chain(scale_by_optimistic_gradient(alpha, beta),
      scale_by_learning_rate(learning_rate))``.

    References:
      Mokhtari et al., AISTATS 2020, https://arxiv.org/abs/1901.08511.
    """
    return _named("optimistic_gradient_descent",
                  lambda: scale_by_optimistic_gradient(alpha, beta),
                  learning_rate=learning_rate)


@described
def optimistic_adam(learning_rate, optimism=None, b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0,
                    mu_dtype=None, *, nesterov=True):
    """Optimistic Adam (Daskalakis et al., 2018), optax's ``optimistic_adam``: with
    ``r_t`` Adam's direction (NAdam's by default) and ``o = optimism``::

        W_t = W_{t-1} - lr r_t - o (r_t - r_{t-1})

    Args:
      learning_rate: a number >= 0 or a scalar array (not a schedule, as optax: use
        :func:`optimistic_adam_v2`).
      optimism: a number (``None``: the learning rate, as in the paper).
      b1, b2, eps, eps_root, mu_dtype, nesterov: see :func:`~funcnet.optim.scale_by_adam`.

    Returns:
      ``chain(scale_by_adam(...), scale_by_optimistic_gradient(learning_rate,
      optimism), scale_by_learning_rate(1.0))`` (optax deprecates this spelling; funcnet
      keeps it, without a warning).

    References:
      Daskalakis, Ilyas, Syrgkanis, Zeng, "Training GANs with Optimism", ICLR 2018,
      https://arxiv.org/abs/1711.00141.
    """
    fn = "optimistic_adam"
    if callable(learning_rate):
        raise TypeError(f"{fn}: learning_rate must be a number, got a schedule; "
                        f"optimistic_adam_v2 takes schedules")
    check_nonnegative(fn, "learning_rate", learning_rate)
    if optimism is None:
        optimism = learning_rate
    with _checks.context(fn):
        return chain(scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
                     scale_by_optimistic_gradient(learning_rate, optimism),
                     scale_by_learning_rate(1.0), name=fn)


@described
def optimistic_adam_v2(learning_rate, *, alpha=1.0, beta=1.0, b1=0.9, b2=0.999, eps=1e-08,
                       eps_root=0.0, mu_dtype=None, nesterov=True):
    """Optimistic Adam, optax's ``optimistic_adam_v2``: ``W_t = W_{t-1} - lr ((alpha +
    beta) r_t - beta r_{t-1})``, ``r_t`` Adam's (NAdam's) direction.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      alpha, beta: numbers (keyword-only, as every argument after ``learning_rate``).
      b1, b2, eps, eps_root, mu_dtype, nesterov: see :func:`~funcnet.optim.scale_by_adam`.

    Returns:
      ``chain(scale_by_adam(...), scale_by_optimistic_gradient(alpha, beta),
      scale_by_learning_rate(learning_rate))``.

    References:
      Daskalakis et al., ICLR 2018, https://arxiv.org/abs/1711.00141.
    """
    return _named("optimistic_adam_v2",
                  lambda: scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
                  lambda: scale_by_optimistic_gradient(alpha, beta),
                  learning_rate=learning_rate)


# ------------------------------------------------------------------------- Polyak


_POLYAK_VARIANTS = ("sps", "sps+")


@described
def scale_by_polyak(f_min=0.0, max_learning_rate=1.0, eps=0.0, variant="sps"):
    """Polyak's step size (Loizou et al., 2021), optax's ``scale_by_polyak``::

        gap = f(x) - f_min              ("sps+": max(gap, 0), Garrigos et al., 2023)
        u <- min(gap / (||u||^2 + eps), max_learning_rate) u
             (0 where ||u||^2 + eps <= float64 machine epsilon)

    with ``||u||`` the norm of the whole update tree and ``f(x)`` the ``value=``
    argument of ``update`` (the loss).

    Args:
      f_min: a finite number, a lower bound of the loss (0 for interpolating models).
      max_learning_rate: >= 0, the largest step.
      eps: >= 0, added to the squared norm.
      variant: ``"sps"`` or ``"sps+"`` (checked here; optax at the first update).

    Returns:
      A stateless ``Optimizer``; ``update`` needs ``value=``.

    References:
      Loizou, Vaswani, Laradji, Lacoste-Julien, "Stochastic Polyak Step-size for SGD: An
      Adaptive Learning Rate for Fast Convergence", AISTATS 2021,
      https://arxiv.org/abs/2002.10542. Garrigos et al., "Function value learning:
      Adaptive learning rates based on the Polyak stepsize and function splitting in
      ERM", 2023, https://arxiv.org/abs/2307.14528.
    """
    fn = "scale_by_polyak"
    check_hyperparameter(fn, "f_min", f_min)
    check_nonnegative(fn, "max_learning_rate", max_learning_rate)
    check_nonnegative(fn, "eps", eps)
    _checks.static_choice(fn, "variant", variant, _POLYAK_VARIANTS)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        check_empty_state(fn, state)
        if value is None:
            raise TypeError(f"{fn}: update needs value= (the loss; funcnet.train's step "
                            f"passes it)")
        sq = squared_norm(updates)
        with jax.numpy_dtype_promotion("standard"):     # optax's value - f_min
            gap = jnp.asarray(value - f_min).astype(sq.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        e = cast_like(eps, sq)
        step = jnp.where(sq + e <= float(np.finfo(float).eps), jnp.zeros_like(sq),
                         jnp.minimum(gap / (sq + e), cast_like(max_learning_rate, sq)))

        def scaled(u):
            dt = promote_dtypes(step.dtype, u.dtype)
            return step.astype(dt) * u.astype(dt)

        return _map(scaled, updates), state

    return optimizer(init, update)


@described
def polyak_sgd(max_learning_rate=1.0, scaling=1.0, f_min=0.0, eps=0.0, variant="sps"):
    """SGD with Polyak's step size, optax's ``polyak_sgd``: ``chain(sgd(scaling),
    scale_by_polyak(f_min, max_learning_rate, eps, variant))``; ``update`` needs
    ``value=`` (``fit``'s step passes the batch loss). As optax, the norm is the one of
    the ``-scaling``-scaled gradients (so ``scaling`` enters the step as ``1 /
    scaling``). See :func:`scale_by_polyak`.

    Args:
      max_learning_rate: >= 0.
      scaling: a number >= 0, a scalar array or a schedule.
      f_min, eps, variant: see :func:`scale_by_polyak`.

    References:
      Loizou et al., AISTATS 2021, https://arxiv.org/abs/2002.10542.
    """
    fn = "polyak_sgd"
    with _checks.context(fn):
        return chain(sgd(learning_rate=scaling),
                     scale_by_polyak(f_min, max_learning_rate, eps, variant), name=fn)


# ----------------------------------------------------------------------------- SM3


class ScaleBySM3State(NamedTuple):
    """optax's ``ScaleBySM3State``: per leaf, a list of one accumulator per axis
    (``mu``, the maxima over the other axes), and the momentum ``nu``."""

    mu: Updates
    nu: Updates


def _per_axis(fn, p):
    if jnp.iscomplexobj(p):
        raise TypeError(f"{fn}: complex parameters are not supported (as optax's SM3)")
    if p.ndim == 0:
        raise ValueError(f"{fn}: a scalar parameter has no axis to keep an accumulator "
                         f"on (optax's SM3 fails on it too); reshape it to (1,)")
    return [jnp.zeros((p.shape[i],), p.dtype) for i in range(p.ndim)]


@described
def scale_by_sm3(b1=0.9, b2=1.0, eps=1e-8):
    """SM3's direction (Anil et al., 2019), optax's ``scale_by_sm3``: one accumulator
    per axis of each leaf (a ``(m, n)`` kernel keeps ``m + n`` numbers, not ``m n``)::

        v_t = c |g_t|^2 + b2 min_axes mu_{t-1}      (c = 1 - b2, or 1 when b2 = 1)
        mu_t[axis] = max of v_t over the other axes
        r_t = g_t / sqrt(v_t + eps)   (0 where v_t = 0)
        u_t = nu_t = b1 nu_{t-1} + (1 - b1) r_t

    (``min_axes`` broadcasts each axis' accumulator back to the leaf's shape; a vector
    keeps one per element, as AdaGrad.)

    Args:
      b1: momentum decay in [0, 1).
      b2: in [0, 1] (1, the default: SM3's running sum).
      eps: >= 0, inside the square root.

    Returns:
      An ``Optimizer`` with state :class:`ScaleBySM3State`. Real parameters of rank >= 1.

    References:
      Anil, Gupta, Koren, Singer, "Memory-Efficient Adaptive Optimization", NeurIPS
      2019, https://arxiv.org/abs/1901.11150.
    """
    fn = "scale_by_sm3"
    check_decay(fn, "b1", b1)
    check_hyperparameter(fn, "b2", b2, 0.0, 1.0)
    check_nonnegative(fn, "eps", eps)
    b2_value = _checks.concrete(b2)
    running_sum = b2_value is not None and float(b2_value) == 1.0

    def init(params):
        return ScaleBySM3State(mu=_map(lambda p: _per_axis(fn, p), params),
                               nu=zeros_like(params))

    def leaf(g, accs, nu):
        n = g.ndim
        views = [a.reshape([1] * i + [a.shape[0]] + [1] * (n - i - 1))
                 for i, a in enumerate(accs)]
        low = views[0] if n < 2 else functools.reduce(jnp.minimum, views)
        dt = promote_dtypes(g.dtype, low.dtype)
        g2 = (g * g).astype(dt)
        if running_sum:
            v = g2 + low.astype(dt)
        else:
            v = cast_like(1 - b2, g2) * g2 + cast_like(b2, g2) * low.astype(dt)
        r = g.astype(dt) * jnp.where(v > 0, jax.lax.rsqrt(v + cast_like(eps, v)),
                                     jnp.zeros_like(v))
        new_nu = moment(b1, r, nu)
        maxima = [v if n < 2 else jnp.max(v, axis=tuple(j for j in range(n) if j != i))
                  for i in range(n)]
        return new_nu, [m.astype(a.dtype) for m, a in zip(maxima, accs)]

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleBySM3State, updates, "nu")
        treedef = jax.tree_util.tree_structure(updates)
        pairs = [leaf(g, accs, nu) for g, accs, nu in zip(
            jax.tree_util.tree_leaves(updates), treedef.flatten_up_to(state.mu),
            jax.tree_util.tree_leaves(state.nu))]
        nu = treedef.unflatten([p[0] for p in pairs])
        mu = treedef.unflatten([p[1] for p in pairs])
        return nu, state._replace(mu=mu, nu=_map(lambda n, o: n.astype(o.dtype), nu,
                                                 state.nu))

    return optimizer(init, update)


@described
def sm3(learning_rate, momentum=0.9):
    """SM3, optax's ``sm3``: ``chain(scale_by_sm3(momentum), scale(-learning_rate))``;
    see :func:`scale_by_sm3`.

    Args:
      learning_rate: a number >= 0 or a scalar array; a schedule too (a funcnet
        extension: optax's ``scale(-lr)`` takes none), then the state is
        :class:`~funcnet.optim.ScaleByScheduleState`'s.
      momentum: decay of the momentum in [0, 1).

    References:
      Anil et al., NeurIPS 2019, https://arxiv.org/abs/1901.11150.
    """
    return _named("sm3", lambda: scale_by_sm3(momentum), learning_rate=learning_rate)


# -------------------------------------------------------------------------- Fromage


@described
def fromage(learning_rate, min_norm=1e-6):
    """Fromage (Bernstein et al., 2020), optax's ``fromage``: a step of relative size
    ``lr`` per leaf, then a shrink that keeps the weights' norms from growing::

        W_t = (W_{t-1} - lr ||W_{t-1}|| / ||g_t|| g_t) / sqrt(1 + lr^2)

    (norms per leaf, clipped below at ``min_norm``), built as optax's
    ``chain(scale_by_trust_ratio(min_norm), scale_by_learning_rate(lr m),
    add_decayed_weights(m - 1))`` with ``m = 1 / sqrt(1 + lr^2)``.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule (``m`` follows it).
      min_norm: >= 0.

    Returns:
      An ``Optimizer``; ``update`` needs ``params``.
      :func:`~funcnet.optim.current_learning_rate` reports ``lr m``.

    References:
      Bernstein, Vahdat, Yue, Liu, "On the distance between two neural networks and the
      stability of learning", NeurIPS 2020, https://arxiv.org/abs/2002.03432.
    """
    fn = "fromage"
    check_scalar_or_schedule(fn, "learning_rate", learning_rate)
    with _checks.context(fn):
        if not callable(learning_rate):
            mult = 1 / (1 + learning_rate ** 2) ** 0.5
            blocks = (scale_by_learning_rate(learning_rate * mult),
                      decayed_weights(mult - 1))
        else:
            mult_lr = lambda c: 1 / (1 + learning_rate(c) ** 2) ** 0.5  # noqa: E731
            blocks = (scale_by_learning_rate(lambda c: mult_lr(c) * learning_rate(c)),
                      decayed_weights(lambda c: mult_lr(c) - 1))
        return chain(scale_by_trust_ratio(min_norm), *blocks, name=fn)

