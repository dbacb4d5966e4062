"""Distance-over-gradients step sizes: DoG and DoWG (``optax.contrib``'s ``dog``,
``scale_by_dog``, ``dowg``, ``scale_by_dowg``) and layer-wise DoG (optax's
``scale_by_distance_over_gradients``).

The step size is the largest distance travelled from the initial parameters over the
root of the summed squared gradient norms, so no learning rate is tuned. Names,
signatures, defaults and state classes are optax 0.2.8's (``DoGState``, ``DoWGState``,
``ScaleByDistanceOverGradientsState``); the states copy the initial parameters, and keep
their dtypes across updates.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    OptState, Updates, cast_like, check_hyperparameter, check_nonnegative,
    check_optional_dtype, check_state, optimizer, promote_dtypes, split, tree_dtype)
from funcnet.optim.contrib_common import chain_under, times
from funcnet.optim.regularization import _check_params, add_decayed_weights, squared_norm
from funcnet.optim.transforms import identity, scale_by_learning_rate
from funcnet._describe import described

_map = jax.tree_util.tree_map


def _diff(x, y):
    """``x - y`` in the promoted dtype of the two."""
    dt = promote_dtypes(x.dtype, y.dtype)
    return x.astype(dt) - y.astype(dt)


def _sq_dist(a, b):
    """``||a - b||^2`` over the trees."""
    return squared_norm(_map(_diff, a, b))


def _copy(params):
    return _map(jnp.array, params)


# ---------------------------------------------------------------------------- DoG


class DoGState(NamedTuple):
    """optax's ``optax.contrib.DoGState``: whether the next step is the first (bool),
    the initial parameters, the largest distance from them ``r_bar`` and the sum of
    squared gradient norms ``G`` (scalars of the parameters' lowest dtype)."""

    is_init_step: jax.Array
    init_params: Updates
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


_DOG_INIT = ("distance", "learning_rate", "heuristic")


def _check_init_step(fn, init_step):
    if not (isinstance(init_step, (tuple, list)) and len(init_step) == 2):
        raise TypeError(f"{fn}: init_step must be a pair (tag, value), got "
                        f"{init_step!r:.60}")
    tag, value = init_step
    _checks.static_choice(fn, "init_step[0]", tag, _DOG_INIT)
    check_nonnegative(fn, "init_step[1]", value)
    return tag, value


@described
def scale_by_dog(init_step, eps=1e-8):
    """DoG's step size (Ivgi et al., 2023), optax's ``optax.contrib.scale_by_dog``::

        r_bar_t = max(r_bar_{t-1}, ||x_t - x_0||),   G_t = G_{t-1} + ||g_t||^2
        u_t = r_bar_t / sqrt(G_t + eps) g_t

    norms over the whole tree. ``init_step = (tag, value)`` sets the start:
    ``"distance"``: ``r_bar_0 = value``; ``"heuristic"``: ``r_bar_0 = value (1 +
    ||x_0||)`` (``init`` must get the real parameters); ``"learning_rate"``: the first
    step is ``value g_0`` (and ``r_bar_0 = 0``).

    Args:
      init_step: ``(tag, value)``, tag one of ``"distance"``, ``"learning_rate"``,
        ``"heuristic"`` (checked here; optax at ``init``), value >= 0.
      eps: >= 0, added to ``G``.

    Returns:
      An ``Optimizer`` with state :class:`DoGState`; ``update`` needs ``params``.

    References:
      Ivgi, Hinder, Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
      Size Schedule", ICML 2023, https://arxiv.org/abs/2302.12022.
    """
    fn = "scale_by_dog"
    tag, value = _check_init_step(fn, init_step)
    check_nonnegative(fn, "eps", eps)

    def init(params):
        dt = tree_dtype(fn, params, "lowest")
        if tag == "distance":
            r0 = jnp.asarray(value)
        elif tag == "heuristic":
            norm = jnp.sqrt(squared_norm(params))
            r0 = cast_like(value, norm) * (1 + norm)
        else:
            r0 = jnp.zeros(())
        return DoGState(is_init_step=jnp.asarray(True), init_params=_copy(params),
                        max_dist=r0.astype(dt), sum_sq_norm_grads=jnp.zeros((), dt))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, DoGState, updates, "init_params")
        r = state.max_dist
        max_dist = jnp.maximum(r, jnp.sqrt(_sq_dist(state.init_params, params)).astype(r.dtype))
        g_sq = (state.sum_sq_norm_grads + squared_norm(updates).astype(r.dtype))
        lr = max_dist / jnp.sqrt(g_sq + cast_like(eps, g_sq))
        if tag == "learning_rate":
            lr = jnp.where(state.is_init_step, cast_like(value, lr), lr)
        return _map(lambda g: times(lr, g), updates), state._replace(
            is_init_step=jnp.asarray(False), max_dist=max_dist, sum_sq_norm_grads=g_sq)

    return optimizer(init, update)


