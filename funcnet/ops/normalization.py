"""Batch normalization in training mode (notes 000 and 003), optionally synchronised."""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._arrays import compute_dtype, expand_leading
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def check_batch_norm_args(fn, x, gamma, beta, eps, axis_name):
    """The checks of :func:`batch_norm` (and its twin); returns ``eps`` as a float.

    Besides dtypes and shapes: at least 2 values per feature in total (over the batch and,
    with ``axis_name``, over the mapped axis): the batch variance of one value is 0, so
    training-mode normalisation would output ``beta`` whatever ``x`` is (PyTorch refuses
    this case too), and of none it is NaN.
    """
    _checks.check_float(fn, "x", x)
    _checks.check_float(fn, "gamma", gamma)
    _checks.check_float(fn, "beta", beta)
    _checks.check_min_rank(fn, "x", x, 1 if axis_name is not None else 2)
    c = x.shape[-1]
    _checks.check_shape(fn, "gamma", gamma, (c,), f"one scale per feature of x {tuple(x.shape)}")
    _checks.check_shape(fn, "beta", beta, (c,), f"one shift per feature of x {tuple(x.shape)}")
    _checks.check_same_dtype(fn, "gamma", gamma, "beta", beta)
    eps = _checks.static_float(fn, "eps", eps, 0.0)
    m = math.prod(x.shape[:-1])
    devices = 1 if axis_name is None else lax.axis_size(axis_name)
    if m * devices < 2:
        over = "" if axis_name is None else f" times {devices} along axis {axis_name!r}"
        raise ValueError(
            f"{fn}: x has shape {tuple(x.shape)}: {m} value(s) per feature{over}, expected at "
            "least 2 in training mode (the batch variance of one value is 0, so y would be "
            "beta whatever x is; use the running statistics for single examples)")
    return eps


def _pmean(v, axis_name):
    return v if axis_name is None else lax.pmean(v, axis_name)


def batch_stats(x, axis_name):
    """Mean and biased variance over every axis but the last (and over ``axis_name``)."""
    axes = tuple(range(x.ndim - 1))
    mean = _pmean(jnp.mean(x, axis=axes), axis_name)
    var = _pmean(jnp.mean(jnp.square(x - _bc(mean, x)), axis=axes), axis_name)
    return mean, var


def _bc(v, like):
    return expand_leading(v, like.ndim)


def _forward(x, gamma, beta, eps):
    mean, var = batch_stats(x.astype(compute_dtype(x.dtype)), None)
    y, xhat, inv = _apply_stats(x, mean, var, gamma, beta, eps)
    return y, mean, var, xhat, inv


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(x, gamma, beta, eps):
    y, mean, var, _, _ = _forward(x, gamma, beta, eps)
    return y, mean, var


def _batch_norm_fwd(x, gamma, beta, eps):
    y, mean, var, xhat, inv = _forward(x, gamma, beta, eps)
    return (y, mean, var), (xhat, inv, gamma)


def _batch_norm_bwd(eps, res, cts):
    """Note 000's compact formula, plus the cotangents of the returned statistics."""
    xhat, inv, gamma = res
    gy, gmean, gvar = cts
    ct, x_dtype = xhat.dtype, gy.dtype  # y (hence its cotangent) has x's dtype
    gy = gy.astype(ct)
    axes = tuple(range(xhat.ndim - 1))
    m = math.prod(xhat.shape[:-1])
    dbeta = jnp.sum(gy, axis=axes)
    dgamma = jnp.sum(gy * xhat, axis=axes)
    dx = _bc(gamma.astype(ct) * inv, gy) * (gy - _bc(dbeta / m, gy) - xhat * _bc(dgamma / m, gy))
    # d mean/dx = 1/m and d var/dx = 2 (x - mean)/m (zero when only running averages use them).
    dx = dx + (_bc(gmean, gy) + 2 * xhat * _bc(gvar / inv, gy)) / m
    return dx.astype(x_dtype), dgamma.astype(gamma.dtype), dbeta.astype(gamma.dtype)


