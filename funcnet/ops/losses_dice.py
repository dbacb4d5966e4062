"""optax's segmentation losses: ``dice_loss`` (soft Dice / Tversky), ``binary_dice_loss``
and ``multiclass_generalized_dice_loss``, each the mean of optax's per-example values.

For class ``c`` of one example, with ``p`` the probabilities (softmax of the logits over
the class axis, a sigmoid for one class) and ``t`` the one-hot targets, summed over the
spatial axes::

    I = sum p t,   P = sum p,   T = sum t
    dice_c = 1 - (I + s) / (I + alpha (P - I) + beta (T - I) + s)

(``alpha = beta = 1/2``: Dice's coefficient; otherwise Tversky's index). One ``jax.custom_vjp``
takes every variant; its backward rule, with ``num = I + s`` and ``den = (1 - alpha -
beta) I + alpha P + beta T + s``, is::

    d dice_c / dI = -(den - (1 - alpha - beta) num) / den^2
    d dice_c / dP = alpha num / den^2,   d dice_c / dT = beta num / den^2
    dp = dI t + dP,   dt = dI p + dT,   dlogits = p (dp - sum_c p dp)   (softmax)

and it keeps only its inputs (the probabilities are recomputed). The generalized Dice
loss (Sudre et al. 2017) weights class ``c`` by ``w_c = C u_c / sum_k u_k``, ``u_c = 1 /
(F_c^2 + 1e-7)``, ``F_c`` the class's target count over the whole batch; its rule adds
the weights' derivative with respect to the targets.

References:
  Milletari, Navab & Ahmadi (2016), "V-Net", https://arxiv.org/abs/1606.04797, equation
  (1). Salehi, Erdogmus & Gholipour (2017), "Tversky loss function for image segmentation
  using 3D fully convolutional deep networks", https://arxiv.org/abs/1706.05721. Sudre et
  al. (2017), "Generalised Dice overlap as a deep learning loss function for highly
  unbalanced segmentations", https://arxiv.org/abs/1707.03237, equation (4).
"""
from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin
from funcnet.ops.activations import stable_softmax

__all__ = ["dice_loss", "binary_dice_loss", "multiclass_generalized_dice_loss"]

_GENERALIZED_EPS = 1e-7        # optax's epsilon in the class weights 1 / (F^2 + eps)


class DiceConfig(NamedTuple):
    """The static settings of one Dice variant (hashable: a ``nondiff_argnums`` value)."""

    axes: tuple            # the spatial axes summed over (never the class axis, the last)
    alpha: float
    beta: float
    smooth: float
    activation: str | None  # "softmax", "sigmoid" or None (probabilities given)
    mean_classes: bool      # mean over the classes (else their sum)
    skip_first: bool        # leave class 0 (the background) out
    generalized: bool       # class weights from the targets' frequencies


# ------------------------------------------------------------------ shared forward maths
def activate(x, activation):
    if activation == "softmax":
        return stable_softmax(x, -1)
    if activation == "sigmoid":
        return lax.logistic(x)
    return x


def generalized_weights(targets):
    """``(w, u, F)``: ``w_c = C u_c / sum_k u_k`` with ``u_c = 1 / (F_c^2 + 1e-7)`` and
    ``F_c`` the class's total target mass (kept for the backward pass's ``dw / dt``)."""
    f = jnp.sum(targets, axis=tuple(range(targets.ndim - 1)))
    u = 1.0 / (f * f + _GENERALIZED_EPS)
    return u * (targets.shape[-1] / jnp.sum(u)), u, f


