"""optax's public numerics and tree helpers, for code written against optax:
``bias_correction``, ``update_moment``, ``update_moment_per_elem_norm``,
``update_infinity_moment``, ``safe_norm``, ``safe_root_mean_squares``,
``safe_increment`` (and its old name ``safe_int32_increment``).

Each one is the public face of the helper funcnet's own blocks use (one source per
concept): :func:`funcnet.optim.base.bias_correction`, :func:`~funcnet.optim.base.moment`,
:func:`~funcnet.optim.base.safe_increment` and ``regularization._floored``. The moment
helpers keep optax's ``None`` leaves (a leaf of ``updates`` that is ``None`` stays
``None``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.base import (
    abs_sq, bias_correction as _debias, cast_like, moment, promote_dtypes,
    safe_increment)
from funcnet.optim.regularization import _floored, _rms

__all__ = ["bias_correction", "update_moment", "update_moment_per_elem_norm",
           "update_infinity_moment", "safe_norm", "safe_root_mean_squares",
           "safe_increment", "safe_int32_increment"]


def _is_none(x) -> bool:
    return x is None


def _map_moments(fn, leaf, updates, moments):
    """``leaf(g, t)`` over ``updates`` and ``moments``; a ``None`` update stays None.
    ``ValueError`` naming ``fn`` when the trees differ."""
    try:
        return jax.tree_util.tree_map(lambda g, t: None if g is None else leaf(g, t),
                                      updates, moments, is_leaf=_is_none)
    except ValueError as err:
        raise ValueError(f"{fn}: moments tree structure does not match updates: {err}") from None


def _order(fn, order):
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, float, np.number)):
        raise TypeError(f"{fn}: order must be a Python number, got {type(order).__name__}")
    return order


def bias_correction(moment, decay, count):
    """Adam's bias correction of a tree of moments, optax's ``bias_correction``::

        t_hat = t / (1 - decay^count)         (leaf by leaf, in t's dtype)

    ``1 - decay^count`` is formed in at least JAX's default float and then cast to the
    moment's dtype (``decay^count`` rounds to 1 in bfloat16), as optax.

    Args:
      moment: a tree of arrays (the biased moving averages).
      decay: the averages' decay, a number or scalar array (possibly traced).
      count: the number of averaged steps (>= 1), an integer scalar array.

    Returns:
      The tree of corrected moments.
    """
    count = jnp.asarray(count)
    return jax.tree_util.tree_map(lambda t: t / _debias(decay, count, t), moment)


def update_moment(updates, moments, decay, order):
    """The exponential moving average of the ``order``-th power of the updates, optax's
    ``update_moment``::

        t <- (1 - decay) * g^order + decay * t

    (``g^order`` is the complex power for complex ``g``; see
    :func:`update_moment_per_elem_norm` for ``|g|^order``).

    Args:
      updates: a tree of arrays (``None`` leaves stay ``None``).
      moments: the moving averages, a tree of the same structure.
      decay: a number or scalar array in [0, 1].
      order: a Python number, the power.

    Returns:
      The new moments, each in the promoted dtype of its update and moment.
    """
    order = _order("update_moment", order)
    return _map_moments("update_moment", lambda g, t: moment(decay, g ** order, t),
                        updates, moments)


def update_moment_per_elem_norm(updates, moments, decay, order):
    """The exponential moving average of the ``order``-th power of the elementwise norm,
    optax's ``update_moment_per_elem_norm``::

        t <- (1 - decay) * |g|^order + decay * t

    For real ``g`` it is ``g^order`` (as optax: an odd ``order`` keeps the sign); for
    complex ``g``, ``(|g|^2)^(order / 2)``.

    Args:
      updates: a tree of arrays (``None`` leaves stay ``None``).
      moments: the moving averages, a tree of the same structure.
      decay: a number or scalar array in [0, 1].
      order: a Python number.

    Returns:
      The new moments.
    """
    fn = "update_moment_per_elem_norm"
    order = _order(fn, order)

    def norm(g):
        if not jnp.iscomplexobj(g):
            return g ** order
        half = order / 2
        return abs_sq(g) ** (int(half) if float(half).is_integer() else half)

    return _map_moments(fn, lambda g, t: moment(decay, norm(g), t), updates, moments)


def update_infinity_moment(updates, moments, decay, eps):
    """The exponentially weighted infinity norm (AdaMax's ``u``), optax's
    ``update_infinity_moment``::

        t <- max(|g| + eps, decay * t)

    Args:
      updates: a tree of arrays (``None`` leaves stay ``None``).
      moments: the running norms, a tree of the same structure.
      decay: a number or scalar array in [0, 1].
      eps: a number or scalar array, added to ``|g|``.

    Returns:
      The new running norms, in the promoted dtype of ``|g|`` and the moment.
    """
    def leaf(g, t):
        a = jnp.abs(g)
        dt = promote_dtypes(a.dtype, t.dtype)
        return jnp.maximum((a + cast_like(eps, a)).astype(dt),
                           (cast_like(decay, t) * t).astype(dt))

    return _map_moments("update_infinity_moment", leaf, updates, moments)


def safe_norm(x, min_norm, ord=None, axis=None, keepdims=False):  # noqa: A002 - optax's name
    """``max(norm(x), min_norm)`` with a gradient of 0 (not NaN) where the norm is below
    ``min_norm``, optax's ``safe_norm``: the norm is taken again on an input replaced by
    ones there, so ``jax.grad`` never differentiates ``sqrt`` at 0.

    Args:
      x: an array.
      min_norm: the floor, a number or scalar array.
      ord: ``jnp.linalg.norm``'s ``ord`` (None: the 2-norm / Frobenius norm).
      axis: ``jnp.linalg.norm``'s ``axis`` (None: over the whole array).
      keepdims: keep the reduced axes with size 1.

    Returns:
      The floored norm, an array of ``jnp.linalg.norm``'s shape for these arguments.
    """
    x = jnp.asarray(x)
    _checks.check_hyperparameter("safe_norm", "min_norm", min_norm)
    stat = lambda v: jnp.linalg.norm(v, ord=ord, axis=axis, keepdims=True)  # noqa: E731
    value = _floored(stat, x, min_norm)
    return value if keepdims else jnp.squeeze(value, axis=axis)


def safe_root_mean_squares(x, min_rms):
    """``max(sqrt(mean(|x|^2)), min_rms)`` with a gradient of 0 (not NaN) where the RMS
    is below ``min_rms``, optax's ``safe_root_mean_squares``.

    Args:
      x: an array.
      min_rms: the floor, a number or scalar array.

    Returns:
      A scalar.
    """
    _checks.check_hyperparameter("safe_root_mean_squares", "min_rms", min_rms)
    return _floored(_rms, jnp.asarray(x), min_rms)


safe_int32_increment = safe_increment   # optax's older name of the same function
