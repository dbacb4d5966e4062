"""Layer normalization and RMS normalization over the last axis (beyond the notes).

Both normalise each row (every index of the leading axes) over its ``F`` features, so
unlike batch norm they need no batch statistics and behave the same in training and
inference. Statistics are computed in at least float32 (bfloat16/float16 inputs) and
``y`` is cast back to ``x``'s dtype, as :func:`funcnet.ops.batch_norm`.

The backward rules are batch norm's compact formula (note 000) applied per row instead
of per feature: the mean over the batch becomes a mean over the features of one row.

References:
  Ba, Kiros & Hinton (2016), "Layer Normalization", https://arxiv.org/abs/1607.06450.
  Zhang & Sennrich (2019), "Root Mean Square Layer Normalization",
  https://arxiv.org/abs/1910.07467.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._arrays import compute_dtype, expand_leading
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp

__all__ = ["layer_norm", "rms_norm"]


def check_norm_args(fn, x, gamma, beta, eps):
    """Shared checks of ``layer_norm``/``rms_norm`` and their twins; returns ``eps``."""
    _checks.check_float(fn, "x", x)
    _checks.check_min_rank(fn, "x", x, 1)
    _checks.check_nonempty(fn, "x", x, "at least one feature on the last axis", axes=(-1,))
    f = _checks.shape_of(x)[-1]
    for name, v in (("gamma", gamma), ("beta", beta)):
        if v is not None:
            _checks.check_float(fn, name, v)
            _checks.check_shape(fn, name, v, (f,),
                                f"one per feature of x {_checks.shape_of(x)}")
    if gamma is not None and beta is not None:
        _checks.check_same_dtype(fn, "gamma", gamma, "beta", beta)
    return _checks.static_float(fn, "eps", eps, 0.0)


def _scale_shift(xhat, gamma, beta, dtype):
    ct = xhat.dtype
    y = xhat if gamma is None else xhat * expand_leading(gamma.astype(ct), xhat.ndim)
    y = y if beta is None else y + expand_leading(beta.astype(ct), xhat.ndim)
    return y.astype(dtype)


def _marker(v):
    """A zero-size array recording ``v``'s dtype (``None`` when ``v`` is ``None``): 0 bytes."""
    return None if v is None else jnp.zeros((0,), v.dtype)


def _param_grads(gc, xhat, gamma, beta_marker):
    axes = tuple(range(xhat.ndim - 1))
    dgamma = None if gamma is None else jnp.sum(gc * xhat, axis=axes).astype(gamma.dtype)
    dbeta = None if beta_marker is None else jnp.sum(gc, axis=axes).astype(beta_marker.dtype)
    return dgamma, dbeta


def _mean(v, axes=(-1,)):
    return jnp.mean(v, axis=axes, keepdims=True)


def standardize(xc, eps, axes=(-1,)):
    """``(xhat, inv)``: ``xhat = (xc - mean) * inv``, ``inv = 1/sqrt(var + eps)``, the
    (biased, two-pass) statistics over ``axes`` (kept as size-1 axes in ``inv``); layer
    norm's over the features, group norm's over each group."""
    xm = xc - _mean(xc, axes)
    inv = lax.rsqrt(_mean(xm * xm, axes) + eps)
    return xm * inv, inv


def standardize_vjp(dxhat, xhat, inv, axes=(-1,)):
    """The cotangent of :func:`standardize`'s input (note 000's compact formula, the
    means over ``axes``): ``inv (dxhat - mean dxhat - xhat mean(dxhat xhat))``."""
    return inv * (dxhat - _mean(dxhat, axes) - xhat * _mean(dxhat * xhat, axes))


def scaled_cotangent(g, xhat, gamma):
    """``(gc, dxhat)``: ``g`` in ``xhat``'s (compute) dtype and ``dxhat = gc gamma``."""
    gc = g.astype(xhat.dtype)
    return gc, gc if gamma is None else gc * expand_leading(gamma.astype(xhat.dtype), gc.ndim)


# ------------------------------------------------------------------------ layer norm
def layer_norm_forward(x, gamma, beta, eps):
    """``(y, xhat, inv)`` with ``inv = 1/sqrt(var + eps)`` of shape ``(..., 1)``."""
    xhat, inv = standardize(x.astype(compute_dtype(x.dtype)), eps)
    return _scale_shift(xhat, gamma, beta, x.dtype), xhat, inv


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, gamma, beta, eps):
    return layer_norm_forward(x, gamma, beta, eps)[0]


def _layer_norm_fwd(x, gamma, beta, eps):
    y, xhat, inv = layer_norm_forward(x, gamma, beta, eps)
    return y, (xhat, inv, gamma, _marker(beta))


def _layer_norm_bwd(eps, res, g):
    xhat, inv, gamma, beta_marker = res
    gc, dxhat = scaled_cotangent(g, xhat, gamma)
    dx = standardize_vjp(dxhat, xhat, inv)
    return (dx.astype(g.dtype),) + _param_grads(gc, xhat, gamma, beta_marker)


defvjp(_layer_norm, _layer_norm_fwd, _layer_norm_bwd)


