"""Batch normalization layer (note 003, Ioffe & Szegedy 2015).

References:
  Ioffe & Szegedy (2015), "Batch Normalization: Accelerating Deep Network Training by
  Reducing Internal Covariate Shift", https://arxiv.org/abs/1502.03167. Note 003 §3.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dict, check_float_input, check_init_shape, fmt, promote,
                             shape_of)

__all__ = ["BatchNorm"]


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
    OLD value, as in the book's ``BatchNormalization`` and Keras (PyTorch's ``momentum=0.1``
    is ``1 - momentum`` here). The running variance averages the BIASED batch variance
    (2), as the book, Keras and flax do; PyTorch averages the unbiased ``m/(m-1) * var``
    instead. Evaluation (``train=False``) uses the running statistics and leaves the state
    unchanged: ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.

    Sync / per-example BN: with ``axis_name`` set, the statistics are averaged over that
    mapped axis (``jax.vmap(..., axis_name=...)`` or ``pmap``). A model written for ONE
    example (input ``(C,)``) and vmapped over the batch with ``axis_name="batch"`` then
    normalizes with the statistics of the whole batch, exactly as the batched model does on
    ``(N, C)``; the updated running statistics are identical across the mapped axis, so
    the vmapped state may be returned with ``out_axes=None``.

    Shapes:
      input: ``(N, C)``, ``(N, H, W, C)`` or any rank >= 2 with features last; in training
        with ``axis_name`` also one example ``(C,)`` (or ``(H, W, C)``, then statistics run
        over H, W and the mapped axis). Output: the input's shape.
      params: ``{"gamma": (C,), "beta": (C,)}`` (initialised to ones / zeros).
      state: ``{"mean": (C,), "var": (C,)}`` (initialised to zeros / ones).

    Args:
      momentum: weight of the old running value, in ``[0, 1)``.
      eps: ``> 0``, added to the variance before the square root (3).
      axis_name: name of a mapped axis to average statistics over (or ``None``).
      gamma_init, beta_init: initializers of the scale and shift.
      dtype: dtype of params and state (the input must match the params).

    Returns:
      A :class:`Layer` named ``"BatchNorm"``.

    Raises:
      ValueError: at construction for ``momentum`` outside ``[0, 1)`` or ``eps <= 0``;
        in ``apply`` if the input's last axis is not C, if params/state are not the dicts
        above with ``(C,)`` leaves, or if a rank-1 input is trained on without
        ``axis_name`` (one example has no batch statistics).
      TypeError: in ``apply`` if the input dtype differs from the params dtype.

    References:
      Ioffe & Szegedy (2015); note 003 §3 (1)-(4).
    """
    for what, v in (("momentum", momentum), ("eps", eps)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise TypeError(f"BatchNorm: {what} must be a Python float, got {v!r}")
    momentum, eps = float(momentum), float(eps)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"BatchNorm: momentum must be in [0, 1), got {momentum}")
    if not eps > 0.0:
        raise ValueError(f"BatchNorm: eps must be > 0, got {eps}")
    name = "BatchNorm"

    def init(key, input_shape):
        shape = check_init_shape(name, input_shape, range(1, 32), "rank >= 1 (N, ..., C)")
        C = shape[-1]
        kg, kb = jax.random.split(key)
        params = {"gamma": gamma_init(kg, (C,), dtype), "beta": beta_init(kb, (C,), dtype)}
        state = {"mean": jnp.zeros((C,), dtype), "var": jnp.ones((C,), dtype)}
        return shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        del key
        check_dict(name, "params", params, ("gamma", "beta"))
        check_dict(name, "state", state, ("mean", "var"))
        gamma, beta = params["gamma"], params["beta"]
        C = shape_of(gamma)[0] if len(shape_of(gamma)) == 1 else None
        for what, a in (("params['gamma']", gamma), ("params['beta']", beta),
                        ("state['mean']", state["mean"]), ("state['var']", state["var"])):
            if C is None or shape_of(a) != (C,):
                raise ValueError(
                    f"{name}: {what} has shape {shape_of(a)}, expected (C,) with C = "
                    f"{C if C is not None else 'params[gamma].shape[0]'} (params/state "
                    f"of another layer or model?)")
        if x.ndim < 1 or x.shape[-1] != C:
            raise ValueError(f"{name}: input has shape {fmt(x.shape)}, expected (N, ..., {C}): "
                             f"the last axis must hold the {C} features of params['gamma']")
        check_float_input(name, x, gamma, "params['gamma']")
        x, (gamma, beta) = promote(x, (gamma, beta))
        if not train:
            bshape = (1,) * (x.ndim - 1) + (C,)
            mean = state["mean"].astype(x.dtype)
            scale = gamma * lax.rsqrt(state["var"].astype(x.dtype) + jnp.asarray(eps, x.dtype))
            shift = beta - mean * scale
            return x * scale.reshape(bshape) + shift.reshape(bshape), state
        unbatched = x.ndim == 1
        if unbatched and axis_name is None:
            raise ValueError(
                f"{name}: input has shape {fmt(x.shape)}, one example: training needs batch "
                f"statistics; pass (N, {C}), or set BatchNorm(axis_name=...) and vmap the "
                f"model with that axis_name")
        xb = x[None] if unbatched else x
        y, mu, var = ops.batch_norm(xb, gamma, beta, eps=eps, axis_name=axis_name)
        if unbatched:
            y = y[0]
        new_state = {k: _ema(state[k], v, momentum) for k, v in (("mean", mu), ("var", var))}
        return y, new_state

    return Layer(init, apply, name)


def _ema(running, batch_stat, momentum):
    """``momentum * running + (1 - momentum) * stop_gradient(batch_stat)`` in running's dtype."""
    m = jnp.asarray(momentum, running.dtype)
    stat = lax.stop_gradient(batch_stat).astype(running.dtype)
    return m * running + (jnp.ones((), running.dtype) - m) * stat
