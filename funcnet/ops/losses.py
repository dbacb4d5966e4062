"""Multi-class losses: softmax cross-entropy, cross-entropy on probabilities, hinge.

Conventions (DESIGN.md): class scores are ``(..., C)``; every leading axis is a batch
axis and the loss is the mean over the ``n = prod(...)`` rows; labels are integer class
indices ``(...)`` or, where stated, one-hot / probability rows ``(..., C)``, promoted with
the scores to their common floating dtype (the dtype of the loss). Integer labels are not
differentiable (their cotangent is ``None``).

Checked at trace time: dtypes, shapes, ``n >= 1`` and ``C >= 1`` (a mean over an empty
batch is undefined: ``ValueError``, not NaN). Checked when the labels are concrete (an
eager call): every index in ``[0, C)``. Under ``jit`` an index outside ``[0, C)`` makes the
loss NaN and gives its row a zero gradient (see :mod:`funcnet.ops._labels`).

The label's entry is picked by a gather (:func:`funcnet.ops._labels.take_labels`), never
by multiplying with a one-hot row, so a ``-inf`` (masked) logit or a large float16 logit
gives the exact loss eagerly and under ``jit`` alike, and its gradient is 0.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._labels import (check_class_labels, mask_log, num_rows, one_hot, take_labels,
                                 valid_labels)
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp
from funcnet.ops.activations import stable_log_softmax
from funcnet.ops.smoothing import smoothed, smoothing_mix


# ---------------------------------------------------------------- softmax cross-entropy
def class_log_probs(logits):
    """Log-softmax over the classes; a ``+inf`` logit at another class gives ``-inf``
    (loss ``+inf``, as optax's integer-label loss), not an all-NaN row."""
    return stable_log_softmax(logits, -1, finite_shift=True)


@jax.custom_vjp
def _sce_index(logits, labels):
    return -jnp.mean(take_labels(class_log_probs(logits), labels))


def _sce_index_fwd(logits, labels):
    logp = class_log_probs(logits)
    return -jnp.mean(take_labels(logp, labels)), (logp, labels)


def _index_grad(logp, labels, a, g, keep=None):
    """``dL/dlogits`` of the index-label losses: ``(softmax(x) - t') g / n`` with ``t' =
    (1 - a) onehot + a/C`` (the plain one-hot row for ``a = 0``), 0 in the rows whose
    label is out of range and in those ``keep`` leaves out."""
    c = logp.shape[-1]
    if a == 0.0:
        diff = jnp.exp(logp) - one_hot(labels, c, logp.dtype)
    else:
        diff = jnp.exp(logp) - (1 - a) * one_hot(labels, c, logp.dtype) - a / c
    live = valid_labels(labels, c) if keep is None else valid_labels(labels, c) & keep
    diff = jnp.where(live[..., None], diff, jnp.zeros((), diff.dtype))
    return diff * (g / num_rows(logp))


def _sce_index_bwd(res, g):
    logp, labels = res
    return _index_grad(logp, labels, 0.0, g), None


defvjp(_sce_index, _sce_index_fwd, _sce_index_bwd)


def _smoothed_index_rows(logp, labels, a):
    """Per-row loss with smoothed index labels: ``-(1 - a) logp_y - (a/C) sum_k logp_k``
    (``-logp_y`` for ``a = 0``, which never sums a masked class's ``-inf``)."""
    if a == 0.0:
        return -take_labels(logp, labels)
    return -((1 - a) * take_labels(logp, labels) + a / logp.shape[-1] * jnp.sum(logp, -1))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _sce_index_smooth(logits, labels, a):
    return jnp.mean(_smoothed_index_rows(class_log_probs(logits), labels, a))


def _sce_index_smooth_fwd(logits, labels, a):
    logp = class_log_probs(logits)
    return jnp.mean(_smoothed_index_rows(logp, labels, a)), (logp, labels)


def _sce_index_smooth_bwd(a, res, g):
    logp, labels = res
    return _index_grad(logp, labels, a, g), None


defvjp(_sce_index_smooth, _sce_index_smooth_fwd, _sce_index_smooth_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _sce_index_rows(logits, labels, keep, a):
    return _kept_mean(_smoothed_index_rows(class_log_probs(logits), labels, a), keep)


def _kept_mean(rows, keep):
    """The mean over all rows of the per-row losses, 0 in the rows ``keep`` leaves out."""
    return jnp.sum(jnp.where(keep, rows, jnp.zeros((), rows.dtype))) / rows.size


def _sce_index_rows_fwd(logits, labels, keep, a):
    logp = class_log_probs(logits)
    return _kept_mean(_smoothed_index_rows(logp, labels, a), keep), (logp, labels, keep)


def _sce_index_rows_bwd(a, res, g):
    logp, labels, keep = res
    return _index_grad(logp, labels, a, g, keep), None, None


defvjp(_sce_index_rows, _sce_index_rows_fwd, _sce_index_rows_bwd)


@jax.custom_vjp
def _sce_probs(logits, labels):
    logp = class_log_probs(logits)
    return -jnp.sum(labels * mask_log(labels, logp)) / num_rows(logits)


def _sce_probs_fwd(logits, labels):
    logp = class_log_probs(logits)
    return -jnp.sum(labels * mask_log(labels, logp)) / num_rows(logp), (logp, labels)


def _sce_probs_bwd(res, g):
    logp, t = res
    scale = g / num_rows(logp)
    dlogits = (jnp.exp(logp) * jnp.sum(t, axis=-1, keepdims=True) - t) * scale
    return dlogits, -mask_log(t, logp) * scale


defvjp(_sce_probs, _sce_probs_fwd, _sce_probs_bwd)


def _classes_last(fn: str, logits, labels, axis, where):
    """optax's ``axis`` and ``where`` applied: ``(logits, labels, classes, keep)`` with the
    class axes moved last and flattened into one (probability labels and a class-shaped
    ``where`` alike). ``classes`` is the mask of classes (``where`` of the logits' shape,
    moved; ``None`` for a mask of rows), ``keep`` the ``(...)`` mask of the rows that
    count (``None`` without ``where``). Index labels in the rows left out are set to 0 (so
    a padding label such as -100 is not an error)."""
    _checks.check_float(fn, "logits", logits)
    _checks.check_array(fn, "labels", labels)
    logits, labels = as_array(logits), as_array(labels)
    _checks.check_min_rank(fn, "logits", logits, 1)
    rest, axes = _checks.row_axes(fn, axis, logits.ndim)
    batch = tuple(logits.shape[i] for i in rest)
    moved = axes != (logits.ndim - 1,)

    def last(x):
        return x.transpose(rest + axes).reshape(batch + (-1,)) if moved else x

    keep = classes = None
    if where is not None:
        where = _checks.check_bool(fn, "where", where)
        if where.shape == logits.shape:
            classes = last(where)
            keep = jnp.any(classes, axis=-1)
        elif where.shape == batch:
            keep = where
        else:
            raise ValueError(f"{fn}: where has shape {where.shape}, expected {logits.shape} "
                             f"(a mask of classes, as logits) or {batch} (a mask of rows)")
        if labels.shape == batch and jnp.issubdtype(labels.dtype, jnp.integer):
            labels = jnp.where(keep, labels, jnp.zeros((), labels.dtype))
    if labels.shape == logits.shape:
        labels = last(labels)
    return last(logits), labels, classes, keep


def check_softmax_cross_entropy_args(fn: str, logits, labels, axis=-1, where=None,
                                     label_smoothing=0.0):
    """The checks of :func:`softmax_cross_entropy` (and its twin), with ``axis`` and
    ``where`` applied. Returns ``(logits, labels, is_index, label_smoothing, keep)``:
    classes last; masked-out classes' logits ``-inf`` and labels 0; the rows ``where``
    leaves out have logits 0 and, for probability labels, labels 0 (their loss and
    gradient are 0); ``keep`` is ``None``, or for index labels with ``where`` the
    ``(...)`` bool mask of the rows that count. ``label_smoothing`` is a Python float in
    ``[0, 1)``, or a traced scalar (a ``vmap`` sweep; checked only for its shape and
    dtype), already applied to probability labels (returned as 0.0 for them)."""
    if isinstance(axis, (float, np.floating)):   # the argument order before optax's
        raise TypeError(f"{fn}: axis must be an int or a tuple of ints, got {axis!r}; "
                        "label smoothing is keyword-only (as optax's third argument is "
                        "axis): softmax_cross_entropy(logits, labels, "
                        f"label_smoothing={axis!r})")
    if _checks.is_traced(label_smoothing):
        _checks.check_hyperparameter(fn, "label_smoothing", label_smoothing)
        a = label_smoothing
    else:
        a = _checks.static_float(fn, "label_smoothing", label_smoothing, 0.0, 1.0,
                                 high_inclusive=False)
    logits, labels, classes, keep = _classes_last(fn, logits, labels, axis, where)
    logits, labels, is_index = check_class_labels(fn, "logits", logits, labels,
                                                  allow_probs=True)
    if not is_index and (_checks.is_traced(a) or a):
        a = jnp.asarray(a).astype(labels.dtype) if _checks.is_traced(a) else a
        labels, a = smoothed(labels, a, labels.shape[-1]), 0.0
    if keep is None:
        return logits, labels, is_index, a, None
    if (_checks.is_traced(a) or a) and classes is not None:
        raise ValueError(f"{fn}: label_smoothing {a} with a mask of classes (where of the "
                         "logits' shape) is not defined: smooth over the kept classes "
                         "yourself and pass probability labels")
    # an element counts where its class and its row do (a row with every class masked
    # counts nowhere); the others' logits are -inf in a kept row, 0 in a row left out
    live = keep[..., None] if classes is None else classes
    zero = jnp.zeros((), logits.dtype)
    fill = jnp.where(keep[..., None], jnp.asarray(-jnp.inf, logits.dtype), zero)
    logits = jnp.where(live, logits, fill)
    if is_index:
        return logits, labels, True, a, keep
    return logits, jnp.where(live, labels, zero), False, a, None


@has_twin
def softmax_cross_entropy(logits, labels, axis=-1, where=None, *,
                          label_smoothing: float = 0.0):
    """Softmax followed by cross-entropy, fused (the Softmax-with-Loss layer, note 003).

    Forward: ``L = -(1/n) sum_i sum_k t_ik log softmax(x_i)_k`` with a max-shifted
    log-softmax, so large logits never overflow; index labels pick ``log softmax(x_i)_y``
    by a gather (exact at ``-inf`` logits, which are masked classes: ``0 log 0 = 0``).
    Backward (notes 000 and 003): ``dL/dx_i = (softmax(x_i) - t_i) / n`` (0 at a ``-inf``
    logit). For label rows that do not sum to 1 the exact rule ``softmax(x_i) * sum_k t_ik
    - t_i`` is used; for probability labels ``dL/dt = -log softmax(x) / n`` (taken as 0 at
    a ``-inf`` logit whose label is 0). Residual: the log-probabilities ``(..., C)`` (the
    probabilities are ``exp`` of them), plus the labels.

    Label smoothing (Szegedy et al. 2016; PyTorch's ``CrossEntropyLoss(label_smoothing=a)``,
    optax's ``smooth_labels``): the targets become ``t' = (1 - a) t + a / C`` (``t`` the
    one-hot row of an index label), so ``L = -(1/n) sum_i [(1 - a) log softmax(x_i)_y +
    (a/C) sum_k log softmax(x_i)_k]`` for index labels (no one-hot row is built) and the
    loss of ``t'`` for probability labels; backward ``dL/dx_i = (softmax(x_i) - t'_i) / n``
    (index labels; ``softmax * sum_k t' - t'`` for probability rows) and ``dL/dt = (1 - a)
    dL/dt'``. Every class then has a positive target, so a ``-inf`` (masked) logit makes
    the loss ``+inf`` (as PyTorch and optax); mask with a large negative finite logit
    instead. ``label_smoothing=0.0`` runs the unsmoothed code (the same compiled program).

    ``axis`` and ``where`` (optax's): the class axis (an int, or a tuple of axes whose
    flattened slice holds the classes; an index label is then a flat index into it) and a
    bool mask, either of the logits' shape (False classes leave the softmax and the sum:
    their logits act as ``-inf``, their labels as 0) or of the logits' shape without the
    class axes (False rows count 0, with zero gradient, as do rows whose every class is
    masked). ``L = optax.softmax_cross_entropy(x, t, axis, where).mean()`` (index labels:
    ``optax.softmax_cross_entropy_with_integer_labels``): the mean over ALL rows, masked
    ones included; for the mean over the kept rows multiply by ``n / sum(where)``. Index
    labels in masked rows are ignored (a padding label such as ``-100`` is allowed); an
    index label on a masked class gives ``+inf`` (optax's integer loss reads that
    class's logit anyway). ``label_smoothing`` combines with a row mask, not with a class
    mask (``ValueError``).

    Args:
      logits: ``(..., C)`` floating scores, ``C >= 1``, at least one row.
      labels: integer class indices ``(...)`` in ``[0, C)``, or floating one-hot /
        probabilities ``(..., C)`` (promoted with the logits to their common dtype).
        Index and one-hot labels give the same loss and gradient.
      axis: static int or tuple of ints, the class axes (default ``-1``); index labels
        have the logits' shape without them. The third positional argument, as in optax.
      where: optional bool mask of the logits' shape (classes) or of the logits' shape
        without the class axes (rows).
      label_smoothing: keyword-only Python float ``a`` in ``[0, 1)``, or a traced
        scalar (``jax.vmap`` over smoothing values, a jitted function's argument): the
        same loss, as ``(1 - a) L(0) + a L(1)`` of the two static rules, with ``dL/da``;
        its range is then the caller's to keep (with a mask of classes it is refused).

    Returns:
      Scalar mean loss, of the (promoted) logits' dtype.

    Raises:
      ValueError: labels shape is neither the logits' shape without the class axes nor
        the logits' shape; an empty batch or ``C == 0``; concrete labels outside ``[0,
        C)`` in a kept row; ``label_smoothing`` NaN or outside ``[0, 1)``, or traced
        and not a scalar; ``axis`` out of range or repeated; ``where`` of another shape;
        ``label_smoothing`` with a mask of classes.
      TypeError: float labels shaped like indices, non-floating logits, bool labels, a
        ``label_smoothing`` that is not a number or a scalar tracer, a non-bool
        ``where``, an ``axis`` that is not an int or a tuple of ints (a float
        there, e.g. ``softmax_cross_entropy(x, y, 0.1)``, names ``label_smoothing=`` in
        the message).

    See ``docs/formulas.md`` (Softmax-with-Loss; label smoothing in "Beyond the notes").
    """
    logits, labels, is_index, a, keep = check_softmax_cross_entropy_args(
        "softmax_cross_entropy", logits, labels, axis, where, label_smoothing)
    if not is_index:
        return _sce_probs(logits, labels)
    if _checks.is_traced(a):   # linear in a: the rules of a = 0 and a = 1, mixed
        return smoothing_mix(a, *(_sce_index_rows(logits, labels, keep, b) if keep is not None
                                  else _sce_index_smooth(logits, labels, b)
                                  for b in (0.0, 1.0)))
    if keep is not None:
        return _sce_index_rows(logits, labels, keep, a)
    return _sce_index(logits, labels) if a == 0.0 else _sce_index_smooth(logits, labels, a)


def check_integer_labels(fn: str, labels):
    """optax's ``..._with_integer_labels``: ``labels`` must be integer class indices."""
    _checks.check_integer(fn, "labels", labels, "class indices; softmax_cross_entropy "
                          "takes one-hot / probability labels")


@has_twin
def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None):
    """optax's name for :func:`softmax_cross_entropy` with integer class indices:
    ``optax.softmax_cross_entropy_with_integer_labels(x, y, axis, where).mean()``.

    The same op (value, backward rule, ``axis`` and ``where``), with the labels required
    to be integers, as optax's. Shapes, formulas and errors: those of
    :func:`softmax_cross_entropy`; float labels are a ``TypeError``.
    """
    check_integer_labels("softmax_cross_entropy_with_integer_labels", labels)
    return softmax_cross_entropy(logits, labels, axis, where)


@has_twin
def safe_softmax_cross_entropy(logits, labels):
    """optax's name for :func:`softmax_cross_entropy` with probability labels:
    ``optax.losses.safe_softmax_cross_entropy(x, t).mean()``.

    optax keeps it beside its ``softmax_cross_entropy`` because that one is NaN where a
    logit is ``-inf`` and its label 0; funcnet's :func:`softmax_cross_entropy` already
    takes ``0 log 0 = 0`` there (value and gradient), so this is the same op with the
    labels required to be floating (one-hot / probabilities ``(..., C)``, the logits'
    shape). One addition, optax's: a row whose logits are all ``-inf`` and whose labels
    are all 0 (a padded row) adds 0 to the sum, with a zero gradient, where
    :func:`softmax_cross_entropy` is NaN (no finite logit to normalise by). Formulas,
    residuals and errors: those of :func:`softmax_cross_entropy`.
    """
    _checks.check_float("safe_softmax_cross_entropy", "labels", labels)
    return softmax_cross_entropy(empty_rows_zeroed(logits, labels), labels)


def empty_rows_zeroed(logits, labels):
    """``logits`` with each row that is all ``-inf`` and has all-0 labels set to 0, a row
    that then adds ``-sum 0 log(1/C) = 0`` and no gradient (shared with the twin); as
    they are when the shapes differ (the loss's check then names them)."""
    if jnp.shape(logits) != jnp.shape(labels):
        return logits
    logits = jnp.asarray(logits)
    empty = (jnp.all(logits == -jnp.inf, axis=-1, keepdims=True)
             & jnp.all(jnp.asarray(labels) == 0, axis=-1, keepdims=True))
    return jnp.where(empty, jnp.zeros((), logits.dtype), logits)


# ---------------------------------------------------------- cross-entropy on probabilities
@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _ce_index(probs, labels, eps, c):
    return -jnp.mean(jnp.log(take_labels(probs, labels) + eps))


def _ce_index_fwd(probs, labels, eps, c):
    picked = take_labels(probs, labels) + eps
    return -jnp.mean(jnp.log(picked)), (picked, labels)


def _ce_index_bwd(eps, c, res, g):
    picked, labels = res
    hit = one_hot(labels, c, jnp.bool_)  # all False for an index outside [0, C)
    dp = jnp.where(hit, (-g / num_rows(hit) / picked)[..., None], jnp.zeros((), picked.dtype))
    return dp, None


defvjp(_ce_index, _ce_index_fwd, _ce_index_bwd)


def _ce(probs, t, eps):
    return -jnp.sum(t * mask_log(t, jnp.log(probs + eps))) / num_rows(probs)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _ce_probs(probs, labels, eps):
    return _ce(probs, labels, eps)


def _ce_probs_fwd(probs, labels, eps):
    return _ce(probs, labels, eps), (probs, labels)


def _ce_probs_bwd(eps, res, g):
    probs, t = res
    scale = g / num_rows(probs)
    shifted = probs + eps
    return -t / shifted * scale, -mask_log(t, jnp.log(shifted)) * scale


defvjp(_ce_probs, _ce_probs_fwd, _ce_probs_bwd)


def check_cross_entropy_args(fn: str, probs, labels, eps):
    """The checks of :func:`cross_entropy`; ``(probs, labels, is_index, eps)``."""
    eps = _checks.static_float(fn, "eps", eps, 0.0, 1.0, high_inclusive=False)
    return (*check_class_labels(fn, "probs", probs, labels, allow_probs=True), eps)


@has_twin
def cross_entropy(probs, labels, eps: float = 1e-7):
    """Cross-entropy of probabilities, ``L = -(1/n) sum_i sum_k t_ik log(p_ik + eps)``.

    The mini-batch cross-entropy error of note 002, divided by the batch size ``n`` (the
    note's code divides by ``r.ndim``, a bug; see ``docs/formulas.md``). ``eps`` guards
    ``log(0)``; index labels pick ``p_iy`` by a gather. Backward: ``dL/dp = -t / (p + eps)
    / n`` (note 004 writes ``-Y/Y*`` for the un-averaged sum); for probability labels
    ``dL/dt = -log(p + eps) / n`` (0 where ``t = 0`` and ``p + eps = 0``). Prefer
    :func:`softmax_cross_entropy` on logits: it is exact where this one saturates.
    Residuals: index labels: ``p_iy + eps`` ``(...)`` and the labels; probability labels:
    ``probs`` and ``labels``.

    Args:
      probs: ``(..., C)`` probabilities, ``C >= 1``, at least one row.
      labels: integer indices ``(...)`` in ``[0, C)`` or floating one-hot / probabilities
        ``(..., C)`` (promoted with ``probs``).
      eps: static Python float in ``[0, 1)``, finite.

    Returns:
      Scalar mean loss, of the (promoted) dtype of ``probs``.

    Raises:
      ValueError, TypeError: as :func:`softmax_cross_entropy`; ``eps`` NaN or outside
        ``[0, 1)``.
    """
    probs, labels, is_index, eps = check_cross_entropy_args("cross_entropy", probs, labels, eps)
    if is_index:
        return _ce_index(probs, labels, eps, probs.shape[-1])
    return _ce_probs(probs, labels, eps)


# ------------------------------------------------------------------ multiclass hinge (SVM)
def _hinge_terms(scores, labels, margin):
    """``(rows, active)``: per-row loss (NaN for a bad label) and the active-margin mask."""
    c = scores.shape[-1]
    margins = scores - take_labels(scores, labels)[..., None] + margin
    active = (margins > 0) & ~one_hot(labels, c, jnp.bool_)
    rows = jnp.sum(jnp.where(active, margins, jnp.zeros((), margins.dtype)), axis=-1)
    rows = jnp.where(valid_labels(labels, c), rows, jnp.asarray(jnp.nan, rows.dtype))
    return rows, active


@jax.custom_vjp
def _hinge(scores, labels, margin):
    return jnp.mean(_hinge_terms(scores, labels, margin)[0])


def _hinge_fwd(scores, labels, margin):
    rows, active = _hinge_terms(scores, labels, margin)
    return jnp.mean(rows), (active, labels)


def _hinge_bwd(res, g):
    active, labels = res
    scale = g / num_rows(active)
    dtype = scale.dtype
    a = active.astype(dtype)
    dscores = (a - one_hot(labels, a.shape[-1], dtype) * jnp.sum(a, axis=-1, keepdims=True))
    return dscores * scale, None, jnp.sum(a) * scale


defvjp(_hinge, _hinge_fwd, _hinge_bwd)


def check_multiclass_hinge_args(fn: str, scores, labels, margin):
    """The checks of :func:`multiclass_hinge`; ``(scores, labels, margin)`` with ``margin``
    a scalar array of the scores' dtype (finite when concrete)."""
    scores, labels, _ = check_class_labels(fn, "scores", scores, labels, allow_probs=False)
    _checks.check_hyperparameter(fn, "margin", margin)
    return scores, labels, jnp.asarray(margin, scores.dtype)


@has_twin
def multiclass_hinge(scores, labels, margin=1.0):
    """Multiclass SVM (hinge) loss of note 001, averaged over the batch.

    Forward: ``L = (1/n) sum_i sum_{j != y_i} max(0, s_ij - s_iy_i + margin)``, with
    ``s_iy_i`` picked by a gather.
    Backward: with ``a_ij = [s_ij - s_iy_i + margin > 0]`` for ``j != y_i``,
    ``dL/ds_ij = a_ij / n`` and ``dL/ds_iy_i = -sum_j a_ij / n``; ``dL/dmargin =
    sum_ij a_ij / n``. At a tie (``s_ij - s_iy_i + margin == 0``) the subgradient 0 is
    taken, as for ReLU at 0. Residuals: the boolean mask ``a`` and the labels.

    Args:
      scores: ``(..., C)`` class scores ``s = x W`` (note 001 writes ``s = W x``).
      labels: integer class indices ``(...)`` in ``[0, C)``.
      margin: the margin (``Delta``), 1 by default; a finite float or a scalar array
        (differentiable).

    Returns:
      Scalar mean loss, of the scores' dtype.

    Raises:
      ValueError: as :func:`softmax_cross_entropy`; a non-scalar or non-finite margin.
      TypeError: non-integer labels, non-floating scores, a margin that is not a number.
    """
    return _hinge(*check_multiclass_hinge_args("multiclass_hinge", scores, labels, margin))
