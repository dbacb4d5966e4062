"""Sophia: Adam's momentum over a clipped, periodically estimated Hessian diagonal
(``optax.contrib``'s ``sophia``, ``scale_by_sophia`` and Hutchinson's estimator
``hutchinson_estimator_diag_hessian``). ``update`` needs ``obj_fn=`` (``params ->
loss``) for the default estimator.

Names, signatures, defaults and state classes are optax 0.2.8's (``SophiaState``,
``HutchinsonState``: the key as given, a raw ``PRNGKey(0)`` by default, as optax).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet._random import draw
from funcnet.optim.adaptive import debiased_mean, keep_dtypes
from funcnet.optim.adaptive_more import _check_betas
from funcnet.optim.base import (
    Updates, cast_like, check_count, check_hyperparameter, check_nonnegative,
    check_optional_dtype, check_state, moment, optimizer, promote_dtypes, safe_increment,
    tree_dtype, zero_count, zeros_like)
from funcnet.optim.combine import call_update
from funcnet.optim.contrib_common import chain_under
from funcnet.optim.regularization import _check_params, add_decayed_weights
from funcnet.optim.transforms import scale_by_learning_rate
from funcnet._describe import described

_map = jax.tree_util.tree_map


class HutchinsonState(NamedTuple):
    """optax's ``optax.contrib.HutchinsonState``: the PRNG key (split at each update)."""

    key: jax.Array


@described
def hutchinson_estimator_diag_hessian(random_seed=None):
    """Hutchinson's estimate of the Hessian diagonal, optax's
    ``optax.contrib.hutchinson_estimator_diag_hessian``: with Rademacher signs ``z`` (one
    key per leaf from a split of the state's key, drawn in float32 then cast to the
    parameters' lowest dtype), ``diag(H) ~ z * (H z)``, ``H z`` a JVP of
    ``jax.grad(obj_fn)`` at the parameters. Unbiased, high variance.

    Args:
      random_seed: a PRNG key (raw ``uint32[2]`` or typed) or None (``PRNGKey(0)``).

    Returns:
      An ``Optimizer`` with state :class:`HutchinsonState`; ``update`` needs ``params``
      and ``obj_fn=`` (``params -> scalar loss``); the gradients it gets are ignored.
    """
    fn = "hutchinson_estimator_diag_hessian"
    if random_seed is not None:
        random_seed = _checks.check_key(fn, random_seed, name="random_seed")

    def init(params):
        del params
        return HutchinsonState(key=jax.random.PRNGKey(0) if random_seed is None
                               else random_seed)

    def update(updates, state, params=None, obj_fn=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        if obj_fn is None:
            raise TypeError(f"{fn}: update needs obj_fn= (params -> loss), the function "
                            f"whose Hessian diagonal is estimated")
        check_state(fn, state, HutchinsonState)
        key, sub = jax.random.split(state.key)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        dt = tree_dtype(fn, params, "lowest")
        signs = treedef.unflatten([
            draw(lambda k, s: jax.random.rademacher(k, s, jnp.float32), k, jnp.shape(x)).astype(dt)
            for k, x in zip(jax.random.split(sub, len(leaves)), leaves)])
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return _map(lambda h, z: h * z.astype(h.dtype), hvp, signs), state._replace(key=key)

    return optimizer(init, update)


class SophiaState(NamedTuple):
    """optax's ``optax.contrib.SophiaState``: the count (int32), the momentum ``mu``
    (``mu_dtype``), the EMA ``nu`` of the Hessian diagonal and the estimator's state."""

    count: jax.Array
    mu: Updates
    nu: Updates
    hessian_fn_state: Any


def _check_sophia(fn, b1, b2, eps, gamma, clip_threshold, update_interval,
                  hessian_diagonal_fn, verbose, print_win_rate_every_n_steps):
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "gamma", gamma)
    if clip_threshold is not None:
        check_hyperparameter(fn, "clip_threshold", clip_threshold, 0.0, low_inclusive=False)
    check_count(fn, "update_interval", update_interval, 1)
    _checks.check_optimizer(fn, "hessian_diagonal_fn", hessian_diagonal_fn)
    verbose = _checks.static_bool(fn, "verbose", verbose)
    if verbose:     # optax would take the count modulo 0
        check_count(fn, "print_win_rate_every_n_steps", print_win_rate_every_n_steps, 1)
    return verbose


