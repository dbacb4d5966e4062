"""Kullback-Leibler divergences between class distributions (optax's argument order).

``log_predictions`` and the targets are ``(..., C)`` with the same shape (no broadcasting)
and floating dtypes promoted to their common dtype; the divergence is summed over the last
axis (the classes) and averaged over the ``n = prod(...)`` rows, the convention of every
funcnet loss (optax returns the per-row values: ``optax.kl_divergence(...).mean()``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet.ops._labels import num_rows
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.losses_elementwise import check_row_args


def check_kl_args(fn: str, log_predictions, targets, targets_name: str = "targets",
                  axis=-1, where=None, target_fill=0.0, log_prediction_fill=0.0):
    """The checks of the KL losses (and their twins): floating, same shape, rank >= 1, at
    least one row and one class; returns both promoted to their common dtype, the rows
    along ``axis`` last, a masked-out target ``target_fill`` (the value of a zero target:
    0, or ``-inf`` for log-targets) and its log-prediction ``log_prediction_fill`` (0, or
    ``-inf`` where the prediction itself enters the sum)."""
    return check_row_args(fn, "log_predictions", log_predictions, targets_name, targets,
                          axis, where, (log_prediction_fill, target_fill))[:2]


# the log-targets losses' arguments after the targets' name: a masked-out log-target is -inf
LOG_TARGETS = dict(targets_name="log_targets", target_fill=-jnp.inf)


def safe_log(t):
    """``log t`` for ``t > 0`` and 0 for ``t <= 0`` (``0 log 0 = 0``), with a finite
    derivative everywhere (the double ``where``: no ``0 * inf`` in ``grad(grad)``)."""
    pos = t > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, t, jnp.ones((), t.dtype))),
                     jnp.zeros((), t.dtype))


# ------------------------------------------------------------------------- KL(t || p)
def _kl_gap(lp, t):
    """``log t - log p`` where ``t > 0``, else 0 (so ``t * gap`` is 0 at ``t = 0`` even for
    ``log p = -inf``)."""
    return jnp.where(t > 0, safe_log(t) - lp, jnp.zeros((), t.dtype))


@jax.custom_vjp
def _kl(lp, t):
    return jnp.sum(t * _kl_gap(lp, t)) / num_rows(t)


def _kl_fwd(lp, t):
    gap = _kl_gap(lp, t)
    return jnp.sum(t * gap) / num_rows(t), (gap, t)


def _kl_bwd(res, g):
    gap, t = res
    scale = g / num_rows(t)
    dt = jnp.where(t > 0, gap + 1, jnp.zeros((), t.dtype))
    return -t * scale, dt * scale


defvjp(_kl, _kl_fwd, _kl_bwd)


@has_twin
def kl_divergence(log_predictions, targets, axis=-1, where=None):
    """``KL(t || p)`` per row, averaged over the rows: ``optax.kl_divergence(lp, t).mean()``
    (for rank 2 inputs PyTorch's ``kl_div(lp, t, reduction='batchmean')``).

    Forward: ``L = (1/n) sum_i sum_k t_ik (log t_ik - lp_ik)`` with ``0 log 0 = 0``: a
    term with ``t = 0`` is 0, also where ``lp = -inf`` (optax gives ``0 * inf = NaN``
    there). ``lp = -inf`` where ``t > 0`` gives ``+inf``.
    Backward: ``dL/dlp = -t / n``; ``dL/dt = (log t - lp + 1) / n`` for ``t > 0`` (optax's
    autodiff value) and 0 at ``t = 0``, where the true one-sided derivative is ``-inf``
    and optax's autodiff gives NaN (the term is identically 0 there; the same convention
    as ``0 log 0``). Residuals: ``log t - lp`` (0 where ``t = 0``) and ``t``.

    Args:
      log_predictions: ``(..., C)`` floating log-probabilities (e.g. ``log_softmax``),
        at least one row and one class.
      targets: the same shape, floating probabilities ``>= 0`` (promoted with
        ``log_predictions``); rows need not sum to 1 (the formula is applied as it is).
      axis: the axis (or tuple of axes) a row runs along (optax's; default the last).
      where: optional bool array of the inputs' shape (optax's): False elements leave
        the sums (no value, zero gradient); the mean is still over every row.

    Returns:
      Scalar mean loss, of the promoted dtype.

    Raises:
      ValueError: rank 0, shapes differ, an empty input, a bad ``axis``, ``where`` of
        another shape.
      TypeError: non-floating inputs, a non-bool ``where``.

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    return _kl(*check_kl_args("kl_divergence", log_predictions, targets, axis=axis,
                              where=where))


