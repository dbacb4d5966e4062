"""Inverted dropout primitive whose backward pass regenerates the mask from the key."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet._random import draw
from funcnet.ops._arrays import as_array
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def check_dropout_args(fn: str, x, rate, key, broadcast_dims=()):
    """The checks of :func:`dropout` (and its twin); returns ``(x, rate, key,
    mask_shape)``.

    ``rate``: a finite real scalar in ``[0, 1)`` (NaN and inf refused), returned as a
    Python float when concrete (the static program), as a scalar array of JAX's default
    float dtype when traced (a ``jax.vmap`` sweep, a ``jit`` argument; its value is not
    checked); ``key``: one PRNG key (:func:`funcnet._checks.check_key`);
    ``broadcast_dims``: a tuple of distinct static axes of ``x`` (negative counts from
    the end), size 1 in the mask.
    """
    rate = _checks.check_rate(fn, "rate", rate)
    _checks.check_float(fn, "x", x)
    x = as_array(x)
    dims = [_checks.check_axis(fn, d, x.ndim, "broadcast_dims")
            for d in _checks.static_ints(fn, "broadcast_dims", broadcast_dims)]
    if len(set(dims)) != len(dims):
        raise ValueError(f"{fn}: broadcast_dims {tuple(broadcast_dims)} names an axis twice "
                         f"(x has shape {x.shape})")
    shape = tuple(1 if i in dims else n for i, n in enumerate(x.shape))
    return x, rate, _checks.check_key(fn, key), shape


def keep_mask(key, rate, shape):
    """Boolean keep mask, ``P(keep) = 1 - rate``; a pure function of ``key`` (a traced
    ``rate`` of the default float dtype draws the mask of the same Python float)."""
    return draw(lambda k, s: jax.random.bernoulli(k, 1.0 - rate, s), key, shape)


def keep_probability(rate, dtype):
    """``1 - rate`` rounded to ``dtype`` (a Python float's weak-type rounding, also for a
    traced ``rate``): the kept elements are divided by it."""
    return jnp.asarray(1.0 - rate, dtype)


def _apply_mask(x, key, rate, shape):
    return jnp.where(keep_mask(key, rate, shape), x / keep_probability(rate, x.dtype),
                     jnp.zeros((), x.dtype))


@partial(jax.custom_vjp, nondiff_argnums=(1, 3))
def _dropout(x, rate, key, shape):
    return _apply_mask(x, key, rate, shape)


def _dropout_fwd(x, rate, key, shape):
    return _apply_mask(x, key, rate, shape), key


def _dropout_bwd(rate, shape, key, dy):
    return _apply_mask(dy, key, rate, shape), None


defvjp(_dropout, _dropout_fwd, _dropout_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dropout_traced(x, rate, key, shape):
    return _apply_mask(x, key, rate, shape)


def _dropout_traced_fwd(x, rate, key, shape):
    y = _apply_mask(x, key, rate, shape)
    return y, (key, rate, y)


def _dropout_traced_bwd(shape, res, dy):
    key, rate, y = res
    # d/drate of x m / (1 - rate) with the mask held fixed: y / (1 - rate)
    ct = _checks.compute_dtype(y.dtype)
    drate = jnp.sum(dy.astype(ct) * y.astype(ct)) / (1 - rate).astype(ct)
    return _apply_mask(dy, key, rate, shape), drate.astype(rate.dtype), None


defvjp(_dropout_traced, _dropout_traced_fwd, _dropout_traced_bwd)


@has_twin
def dropout(x, rate, key, broadcast_dims=()):
    """Inverted dropout: zero each element with probability ``rate``, scale the rest.

    Forward: ``m ~ Bernoulli(1 - rate)`` elementwise from ``key``;
    ``y = x * m / (1 - rate)``, so ``E[y] = x`` and no rescaling is needed at test time.
    Backward: ``dx = dy * m / (1 - rate)``; the mask is REGENERATED from ``key`` (the
    residual is the key alone, not an ``x``-sized mask). ``key`` gets a ``None`` cotangent.
    ``rate == 0`` returns ``x`` unchanged (identity, gradient 1).

    A traced ``rate`` (``jax.vmap`` over a sweep of rates, a ``jit`` argument) gives the
    static call's mask and values for the same key (exactly under float64; float32 rounds
    ``1 - rate`` once more) and is differentiable with the mask held fixed:
    ``dL/drate = sum(dy * y) / (1 - rate)`` (autodiff's value for the twin; the mask's
    jumps have no derivative). That path also keeps ``y`` as a residual, and a traced 0 runs
    the mask (all kept) instead of returning ``x``.

    ``broadcast_dims`` (Flax's ``Dropout(broadcast_dims=)``): the mask has size 1 on these
    axes and is shared along them: ``(1, 2)`` of NHWC drops whole feature maps (spatial
    dropout, Tompson et al. 2015; PyTorch's ``Dropout2d``), every axis but the batch drops
    whole examples (stochastic depth, :class:`funcnet.nn.DropPath`). The same key and
    ``broadcast_dims`` give Flax's mask, ``bernoulli(key, 1 - rate, mask_shape)``.

    Under ``jax.vmap`` the mask is a function of the key alone: with one unbatched key
    (``vmap(lambda x: dropout(x, r, key))``) EVERY example gets the SAME mask (standard
    JAX semantics; the twin does the same). For independent masks per example, vmap over
    keys too: ``vmap(dropout, in_axes=(0, None, 0))(x, r, jax.random.split(key, n))``.

    Args:
      x: floating array of any shape.
      rate: drop probability in ``[0, 1)``: a Python float (static), or a traced real
        scalar (a sweep; its value unchecked).
      key: a typed key (``jax.random.key``) or raw ``uint32[2]`` (``jax.random.PRNGKey``).
        The same key gives the same mask.
      broadcast_dims: distinct axes of ``x`` (negative count from the end) along which
        one mask value is shared. Static. Default ``()``: every element on its own.

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      ValueError: ``rate`` outside ``[0, 1)`` or not finite; key of the wrong shape; a
        ``broadcast_dims`` axis out of range for ``x``'s rank, or named twice.
      TypeError: ``rate`` not a number or a real scalar array; non-floating ``x``; key
        not a PRNG key; ``broadcast_dims`` not a tuple of ints.

    References:
      Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting", JMLR 2014, https://jmlr.org/papers/v15/srivastava14a.html.
      See ``docs/formulas.md``.
    """
    x, rate, key, shape = check_dropout_args("dropout", x, rate, key, broadcast_dims)
    if _checks.is_traced(rate):
        return _dropout_traced(x, rate, key, shape)
    if rate == 0.0:
        return x
    return _dropout(x, rate, key, shape)
