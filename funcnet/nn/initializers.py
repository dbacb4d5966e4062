"""Weight initializers: ``init(key, shape, dtype=jnp.float32) -> array``.

``he_normal``, ``he_uniform``, ``xavier_normal``, ``xavier_uniform`` (aliases
``glorot_normal``, ``glorot_uniform``), ``lecun_normal``, ``lecun_uniform``, ``zeros`` and
``ones`` ARE initializers (call them with ``(key, shape, dtype)``); ``normal(stddev)``,
``uniform(scale)`` and ``constant(value)`` are factories that RETURN an initializer.

Fans, for a dense kernel ``(D, H)`` and a convolution kernel HWIO ``(KH, KW, Cin, Cout)``
(in general: the last two axes are (in, out), the leading axes the receptive field)::

    fan_in  = D      or  KH * KW * Cin
    fan_out = H      or  KH * KW * Cout

Variances (notes, "weight-init conventions": He for ReLU, Xavier for sigmoid/tanh):

| initializer    | Var[w]                    | distribution                          |
| he_*           | 2 / fan_in                | N(0, 2/fan_in) or U(±sqrt(6/fan_in))  |
| xavier_*       | 2 / (fan_in + fan_out)    | N(0, .) or U(±sqrt(6/(fan_in+fan_out))) |
| lecun_*        | 1 / fan_in                | N(0, 1/fan_in) or U(±sqrt(3/fan_in))  |

The "Xavier" initial value of the book (Saito, *Deep Learning from Scratch*, §6.2),
standard deviation ``1/sqrt(n)`` with ``n`` the number of input nodes, is LeCun's
``1/fan_in`` variance: use :func:`lecun_normal` for it. Glorot & Bengio's own formula is
``2/(fan_in + fan_out)``, which is what :func:`xavier_normal` implements.

The normal initializers draw from a plain (not truncated) normal scaled by the standard
deviation, so the variance equals the formula exactly (truncation at 2 sigma, as in
flax/haiku's ``variance_scaling``, would change it unless corrected). Uniform ones draw
``U(-a, a)`` with ``a = sqrt(3 * Var)``.

References:
  He, Zhang, Ren, Sun (2015), "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852
  Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward
  neural networks", AISTATS. LeCun, Bottou, Orr, Müller (1998), "Efficient BackProp".
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "compute_fans", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform",
    "glorot_normal", "glorot_uniform", "lecun_normal", "lecun_uniform", "normal",
    "uniform", "constant", "zeros", "ones",
]

Initializer = Callable[..., jax.Array]


def compute_fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel: ``(D, H)`` -> ``(D, H)``;
    ``(KH, KW, Cin, Cout)`` -> ``(KH*KW*Cin, KH*KW*Cout)``.

    Raises:
      ValueError: for a shape of rank < 2 (a bias has no fan; use ``zeros``).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(
            f"compute_fans: shape {shape} has rank {len(shape)}, expected a kernel of rank "
            ">= 2 ((D, H) or HWIO (KH, KW, Cin, Cout)); initialise biases with zeros")
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _check_dtype(fn: str, dtype) -> None:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {jnp.dtype(dtype)}")


def _normal_with_var(fn: str, key, shape, dtype, var: float) -> jax.Array:
    _check_dtype(fn, dtype)
    return jax.random.normal(key, tuple(shape), dtype) * jnp.asarray(math.sqrt(var), dtype)


def _uniform_with_var(fn: str, key, shape, dtype, var: float) -> jax.Array:
    _check_dtype(fn, dtype)
    a = math.sqrt(3.0 * var)
    return jax.random.uniform(key, tuple(shape), dtype, minval=-a, maxval=a)


def he_normal(key, shape, dtype=jnp.float32) -> jax.Array:
    """He (Kaiming) normal: ``w ~ N(0, 2 / fan_in)``; for ReLU layers (He et al. 2015)."""
    fan_in, _ = compute_fans(shape)
    return _normal_with_var("he_normal", key, shape, dtype, 2.0 / fan_in)


def he_uniform(key, shape, dtype=jnp.float32) -> jax.Array:
    """He uniform: ``w ~ U(-a, a)``, ``a = sqrt(6 / fan_in)``, so ``Var = 2 / fan_in``."""
    fan_in, _ = compute_fans(shape)
    return _uniform_with_var("he_uniform", key, shape, dtype, 2.0 / fan_in)


def xavier_normal(key, shape, dtype=jnp.float32) -> jax.Array:
    """Xavier/Glorot normal: ``w ~ N(0, 2 / (fan_in + fan_out))``; for sigmoid/tanh
    (Glorot & Bengio 2010). The book's "Xavier" (``1/n``) is :func:`lecun_normal`."""
    fan_in, fan_out = compute_fans(shape)
    return _normal_with_var("xavier_normal", key, shape, dtype, 2.0 / (fan_in + fan_out))


def xavier_uniform(key, shape, dtype=jnp.float32) -> jax.Array:
    """Xavier/Glorot uniform: ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = compute_fans(shape)
    return _uniform_with_var("xavier_uniform", key, shape, dtype, 2.0 / (fan_in + fan_out))


glorot_normal = xavier_normal
glorot_uniform = xavier_uniform


def lecun_normal(key, shape, dtype=jnp.float32) -> jax.Array:
    """LeCun normal: ``w ~ N(0, 1 / fan_in)`` (LeCun et al. 1998; the book's "Xavier")."""
    fan_in, _ = compute_fans(shape)
    return _normal_with_var("lecun_normal", key, shape, dtype, 1.0 / fan_in)


def lecun_uniform(key, shape, dtype=jnp.float32) -> jax.Array:
    """LeCun uniform: ``U(-a, a)``, ``a = sqrt(3 / fan_in)``, so ``Var = 1 / fan_in``."""
    fan_in, _ = compute_fans(shape)
    return _uniform_with_var("lecun_uniform", key, shape, dtype, 1.0 / fan_in)


def normal(stddev: float = 0.01) -> Initializer:
    """Factory: an initializer drawing ``N(0, stddev**2)`` (the book's ``0.01 * randn``)."""
    stddev = float(stddev)
    if not stddev >= 0:
        raise ValueError(f"normal: stddev must be >= 0, got {stddev}")

    def init(key, shape, dtype=jnp.float32):
        return _normal_with_var("normal", key, shape, dtype, stddev ** 2)
    return init


def uniform(scale: float = 0.01) -> Initializer:
    """Factory: an initializer drawing ``U(-scale, scale)`` (variance ``scale**2 / 3``)."""
    scale = float(scale)
    if not scale >= 0:
        raise ValueError(f"uniform: scale must be >= 0, got {scale}")

    def init(key, shape, dtype=jnp.float32):
        _check_dtype("uniform", dtype)
        return jax.random.uniform(key, tuple(shape), dtype, minval=-scale, maxval=scale)
    return init


def constant(value: float) -> Initializer:
    """Factory: an initializer filling every entry with ``value``."""
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(tuple(shape), value, dtype)
    return init


def zeros(key, shape, dtype=jnp.float32) -> jax.Array:
    """All zeros (biases, batch-norm ``beta`` and running mean). ``key`` is unused."""
    del key
    return jnp.zeros(tuple(shape), dtype)


def ones(key, shape, dtype=jnp.float32) -> jax.Array:
    """All ones (batch-norm ``gamma`` and running variance). ``key`` is unused."""
    del key
    return jnp.ones(tuple(shape), dtype)
