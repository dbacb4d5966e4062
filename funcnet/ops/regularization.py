"""L2 weight penalty over a pytree (note 001: data loss + regularization)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def check_l2_args(fn: str, params, weight_decay):
    """The checks of :func:`l2_penalty` (and its twin).

    Returns ``(leaves, weight_decay)``: the leaves of ``params`` (each a floating array)
    and ``weight_decay`` as a scalar array of the widest leaf dtype (JAX's default float
    dtype for a tree without leaves), finite when concrete.
    """
    leaves = jax.tree_util.tree_leaves(params)
    dtype = None
    for leaf in leaves:
        dt = getattr(leaf, "dtype", None)
        if dt is None or not hasattr(leaf, "shape") or not jnp.issubdtype(dt, jnp.floating):
            _bad_leaf(fn, params)
        if dtype is None or jnp.dtype(dt).itemsize > dtype.itemsize:
            dtype = jnp.dtype(dt)
    _checks.check_hyperparameter(fn, "weight_decay", weight_decay)
    dtype = dtype if dtype is not None else _checks.check_dtype(fn, "dtype", None)
    return leaves, jnp.asarray(weight_decay, dtype)


def _bad_leaf(fn, params):
    """Raise the ``TypeError`` for the first leaf that is not a floating array (with its path)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dt = getattr(leaf, "dtype", None)
        if dt is None or not hasattr(leaf, "shape"):
            raise TypeError(f"{fn}: params{_checks.path_str(path)} must be an array, got "
                            f"{type(leaf).__name__}")
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(f"{fn}: params{_checks.path_str(path)} has dtype {dt} with shape "
                            f"{tuple(leaf.shape)}; pass only the floating leaves to penalise")


def sum_squares(leaves, dtype):
    """``sum_k sum(W_k^2)`` over a list of arrays, accumulated in ``dtype``."""
    return sum((jnp.sum(jnp.square(x)).astype(dtype) for x in leaves), jnp.zeros((), dtype))


def _l2_forward(leaves, weight_decay):
    return 0.5 * weight_decay * sum_squares(leaves, weight_decay.dtype)


@jax.custom_vjp
def _l2(leaves, weight_decay):
    return _l2_forward(leaves, weight_decay)


def _l2_fwd(leaves, weight_decay):
    return _l2_forward(leaves, weight_decay), (leaves, weight_decay)


def _l2_bwd(res, g):
    leaves, wd = res
    scale = g * wd
    dleaves = [x * scale.astype(x.dtype) for x in leaves]
    return dleaves, 0.5 * g * sum_squares(leaves, wd.dtype)


defvjp(_l2, _l2_fwd, _l2_bwd)


@has_twin
def l2_penalty(params, weight_decay):
    """``R = (weight_decay / 2) * sum_k W_k^2`` over every leaf of ``params``.

    Note 001 adds ``sum_k W_k^2`` (times a strength lambda) to the data loss; funcnet uses
    the ``1/2`` convention so that the gradient is ``weight_decay * W``, the term that
    :func:`funcnet.optim.add_decayed_weights` adds (lambda = weight_decay / 2).
    Backward: ``dR/dW = weight_decay * W``; ``dR/dweight_decay = sum W^2 / 2``.
    Residuals: ``params`` (inputs) only.

    Args:
      params: a pytree of floating arrays (pass the subtree to penalise, e.g. weights
        without biases).
      weight_decay: float or scalar array (may be traced, e.g. vmapped over a sweep);
        finite when concrete.

    Returns:
      Scalar penalty in the widest floating dtype of the leaves.

    Raises:
      TypeError: a leaf that is not a floating array (named by its path).
      ValueError: a non-scalar or non-finite ``weight_decay``.
    """
    return _l2(*check_l2_args("l2_penalty", params, weight_decay))
