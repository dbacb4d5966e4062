"""Weight initializers with ``jax.nn.initializers``' conventions.

An initializer is ``init(key, shape, dtype=None) -> array`` (``dtype=None``: JAX's default
float dtype, float64 under ``jax_enable_x64``). As in ``jax.nn.initializers``, ``zeros``
and ``ones`` ARE initializers; every other name is a FACTORY that returns one:
``he_normal()(key, shape, dtype)``, ``normal(0.01)``, ``variance_scaling(2.0, "fan_in",
"normal")``. Any ``jax.nn.initializers`` initializer works wherever funcnet takes one.

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
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet._random import draw

__all__ = [
    "Initializer", "compute_fans", "variance_scaling", "he_normal", "he_uniform",
    "xavier_normal", "xavier_uniform", "glorot_normal", "glorot_uniform", "lecun_normal",
    "lecun_uniform", "normal", "uniform", "truncated_normal", "constant", "zeros", "ones",
    "orthogonal",
]

Initializer = Callable[..., jax.Array]
"""``init(key, shape, dtype=None) -> array`` (``jax.nn.initializers.Initializer``)."""


def _axes(shape, axis) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % len(shape) for a in axes)


def compute_fans(shape: Sequence[int], in_axis=-2, out_axis=-1, batch_axis=()) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel (``jax.nn.initializers``' convention).

    ``(D, H)`` -> ``(D, H)``; HWIO ``(KH, KW, Cin, Cout)`` -> ``(KH*KW*Cin, KH*KW*Cout)``:
    the axes that are neither ``in_axis``, ``out_axis`` nor ``batch_axis`` form the
    receptive field, which multiplies both fans.

    Raises:
      ValueError: for a shape of rank < 2 (a bias has no fan; use ``zeros``).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(
            f"compute_fans: shape {shape} has rank {len(shape)}, expected a kernel of rank "
            ">= 2 ((D, H) or HWIO (KH, KW, Cin, Cout)); initialise biases with zeros")
    ins, outs, batch = _axes(shape, in_axis), _axes(shape, out_axis), _axes(shape, batch_axis)
    receptive = math.prod(d for i, d in enumerate(shape) if i not in ins + outs + batch)
    return (receptive * math.prod(shape[i] for i in ins),
            receptive * math.prod(shape[i] for i in outs))


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")


def variance_scaling(scale: float, mode: str, distribution: str, in_axis=-2, out_axis=-1,
                     batch_axis=(), dtype=None) -> Initializer:
    """Factory: ``Var[w] = scale / n`` with ``n`` the fan chosen by ``mode``.

    ``jax.nn.initializers.variance_scaling``'s signature and meaning, except that
    ``"normal"`` here is a plain normal (variance exactly ``scale / n``, the notes'
    formulas), and ``"truncated_normal"`` is the normal truncated at 2 sigma and rescaled
    so that the variance is still ``scale / n`` (as in JAX).

    Args:
      scale: positive scale of the variance.
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"`` (``(fan_in + fan_out) / 2``).
      distribution: ``"normal"``, ``"uniform"`` (``U(-a, a)``, ``a = sqrt(3 Var)``) or
        ``"truncated_normal"``.
      in_axis, out_axis, batch_axis: the kernel axes, as :func:`compute_fans`.
      dtype: default dtype of the initializer (``None``: JAX's default float dtype).

    Returns:
      ``init(key, shape, dtype=dtype) -> array``.
    """
    fn = "variance_scaling"
    scale = _checks.static_float(fn, "scale", scale, 0.0, low_inclusive=False)
    _checks.static_choice(fn, "mode", mode, _MODES)
    _checks.static_choice(fn, "distribution", distribution, _DISTRIBUTIONS)
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = _checks.check_dtype(fn, "dtype", dtype)
        shape = tuple(shape)
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        var = scale / n
        if distribution == "normal":
            return draw(lambda k, s: jax.random.normal(k, s, dtype), key, shape) * jnp.asarray(
                math.sqrt(var), dtype)
        if distribution == "uniform":
            a = math.sqrt(3.0 * var)
            return draw(lambda k, s: jax.random.uniform(k, s, dtype, minval=-a, maxval=a), key,
                        shape)
        # std of N(0, 1) truncated to [-2, 2]
        std = math.sqrt(var) / .87962566103423978
        return draw(lambda k, s: jax.random.truncated_normal(k, -2, 2, s, dtype), key,
                    shape) * jnp.asarray(std, dtype)

    return init


def he_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=None) -> Initializer:
    """He (Kaiming) normal: ``w ~ N(0, 2 / fan_in)``, for ReLU layers (He et al. 2015).

    A plain normal (``jax.nn.initializers.he_normal`` truncates at 2 sigma; pass
    ``variance_scaling(2.0, "fan_in", "truncated_normal")`` for that).
    """
    return variance_scaling(2.0, "fan_in", "normal", in_axis, out_axis, batch_axis, dtype)


def he_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=None) -> Initializer:
    """He uniform: ``w ~ U(-a, a)``, ``a = sqrt(6 / fan_in)``, so ``Var = 2 / fan_in``."""
    return variance_scaling(2.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def xavier_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=None) -> Initializer:
    """Xavier/Glorot normal: ``w ~ N(0, 2 / (fan_in + fan_out))``, for sigmoid/tanh
    (Glorot & Bengio 2010). The book's "Xavier" (``1/n``) is :func:`lecun_normal`."""
    return variance_scaling(1.0, "fan_avg", "normal", in_axis, out_axis, batch_axis, dtype)


def xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=None) -> Initializer:
    """Xavier/Glorot uniform: ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``."""
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis, batch_axis, dtype)


