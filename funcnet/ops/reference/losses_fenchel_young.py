"""Plain-JAX twin of :mod:`funcnet.ops.losses_fenchel_young` (autodiff of the formula)."""
from __future__ import annotations

from typing import Callable

from funcnet import _checks
from funcnet.ops.losses_fenchel_young import check_fenchel_young_args, fenchel_young_value

__all__ = ["make_fenchel_young_loss"]


def make_fenchel_young_loss(max_fun: Callable) -> Callable:
    """Reference Fenchel-Young loss: ``mean(max_fun(theta) - <y, theta>)``, autodiff."""
    _checks.check_callable("make_fenchel_young_loss", "max_fun", max_fun,
                           "max_fun(scores_row) -> scalar")

    def fenchel_young_loss(scores, targets, *args, **kwargs):
        scores, targets = check_fenchel_young_args(scores, targets)
        return fenchel_young_value(max_fun, scores, targets, args, kwargs)

    return fenchel_young_loss
