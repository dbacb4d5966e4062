"""Batch normalization layer (note 003, Ioffe & Szegedy 2015).

References:
  Ioffe & Szegedy (2015), "Batch Normalization: Accelerating Deep Network Training by
  Reducing Internal Covariate Shift", https://arxiv.org/abs/1502.03167. Note 003 §3.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_params,
                             check_train, check_weight_args, init_checked, promote)
from funcnet._describe import described

__all__ = ["BatchNorm"]


@described
def BatchNorm(momentum: float = 0.9, eps: float = 1e-5, axis_name=None, *,
              gamma_init=initializers.ones, beta_init=initializers.zeros,
              dtype=None) -> Layer:
    """Batch normalization over every axis but the last (the feature / channel axis C).

    Training (``train=True``), note 003 (1)-(4), with ``m`` the number of values per
    feature (``N`` for ``(N, C)``, ``N*H*W`` for ``(N, H, W, C)``)::

        mu    = 1/m sum_i x_i                       (1)
        var   = 1/m sum_i (x_i - mu)^2              (2)  biased
        x_hat = (x_i - mu) / sqrt(var + eps)        (3)
        y_i   = gamma * x_hat + beta                (4)

    computed by :func:`funcnet.ops.batch_norm` (hand-written backward rule), and the
    running statistics (``state``) are updated as exponential moving averages::

        running_mean <- momentum * running_mean + (1 - momentum) * mu
        running_var  <- momentum * running_var  + (1 - momentum) * var

    with ``mu``, ``var`` under ``lax.stop_gradient``. ``momentum`` is the weight of the
    OLD value: the convention of the book's ``BatchNormalization``, Flax and Keras
    (PyTorch's ``momentum`` weighs the NEW value: its ``momentum=m`` is ``1 - m`` here).
    The default, 0.9, is the book's and equals PyTorch's default (``momentum=0.1``); Flax's
    ``BatchNorm`` and Keras default to 0.99, which averages over ~10x more batches: pass
    ``momentum=0.99`` for their behaviour. ``eps=1e-5`` is Flax's and PyTorch's default
    (Keras: 1e-3). The running variance averages the BIASED batch variance
    (2), as the book, Keras and flax do; PyTorch averages the unbiased ``m/(m-1) * var``
    instead. Evaluation (``train=False``) uses the running statistics and leaves the state
    unchanged: ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.

    Sync / per-example BN: with ``axis_name`` set, the statistics are averaged over that
    mapped axis (``jax.vmap(..., axis_name=...)``, ``pmap`` or ``shard_map``). A model
    written for ONE example (input ``(C,)``) and vmapped over the batch with
    ``axis_name="batch"`` then normalizes with the statistics of the whole batch, exactly
    as the batched model does on ``(N, C)``; the updated running statistics are identical
    across the mapped axis, so the vmapped state may be returned with ``out_axes=None``.
    Where no axis of that name is bound (one device, or ``jax.jit`` with shardings, where
    the array is the global batch), the same layer uses the statistics of the array it
    sees: one model definition runs unchanged on one device, under ``jit`` with shardings,
    under ``pmap`` and under ``shard_map``. (Detected at trace time: ``lax.axis_size``
    raises ``NameError`` for an unbound name.)

    Per-example gradients (``jax.vmap`` of ``jax.grad`` over the examples) in training:
    WITHOUT ``axis_name`` the layer cannot see the vmapped batch, so one image ``(H, W,
    C)`` (or ``(1, H, W, C)``) is normalized by its own statistics over ``H, W``: no
    error, but another function than the batched model's (instance statistics), while
    one feature vector ``(C,)`` or ``(1, C)`` is refused (one value per feature). With
    ``BatchNorm(axis_name="batch")`` and ``jax.vmap(..., axis_name="batch")`` every
    example sees the batch statistics, as in the batched model (the mean of the
    per-example gradients equals the batch gradient: 8e-17 in float64); in evaluation
    (``train=False``) the running statistics make per-example use exact.

    Training needs at least two values per feature (``m >= 2`` counted over the mapped
    axis too): with one value the output would be ``beta`` whatever the input, and an
    empty batch would write NaN into the running statistics. :func:`funcnet.ops.batch_norm`
    refuses both (as PyTorch does: "Expected more than 1 value per channel when
    training"), and the layer passes its error on with its name, before any statistic is
    written.

    Shapes:
      input: ``(N, C)``, ``(N, H, W, C)`` or any rank >= 2 with features last; in training
        with ``axis_name`` also one example ``(C,)`` (or ``(H, W, C)``, then statistics run
        over H, W and the mapped axis). Output: the input's shape.
      params: ``{"gamma": (C,), "beta": (C,)}`` (initialised to ones / zeros).
      state: ``{"mean": (C,), "var": (C,)}`` (initialised to zeros / ones).

    Args:
      momentum: weight of the old running value, in ``[0, 1)``; default 0.9 (Flax, Keras:
        0.99; PyTorch's 0.1 is 0.9 here).
      eps: ``> 0``, added to the variance before the square root (3).
      axis_name: name of a mapped axis to average statistics over (or ``None``).
      gamma_init, beta_init: initializers of the scale and shift.
      dtype: dtype of params and state; ``None`` is JAX's default float dtype. The input
        and the params are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"BatchNorm"``.

    Raises:
      TypeError: at construction, non-float ``momentum``/``eps``, a bad ``axis_name``,
        initializer or ``dtype``; in ``apply`` a non-float input (or a list).
      ValueError: at construction for ``momentum`` outside ``[0, 1)``, ``eps <= 0`` or
        NaN; in ``apply`` if the input's last axis is not C, if params/state are not the
        dicts above with ``(C,)`` leaves, or in training with fewer than 2 values per
        feature (a batch of 0 or 1 example of ``(N, C)``, a rank-1 input outside a
        mapped ``axis_name``).

    References:
      Ioffe & Szegedy (2015); note 003 §3 (1)-(4).
    """
    name = "BatchNorm"
    momentum = _checks.static_float(name, "momentum", momentum, 0.0, 1.0,
                                    high_inclusive=False)
    eps = _checks.static_float(name, "eps", eps, 0.0, low_inclusive=False)
    if axis_name is not None and not isinstance(axis_name, (str, tuple)):
        raise TypeError(f"{name}: axis_name must be a str (a mapped axis name) or None, got "
                        f"{type(axis_name).__name__} {axis_name!r}")
    check_weight_args(name, dtype, gamma_init=gamma_init, beta_init=beta_init)

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, range(1, 64),
                                  "(N, ..., C)", needs=1)
        dt = check_dtype(name, dtype)
        C = shape[-1]

        def make(key):
            kg, kb = jax.random.split(key)
            params = {"gamma": gamma_init(kg, (C,), dt), "beta": beta_init(kb, (C,), dt)}
            return params, {"mean": jnp.zeros((C,), dt), "var": jnp.ones((C,), dt)}
        return init_checked(name, apply, make, key, shape, dt)

    def apply(params, state, x, *, key=None, train=False):
        del key
        check_params(name, "params", params, {"gamma": (None,), "beta": (None,)})
        C = _checks.shape_of(params["gamma"])[0]
        check_params(name, "params", params, {"gamma": (C,), "beta": (C,)})
        check_params(name, "state", state, {"mean": (C,), "var": (C,)})
        x, (gamma, beta) = promote(x, (params["gamma"], params["beta"]), name)
        if x.ndim < 1 or x.shape[-1] != C:   # the eval path below is this layer's own math
            raise ValueError(f"{name}: x has shape {x.shape}, expected (N, ..., {C}): the last "
                             f"axis must hold the {C} features of params['gamma']")
        if not check_train(name, train):
            bshape = (1,) * (x.ndim - 1) + (C,)
            mean = state["mean"].astype(x.dtype)
            scale = gamma * lax.rsqrt(state["var"].astype(x.dtype) + jnp.asarray(eps, x.dtype))
            shift = beta - mean * scale
            return x * scale.reshape(bshape) + shift.reshape(bshape), state
        axis = _bound(axis_name)
        if x.ndim == 1 and axis is None:
            raise ValueError(
                f"{name}: x has shape {x.shape}, one example: training needs batch "
                f"statistics; pass (N, {C}), or set BatchNorm(axis_name=...) and vmap the "
                f"model with that axis_name")
        with _checks.context(name):   # the op refuses fewer than 2 values per feature
            y, mu, var = ops.batch_norm(x, gamma, beta, eps=eps, axis_name=axis)
        new_state = {k: _ema(state[k], v, momentum) for k, v in (("mean", mu), ("var", var))}
        return y, new_state

    return Layer(init, apply, name)


def _bound(axis_name):
    """``axis_name`` if a mapped axis of that name is bound here, else ``None``.

    ``lax.axis_size`` raises ``NameError`` at trace time for an unbound name (outside
    ``pmap``/``vmap``/``shard_map``), which is exactly when the layer should use local
    statistics.
    """
    if axis_name is None:
        return None
    try:
        lax.axis_size(axis_name)
    except NameError:
        return None
    return axis_name


def _ema(running, batch_stat, momentum):
    """``momentum * running + (1 - momentum) * stop_gradient(batch_stat)`` in running's dtype."""
    m = jnp.asarray(momentum, running.dtype)
    stat = lax.stop_gradient(batch_stat).astype(running.dtype)
    return m * running + (jnp.ones((), running.dtype) - m) * stat