glorot_normal = xavier_normal
glorot_uniform = xavier_uniform


def lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=None) -> Initializer:
    """LeCun normal: ``w ~ N(0, 1 / fan_in)`` (LeCun et al. 1998; the book's "Xavier")."""
    return variance_scaling(1.0, "fan_in", "normal", in_axis, out_axis, batch_axis, dtype)


def lecun_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=None) -> Initializer:
    """LeCun uniform: ``U(-a, a)``, ``a = sqrt(3 / fan_in)``, so ``Var = 1 / fan_in``."""
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def normal(stddev: float = 1e-2, dtype=None) -> Initializer:
    """Factory: ``N(0, stddev**2)`` (the book's ``0.01 * randn``; JAX's default stddev)."""
    stddev = _checks.static_float("normal", "stddev", stddev, 0.0)
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = _checks.check_dtype("normal", "dtype", dtype)
        return draw(lambda k, s: jax.random.normal(k, s, dtype), key, shape) * jnp.asarray(
            stddev, dtype)
    return init


def truncated_normal(stddev: float = 1e-2, dtype=None, lower: float = -2.0,
                     upper: float = 2.0) -> Initializer:
    """Factory: ``stddev *`` a standard normal truncated to ``[lower, upper]`` (as JAX)."""
    stddev = _checks.static_float("truncated_normal", "stddev", stddev, 0.0)
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = _checks.check_dtype("truncated_normal", "dtype", dtype)
        return draw(lambda k, s: jax.random.truncated_normal(k, lower, upper, s, dtype), key,
                    shape) * jnp.asarray(stddev, dtype)
    return init


def uniform(scale: float = 1e-2, dtype=None) -> Initializer:
    """Factory: ``U(0, scale)``, as ``jax.nn.initializers.uniform``.

    funcnet's first release drew ``U(-scale, scale)``; JAX's convention won.
    """
    scale = _checks.static_float("uniform", "scale", scale, 0.0)
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = _checks.check_dtype("uniform", "dtype", dtype)
        return draw(lambda k, s: jax.random.uniform(k, s, dtype, minval=0.0, maxval=scale),
                    key, shape)
    return init


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=None) -> Initializer:
    """Factory: a (semi-)orthogonal matrix times ``scale`` (Saxe et al. 2014), as
    ``jax.nn.initializers.orthogonal``; the usual choice for recurrent kernels.

    Half-precision dtypes (bfloat16, float16), which the QR decomposition does not
    support (LAPACK on CPU), are drawn in float32 and cast: ``LSTM(h, dtype=jnp.bfloat16)``
    initialises on every backend (``jax.nn.initializers.orthogonal`` and Flax's
    ``LSTMCell`` fail there on CPU).
    """
    inner = jax.nn.initializers.orthogonal(scale, column_axis)
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = _checks.check_dtype("orthogonal", "dtype", dtype)
        if dtype.itemsize >= 4:
            return inner(key, tuple(shape), dtype)
        return inner(key, tuple(shape), jnp.float32).astype(dtype)
    return init


def constant(value, dtype=None) -> Initializer:
    """Factory: every entry equal to ``value``."""
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        del key
        return jnp.full(tuple(shape), value, _checks.check_dtype("constant", "dtype", dtype))
    return init


def zeros(key, shape, dtype=None) -> jax.Array:
    """All zeros (biases, ``beta``, running means). An initializer itself, as
    ``jax.nn.initializers.zeros``; ``key`` is unused."""
    del key
    return jnp.zeros(tuple(shape), _checks.check_dtype("zeros", "dtype", dtype))


def ones(key, shape, dtype=None) -> jax.Array:
    """All ones (``gamma``, running variances). An initializer itself, as
    ``jax.nn.initializers.ones``; ``key`` is unused."""
    del key
    return jnp.ones(tuple(shape), _checks.check_dtype("ones", "dtype", dtype))
