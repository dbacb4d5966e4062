"""Small blocks users chain (optax's names, signatures and states): ``zero_nans``,
``adaptive_grad_clip``, ``centralize``, ``scale_by_sign`` and ``add_noise``.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet._random import normal_like
from funcnet.optim.base import (
    EmptyState, _wide, abs_sq, check_hyperparameter, check_state, check_trees_match, optimizer,
    safe_increment, zero_count)
from funcnet.optim.regularization import _check_params
from funcnet.optim.transforms import _stateless
from funcnet._describe import described

_map = jax.tree_util.tree_map


class ZeroNansState(NamedTuple):
    """optax's ``ZeroNansState``: per leaf, a bool scalar, True when the last update had a
    NaN there (informational; not used by the block)."""

    found_nan: Any


@described
def zero_nans():
    """Replace NaNs in the updates by 0 (optax's ``zero_nans``); the state records which
    leaves had one (:class:`ZeroNansState`).

    Returns:
      An ``Optimizer`` with state :class:`ZeroNansState`.
    """
    fn = "zero_nans"

    def init(params):
        return ZeroNansState(found_nan=_map(lambda p: jnp.array(False), params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ZeroNansState)
        check_trees_match(fn, "grads", _map(lambda g: 0, updates), "state.found_nan",
                          _map(lambda f: 0, state.found_nan))
        found = _map(lambda g: jnp.any(jnp.isnan(g)), updates)
        out = _map(lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), updates)
        return out, state._replace(found_nan=found)

    return optimizer(init, update)


AdaptiveGradClipState = EmptyState   # optax's alias


def _unitwise_norm(fn, x, axis):
    """The L2 norm of each unit of ``x``, broadcast to its shape (optax's rules: a vector
    (or scalar) is one unit; rank 2 and 3: per column, axis 0; rank 4: axes (0, 1, 2)
    (HWIO kernels); rank 5: (0, 1, 2, 3))."""
    if axis is None:
        if jnp.squeeze(x).ndim <= 1:
            axis = None
        elif x.ndim in (2, 3):
            axis = 0
        elif x.ndim in (4, 5):
            axis = tuple(range(x.ndim - 1))
        else:
            raise ValueError(f"{fn}: a leaf of shape {x.shape}: the default units are "
                             f"defined for ranks 1 to 5; pass axis")
    return jnp.broadcast_to(jnp.sqrt(jnp.sum(abs_sq(x), axis=axis, keepdims=True)), x.shape)


@described
def adaptive_grad_clip(clipping, eps=1e-3, axis=None):
    """Unit-wise adaptive gradient clipping (Brock et al., 2021), optax's
    ``adaptive_grad_clip``::

        g <- g * clipping * max(||W||_unit, eps) / ||g||_unit
             where ||g||_unit > clipping * max(||W||_unit, eps)

    Args:
      clipping: >= 0, the largest ratio of a unit's update norm to its parameter norm.
      eps: >= 0, the smallest parameter norm (zero-initialised parameters still move).
      axis: ``None`` (optax's rules by rank, see ``_unitwise_norm``), an int or a tuple:
        the axes a unit's norm is taken over.

    Returns:
      A stateless ``Optimizer`` (``EmptyState``); ``update`` needs ``params``.

    References:
      Brock et al., "High-Performance Large-Scale Image Recognition Without
      Normalization", ICML 2021, https://arxiv.org/abs/2102.06171.
    """
    fn = "adaptive_grad_clip"
    check_hyperparameter(fn, "clipping", clipping, 0.0)
    check_hyperparameter(fn, "eps", eps, 0.0)
    if axis is not None and not isinstance(axis, int):
        axis = tuple(_checks.static_int(fn, "axis", a) for a in axis)

    def clip_leaf(g, p):
        g_norm, p_norm = _unitwise_norm(fn, g, axis), _unitwise_norm(fn, p, axis)
        max_norm = jnp.asarray(clipping).astype(p_norm.dtype) * jnp.maximum(
            p_norm, jnp.asarray(eps).astype(p_norm.dtype))
        max_norm = max_norm.astype(g_norm.dtype)
        clipped = g * (max_norm / jnp.maximum(g_norm, jnp.asarray(1e-6, g_norm.dtype))
                       ).astype(g.dtype)
        return jnp.where(g_norm < max_norm, g, clipped)

    def transform(updates, params):
        _check_params(fn, updates, params)
        return _map(clip_leaf, updates, params)

    return _stateless(fn, transform)


@described
def centralize():
    """Gradient centralization (Yong et al., 2020), optax's ``centralize``: every leaf of
    rank > 1 minus its mean over all axes but the first; vectors unchanged.

    References:
      Yong et al., "Gradient Centralization", ECCV 2020, https://arxiv.org/abs/2004.01461.
    """
    def subtract_mean(g):
        return g - g.mean(tuple(range(1, g.ndim)), keepdims=True) if g.ndim > 1 else g

    return _stateless("centralize", lambda u, p: _map(subtract_mean, u))


@described
def scale_by_sign():
    """The signs of the updates (optax's ``scale_by_sign``; signSGD's direction)."""
    return _stateless("scale_by_sign", lambda u, p: _map(jnp.sign, u))


class AddNoiseState(NamedTuple):
    """optax's ``AddNoiseState``: the step count and the PRNG key, a typed key
    (``jax.random.key``) as in optax, so the states of the two libraries have the same
    dtypes and move both ways (``fit`` checkpoints typed keys)."""

    count: jax.Array
    rng_key: jax.Array


def _typed_key(fn, key):
    """The typed key (optax's ``canonicalize_key``) of an int seed (``jax.random.key``),
    a typed key (as is) or a raw ``uint32[2]`` key (``jax.random.wrap_key_data``: the
    same bits, so the same noise). A seed may be a 0-d integer array, as
    ``inject_hyperparams`` passes an int (traced under ``jit``)."""
    key = _checks.int_of_array(key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    if _checks.traced_int(key):
        return jax.random.key(key)
    key = _checks.check_key(fn, key)
    return key if _checks.is_key(key) else jax.random.wrap_key_data(key)


def key_argument(fn, key, seed):
    """The typed key of optax's ``key=`` / deprecated ``seed=`` pair (:func:`add_noise`,
    :func:`~funcnet.optim.differentially_private_aggregate`): ``seed`` warns and excludes
    ``key``; neither is seed 0 with a warning, as optax."""
    if seed is not None:
        warnings.warn(f"{fn}: seed is deprecated, use key", DeprecationWarning, stacklevel=3)
        if key is not None:
            raise ValueError(f"{fn}: give key or seed, not both")
        key = seed
    if key is None:
        warnings.warn(f"{fn}: no key given, using seed 0 (optax's default; pass key)",
                      stacklevel=3)
        key = 0
    return _typed_key(fn, key)


@described
def add_noise(eta, gamma, key=None, *, seed=None):
    """Annealed Gaussian gradient noise (Neelakantan et al., 2015), optax's
    ``add_noise``: ``g_t + N(0, eta / t^gamma)``, ``t = 1, 2, ...``, a fresh normal
    sample per leaf and step (the state's key is split each step, as optax, so the same
    key gives optax's noise).

    Args:
      eta: >= 0, the variance at the first step.
      gamma: >= 0, the decay exponent of the variance.
      key: an int seed, a typed key (``jax.random.key``) or a raw key
        (``jax.random.PRNGKey``, a funcnet extension: wrapped into the typed key of the
        same bits); ``None`` is seed 0 with a warning, as optax. The state keeps the
        typed key, as optax's. A state holding a raw key (funcnet before round 5) still
        updates (``jax.random.split`` takes either form) and keeps its raw key.
      seed: deprecated (optax's), an int seed; not with ``key``.

    Returns:
      An ``Optimizer`` with state :class:`AddNoiseState`.

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
      Networks", 2015, https://arxiv.org/abs/1511.06807.
    """
    fn = "add_noise"
    check_hyperparameter(fn, "eta", eta, 0.0)
    check_hyperparameter(fn, "gamma", gamma, 0.0)
    key = key_argument(fn, key, seed)

    def init(params):
        del params
        return AddNoiseState(count=zero_count(), rng_key=key)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, AddNoiseState)
        count = safe_increment(state.count)
        wide = _wide(count)          # optax's Python-float arithmetic
        std = jnp.sqrt(jnp.asarray(eta).astype(wide)
                       / count.astype(wide) ** jnp.asarray(gamma).astype(wide))
        rng_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        out = [g + std.astype(g.dtype) * normal_like(k, g)
               for g, k in zip(leaves, keys)]
        return treedef.unflatten(out), state._replace(count=count, rng_key=rng_key)

    return optimizer(init, update)