@described
def scale_by_sophia(b1=0.965, b2=0.99, eps=1e-8, gamma=0.01, clip_threshold=1.0,
                    update_interval=10, hessian_diagonal_fn=hutchinson_estimator_diag_hessian(),
                    mu_dtype=None, verbose=False, print_win_rate_every_n_steps=0):
    """Sophia's direction (Liu et al., 2023), optax's ``scale_by_sophia``::

        m_t = b1 m + (1 - b1) g,    u_t = clip(m_t / (1 - b1^t) / max(gamma h, eps), ±c)
        every update_interval steps (the first included), after u_t:
            h <- b2 h + (1 - b2) hessian_diagonal_fn(g, params, **extra)

    with ``h`` the previous steps' estimate (0 at first: the first update is
    ``clip(m_1 / eps)``) and ``c = clip_threshold`` (None: no clipping).

    Args:
      b1, b2: decays in [0, 1) (``b2`` acts every ``update_interval`` steps).
      eps: >= 0, the floor of ``gamma h``.
      gamma: >= 0.
      clip_threshold: > 0 or None.
      update_interval: int >= 1 (an integer array too).
      hessian_diagonal_fn: an optimizer whose update gives the diagonal (Hutchinson's by
        default, which needs ``update(..., obj_fn=)``); extra arguments go to it.
      mu_dtype: dtype of ``mu`` (default: the parameters').
      verbose: print the share of unclipped coordinates every
        ``print_win_rate_every_n_steps`` (then int >= 1) updates (``jax.debug.print``).

    Returns:
      An ``Optimizer`` with state :class:`SophiaState`; ``update`` needs ``params``.

    References:
      Liu, Li, Hall, Liang, Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for
      Language Model Pre-training", ICLR 2024, https://arxiv.org/abs/2305.14342.
    """
    fn = "scale_by_sophia"
    verbose = _check_sophia(fn, b1, b2, eps, gamma, clip_threshold, update_interval,
                            hessian_diagonal_fn, verbose, print_win_rate_every_n_steps)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)

    def init(params):
        return SophiaState(count=zero_count(), mu=zeros_like(params, mu_dtype),
                           nu=zeros_like(params),
                           hessian_fn_state=hessian_diagonal_fn.init(params))

    def update(updates, state, params=None, **extra_args):
        _check_params(fn, updates, params)
        check_state(fn, state, SophiaState, updates, "mu")
        count = safe_increment(state.count)
        mu = _map(lambda g, m: moment(b1, g, m), updates, state.mu)

        def direction(m, h):
            dt = promote_dtypes(m.dtype, h.dtype)
            floor = jnp.maximum(cast_like(gamma, h) * h, cast_like(eps, h)).astype(dt)
            return debiased_mean(b1, m, count).astype(dt) / floor

        out = _map(direction, mu, state.nu)
        if clip_threshold is not None:
            if verbose:
                kept = sum(jnp.sum(jnp.abs(u) < cast_like(clip_threshold, u))
                           for u in jax.tree_util.tree_leaves(out))
                size = sum(jnp.size(u) for u in jax.tree_util.tree_leaves(out))
                jax.lax.cond(count % print_win_rate_every_n_steps == 0,
                             lambda: jax.debug.print("Sophia optimizer win rate: {}",
                                                     kept / size), lambda: None)
            out = _map(lambda u: jnp.clip(u, -cast_like(clip_threshold, u),
                                          cast_like(clip_threshold, u)), out)

        def refresh(hs, nu):
            with _checks.context(fn):
                diag, hs = call_update(hessian_diagonal_fn, updates, hs, params, extra_args)
            return hs, keep_dtypes(_map(lambda d, h: moment(b2, d, h), diag, nu), nu)

        hs, nu = jax.lax.cond(state.count % update_interval == 0, refresh, lambda h, n: (h, n),
                              state.hessian_fn_state, state.nu)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu), nu=nu,
                                   hessian_fn_state=hs)

    return optimizer(init, update)


@described
def sophia(learning_rate, b1=0.965, b2=0.99, eps=1e-8, weight_decay=1e-4,
           weight_decay_mask=None, gamma=0.01, clip_threshold=1.0, update_interval=10,
           hessian_diagonal_fn=hutchinson_estimator_diag_hessian(), mu_dtype=None,
           verbose=False, print_win_rate_every_n_steps=0):
    """Sophia (Liu et al., 2023), optax's ``optax.contrib.sophia``:
    ``chain(scale_by_sophia(...), add_decayed_weights(weight_decay, weight_decay_mask),
    scale_by_learning_rate(learning_rate))``; ``update(..., obj_fn=lambda p:
    loss(p, batch))`` for the default Hutchinson estimator. See
    :func:`scale_by_sophia`.

    References:
      Liu et al., ICLR 2024, https://arxiv.org/abs/2305.14342.
    """
    return chain_under(
        "sophia", lambda: scale_by_sophia(
            b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn,
            mu_dtype, verbose, print_win_rate_every_n_steps),
        lambda: add_decayed_weights(weight_decay, weight_decay_mask),
        lambda: scale_by_learning_rate(learning_rate))