# ---------------------------------------------------------------- generalized KL
@jax.custom_vjp
def _gkl(lp, t):
    return jnp.sum(t * _kl_gap(lp, t) - t + jnp.exp(lp)) / num_rows(t)


def _gkl_fwd(lp, t):
    return _gkl.fun(lp, t), (lp, t)     # the inputs only: the gap is recomputed


def _gkl_bwd(res, g):
    lp, t = res
    scale = g / num_rows(t)
    # d/dt [t (log t - lp)] = log t - lp + 1 (0 at t = 0, kl_divergence's convention)
    dt = jnp.where(t > 0, _kl_gap(lp, t), -jnp.ones((), t.dtype))
    return (jnp.exp(lp) - t) * scale, dt * scale


defvjp(_gkl, _gkl_fwd, _gkl_bwd)


@has_twin
def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None):
    """The generalized KL divergence of unnormalized measures, averaged over the rows:
    ``optax.losses.generalized_kl_divergence(lp, t).mean()``.

    Forward: ``L = (1/n) sum_i sum_k [t_ik (log t_ik - lp_ik) - t_ik + exp(lp_ik)]``
    (``0 log 0 = 0``; the KL divergence when both rows sum to 1; Bregman's divergence of
    ``x log x``, convex in ``exp(lp)``). Backward: ``dL/dlp = (exp(lp) - t) / n``,
    ``dL/dt = (log t - lp) / n`` for ``t > 0`` and ``-1 / n`` at ``t = 0`` (the ``t log t``
    term's derivative taken as 0 there, as in :func:`kl_divergence`; the true one-sided
    derivative is ``-inf``, optax's autodiff NaN). Residuals: the two inputs (the gap is
    recomputed).

    Args, Returns, Raises: as :func:`kl_divergence` (masked-out elements leave the sums,
    ``exp(lp)`` included).

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    return _gkl(*check_kl_args("generalized_kl_divergence", log_predictions, targets,
                               axis=axis, where=where, log_prediction_fill=-jnp.inf))


# ------------------------------------------------------------- KL with log targets
def _kl_log_parts(lp, lt):
    """``(e, gap)``: ``exp(lt)`` and ``lt - lp`` (0 where ``lt = -inf``: ``t = 0``)."""
    gap = jnp.where(jnp.isneginf(lt), jnp.zeros((), lt.dtype), lt - lp)
    return jnp.exp(lt), gap


@jax.custom_vjp
def _kl_log(lp, lt):
    e, gap = _kl_log_parts(lp, lt)
    return jnp.sum(e * gap) / num_rows(lt)


def _kl_log_fwd(lp, lt):
    e, gap = _kl_log_parts(lp, lt)
    return jnp.sum(e * gap) / num_rows(lt), (e, gap)


def _kl_log_bwd(res, g):
    e, gap = res
    scale = g / num_rows(e)
    return -e * scale, e * (gap + 1) * scale


defvjp(_kl_log, _kl_log_fwd, _kl_log_bwd)


@has_twin
def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None):
    """``KL(t || p)`` from log-targets ``lt = log t``, averaged over the rows:
    ``optax.kl_divergence_with_log_targets(lp, lt).mean()`` (PyTorch's ``kl_div(...,
    log_target=True)``).

    Forward: ``L = (1/n) sum_i sum_k exp(lt_ik) (lt_ik - lp_ik)``, a term with ``lt = -inf``
    (``t = 0``) being 0 (optax: NaN). Backward: ``dL/dlp = -exp(lt) / n``, ``dL/dlt =
    exp(lt) (lt - lp + 1) / n`` (0 at ``lt = -inf``). Residuals: ``exp(lt)`` and ``lt -
    lp`` (0 where ``lt = -inf``).

    Args:
      log_predictions: ``(..., C)`` floating log-probabilities, at least one row and class.
      log_targets: the same shape, floating log-probabilities (promoted together).
      axis, where: as in :func:`kl_divergence`.

    Returns, Raises: as :func:`kl_divergence` (the scalar mean loss, of the promoted
    dtype), with ``log_targets`` for ``targets``.
    """
    return _kl_log(*check_kl_args("kl_divergence_with_log_targets", log_predictions,
                                  log_targets, axis=axis, where=where, **LOG_TARGETS))
