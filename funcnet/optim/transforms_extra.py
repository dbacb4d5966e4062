"""optax 0.2.8's remaining clipping, normalizing and monitoring transformations, with
its names, signatures and states: ``per_example_global_norm_clip``,
``per_example_layer_norm_clip`` (differential privacy's clipped sums),
``normalize_by_update_norm``, ``scale_by_param_block_norm``, and the monitors
``snapshot``, ``measure_with_ema`` and ``monitor`` (:class:`SnapshotState`,
:class:`MonitorState`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.base import (
    StateMismatchError, cast_like, check_hyperparameter, check_state, optimizer, promote_dtypes)
from funcnet.optim.combine import call_update, chain
from funcnet.optim.regularization import global_norm, _scale_by_param_block
from funcnet.optim.transforms import _stateless, ema
from funcnet._describe import described

_map = jax.tree_util.tree_map


# ------------------------------------------------------------ per-example clipping


def _check_clip(fn, name, value):
    """A norm bound: a number or scalar array >= 0, ``inf`` allowed (no clipping)."""
    if callable(value) or not (_checks.is_array(value) or isinstance(value, (int, float,
                                                                            np.number))) \
            or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a number or a scalar array, got "
                        f"{type(value).__name__}")
    if np.shape(value) != ():
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {np.shape(value)}")
    v = _checks.concrete(value)
    if v is not None and not float(v) >= 0:
        raise ValueError(f"{fn}: {name} must be >= 0 (inf: no clipping), got {float(v)}")


def _check_batch(fn, grads):
    """Every leaf has a leading batch axis of one common size."""
    leaves = jax.tree_util.tree_leaves(grads)
    if not leaves:
        raise ValueError(f"{fn}: grads has no leaves")
    shapes = [np.shape(g) for g in leaves]
    if any(len(s) == 0 or s[0] != shapes[0][0] for s in shapes):
        raise ValueError(f"{fn}: every leaf of grads must have the batch of examples on "
                         f"axis 0, with one size; got shapes {shapes}")


def _clipped_sum(grads, l2_norm_clip):
    """(sum over examples of the clipped grads, number of examples clipped)."""
    norms = jax.vmap(global_norm)(grads)
    ratio = jnp.minimum(cast_like(l2_norm_clip, norms) / norms, jnp.ones_like(norms))
    factors = jnp.nan_to_num(ratio, nan=1.0)        # 0 / 0: an all-zero example

    def weighted(g):
        dt = promote_dtypes(factors.dtype, g.dtype)
        return jnp.tensordot(factors.astype(dt), g.astype(dt), axes=1)

    return _map(weighted, grads), jnp.sum(factors < 1)


def per_example_global_norm_clip(grads, l2_norm_clip):
    """Clip each example's gradient to global norm ``l2_norm_clip`` and sum them
    (optax's ``per_example_global_norm_clip``; DP-SGD's clipping)::

        f_i = min(C / ||g_i||, 1)   (1 for an all-zero g_i),   sum_i f_i g_i

    with ``||g_i||`` the norm of example ``i``'s gradient over all leaves.

    Args:
      grads: a tree of per-example gradients, each leaf with the examples on axis 0.
      l2_norm_clip: ``C >= 0`` (``inf``: no clipping), a number or scalar array.

    Returns:
      ``(clipped_sum, num_clipped)``: the tree of sums (the leaves without axis 0) and
      the number of examples whose factor is < 1.

    Raises:
      ValueError: a leaf without the common batch axis; a negative ``l2_norm_clip``.

    References:
      Abadi et al., "Deep Learning with Differential Privacy", CCS 2016,
      https://arxiv.org/abs/1607.00133.
    """
    fn = "per_example_global_norm_clip"
    _check_clip(fn, "l2_norm_clip", l2_norm_clip)
    _check_batch(fn, grads)
    return _clipped_sum(grads, l2_norm_clip)


def per_example_layer_norm_clip(grads, global_l2_norm_clip, uniform=True):
    """Clip each example's gradient leaf by leaf and sum them (optax's
    ``per_example_layer_norm_clip``): leaf ``k`` of ``K`` is clipped to norm
    ``C / sqrt(K)`` (``uniform``) or ``C sqrt(D_k / D)`` (``D_k`` its size per example,
    ``D`` the total), as :func:`per_example_global_norm_clip` of that leaf alone.

    Args:
      grads: a tree of per-example gradients, each leaf with the examples on axis 0.
      global_l2_norm_clip: ``C >= 0`` (``inf``: no clipping).
      uniform: the same bound for every leaf (else by size).

    Returns:
      ``(clipped_sum, num_clipped)``: two trees of ``grads``' structure, the sums and
      each leaf's number of clipped examples.

    Raises:
      ValueError: a leaf without the common batch axis; a negative bound.

    References:
      McMahan et al., "Learning Differentially Private Recurrent Language Models", ICLR
      2018, https://arxiv.org/abs/1710.06963.
    """
    fn = "per_example_layer_norm_clip"
    _check_clip(fn, "global_l2_norm_clip", global_l2_norm_clip)
    uniform = _checks.static_bool(fn, "uniform", uniform)
    _check_batch(fn, grads)
    leaves, treedef = jax.tree_util.tree_flatten(grads)
    sizes = [np.prod(np.shape(g)[1:], dtype=int) for g in leaves]
    shares = [1.0 / len(leaves) if uniform else s / sum(sizes) for s in sizes]
    pairs = [_clipped_sum(g, global_l2_norm_clip * share ** 0.5)
             for g, share in zip(leaves, shares)]
    return (treedef.unflatten([p[0] for p in pairs]),
            treedef.unflatten([p[1] for p in pairs]))


# ---------------------------------------------------------------- norm scalings


@described
def normalize_by_update_norm(scale_factor=1.0, eps=1e-6):
    """Divide the updates by their global norm (optax's ``normalize_by_update_norm``)::

        u <- scale_factor * u / (||u|| + eps)       (||.|| over all leaves)

    Args:
      scale_factor: a non-zero number (negative: a descent direction, as in optax's
        example ``normalize_by_update_norm(scale_factor=-1.0)``).
      eps: >= 0, added to the norm.

    Returns:
      A stateless ``Optimizer``.
    """
    fn = "normalize_by_update_norm"
    check_hyperparameter(fn, "scale_factor", scale_factor)
    s = _checks.concrete(scale_factor)
    if s is not None and float(s) == 0.0:
        raise ValueError(f"{fn}: scale_factor must be non-zero, got 0.0")
    check_hyperparameter(fn, "eps", eps, 0.0)

    def transform(updates, params):
        del params
        norm = global_norm(updates)
        norm = (norm + cast_like(eps, norm)) / cast_like(scale_factor, norm)

        def leaf(g):
            dt = promote_dtypes(g.dtype, norm.dtype)
            return g.astype(dt) / norm.astype(dt)

        return _map(leaf, updates)

    return _stateless(fn, transform)


@described
def scale_by_param_block_norm(min_scale=1e-3):
    """Multiply each leaf's update by the norm of its parameter (optax's
    ``scale_by_param_block_norm``)::

        u <- u * max(||w||, min_scale)        (one factor per leaf, Frobenius norm)

    The norm is :func:`~funcnet.optim.safe_norm`'s (a gradient of 0 below
    ``min_scale``). See :func:`~funcnet.optim.scale_by_param_block_rms` for the RMS.

    Args:
      min_scale: >= 0, the smallest factor.

    Returns:
      A stateless ``Optimizer``; ``update`` requires ``params``.
    """
    return _scale_by_param_block("scale_by_param_block_norm", global_norm, min_scale)


# ------------------------------------------------------------------------ monitors


class SnapshotState(NamedTuple):
    """optax's ``SnapshotState``: ``{measure_name: measurement}``."""

    measurement: dict


