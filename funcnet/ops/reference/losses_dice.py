"""Plain-JAX twins of :mod:`funcnet.ops.losses_dice` (the same forward maths and checks,
differentiated by JAX, the generalized loss's class weights included)."""
from __future__ import annotations

from funcnet.ops.losses_dice import check_dice_args, dice_value

__all__ = ["dice_loss", "binary_dice_loss", "multiclass_generalized_dice_loss"]


def dice_loss(predictions, targets, *, class_weights=None, smooth: float = 1.0,
              alpha: float = 0.5, beta: float = 0.5, apply_softmax: bool = True,
              reduction: str = "mean", ignore_background: bool = False, axis=None):
    """Reference soft Dice / Tversky loss."""
    return dice_value(*check_dice_args("dice_loss", predictions, targets, class_weights,
                                       smooth, alpha, beta, apply_softmax, reduction,
                                       ignore_background, axis))


def binary_dice_loss(predictions, targets, *, smooth: float = 1.0,
                     apply_sigmoid: bool = True):
    """Reference binary Dice loss."""
    return dice_value(*check_dice_args("binary_dice_loss", predictions, targets, None,
                                       smooth, 0.5, 0.5, apply_sigmoid, "mean", False, None,
                                       binary=True))


def multiclass_generalized_dice_loss(predictions, targets, *, smooth: float = 1.0,
                                     apply_softmax: bool = True,
                                     ignore_background: bool = False):
    """Reference generalized Dice loss."""
    return dice_value(*check_dice_args("multiclass_generalized_dice_loss", predictions,
                                       targets, None, smooth, 0.5, 0.5, apply_softmax,
                                       "none", ignore_background, None, generalized=True))
