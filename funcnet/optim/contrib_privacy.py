"""DP-SGD (``optax.contrib``'s ``differentially_private_aggregate`` and ``dpsgd``).

Names, signatures, defaults and states are optax 0.2.8's; the noise comes from the same
key splits, so the same key gives optax's updates. Both take per-example gradients (the
examples on axis 0 of every leaf, e.g. ``jax.vmap(jax.grad(loss), (None, 0, 0))``) and
must come first in a chain.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet._random import normal_like
from funcnet.optim.aliases import _lr
from funcnet.optim.base import check_hyperparameter, check_state, optimizer
from funcnet.optim.combine import chain
from funcnet.optim.transforms import identity, trace
from funcnet.optim.transforms_extra import _check_clip, per_example_global_norm_clip
from funcnet.optim.transforms_more import key_argument
from funcnet._describe import described


class DifferentiallyPrivateAggregateState(NamedTuple):
    """optax's ``DifferentiallyPrivateAggregateState``: the typed key of the next step's
    noise."""

    rng_key: jax.Array


@described
def differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=None, *,
                                     seed=None):
    """Clip each example's gradient, sum, add Gaussian noise and average (Abadi et al.,
    2016; optax's ``differentially_private_aggregate``)::

        f_i = min(C / ||g_i||, 1)                  (||g_i||: example i's global norm)
        u = (sum_i f_i g_i + C * sigma * N(0, I)) / B      (B examples)

    with a fresh normal sample per leaf and step (the state's key split into the next
    key and one key per leaf, as optax).

    Args:
      l2_norm_clip: ``C >= 0``, the largest global norm of one example's gradient.
      noise_multiplier: ``sigma >= 0``, the noise's standard deviation over ``C``.
      key: an int seed, a typed key (``jax.random.key``) or a raw ``uint32[2]`` key
        (wrapped into the typed key of the same bits); ``None`` is seed 0 with a warning,
        as optax.
      seed: deprecated (optax's), an int seed; not with ``key``.

    Returns:
      An ``Optimizer`` with state :class:`DifferentiallyPrivateAggregateState`. Its
      ``update`` takes per-example gradients (every leaf with the ``B`` examples on axis
      0) and returns updates without that axis.

    Raises:
      ValueError: a negative ``l2_norm_clip`` or ``noise_multiplier``; at update, a leaf
        without the common batch axis (an already averaged gradient).

    References:
      Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with
      Differential Privacy", CCS 2016, https://arxiv.org/abs/1607.00133.
    """
    fn = "differentially_private_aggregate"
    _check_clip(fn, "l2_norm_clip", l2_norm_clip)
    check_hyperparameter(fn, "noise_multiplier", noise_multiplier, 0.0)
    key = key_argument(fn, key, seed)

    def init(params):
        del params
        return DifferentiallyPrivateAggregateState(rng_key=key)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, DifferentiallyPrivateAggregateState)
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        with _checks.context(fn):
            clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
        batch = leaves[0].shape[0]
        new_key, *keys = jax.random.split(state.rng_key, len(leaves) + 1)
        std = jnp.asarray(l2_norm_clip) * jnp.asarray(noise_multiplier)
        noised = [(g + std.astype(g.dtype) * normal_like(k, g)) / batch
                  for g, k in zip(clipped, keys)]
        return treedef.unflatten(noised), DifferentiallyPrivateAggregateState(new_key)

    return optimizer(init, update, per_example_grads=True)


@described
def dpsgd(learning_rate, l2_norm_clip, noise_multiplier, seed, momentum=None,
          nesterov=False):
    """DP-SGD (optax's ``dpsgd``): :func:`differentially_private_aggregate` of the
    per-example gradients, then SGD with optional (Nesterov) momentum::

        chain(differentially_private_aggregate(C, sigma, key=seed),
              sgd(learning_rate, momentum, nesterov))

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      l2_norm_clip, noise_multiplier: as in :func:`differentially_private_aggregate`.
      seed: the int seed of the noise's key (as optax; a key also works).
      momentum: ``None`` or the momentum coefficient (:func:`~funcnet.optim.sgd`).
      nesterov: Nesterov momentum (with ``momentum``).

    Returns:
      An ``Optimizer`` whose state is optax's: ``(DifferentiallyPrivateAggregateState,
      TraceState or EmptyState, EmptyState)``.

    References:
      Abadi et al., "Deep Learning with Differential Privacy", CCS 2016,
      https://arxiv.org/abs/1607.00133.
    """
    nesterov = _checks.static_bool("dpsgd", "nesterov", nesterov)
    with _checks.context("dpsgd"):
        return chain(
            differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed),
            identity() if momentum is None else trace(momentum, nesterov),
            _lr(learning_rate), name="dpsgd")
