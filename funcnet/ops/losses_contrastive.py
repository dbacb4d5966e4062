"""Contrastive loss of optax: NT-Xent (SimCLR's normalized temperature-scaled
cross-entropy, Chen et al. 2020).

The rows of a batch of embeddings are compared by cosine similarity; rows with the same
label are positive pairs, rows with different labels negatives. The loss is optax's:
already a scalar, the mean over the positive pairs.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.losses_regression import unit_rows, unit_rows_grad


def pairs(labels):
    """``(pos, neg)``: ``(N, N)`` bool, same label off the diagonal / different label."""
    same = labels[:, None] == labels[None, :]
    return same & ~jnp.eye(labels.shape[0], dtype=bool), ~same


def _parts(u, labels, tau):
    """``(s, pos, neg, lse)``: the scaled similarities ``s = u u^T / tau``, the pair masks
    and ``lse_i = logsumexp_{k neg} s_ik`` (``-inf`` for a row without negatives)."""
    s = (u @ u.T) / tau
    pos, neg = pairs(labels)
    lse = logsumexp(jnp.where(neg, s, -jnp.inf), axis=1, keepdims=True)
    return s, pos, neg, lse


def _loss(s, pos, lse):
    """``(1/P) sum_{(i, j) pos} softplus(lse_i - s_ij)``; NaN without a positive pair."""
    terms = jnp.where(pos, jax.nn.softplus(lse - s), jnp.zeros((), s.dtype))
    return jnp.sum(terms) / jnp.sum(pos).astype(s.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _ntxent(e, labels, tau, eps):
    s, pos, _, lse = _parts(unit_rows(e, eps)[0], labels, tau)
    return _loss(s, pos, lse)


def _ntxent_fwd(e, labels, tau, eps):
    u, norm, free = unit_rows(e, eps)
    s, pos, _, lse = _parts(u, labels, tau)
    return _loss(s, pos, lse), (u, norm, free, labels, tau)


def _ntxent_bwd(eps, res, g):
    u, norm, free, labels, tau = res
    s, pos, neg, lse = _parts(u, labels, tau)     # one matmul recomputed, nothing N x N kept
    zero = jnp.zeros((), s.dtype)
    scale = g / jnp.sum(pos).astype(s.dtype)
    sig = jnp.where(pos, jax.nn.sigmoid(lse - s), zero)           # -dL/ds at the positives
    soft = jnp.where(neg, jnp.exp(s - jnp.where(neg, lse, zero)), zero)   # softmax over negs
    ds = (soft * jnp.sum(sig, axis=1, keepdims=True) - sig) * (scale / tau)   # dL/ds / tau
    du = (ds + ds.T) @ u
    dtau = -jnp.sum(ds * s)       # -(1/tau) sum_ij dL/ds_ij s_ij (0 off the pairs)
    return unit_rows_grad(du, u, norm, free), None, dtau


defvjp(_ntxent, _ntxent_fwd, _ntxent_bwd)


def check_ntxent_args(fn: str, embeddings, labels, temperature):
    """The checks of :func:`ntxent` (and its twin): ``(embeddings, labels, tau, eps)``,
    ``tau`` a scalar array of the embeddings' dtype (``> 0`` and finite when concrete; a
    tracer for a sweep), ``eps`` the float dtype's machine epsilon (optax's norm guard).
    Concrete labels without a positive pair are a ``ValueError``."""
    _checks.check_hyperparameter(fn, "temperature", temperature, 0.0, None,
                                 low_inclusive=False)
    _checks.check_float(fn, "embeddings", embeddings)
    _checks.check_rank(fn, "embeddings", embeddings, 2, "(N, D): one embedding per row")
    _checks.check_nonempty(fn, "embeddings", embeddings, "at least one row and one feature")
    _checks.check_integer(fn, "labels", labels, "one class id per row")
    e, labels = as_array(embeddings), as_array(labels)
    _checks.check_shape(fn, "labels", labels, (e.shape[0],), "one label per embedding")
    known = _checks.concrete(labels)
    if known is not None and len(np.unique(known)) == len(known):   # no label repeats
        raise ValueError(f"{fn}: labels hold no positive pair (two rows with the same "
                         "label): the loss is a mean over the positive pairs")
    return (e, labels, jnp.asarray(temperature, e.dtype),
            float(jnp.finfo(e.dtype).eps))


@has_twin
def ntxent(embeddings, labels, temperature: float = 0.07):
    """NT-Xent, the contrastive loss of SimCLR (Chen et al. 2020): ``optax.ntxent``.

    Forward: ``u_i = e_i / |e_i|_eps`` (``|e|_eps = sqrt(max(|e|^2, eps))``, ``eps`` the
    dtype's machine epsilon, optax's guard), ``s_ij = u_i . u_j / tau``; the positive
    pairs ``P`` are ``i != j`` with the same label, the negatives ``N_i`` the rows with
    another label; ``L = (1/|P|) sum_{(i,j) in P} -log(e^{s_ij} / (e^{s_ij} + sum_{k in
    N_i} e^{s_ik}))``, computed as ``softplus(lse_i - s_ij)`` with ``lse_i =
    logsumexp_{k in N_i} s_ik`` (stable for any ``tau``).

    Backward: with ``sig_ij = sigmoid(lse_i - s_ij)`` on the positives and ``w_ik =
    e^{s_ik - lse_i}`` (the softmax over the negatives), ``dL/ds_ij = -sig_ij / |P|`` on
    the positives and ``dL/ds_ik = w_ik sum_{j in P_i} sig_ij / |P|`` on the negatives;
    ``dL/du = (G + G^T) u`` with ``G = dL/ds / tau``; ``dL/de_i = (du_i - u_i (u_i .
    du_i)) / |e_i|_eps`` (``du_i / |e_i|_eps`` below the guard); ``s`` is linear in
    ``1/tau``, so ``dL/dtau = -(1/tau) sum_ij (dL/ds_ij) s_ij = -sum_ij G_ij s_ij``.
    Residuals: the unit rows, their norms, the labels and ``tau`` (``s`` is recomputed:
    nothing ``N x N`` is kept).

    Args:
      embeddings: ``(N, D)`` floating, at least one row and one feature.
      labels: ``(N,)`` integer ids; rows with the same id are positive pairs.
      temperature: a Python float or a traced scalar (a ``jit`` argument, a ``jax.vmap``
        sweep), ``> 0`` and finite (checked when concrete); differentiable.

    Returns:
      Scalar, of the embeddings' dtype: the mean over the positive pairs (NaN under
      ``jit`` when there is none; a row without negatives contributes 0).

    Raises:
      ValueError: embeddings not of rank 2 or empty, labels not of shape ``(N,)``,
        ``temperature`` NaN, infinite or ``<= 0`` (when concrete) or not a scalar,
        concrete labels without a positive pair.
      TypeError: non-floating embeddings, non-integer labels, a ``temperature`` that is
        not a number or a real scalar array.

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    return _ntxent(*check_ntxent_args("ntxent", embeddings, labels, temperature))
