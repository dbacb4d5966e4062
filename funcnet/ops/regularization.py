"""L2 weight penalty over a pytree (note 001: data loss + regularization)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _float_leaves(fn, params):
    leaves = jax.tree_util.tree_leaves(params)
    for i, leaf in enumerate(leaves):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(f"{fn}: params leaf {i} has dtype {jnp.result_type(leaf)} with shape "
                            f"{np.shape(leaf)}; pass only the floating leaves to penalise")
    return leaves


def _widest(leaves):
    return max((jnp.result_type(x) for x in leaves), key=lambda d: jnp.dtype(d).itemsize,
               default=jnp.dtype(jnp.float32))


def _sum_squares(params, dtype):
    return sum((jnp.sum(jnp.square(x)).astype(dtype) for x in jax.tree_util.tree_leaves(params)),
               jnp.zeros((), dtype))


@jax.custom_vjp
def _l2(params, weight_decay):
    dtype = weight_decay.dtype
    return 0.5 * weight_decay * _sum_squares(params, dtype)


def _l2_fwd(params, weight_decay):
    return _l2(params, weight_decay), (params, weight_decay)


def _l2_bwd(res, g):
    params, wd = res
    scale = g * wd
    dparams = jax.tree_util.tree_map(lambda x: x * scale.astype(x.dtype), params)
    return dparams, 0.5 * g * _sum_squares(params, wd.dtype)


_l2.defvjp(_l2_fwd, _l2_bwd)


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
      weight_decay: float or scalar array (may be traced, e.g. vmapped over a sweep).

    Returns:
      Scalar penalty in the widest floating dtype of the leaves.
    """
    leaves = _float_leaves("l2_penalty", params)
    if jnp.ndim(weight_decay) != 0:
        raise ValueError(f"l2_penalty: weight_decay must be a scalar, got shape "
                         f"{jnp.shape(weight_decay)}")
    return _l2(params, jnp.asarray(weight_decay, _widest(leaves)))
