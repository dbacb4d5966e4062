"""Per-example normalisation layers over the last axis: ``LayerNorm`` and ``RMSNorm``.

Unlike :func:`~funcnet.nn.BatchNorm` they normalise each example (each row of the last
axis) by its own statistics: no running averages, no ``state``, the same computation in
training and evaluation, and no dependence on the batch size (a batch of one is fine).

References:
  Ba, Kiros & Hinton (2016), "Layer Normalization", https://arxiv.org/abs/1607.06450.
  Zhang & Sennrich (2019), "Root Mean Square Layer Normalization",
  https://arxiv.org/abs/1910.07467.
"""
from __future__ import annotations

import jax

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_weight_args,
                             init_checked, weights_and_input)
from funcnet._describe import described

__all__ = ["LayerNorm", "RMSNorm"]


def _norm_layer(name, eps, use_scale, use_bias, scale_init, bias_init, dtype, op,
                min_rank=1, layout="(..., F)"):
    """The shared init/apply of LayerNorm, RMSNorm and GroupNorm: params ``gamma``/``beta``
    ``(F,)`` on the last axis of an input of rank ``>= min_rank``."""
    use_scale = _checks.static_bool(name, "use_scale", use_scale)
    use_bias = _checks.static_bool(name, "use_bias", use_bias)
    check_weight_args(name, dtype, scale_init=scale_init, bias_init=bias_init)
    keys = (("gamma",) if use_scale else ()) + (("beta",) if use_bias else ())

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, range(min_rank, 64), layout,
                                  needs=1)
        dt = check_dtype(name, dtype)

        def make(key):
            kg, kb = jax.random.split(key)
            params = {}
            if use_scale:
                params["gamma"] = scale_init(kg, (shape[-1],), dt)
            if use_bias:
                params["beta"] = bias_init(kb, (shape[-1],), dt)
            return params, ()
        return init_checked(name, apply, make, key, shape, dt)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, params = weights_and_input(name, params, state, x, {k: (None,) for k in keys})
        with _checks.context(name):
            return op(x, params.get("gamma"), params.get("beta"), eps), state

    return Layer(init, apply, name)


@described
def LayerNorm(eps: float = 1e-5, *, use_scale: bool = True, use_bias: bool = True,
              scale_init=initializers.ones, bias_init=initializers.zeros,
              dtype=None) -> Layer:
    """Layer normalization over the last axis: ``y = (x - mu) / sqrt(var + eps) * gamma + beta``.

    ``mu`` and ``var`` (biased) are the mean and variance of each example's ``F``
    features; computed by :func:`funcnet.ops.layer_norm`, whose backward rule is batch
    norm's compact formula per row. ``eps = 1e-5`` is PyTorch's default (Flax uses
    ``1e-6``).

    Shapes:
      input: ``(..., F)``, any rank >= 1 (``(N, F)``, tokens ``(N, T, F)``, one example
        ``(F,)``); output: the same shape.
      params: ``{"gamma": (F,), "beta": (F,)}`` (ones / zeros), without ``"gamma"`` when
        ``use_scale=False`` and without ``"beta"`` when ``use_bias=False``; state ``()``.

    Args:
      eps: ``>= 0``, added to the variance.
      use_scale: learn the scale ``gamma``. use_bias: learn the shift ``beta``.
      scale_init, bias_init: initializers of ``gamma`` and ``beta``.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. The input and
        the params are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"LayerNorm"``.

    Raises:
      TypeError, ValueError: bad constructor arguments (``eps`` negative or NaN) or
        ``input_shape``; params of another structure; a non-float input; and
        :func:`funcnet.ops.layer_norm`'s errors (the last axis is not ``F``), prefixed
        with the layer name.

    References:
      Ba, Kiros & Hinton (2016), https://arxiv.org/abs/1607.06450.
    """
    name = "LayerNorm"
    eps = _checks.static_float(name, "eps", eps, 0.0)
    return _norm_layer(name, eps, use_scale, use_bias, scale_init, bias_init, dtype,
                       ops.layer_norm)


@described
def RMSNorm(eps: float = 1e-6, *, use_scale: bool = True, scale_init=initializers.ones,
            dtype=None) -> Layer:
    """RMS normalization over the last axis: ``y = x / sqrt(mean(x^2) + eps) * gamma``.

    No centring and no shift (Zhang & Sennrich 2019), computed by
    :func:`funcnet.ops.rms_norm`. ``eps = 1e-6`` as ``flax.linen.RMSNorm``.

    Shapes:
      input: ``(..., F)``, any rank >= 1; output: the same shape.
      params: ``{"gamma": (F,)}`` (ones), ``{}`` when ``use_scale=False``; state ``()``.

    Args:
      eps: ``>= 0``, added to the mean square.
      use_scale: learn the scale ``gamma``.
      scale_init: initializer of ``gamma``.
      dtype: dtype of the params; ``None`` is JAX's default float dtype.

    Returns:
      A :class:`Layer` named ``"RMSNorm"``.

    Raises:
      TypeError, ValueError: as :func:`LayerNorm`, with :func:`funcnet.ops.rms_norm`.

    References:
      Zhang & Sennrich (2019), https://arxiv.org/abs/1910.07467.
    """
    name = "RMSNorm"
    eps = _checks.static_float(name, "eps", eps, 0.0)
    return _norm_layer(name, eps, use_scale, False, scale_init, initializers.zeros, dtype,
                       lambda x, gamma, beta, eps: ops.rms_norm(x, gamma, eps))
