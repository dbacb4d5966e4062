"""Group normalization over channels-last inputs (beyond the notes).

Each example's channels are split into ``G`` groups of ``C/G`` consecutive channels, and
each group is normalised over every non-batch axis of the example (its positions and its
``C/G`` channels): no batch statistics, the same computation in training and inference.
``G = 1`` is layer norm over all of an example's features, ``G = C`` is instance norm.

The statistics and the backward rule are layer norm's (:mod:`funcnet.ops.layer_norm`,
note 000's compact formula), with the means taken over a group instead of a row: the
forward shares layer norm's code; the backward takes its group means from per-channel
sums, so that ``dy gamma`` is never materialised.

References:
  Wu & He (2018), "Group Normalization", https://arxiv.org/abs/1803.08494.
  Ulyanov, Vedaldi & Lempitsky (2016), "Instance Normalization: The Missing Ingredient for
  Fast Stylization", https://arxiv.org/abs/1607.08022.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import compute_dtype
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.layer_norm import _marker, _scale_shift, check_norm_args, standardize

__all__ = ["group_norm"]

# the statistics' axes in the grouped view ``(N, positions, G, C/G)``
_GROUP_AXES = (1, 3)


def check_group_norm_args(fn, x, gamma, beta, num_groups, eps):
    """The checks of ``group_norm`` and its twin; returns ``(num_groups, eps)``."""
    _checks.check_float(fn, "x", x)
    _checks.check_min_rank(fn, "x", x, 2)
    eps = check_norm_args(fn, x, gamma, beta, eps)
    shape = _checks.shape_of(x)
    _checks.check_nonempty(fn, "x", x, "a nonempty size on every axis but the batch (N, "
                           "..., C)", axes=range(1, len(shape)))
    num_groups = _checks.static_int(fn, "num_groups", num_groups, minimum=1)
    if shape[-1] % num_groups:
        raise ValueError(f"{fn}: x has shape {shape}, expected a number of channels (last "
                         f"axis) divisible by num_groups={num_groups}")
    return num_groups, eps


def _grouped(a, num_groups):
    """``(N, ..., C) -> (N, prod(...), G, C/G)`` (explicit sizes: ``N`` may be 0)."""
    return a.reshape(a.shape[0], math.prod(a.shape[1:-1]), num_groups,
                     a.shape[-1] // num_groups)


def group_norm_forward(x, gamma, beta, num_groups, eps):
    """``(y, xhat, inv)``: ``xhat`` of ``x``'s shape (compute dtype), ``inv`` of shape
    ``(N, 1, G, 1)``."""
    xc = _grouped(x.astype(compute_dtype(x.dtype)), num_groups)
    xhat, inv = standardize(xc, eps, _GROUP_AXES)
    xhat = xhat.reshape(x.shape)
    return _scale_shift(xhat, gamma, beta, x.dtype), xhat, inv


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _group_norm(x, gamma, beta, num_groups, eps):
    return group_norm_forward(x, gamma, beta, num_groups, eps)[0]


def _group_norm_fwd(x, gamma, beta, num_groups, eps):
    y, xhat, inv = group_norm_forward(x, gamma, beta, num_groups, eps)
    return y, (xhat, inv, gamma, _marker(beta))


def _group_norm_bwd(num_groups, eps, res, g):
    """Layer norm's formula per group, from per-channel sums over the positions: with
    ``s1 = sum_pos dy`` and ``s2 = sum_pos dy xhat`` (``(N, 1, G, C/G)``), ``mean_S dxhat
    = sum_c gamma_c s1_c / M`` and ``mean_S (dxhat xhat) = sum_c gamma_c s2_c / M``, and
    ``dbeta``, ``dgamma`` are ``s1``, ``s2`` summed over the examples: ``dxhat = dy gamma``
    is never materialised, nor ``gamma`` broadcast to ``x``'s shape (which XLA:CPU kept
    twice, 8 MiB each, on an (8, 32, 32, 256) input)."""
    xhat, inv, gamma, beta_marker = res
    gc = _grouped(g.astype(xhat.dtype), num_groups)          # (N, P, G, C/G)
    xg = _grouped(xhat, num_groups)
    s1 = jnp.sum(gc, axis=1, keepdims=True)
    s2 = jnp.sum(gc * xg, axis=1, keepdims=True)
    size = xg.shape[1] * xg.shape[3]
    gam = None if gamma is None else gamma.astype(xhat.dtype).reshape((1, 1) + xg.shape[2:])
    scaled = (lambda v: v) if gam is None else (lambda v: v * gam)
    mean1 = jnp.sum(scaled(s1), axis=3, keepdims=True) / size
    mean2 = jnp.sum(scaled(s2), axis=3, keepdims=True) / size
    dx = inv * (scaled(gc) - mean1 - xg * mean2)

    def per_channel(s, like):
        return jnp.sum(s, axis=(0, 1)).reshape(-1).astype(like.dtype)

    dgamma = None if gamma is None else per_channel(s2, gamma)
    dbeta = None if beta_marker is None else per_channel(s1, beta_marker)
    return dx.reshape(g.shape).astype(g.dtype), dgamma, dbeta


defvjp(_group_norm, _group_norm_fwd, _group_norm_bwd)


@has_twin
def group_norm(x, gamma, beta, num_groups: int, eps: float = 1e-5):
    """Group normalization of a channels-last input (Wu & He 2018).

    The ``C`` channels are split into ``G = num_groups`` groups of ``C/G`` consecutive
    channels; group ``k`` of example ``n`` is the set ``S`` of the ``M = (C/G) prod(...)``
    entries ``x[n, ..., c]`` with ``c`` in ``[k C/G, (k+1) C/G)``. Forward, per ``(n, k)``::

        mu = (1/M) sum_S x,      var = (1/M) sum_S (x - mu)^2          (biased, two-pass)
        xhat = (x - mu) / sqrt(var + eps),       y[..., c] = gamma_c xhat[..., c] + beta_c

    Backward, layer norm's compact formula with ``mean_S`` the mean over the group::

        dxhat = dy gamma
        dx = 1/sqrt(var + eps) * (dxhat - mean_S dxhat - xhat mean_S (dxhat xhat))
        dgamma_c = sum_{n, ...} dy[..., c] xhat[..., c],     dbeta_c = sum_{n, ...} dy[..., c]

    ``G = 1`` is :func:`layer_norm` over all of an example's features (flattened), ``G =
    C`` instance norm (each channel over the positions). Statistics in at least float32
    (bfloat16/float16 inputs), ``y`` in ``x``'s dtype, as :func:`layer_norm`.

    Residuals, as :func:`layer_norm`: ``xhat`` (``x``'s shape, compute dtype), ``1/sqrt(var
    + eps)`` (``(N, 1, G, 1)``: one per group) and ``gamma``. Keeping ``xhat`` rather than
    ``x`` and the means costs the same bytes for float32/float64 inputs (twice ``x``'s for
    bfloat16) and saves the backward from recomputing it; the statistics are ``N G``
    numbers. A constant group has ``xhat = 0`` and finite gradients for ``eps > 0``.

    Same semantics as ``flax.linen.GroupNorm(num_groups=G, epsilon=eps)`` (which defaults
    to ``eps = 1e-6`` and computes ``var = mean(x^2) - mu^2``, equal up to rounding),
    ``torch.nn.GroupNorm(G, C)`` on channels-first inputs (``eps = 1e-5``, the default
    here) and ``equinox.nn.GroupNorm`` (one channels-first example).

    Args:
      x: ``(N, ..., C)`` floating array, rank >= 2 (``(N, C)``, ``(N, T, C)``,
        ``(N, H, W, C)``, ...); every axis but ``N`` nonempty; ``C`` divisible by ``G``.
      gamma: ``(C,)`` scale, or ``None`` for no scale (``gamma = 1``).
      beta: ``(C,)`` shift, or ``None`` for no shift (``beta = 0``); the same dtype as
        ``gamma`` when both are given (``x`` may differ: mixed precision).
      num_groups: static Python int ``G >= 1`` dividing ``C``.
      eps: static Python float >= 0.

    Returns:
      ``y`` of ``x``'s shape and dtype.

    Raises:
      ValueError: rank < 2, an empty non-batch axis, ``C`` not divisible by
        ``num_groups``, ``num_groups < 1``, ``gamma``/``beta`` not ``(C,)``, negative or
        non-finite ``eps``.
      TypeError: non-floating arrays, ``gamma`` and ``beta`` of different dtypes, a
        ``num_groups`` that is not an int.

    References:
      Wu & He (2018), https://arxiv.org/abs/1803.08494. ``docs/formulas.md``, "Beyond the
      notes".
    """
    num_groups, eps = check_group_norm_args("group_norm", x, gamma, beta, num_groups, eps)
    return _group_norm(x, gamma, beta, num_groups, eps)