defvjp(_batch_norm, _batch_norm_fwd, _batch_norm_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _normalize(x, mean, var, gamma, beta, eps):
    return _apply_stats(x, mean, var, gamma, beta, eps)[0]


def _apply_stats(x, mean, var, gamma, beta, eps):
    ct = mean.dtype
    xc = x.astype(ct)
    inv = lax.rsqrt(var + eps)
    xhat = (xc - _bc(mean, xc)) * _bc(inv, xc)
    y = (xhat * _bc(gamma.astype(ct), xc) + _bc(beta.astype(ct), xc)).astype(x.dtype)
    return y, xhat, inv


def _normalize_fwd(x, mean, var, gamma, beta, eps):
    y, xhat, inv = _apply_stats(x, mean, var, gamma, beta, eps)
    return y, (xhat, inv, gamma)


def _normalize_bwd(eps, res, gy):
    """Note 003's step-by-step rule: the direct path and the paths through mean and var.

    ``dxhat = dy gamma``; ``dx = dxhat / sqrt(var + eps)`` (direct path);
    ``dL/dvar = -1/2 sum dxhat (x - mu) (var + eps)^(-3/2)`` (eqs. 5-8);
    ``dL/dmu = -sum dxhat / sqrt(var + eps)``. The sums are local; JAX's transpose of the
    ``pmean`` that produced ``mu`` and ``var`` reduces them across the axis.
    """
    xhat, inv, gamma = res
    ct, x_dtype = xhat.dtype, gy.dtype
    gy = gy.astype(ct)
    axes = tuple(range(xhat.ndim - 1))
    dxhat = gy * _bc(gamma.astype(ct), gy)
    dx = dxhat * _bc(inv, gy)
    dmean = -jnp.sum(dx, axis=axes)
    dvar = -0.5 * jnp.sum(dxhat * xhat, axis=axes) * inv * inv
    dgamma = jnp.sum(gy * xhat, axis=axes)
    dbeta = jnp.sum(gy, axis=axes)
    return (dx.astype(x_dtype), dmean, dvar, dgamma.astype(gamma.dtype),
            dbeta.astype(gamma.dtype))


defvjp(_normalize, _normalize_fwd, _normalize_bwd)


def _synced_batch_norm(x, gamma, beta, eps, axis_name):
    mean, var = batch_stats(x.astype(compute_dtype(x.dtype)), axis_name)
    return _normalize(x, mean, var, gamma, beta, eps), mean, var


@has_twin
def batch_norm(x, gamma, beta, eps: float = 1e-5, axis_name=None):
    """Batch normalization, training mode (Ioffe & Szegedy 2015; notes 000 and 003).

    Forward, per feature ``i`` (the last axis), over the ``m`` rows formed by every other
    axis (and, with ``axis_name``, by every device / mapped index along that axis)::

        mu_i = (1/m) sum_t x_ti
        var_i = (1/m) sum_t (x_ti - mu_i)^2          (biased batch variance)
        xhat_ti = (x_ti - mu_i) / sqrt(var_i + eps)
        y_ti = gamma_i xhat_ti + beta_i

    Backward, the compact formula of note 000::

        dbeta_i = sum_t dy_ti          dgamma_i = sum_t dy_ti xhat_ti
        dx_ti = gamma_i / sqrt(var_i + eps) * (dy_ti - mean_u dy_ui - xhat_ti mean_u dy_ui xhat_ui)

    With ``axis_name`` (sync BN) the statistics are ``lax.pmean``-reduced over that axis
    and the rule is note 003's step-by-step form (direct path + paths through ``mu`` and
    ``var``, eqs. 5-8) with local sums, while JAX transposes the ``pmean`` to reduce them
    across devices: a ``custom_vjp`` rule cannot hold a collective under ``jax.vmap``
    (jax issue #7047), and the result equals the compact formula over the global batch.
    ``dgamma``/``dbeta`` stay per-device sums, exactly as ``jax.grad`` of the reference
    gives; average them across devices as any data-parallel gradient. Cotangents flowing
    into the returned ``mean``/``var`` are handled exactly too. Residuals: ``xhat``
    (``x``'s shape, compute dtype), ``1/sqrt(var+eps)`` and ``gamma``.

    bfloat16/float16 inputs are normalised in float32 and ``y`` is cast back.

    Args:
      x: ``(N, C)``, ``(N, H, W, C)`` or any rank >= 2 (rank >= 1 with ``axis_name``,
        for single-example code under ``jax.vmap(..., axis_name=...)``).
      gamma: ``(C,)`` scale. beta: ``(C,)`` shift, same dtype as ``gamma``.
      eps: static Python float >= 0, finite.
      axis_name: name of a ``pmap``/``vmap``/``shard_map`` axis to synchronise over.

    Returns:
      ``(y, mean, var)``: ``y`` of ``x``'s shape and dtype; ``mean`` and ``var`` of shape
      ``(C,)`` in the compute dtype (feed them to running averages).

    Raises:
      ValueError: ``gamma``/``beta`` not ``(C,)``, rank too small, fewer than 2 values
        per feature (an empty batch included), ``eps`` negative or not finite.
      TypeError: non-floating inputs, or gamma and beta of different dtypes.
    """
    eps = check_batch_norm_args("batch_norm", x, gamma, beta, eps, axis_name)
    if axis_name is None:
        return _batch_norm(x, gamma, beta, eps)
    return _synced_batch_norm(x, gamma, beta, eps, axis_name)