@described
def snapshot(measure_name, measure):
    """Record ``measure(updates)`` in the state and pass the updates through (optax's
    ``snapshot``): in a chain, a look at the updates between two blocks::

        chain(sgd(0.1, 0.9), snapshot("norm", global_norm), clip_by_global_norm(0.05))
        ... state[1].measurement["norm"]

    ``init`` records ``measure(params)`` (so the state's structure does not change).

    Args:
      measure_name: the key of the measurement (a str).
      measure: ``updates -> tree of arrays``.

    Returns:
      An ``Optimizer`` with state :class:`SnapshotState`.

    Raises:
      TypeError: ``measure_name`` not a str, ``measure`` not callable.
    """
    fn = "snapshot"
    if not isinstance(measure_name, str):
        raise TypeError(f"{fn}: measure_name must be a str, got {type(measure_name).__name__}")
    _checks.check_callable(fn, "measure", measure, "(updates) -> tree")

    def init(params):
        return SnapshotState({measure_name: measure(params)})

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, SnapshotState)
        return updates, state._replace(measurement={measure_name: measure(updates)})

    return optimizer(init, update)


def _as_float(tree):
    """Integer and bool leaves as JAX's default float (an average of them is one)."""
    default = jnp.result_type(float)
    return _map(lambda x: x if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
                else jnp.asarray(x).astype(default), tree)


