"""PolyLoss (Leng et al. 2022, optax's ``poly_loss_cross_entropy``): the softmax
cross-entropy plus ``epsilon`` times its first polynomial term ``1 - p_t``.

The loss is the mean over the rows of optax's per-row values. Labels, ``axis`` and
``where`` follow :func:`funcnet.ops.softmax_cross_entropy`, whose checks and class layout
it shares. Index labels are taken as their one-hot rows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._labels import mask_log, num_rows, one_hot
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.losses import check_softmax_cross_entropy_args, class_log_probs


def poly_rows_sum(logp, t, eps):
    """``sum_i [-sum_k t_ik log p_ik + eps sum_k t_ik (1 - p_ik)]`` over every row, with
    ``0 log 0 = 0`` (a masked, ``-inf`` class whose label is 0)."""
    return -jnp.sum(t * mask_log(t, logp)) + eps * jnp.sum(t * (1 - jnp.exp(logp)))


@jax.custom_vjp
def _poly(logits, labels, eps):
    return poly_rows_sum(class_log_probs(logits), labels, eps) / num_rows(logits)


def _poly_fwd(logits, labels, eps):
    logp = class_log_probs(logits)
    return poly_rows_sum(logp, labels, eps) / num_rows(logp), (logp, labels, eps)


def _poly_bwd(res, g):
    logp, t, eps = res
    p = jnp.exp(logp)
    scale = g / num_rows(logp)
    p_t = jnp.sum(t * p, axis=-1, keepdims=True)
    dlogits = (p * jnp.sum(t, axis=-1, keepdims=True) - t - eps * p * (t - p_t)) * scale
    deps = jnp.sum(t * (1 - p)) * scale          # the loss is linear in eps
    return dlogits, (eps * (1 - p) - mask_log(t, logp)) * scale, deps


defvjp(_poly, _poly_fwd, _poly_bwd)


def check_poly_args(fn: str, logits, labels, epsilon, axis, where):
    """The checks of :func:`poly_loss_cross_entropy` (and its twin): ``(logits, labels,
    eps)`` with the classes last and the labels as probability rows (index labels one-hot;
    the rows ``where`` leaves out and the masked classes 0, as for the cross-entropy);
    ``eps`` a scalar array of the logits' dtype (finite when concrete; a tracer, e.g. a
    ``vmap`` sweep, is checked for its shape and dtype only)."""
    _checks.check_hyperparameter(fn, "epsilon", epsilon)
    logits, labels, is_index, _, keep = check_softmax_cross_entropy_args(
        fn, logits, labels, axis, where)
    if is_index:
        labels = one_hot(labels, logits.shape[-1], logits.dtype)
        if keep is not None:
            labels = jnp.where(keep[..., None], labels, jnp.zeros((), labels.dtype))
    return logits, labels, jnp.asarray(epsilon, logits.dtype)


@has_twin
def poly_loss_cross_entropy(logits, labels, *, epsilon: float = 2.0, axis=-1, where=None):
    """PolyLoss: softmax cross-entropy plus ``epsilon (1 - p_t)`` (Leng et al. 2022).

    Forward: ``L = (1/n) sum_i [-sum_k t_ik log p_ik + eps sum_k t_ik (1 - p_ik)]``, ``p =
    softmax(x)`` (max-shifted); for label rows that sum to 1, ``sum_k t_ik (1 - p_ik) = 1 -
    p_t``, the first term of the cross-entropy's expansion in ``(1 - p_t)^j``. ``eps = 0`` is
    :func:`softmax_cross_entropy`; the paper recommends ``eps = 2`` for ImageNet
    classification and ``-1`` for detection.

    Backward, with ``S_i = sum_k t_ik`` and ``p_t = sum_k t_ik p_ik``: ``dL/dx_i = (p_i S_i
    - t_i - eps p_i (t_i - p_t)) / n`` (the cross-entropy's ``softmax - t`` plus
    ``-eps`` times the softmax Jacobian applied to ``t``), ``dL/dt_i = (eps (1 - p_i) - log
    p_i) / n`` (``log p`` taken as 0 at a ``-inf`` logit whose label is 0); the loss is
    linear in ``eps``: ``dL/deps = (1/n) sum_i sum_k t_ik (1 - p_ik)``. Residuals: the
    log-probabilities and the labels, as the cross-entropy, and ``eps``.

    ``= optax.poly_loss_cross_entropy(x, t, epsilon=eps, axis=axis, where=where).mean()``.
    Index labels give the loss of their one-hot rows.

    Args:
      logits: ``(..., C)`` floating scores (classes on ``axis``).
      labels: integer class indices (the logits' shape without the class axes) or
        floating one-hot / probabilities of the logits' shape.
      epsilon: keyword-only Python float or traced scalar (a ``jit`` argument, a
        ``jax.vmap`` sweep), finite (checked when concrete; any sign); differentiable.
      axis: keyword-only static int or tuple of ints, the class axes (default ``-1``).
      where: keyword-only optional bool mask of the logits' shape (classes) or of the
        logits' shape without the class axes (rows), as :func:`softmax_cross_entropy`.

    Returns:
      Scalar mean loss, of the (promoted) logits' dtype.

    Raises:
      ValueError / TypeError: those of :func:`softmax_cross_entropy`; ``epsilon`` NaN,
        infinite or not a scalar (``ValueError``), not a number or a real scalar array
        (``TypeError``).

    See ``docs/formulas.md`` ("Beyond the notes").
    """
    return _poly(*check_poly_args("poly_loss_cross_entropy", logits, labels, epsilon, axis,
                                  where))