@has_twin
def layer_norm(x, gamma, beta, eps: float = 1e-5):
    """Layer normalization over the last axis (Ba et al. 2016).

    Forward, for each row ``x`` of ``F`` features (every index of the leading axes)::

        mu = (1/F) sum_i x_i,     var = (1/F) sum_i (x_i - mu)^2     (biased, two-pass)
        xhat_i = (x_i - mu) / sqrt(var + eps),      y_i = gamma_i xhat_i + beta_i

    Backward, batch norm's compact formula (note 000) with the mean taken over the
    features of the row instead of over the batch (``mean_j`` = mean over the ``F``
    features of the same row)::

        dxhat = dy gamma
        dx_i = 1/sqrt(var + eps) * (dxhat_i - mean_j dxhat_j - xhat_i mean_j dxhat_j xhat_j)
        dgamma = sum_rows dy xhat,        dbeta = sum_rows dy

    Residuals: ``xhat`` (``x``'s shape, compute dtype), ``1/sqrt(var + eps)`` (one per
    row) and ``gamma``. A constant row has ``xhat = 0`` and finite gradients for
    ``eps > 0``. Same semantics as ``flax.linen.LayerNorm(epsilon=eps)`` (which defaults
    to ``eps = 1e-6`` and computes ``var = mean(x^2) - mu^2``, equal up to rounding) and
    ``torch.nn.LayerNorm(F)`` (``eps = 1e-5``, the default here).

    Args:
      x: ``(..., F)`` floating array, rank >= 1, ``F >= 1``.
      gamma: ``(F,)`` scale, or ``None`` for no scale (``gamma = 1``).
      beta: ``(F,)`` shift, or ``None`` for no shift (``beta = 0``); the same dtype as
        ``gamma`` when both are given (``x`` may differ: mixed precision).
      eps: static Python float >= 0.

    Returns:
      ``y`` of ``x``'s shape and dtype.

    Raises:
      ValueError: rank 0 or ``F = 0``, ``gamma``/``beta`` not ``(F,)``, negative or
        non-finite ``eps``.
      TypeError: non-floating arrays, ``gamma`` and ``beta`` of different dtypes.

    References:
      Ba, Kiros & Hinton (2016), https://arxiv.org/abs/1607.06450. ``docs/formulas.md``,
      "Beyond the notes".
    """
    eps = check_norm_args("layer_norm", x, gamma, beta, eps)
    return _layer_norm(x, gamma, beta, eps)


# -------------------------------------------------------------------------- RMS norm
def rms_norm_forward(x, gamma, eps):
    """``(y, xhat, inv)`` with ``inv = 1/sqrt(mean(x^2) + eps)`` of shape ``(..., 1)``."""
    xc = x.astype(compute_dtype(x.dtype))
    inv = lax.rsqrt(_mean(xc * xc) + eps)
    xhat = xc * inv
    return _scale_shift(xhat, gamma, None, x.dtype), xhat, inv


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x, gamma, eps):
    return rms_norm_forward(x, gamma, eps)[0]


def _rms_norm_fwd(x, gamma, eps):
    y, xhat, inv = rms_norm_forward(x, gamma, eps)
    return y, (xhat, inv, gamma)


def _rms_norm_bwd(eps, res, g):
    xhat, inv, gamma = res
    gc, dxhat = scaled_cotangent(g, xhat, gamma)
    dx = inv * (dxhat - xhat * _mean(dxhat * xhat))
    return (dx.astype(g.dtype), _param_grads(gc, xhat, gamma, None)[0])


defvjp(_rms_norm, _rms_norm_fwd, _rms_norm_bwd)


@has_twin
def rms_norm(x, gamma, eps: float = 1e-6):
    """RMS normalization over the last axis (Zhang & Sennrich 2019): no centring, no shift.

    Forward, for each row of ``F`` features::

        r = 1 / sqrt((1/F) sum_i x_i^2 + eps),     xhat_i = x_i r,     y_i = gamma_i xhat_i

    Backward (``dr/dx_j = -r^3 x_j / F``), with ``mean_j`` over the features of the row::

        dxhat = dy gamma
        dx_i = r * (dxhat_i - xhat_i mean_j dxhat_j xhat_j)
        dgamma = sum_rows dy xhat

    Residuals: ``xhat`` (compute dtype), ``r`` (one per row) and ``gamma``. A zero row
    gives ``y = 0`` and finite gradients for ``eps > 0``. Same semantics as
    ``flax.linen.RMSNorm(epsilon=eps)`` (whose default is also ``1e-6``).

    Args:
      x: ``(..., F)`` floating array, rank >= 1, ``F >= 1``.
      gamma: ``(F,)`` scale, or ``None`` for no scale.
      eps: static Python float >= 0.

    Returns:
      ``y`` of ``x``'s shape and dtype.

    Raises:
      ValueError, TypeError: as :func:`layer_norm`.

    References:
      Zhang & Sennrich (2019), https://arxiv.org/abs/1910.07467. ``docs/formulas.md``,
      "Beyond the notes".
    """
    eps = check_norm_args("rms_norm", x, gamma, None, eps)
    return _rms_norm(x, gamma, eps)
