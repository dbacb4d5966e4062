"""Sharpness-aware minimization (Foret et al., 2021): optax 0.2.8's
``optax.contrib.sam`` (``SAMState``) and its helper ``normalize`` (``NormalizeState``),
flat in ``funcnet.optim``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    EmptyState, OptState, apply_updates, check_state, optimizer as make_optimizer,
    promote_dtypes, select_tree, zero_count)
from funcnet.optim.combine import call_update
from funcnet.optim.regularization import global_norm
from funcnet.optim.transforms import _stateless
from funcnet._describe import described

_map = jax.tree_util.tree_map

NormalizeState = EmptyState   # optax's alias


@described
def normalize():
    """Divide the updates by their global norm (optax's ``optax.contrib.normalize``):
    ``u <- u / ||u||`` over the whole tree (NaN for an all-zero tree, as optax). SAM's
    ascent step is ``chain(normalize(), sgd(rho))``.

    Returns:
      A stateless ``Optimizer``.
    """
    def transform(updates, params):
        del params
        norm = global_norm(updates)
        return _map(lambda g: g / norm.astype(g.dtype), updates)

    return _stateless("normalize", transform)


class SAMState(NamedTuple):
    """optax's ``SAMState``: the adversarial steps since the last outer update (int32),
    the outer and the adversarial optimizers' states, and the parameters of the last
    outer update (``None`` in opaque mode)."""

    steps_since_sync: jax.Array
    opt_state: OptState
    adv_state: OptState
    cache: Any


@described
def sam(optimizer, adv_optimizer, sync_period=2, reset_state=True, opaque_mode=False,
        batch_axis_name=None):
    """Sharpness-aware minimization (Foret et al., 2021), optax's
    ``optax.contrib.sam``: ``sync_period - 1`` ascent steps of ``adv_optimizer`` from
    the outer parameters ``w``, then one step of ``optimizer`` from ``w`` with the
    gradient at the perturbed point::

        w_adv = w + rho g / ||g||             (adv_optimizer = chain(normalize(), sgd(rho)))
        w <- w + optimizer(grad L(w_adv))

    Transparent mode (default): each ``update`` call is one of those steps; the returned
    updates move the parameters to the perturbed point, and on the last call of the
    period back to ``w`` plus the outer step (so the gradients of every call are taken
    at the parameters the previous one produced). Opaque mode: one call does the
    whole period, calling ``update(..., grad_fn=grad_fn)``'s ``grad_fn(params, i)``
    ``sync_period - 1`` times.

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the ascent optimizer (its updates are negated).
      sync_period: int >= 1, calls per outer update (2: the paper's one ascent step).
      reset_state: re-initialize ``adv_optimizer``'s state after each outer update.
        (States are selected leaf by leaf, so they keep their dtypes and classes;
        optax's arithmetic selection needs numeric leaves.)
      opaque_mode: run the ascent steps inside ``update`` (needs ``grad_fn=``).
      batch_axis_name: opaque mode only: ``lax.pmean`` the ascent gradients over it.

    Returns:
      An ``Optimizer`` with state :class:`SAMState`; ``update`` needs ``params``. Other
      extra arguments of ``update`` go to both optimizers (optax's take none). An optax
      state continues here; optax's ``sam`` selects between the inner states it is given
      and those its inner optimizers return, so it needs its own classes: give it a
      funcnet state as ``jax.tree_util.tree_unflatten(structure_of_an_optax_state,
      jax.tree_util.tree_leaves(state))``.

    References:
      Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-Aware Minimization for Efficiently
      Improving Generalization", ICLR 2021, https://arxiv.org/abs/2010.01412.
    """
    fn = "sam"
    _checks.check_optimizer(fn, "optimizer", optimizer)
    _checks.check_optimizer(fn, "adv_optimizer", adv_optimizer)
    sync_period = _checks.static_int(fn, "sync_period", sync_period, minimum=1)
    reset_state = _checks.static_bool(fn, "reset_state", reset_state)
    opaque_mode = _checks.static_bool(fn, "opaque_mode", opaque_mode)
    if batch_axis_name is not None and not isinstance(batch_axis_name, str):
        raise TypeError(f"{fn}: batch_axis_name must be a str or None, got "
                        f"{type(batch_axis_name).__name__}")

    def init(params):
        return SAMState(steps_since_sync=zero_count(), opt_state=optimizer.init(params),
                        adv_state=adv_optimizer.init(params),
                        cache=None if opaque_mode else _map(jnp.array, params))

    def negated(tree):
        return _map(lambda x: -x, tree)

    def transparent(updates, state, params, extra_args):
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = call_update(adv_optimizer, updates, state.adv_state,
                                             params, extra_args)
        opt_updates, opt_state = call_update(optimizer, updates, state.opt_state,
                                             state.cache, extra_args)

        def back(c, p, u):   # from the perturbed point back to the cache, plus the step
            dt = promote_dtypes(c.dtype, p.dtype, u.dtype)
            return c.astype(dt) - p.astype(dt) + u.astype(dt)

        opt_updates = _map(back, state.cache, params, opt_updates)
        cache = select_tree(first, _map(lambda p, c: p.astype(c.dtype), params, state.cache),
                        state.cache)
        out = select_tree(last, opt_updates, negated(adv_updates))
        kept = adv_optimizer.init(params) if reset_state else state.adv_state
        return out, state._replace(
            steps_since_sync=(state.steps_since_sync + 1) % sync_period,
            adv_state=select_tree(last, kept, adv_state),
            opt_state=select_tree(last, opt_state, state.opt_state), cache=cache)

    def opaque(updates, state, params, extra_args, grad_fn):
        if grad_fn is None:
            raise ValueError(f"{fn}: opaque_mode=True needs update(..., grad_fn=) (a "
                             f"function (params, i) -> gradients)")
        adv_params, adv_updates, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = call_update(adv_optimizer, adv_updates, adv_state,
                                                 adv_params, extra_args)
            adv_params = apply_updates(adv_params, negated(adv_updates))
            adv_updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        out, opt_state = call_update(optimizer, adv_updates, state.opt_state, params,
                                     extra_args)
        return out, state._replace(steps_since_sync=zero_count(), opt_state=opt_state,
                                   adv_state=adv_state, cache=None)

    def update(updates, state, params=None, *, grad_fn=None, **extra_args):
        check_state(fn, state, SAMState)
        if params is None:
            raise ValueError(f"{fn}: update needs params (got params=None)")
        if opaque_mode:
            return opaque(updates, state, params, extra_args, grad_fn)
        return transparent(updates, state, params, extra_args)

    return make_optimizer(init, update)