@described
def dog(learning_rate=1.0, init_step=("heuristic", 1e-6), eps=1e-8, weight_decay=None,
        mask=None):
    """DoG, optax's ``optax.contrib.dog``: ``chain(add_decayed_weights(weight_decay, mask)
    (identity for None), scale_by_dog(init_step, eps), scale_by_learning_rate(lr))``::

        x_{t+1} = x_t - lr_t r_bar_t / sqrt(G_t + eps) (g_t + wd x_t)

    see :func:`scale_by_dog`. The paper recommends averaging the iterates.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule (a multiplier, 1).
      init_step: ``(tag, value)``; see :func:`scale_by_dog`.
      eps: >= 0.
      weight_decay: None (no block) or >= 0 (a schedule too), added before DoG's step.
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    References:
      Ivgi et al., ICML 2023, https://arxiv.org/abs/2302.12022.
    """
    return chain_under(
        "dog", lambda: identity() if weight_decay is None else add_decayed_weights(
            weight_decay, mask),
        lambda: scale_by_dog(init_step, eps), lambda: scale_by_learning_rate(learning_rate))


# --------------------------------------------------------------------------- DoWG


class DoWGState(NamedTuple):
    """optax's ``optax.contrib.DoWGState``: the initial parameters, the weighted sum of
    squared gradient norms ``v`` and the squared distance estimate ``r_bar^2`` (scalars
    of the parameters' lowest dtype)."""

    init_params: Updates
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


@described
def scale_by_dowg(init_estim_sq_dist=None, eps=1e-4):
    """DoWG's step size (Khaled et al., 2023), optax's ``optax.contrib.scale_by_dowg``::

        r2_t = max(r2_{t-1}, ||x_t - x_0||^2),   v_t = v_{t-1} + r2_t ||g_t||^2
        u_t = r2_t / (sqrt(v_t) + eps) g_t

    Args:
      init_estim_sq_dist: > 0, ``r2_0``, or None (``eps``).
      eps: > 0, in the denominator (and ``r2_0`` by default).

    Returns:
      An ``Optimizer`` with state :class:`DoWGState`; ``update`` needs ``params``.

    References:
      Khaled, Mishchenko, Jin, "DoWG Unleashed: An Efficient Universal Parameter-Free
      Gradient Descent Method", NeurIPS 2023, https://arxiv.org/abs/2305.16284.
    """
    fn = "scale_by_dowg"
    if init_estim_sq_dist is not None:
        check_hyperparameter(fn, "init_estim_sq_dist", init_estim_sq_dist, 0.0,
                             low_inclusive=False)
    check_hyperparameter(fn, "eps", eps, 0.0, low_inclusive=False)

    def init(params):
        dt = tree_dtype(fn, params, "lowest")
        r2 = eps if init_estim_sq_dist is None else init_estim_sq_dist
        return DoWGState(init_params=_copy(params), weighted_sq_norm_grads=jnp.zeros((), dt),
                         estim_sq_dist=jnp.asarray(r2).astype(dt))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, DoWGState, updates, "init_params")
        r2 = state.estim_sq_dist
        r2 = jnp.maximum(r2, _sq_dist(state.init_params, params).astype(r2.dtype))
        v = r2 * squared_norm(updates).astype(r2.dtype) + state.weighted_sq_norm_grads
        lr = r2 / (jnp.sqrt(v) + cast_like(eps, v))
        return _map(lambda g: times(lr, g), updates), state._replace(
            estim_sq_dist=r2, weighted_sq_norm_grads=v)

    return optimizer(init, update)