@described
def measure_with_ema(measure, decay, debias=True, accumulator_dtype=None):
    """The exponential moving average of ``measure(updates)`` (optax's
    ``measure_with_ema``), for :func:`monitor`::

        chain(stateless(lambda u, _: measure(u)), ema(decay, debias, accumulator_dtype))

    with the average's state initialized from ``measure(params)``. Its "updates" are the
    averaged measurement: use it inside :func:`monitor`, not in a chain of updates.

    A bool or integer measurement (``norm > threshold``) is averaged as JAX's default
    float: the state holds that float from ``init`` (optax's holds the bool until the
    first update).

    Args:
      measure: ``updates -> tree of arrays``.
      decay: in [0, 1).
      debias: divide by ``1 - decay^k``.
      accumulator_dtype: dtype of the average (default: the measurement's).

    Returns:
      An ``Optimizer`` with state ``(EmptyState(), EmaState)``.
    """
    fn = "measure_with_ema"
    _checks.check_callable(fn, "measure", measure, "(updates) -> tree")
    average = ema(decay, debias, accumulator_dtype)
    measured = _stateless(fn, lambda u, p: _as_float(measure(u)))
    averaged = optimizer(lambda params: average.init(_as_float(measure(params))),
                         average.update)
    return chain(measured, averaged, name=fn)


class MonitorState(NamedTuple):
    """optax's ``MonitorState``: ``{name: measurement}`` of the last update (empty after
    ``init``) and the measures' states in the order of their names."""

    measurements: dict
    measure_states: tuple


@described
def monitor(measures):
    """Record several measurements of the updates, stateless or stateful, and pass the
    updates through (optax's ``monitor``)::

        chain(sgd(0.1, 0.9),
              monitor({"norm": global_norm,
                       "clipped": measure_with_ema(lambda u: global_norm(u) > 1.0, 0.9)}),
              clip_by_global_norm(1.0))

    A function ``updates -> tree`` is measured as is; an optimizer's "updates" are its
    measurement (:func:`measure_with_ema`). As in optax, ``measurements`` is ``{}``
    after ``init`` and holds every name after the first update: the state's structure
    changes once, so run one update before a ``lax.scan`` over steps.

    Args:
      measures: ``{name: function or optimizer}``.

    Returns:
      An ``Optimizer`` with state :class:`MonitorState`; extra ``update`` arguments go to
      the measures that accept them.

    Raises:
      TypeError: ``measures`` not a dict of functions and optimizers.
    """
    fn = "monitor"
    if not isinstance(measures, Mapping):
        raise TypeError(f"{fn}: measures must be a dict {{name: measure}}, got "
                        f"{type(measures).__name__}")
    blocks = {}
    for name, m in measures.items():
        if callable(m):
            blocks[name] = _stateless(fn, lambda u, p, m=m: m(u))
        else:
            _checks.check_optimizer(fn, f"measures[{name!r}]", m)
            blocks[name] = m
    names = tuple(blocks)

    def init(params):
        return MonitorState({}, tuple(blocks[n].init(params) for n in names))

    def update(updates, state, params=None, **extra_args):
        check_state(fn, state, MonitorState)
        if not isinstance(state.measure_states, tuple) or len(state.measure_states) != len(names):
            raise StateMismatchError(f"{fn}: state.measure_states must be a tuple of {len(names)} "
                             f"states (from init)")
        values, states = {}, []
        for n, s in zip(names, state.measure_states):
            values[n], s = call_update(blocks[n], updates, s, params, extra_args)
            states.append(s)
        return updates, state._replace(measurements=values, measure_states=tuple(states))

    return optimizer(init, update)
