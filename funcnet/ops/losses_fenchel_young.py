"""optax's ``make_fenchel_young_loss(max_fun)``: the Fenchel-Young loss of a
regularised max function ``Omega*`` (Blondel, Martins & Niculae 2020).

For scores ``theta`` and targets ``y`` (each row along the last axis)::

    L(theta, y) = Omega*(theta) - <y, theta>,      dL/dtheta = grad Omega*(theta) - y,
                                                    dL/dy     = -theta

``Omega* = logsumexp`` gives softmax cross-entropy (for ``y`` on the simplex), the
sparsemax's ``max`` gives the sparsemax loss. The rule above is written out; ``grad
Omega*`` (the regularised argmax, e.g. the softmax) comes from ``jax.value_and_grad`` of
the user's ``max_fun`` in the forward pass and is kept as the residual, with the inputs.

References:
  Blondel, Martins & Niculae (2020), "Learning with Fenchel-Young Losses", JMLR 21,
  https://arxiv.org/abs/1901.02324, Proposition 2.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin, is_reference_mode

__all__ = ["make_fenchel_young_loss"]


def check_fenchel_young_args(scores, targets):
    """``(scores, targets)`` promoted to one floating dtype, the same shape, rank >= 1."""
    fn = "fenchel_young_loss"
    _checks.check_float(fn, "scores", scores)
    _checks.check_float(fn, "targets", targets)
    _checks.check_same_shape(fn, "targets", targets, "scores", scores)
    _checks.check_min_rank(fn, "scores", scores, 1)
    _checks.check_nonempty(fn, "scores", scores, "at least one row of one score")
    dtype = jnp.result_type(scores, targets)
    return as_array(scores).astype(dtype), as_array(targets).astype(dtype)


def _rows(scores) -> int:
    return scores.size // scores.shape[-1]


def fenchel_young_value(max_fun: Callable, scores, targets, args, kwargs):
    """The mean over the rows of ``max_fun(theta) - <y, theta>`` (plain JAX)."""
    row_max = jnp.vectorize(lambda s: max_fun(s, *args, **kwargs), signature="(n)->()")
    return jnp.sum(row_max(scores) - jnp.sum(targets * scores, axis=-1)) / _rows(scores)


def _fenchel_young(max_fun: Callable, scores, targets, args, kwargs):
    row = jnp.vectorize(jax.value_and_grad(lambda s: max_fun(s, *args, **kwargs)),
                        signature="(n)->(),(n)")

    @jax.custom_vjp
    def loss(s, t):
        return fenchel_young_value(max_fun, s, t, args, kwargs)

    def fwd(s, t):
        value, argmax = row(s)
        total = jnp.sum(value - jnp.sum(t * s, axis=-1)) / _rows(s)
        return total, (s, t, argmax.astype(s.dtype))

    def bwd(res, g):
        s, t, argmax = res
        scale = g / _rows(s)
        return (argmax - t) * scale, jnp.negative(s) * scale

    defvjp(loss, fwd, bwd)
    return loss(scores, targets)


@has_twin
def make_fenchel_young_loss(max_fun: Callable) -> Callable:
    """The Fenchel-Young loss of ``max_fun``: ``optax.losses.make_fenchel_young_loss``.

    Returns ``fenchel_young_loss(scores, targets, *args, **kwargs)``, the mean over the
    rows (the last axis holds a row) of ``max_fun(theta, *args, **kwargs) - <y, theta>``;
    its backward rule is ``dtheta = (grad max_fun(theta) - y) / n``, ``dy = -theta / n``
    (module docstring). Inside :func:`funcnet.ops.reference_mode` the returned loss runs
    the plain formula (forward-mode autodiff works).

    Args:
      max_fun: ``max_fun(theta_row, *args, **kwargs) -> scalar``, a convex, smooth (or
        almost everywhere differentiable) regularised max of one row, e.g.
        ``jax.scipy.special.logsumexp``.

    Returns:
      The loss function. Its errors (``TypeError`` for non-floating inputs, ``ValueError``
      for shapes that differ, a scalar or an empty input) name ``fenchel_young_loss``.

    Raises:
      TypeError: ``max_fun`` is not callable.

    References:
      Blondel et al. (2020), https://arxiv.org/abs/1901.02324.
    """
    _checks.check_callable("make_fenchel_young_loss", "max_fun", max_fun,
                           "max_fun(scores_row) -> scalar")

    def fenchel_young_loss(scores, targets, *args, **kwargs):
        scores, targets = check_fenchel_young_args(scores, targets)
        if is_reference_mode():
            return fenchel_young_value(max_fun, scores, targets, args, kwargs)
        return _fenchel_young(max_fun, scores, targets, args, kwargs)

    return fenchel_young_loss