@described
def dowg(learning_rate=1.0, init_estim_sq_dist=None, eps=1e-4, weight_decay=None, mask=None):
    """DoWG, optax's ``optax.contrib.dowg``: ``chain(add_decayed_weights(weight_decay,
    mask) (identity for None), scale_by_dowg(init_estim_sq_dist, eps),
    scale_by_learning_rate(lr))``; see :func:`scale_by_dowg`.

    References:
      Khaled et al., NeurIPS 2023, https://arxiv.org/abs/2305.16284.
    """
    return chain_under(
        "dowg", lambda: identity() if weight_decay is None else add_decayed_weights(
            weight_decay, mask),
        lambda: scale_by_dowg(init_estim_sq_dist, eps),
        lambda: scale_by_learning_rate(learning_rate))


# ------------------------------------------------------------------ layer-wise DoG


class ScaleByDistanceOverGradientsState(NamedTuple):
    """optax's ``ScaleByDistanceOverGradientsState``: per leaf, the largest distance
    from the initial leaf (shape ``()``, the leaf's dtype), the sum of squared gradients
    (shape ``(1,)``, JAX's default float, as optax) and the initial leaf (in
    ``param_dtype``)."""

    max_dist: OptState
    grad_sum_of_squares: OptState
    init_params: OptState


def _l2(x, y=None):
    if y is not None:
        x = _diff(x, y)
    return jnp.sqrt(jnp.sum(jnp.square(x)))


@described
def scale_by_distance_over_gradients(reps_rel=1e-6, eps=1e-8, param_dtype=jnp.float32,
                                     global_scale=1.0):
    """Layer-wise DoG (LDoG, Ivgi et al., 2023), optax's
    ``scale_by_distance_over_gradients``: DoG's step per leaf (per parameter array)::

        r_t = max(r_{t-1}, ||x_t - x_0||),   G_t = G_{t-1} + ||g_t||^2   (this leaf's)
        u_t = global_scale r_t / sqrt(G_t + eps) g_t,     r_0 = reps_rel (1 + ||x_0||)

    The update is the gradient's direction (``global_scale=-1`` for descent). As optax,
    ``x_0`` is stored in ``param_dtype`` (float32 by default: the distances are then
    measured from the float32 rounding of ``x_0``). A scalar leaf's update keeps shape
    ``()`` (optax's has shape ``(1,)``).

    Args:
      reps_rel: >= 0 (1e-6; 1e-4 for models with batch norm).
      eps: >= 0, added to ``G``.
      param_dtype: dtype of the stored initial parameters, or None (theirs).
      global_scale: a finite number, typically 1 or -1.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByDistanceOverGradientsState`; ``update``
      needs ``params``.

    References:
      Ivgi et al., ICML 2023, https://arxiv.org/abs/2302.12022.
    """
    fn = "scale_by_distance_over_gradients"
    check_nonnegative(fn, "reps_rel", reps_rel)
    check_nonnegative(fn, "eps", eps)
    param_dtype = check_optional_dtype(fn, "param_dtype", param_dtype)
    check_hyperparameter(fn, "global_scale", global_scale)

    def init(params):
        return ScaleByDistanceOverGradientsState(
            max_dist=_map(lambda x: cast_like(reps_rel, x) * (1 + _l2(x)), params),
            grad_sum_of_squares=_map(lambda x: jnp.zeros(1), params),
            init_params=_map(lambda x: x.astype(x.dtype if param_dtype is None
                                                 else param_dtype), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(fn, updates, params)
        check_state(fn, state, ScaleByDistanceOverGradientsState, updates, "init_params")

        def leaf(g, d, s, x, x0):
            d = jnp.maximum(d, _l2(x, x0).astype(d.dtype))
            s = s + jnp.sum(jnp.square(g)).astype(s.dtype)
            eta = (d.astype(s.dtype) / jnp.sqrt(s + cast_like(eps, s)))
            return times(cast_like(global_scale, eta) * eta[0], g), d, s

        u, d, s = split(updates, _map(leaf, updates, state.max_dist,
                                      state.grad_sum_of_squares, params,
                                      state.init_params), 3)
        return u, state._replace(max_dist=d, grad_sum_of_squares=s)

    return optimizer(init, update)
