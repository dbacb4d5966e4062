"""Inverted dropout primitive whose backward pass regenerates the mask from the key."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def check_dropout_args(fn: str, x, rate, key):
    """The checks of :func:`dropout` (and its twin); returns ``(x, rate, key)``.

    ``rate``: a static, finite Python float in ``[0, 1)`` (NaN and inf refused); ``key``:
    one PRNG key (:func:`funcnet._checks.check_key`).
    """
    rate = _checks.static_float(fn, "rate", rate, 0.0, 1.0, high_inclusive=False)
    _checks.check_float(fn, "x", x)
    return as_array(x), rate, _checks.check_key(fn, key)


def keep_mask(key, rate: float, shape):
    """Boolean keep mask, ``P(keep) = 1 - rate``; a pure function of ``key``."""
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def _apply_mask(x, key, rate):
    return jnp.where(keep_mask(key, rate, x.shape), x / (1.0 - rate), jnp.zeros((), x.dtype))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _dropout(x, rate, key):
    return _apply_mask(x, key, rate)


def _dropout_fwd(x, rate, key):
    return _apply_mask(x, key, rate), key


def _dropout_bwd(rate, key, dy):
    return _apply_mask(dy, key, rate), None


defvjp(_dropout, _dropout_fwd, _dropout_bwd)


@has_twin
def dropout(x, rate, key):
    """Inverted dropout: zero each element with probability ``rate``, scale the rest.

    Forward: ``m ~ Bernoulli(1 - rate)`` elementwise from ``key``;
    ``y = x * m / (1 - rate)``, so ``E[y] = x`` and no rescaling is needed at test time.
    Backward: ``dx = dy * m / (1 - rate)``; the mask is REGENERATED from ``key`` (the
    residual is the key alone, not an ``x``-sized mask). ``key`` gets a ``None`` cotangent.
    ``rate == 0`` returns ``x`` unchanged (identity, gradient 1).

    Under ``jax.vmap`` the mask is a function of the key alone: with one unbatched key
    (``vmap(lambda x: dropout(x, r, key))``) EVERY example gets the SAME mask (standard
    JAX semantics; the twin does the same). For independent masks per example, vmap over
    keys too: ``vmap(dropout, in_axes=(0, None, 0))(x, r, jax.random.split(key, n))``.

    Args:
      x: floating array of any shape.
      rate: drop probability, a Python float in ``[0, 1)``. Static.
      key: a typed key (``jax.random.key``) or raw ``uint32[2]`` (``jax.random.PRNGKey``).
        The same key gives the same mask.

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      ValueError: ``rate`` outside ``[0, 1)`` or not finite; key of the wrong shape.
      TypeError: ``rate`` not a Python number; non-floating ``x``; key not a PRNG key.

    References:
      Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting", JMLR 2014, https://jmlr.org/papers/v15/srivastava14a.html.
      See ``docs/formulas.md``.
    """
    x, rate, key = check_dropout_args("dropout", x, rate, key)
    if rate == 0.0:
        return x
    return _dropout(x, rate, key)