def classwise(v, ndim: int):
    """A ``(C,)`` vector laid out along the last of ``ndim`` axes (no rank promotion)."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def dice_parts(pred, targets, weights, cfg: DiceConfig):
    """``(weighted per-(example, class) loss, p, num, den, w, generalized)``; ``w`` laid
    out class-wise for the per-(example, class) terms; ``generalized`` is
    :func:`generalized_weights` of the targets (``None`` unless ``cfg.generalized``)."""
    p = activate(pred, cfg.activation)
    inter = jnp.sum(p * targets, axis=cfg.axes)
    num = inter + cfg.smooth
    den = (inter + cfg.alpha * (jnp.sum(p, axis=cfg.axes) - inter)
           + cfg.beta * (jnp.sum(targets, axis=cfg.axes) - inter) + cfg.smooth)
    generalized = generalized_weights(targets) if cfg.generalized else None
    w = classwise(weights if generalized is None else generalized[0], num.ndim)
    return (1.0 - num / den) * w, p, num, den, w, generalized


def class_scale(per, cfg: DiceConfig):
    """``(d mean / d per)``: the weight of each (example, class) term in the mean over the
    examples of the classes' mean (or sum), 0 for a skipped background class."""
    classes = per.shape[-1]
    kept = classes - 1 if cfg.skip_first else classes
    scale = (1.0 / kept if cfg.mean_classes else 1.0) / max(per.size // classes, 1)
    keep = jnp.arange(classes) >= (1 if cfg.skip_first else 0)
    return classwise(jnp.where(keep, scale, 0.0).astype(per.dtype), per.ndim)


def dice_value(pred, targets, weights, cfg: DiceConfig):
    per = dice_parts(pred, targets, weights, cfg)[0]
    return jnp.sum(per * class_scale(per, cfg))


# --------------------------------------------------------------------- the custom rule
@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dice(pred, targets, weights, cfg):
    return dice_value(pred, targets, weights, cfg)


def _dice_fwd(pred, targets, weights, cfg):
    return dice_value(pred, targets, weights, cfg), (pred, targets, weights)


def _dice_bwd(cfg, res, g):
    pred, targets, weights = res
    per, p, num, den, w, generalized = dice_parts(pred, targets, weights, cfg)
    gd = g * class_scale(per, cfg)                     # d L / d per, (rest..., C)
    g_num, g_den = -gd * w / den, gd * w * num / (den * den)
    g_inter = g_num + g_den * (1.0 - cfg.alpha - cfg.beta)

    def spread(a):                                     # back over the summed axes
        return jnp.expand_dims(a, cfg.axes)

    dp = spread(g_inter) * targets + spread(g_den * cfg.alpha)
    dt = spread(g_inter) * p + spread(g_den * cfg.beta)
    if cfg.activation == "softmax":
        dz = p * (dp - jnp.sum(p * dp, axis=-1, keepdims=True))
    elif cfg.activation == "sigmoid":
        dz = dp * p * (1.0 - p)
    else:
        dz = dp
    g_w = jnp.sum(gd * (1.0 - num / den), axis=tuple(range(per.ndim - 1)))   # dL / dw_c
    if generalized is not None:   # w = C u / sum u, u = 1 / (F^2 + eps), F = sum_rows t
        _, u, f = generalized
        total = jnp.sum(u)
        g_u = w.shape[-1] * (g_w / total - jnp.sum(g_w * u) / (total * total))
        dt = dt + classwise(g_u * (-2.0 * f * u * u), dt.ndim)
        return dz, dt, jnp.zeros_like(weights)
    return dz, dt, g_w


defvjp(_dice, _dice_fwd, _dice_bwd)


# ----------------------------------------------------------------------------- checks
def check_dice_args(fn: str, predictions, targets, class_weights, smooth, alpha, beta,
                    apply_softmax, reduction, ignore_background, axis, generalized=False,
                    binary=False):
    """The checks of the Dice losses (shared with the twins): ``(predictions, targets,
    weights, DiceConfig)`` with optax's shape rules (a missing trailing class axis of
    size 1 added to either side; not for the generalized loss, whose shapes must be
    equal), promoted to one floating dtype."""
    _checks.check_float(fn, "predictions", predictions)
    _checks.check_float(fn, "targets", targets)
    pred, targets = as_array(predictions), as_array(targets)
    if binary and pred.ndim == targets.ndim and pred.shape[-1:] != (1,):
        pred, targets = pred[..., None], targets[..., None]   # (N, ...): one class
    if generalized:
        _checks.check_same_shape(fn, "predictions", pred, "targets", targets)
    if pred.ndim == targets.ndim - 1:
        pred = pred[..., None]
    if targets.ndim == pred.ndim - 1:
        targets = targets[..., None]
    _checks.check_same_shape(fn, "predictions", pred, "targets", targets)
    _checks.check_min_rank(fn, "predictions", pred, 1)
    _checks.check_nonempty(fn, "predictions", pred, "at least one element")
    dtype = jnp.result_type(pred, targets)
    pred, targets = pred.astype(dtype), targets.astype(dtype)
    classes = pred.shape[-1]
    smooth = _checks.static_float(fn, "smooth", smooth, 0.0)
    alpha = _checks.static_float(fn, "alpha", alpha, 0.0)
    beta = _checks.static_float(fn, "beta", beta, 0.0)
    apply_softmax = _checks.static_bool(fn, "apply_softmax", apply_softmax)
    reduction = _checks.static_choice(fn, "reduction", reduction, ("mean", "sum", "none"))
    ignore_background = _checks.static_bool(fn, "ignore_background", ignore_background)
    if axis is None:
        axes = tuple(range(1, pred.ndim - 1))
    else:
        axes = tuple(_checks.check_axis(fn, a, pred.ndim) for a in
                     (axis if isinstance(axis, (tuple, list)) else (axis,)))
        if pred.ndim - 1 in axes or len(set(axes)) != len(axes):
            raise ValueError(f"{fn}: axis {axis} must name distinct spatial axes of "
                             f"predictions {pred.shape}, not the class axis (the last)")
    if class_weights is None:
        weights = jnp.ones((classes,), dtype)
    else:
        _checks.check_float(fn, "class_weights", class_weights)
        weights = as_array(class_weights).astype(dtype)
        if weights.shape != (classes,):
            raise ValueError(f"{fn}: class_weights has shape {weights.shape}, expected "
                             f"({classes},): one weight per class of predictions "
                             f"{pred.shape}")
    if not apply_softmax and classes > 1:
        _check_distributions(fn, pred)
    activation = None if not apply_softmax else ("sigmoid" if classes == 1 else "softmax")
    cfg = DiceConfig(tuple(sorted(axes)), alpha, beta, smooth, activation,
                     reduction != "sum", ignore_background and classes > 1, generalized)
    return pred, targets, weights, cfg


def _check_distributions(fn: str, probs) -> None:
    """Concrete probabilities (``apply_softmax=False``) must sum to 1 over the classes, as
    optax checks (skipped under ``jit``, where the values are unknown)."""
    values = _checks.concrete(probs)
    if values is None:
        return
    sums = values.sum(axis=-1)
    low, high = float(sums.min()), float(sums.max())
    if not (math.isclose(low, 1.0, rel_tol=1e-5) and math.isclose(high, 1.0, rel_tol=1e-5)):
        raise ValueError(f"{fn}: with apply_softmax=False, predictions must be "
                         f"probabilities that sum to 1 over the class axis (the last); "
                         f"their sums range over [{low:.6f}, {high:.6f}]")


# --------------------------------------------------------------------------- public ops
@has_twin
def dice_loss(predictions, targets, *, class_weights=None, smooth: float = 1.0,
              alpha: float = 0.5, beta: float = 0.5, apply_softmax: bool = True,
              reduction: str = "mean", ignore_background: bool = False, axis=None):
    """Soft Dice (Tversky) loss for segmentation: ``optax.losses.dice_loss(...).mean()``.

    Per example and class (module docstring): ``dice_c = 1 - (I + s) / (I + alpha (P - I)
    + beta (T - I) + s)``, times ``class_weights[c]``; ``reduction="mean"`` (or
    ``"none"``) averages over the classes, ``"sum"`` sums them; the result is the mean
    over the examples (the axes neither summed nor the class axis). Backward: the
    module's rule through the softmax (or sigmoid for one class). Residuals: the inputs.

    Shapes:
      predictions: logits ``(N, ..., C)`` (or probabilities with
        ``apply_softmax=False``), ``(N, ..., 1)`` or ``(N, ...)`` for one class; targets
        one-hot of the same shape (a missing trailing axis of size 1 on either side is
        added, as optax does). ``axis`` (default: every axis but the first and the last)
        are the spatial axes summed over.

    Args:
      predictions, targets: floating arrays (promoted to one dtype).
      class_weights: optional ``(C,)`` floating weights (differentiable).
      smooth, alpha, beta: static Python floats ``>= 0`` (defaults 1, 1/2, 1/2).
      apply_softmax: static bool: softmax (sigmoid for ``C = 1``) of the predictions.
      reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the classes (``"none"`` is
        optax's per-class output, whose mean is ``"mean"``'s).
      ignore_background: leave class 0 out (when ``C > 1``).
      axis: static int or tuple of ints, the spatial axes.

    Returns:
      Scalar loss, of the promoted dtype.

    Raises:
      ValueError: shapes that differ (after the size-1 axis), an empty input, ``axis``
        naming the class axis, ``class_weights`` not ``(C,)``, concrete probabilities
        (``apply_softmax=False``, ``C > 1``) whose class sums are not 1, a bad
        ``reduction``, a negative ``smooth``, ``alpha`` or ``beta``.
      TypeError: non-floating inputs, a non-static setting.

    References:
      Milletari et al. (2016), https://arxiv.org/abs/1606.04797; Salehi et al. (2017),
      https://arxiv.org/abs/1706.05721. ``docs/formulas.md``, "Beyond the notes".
    """
    return _dice(*check_dice_args("dice_loss", predictions, targets, class_weights, smooth,
                                  alpha, beta, apply_softmax, reduction, ignore_background,
                                  axis))


@has_twin
def binary_dice_loss(predictions, targets, *, smooth: float = 1.0,
                     apply_sigmoid: bool = True):
    """Binary Dice loss: ``optax.losses.binary_dice_loss(...).mean()``.

    :func:`dice_loss` of one class: predictions ``(N, ...)`` (a trailing class axis of
    size 1 is added when the last axis is not 1 already) through a sigmoid
    (``apply_sigmoid``), standard Dice (``alpha = beta = 1/2``), summed over every axis
    but the first. With ``apply_sigmoid=False`` the predictions are probabilities in
    ``[0, 1]`` (optax instead requires them to sum to 1 over the size-1 class axis, which
    refuses every input but ones).

    Args:
      predictions: floating logits (or probabilities), ``(N, ...)`` or ``(N, ..., 1)``.
      targets: floating 0 / 1 targets of the same shape.
      smooth: static Python float ``>= 0``.
      apply_sigmoid: static bool.

    Returns:
      Scalar loss. Errors: those of :func:`dice_loss`.
    """
    return _dice(*check_dice_args("binary_dice_loss", predictions, targets, None, smooth,
                                  0.5, 0.5, apply_sigmoid, "mean", False, None, binary=True))


@has_twin
def multiclass_generalized_dice_loss(predictions, targets, *, smooth: float = 1.0,
                                     apply_softmax: bool = True,
                                     ignore_background: bool = False):
    """Generalized Dice loss (Sudre et al. 2017):
    ``optax.losses.multiclass_generalized_dice_loss(...)`` (a scalar already).

    :func:`dice_loss` (standard Dice) with class weights from the batch's targets, ``w_c =
    C u_c / sum_k u_k``, ``u_c = 1 / (F_c^2 + 1e-7)``, ``F_c = sum_{examples, pixels}
    t_c``: rare classes weigh more. The mean over the examples and the (kept) classes.
    The backward rule includes the weights' dependence on the targets.

    Args:
      predictions: logits (or probabilities) ``(N, ..., C)``.
      targets: one-hot ``(N, ..., C)``.
      smooth: static Python float ``>= 0``.
      apply_softmax: static bool.
      ignore_background: leave class 0 out of the mean (its weight still counts in
        ``sum_k u_k``, as optax's).

    Returns:
      Scalar loss. Errors: those of :func:`dice_loss` (the shapes must be equal).

    References:
      Sudre et al. (2017), https://arxiv.org/abs/1707.03237, equation (4).
    """
    fn = "multiclass_generalized_dice_loss"
    return _dice(*check_dice_args(fn, predictions, targets, None, smooth, 0.5, 0.5,
                                  apply_softmax, "none", ignore_background, None,
                                  generalized=True))
