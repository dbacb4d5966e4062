"""Convolution, pooling and flatten layers, NHWC images with HWIO kernels (note 003 §7).

The book's CNN (note 003 §7.1) is ``Conv -> ReLU -> Pool -> ... -> Affine -> ReLU ->
Affine``; in funcnet::

    serial(Conv2D(30, 5), ReLU(), MaxPool2D(2), Flatten(), Dense(100), ReLU(), Dense(10))

Output size per spatial axis with window ``k``, stride ``s`` and padding ``(lo, hi)``:
``out = (size + lo + hi - k) // s + 1``; with ``padding='SAME'``, ``out = ceil(size / s)``.

Conv2D and the pooling layers also accept one example ``(H, W, C)`` (e.g. inside
``jax.vmap``); Flatten always treats the leading axis as the batch.

References:
  LeCun, Bottou, Bengio, Haffner (1998), "Gradient-Based Learning Applied to Document
  Recognition", Proc. IEEE. Note 003 §7.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dict, check_float_input, check_init_shape,
                             check_no_params, fmt, pair, padding_pairs, prod, promote, shape_of,
                             window_output_size)

__all__ = ["Conv2D", "MaxPool2D", "AvgPool2D", "Flatten"]


def _spatial_out(name, shape, window, stride, pads):
    """Output (OH, OW) for an NHWC ``shape`` (or HWC)."""
    h, w = shape[-3], shape[-2]
    ph, pw = (pads, pads) if pads == "SAME" else pads
    return (window_output_size(name, h, window[0], stride[0], ph),
            window_output_size(name, w, window[1], stride[1], pw))


def _batched(fn, x):
    """Apply an NHWC op to ``(N, H, W, C)`` or to one example ``(H, W, C)``."""
    return fn(x[None])[0] if x.ndim == 3 else fn(x)


def Conv2D(out_channels: int, kernel_size, stride=1, padding=0, *,
           w_init=initializers.he_normal(), b_init=initializers.zeros, use_bias: bool = True,
           dtype=None) -> Layer:
    """2-D convolution (cross-correlation) ``y = x * W + b`` via :func:`funcnet.ops.conv2d`.

    ``y[n, oh, ow, o] = b[o] + sum_{i,j,c} xp[n, sh*oh + i, sw*ow + j, c] w[i, j, c, o]``
    with ``xp`` the zero-padded input.

    Shapes:
      input: ``(N, H, W, Cin)`` or one example ``(H, W, Cin)``.
      output: ``(N, OH, OW, out_channels)`` (or ``(OH, OW, out_channels)``).
      params: ``{"w": (KH, KW, Cin, out_channels), "b": (out_channels,)}`` (no ``"b"`` when
        ``use_bias=False``); state ``()``.

    Args:
      out_channels: ``Cout``, a positive int.
      kernel_size: ``k`` or ``(KH, KW)``.
      stride: ``s`` or ``(sh, sw)``.
      padding: int, pair ``(ph, pw)``, pair of ``(lo, hi)`` pairs, ``'SAME'`` or ``'VALID'``.
      w_init: kernel initializer; default He normal with ``fan_in = KH*KW*Cin``.
      b_init: bias initializer; default zeros.
      use_bias: add a bias per output channel.
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` named ``"Conv2D(out_channels)"``.

    Raises:
      ValueError: bad constructor arguments; in ``apply`` an input that is not rank 3/4,
        an input channel count different from ``params["w"].shape[2]``, or params that
        are not ``{"w": (KH, KW, Cin, Cout), "b": (Cout,)}`` for this layer.
      TypeError: input dtype different from the params dtype.

    References:
      LeCun et al. (1998); He et al. (2015) for the default initializer; note 003 §7.
    """
    if not isinstance(out_channels, int) or isinstance(out_channels, bool) or out_channels < 1:
        raise ValueError(f"Conv2D: out_channels must be a positive int, got {out_channels!r}")
    name = f"Conv2D({out_channels})"
    kernel = pair(name, "kernel_size", kernel_size)
    strides = pair(name, "stride", stride)
    pads = padding_pairs(name, padding)
    keys = ("w", "b") if use_bias else ("w",)

    def init(key, input_shape):
        shape = check_init_shape(name, input_shape, (3, 4),
                                 "rank 4 (N, H, W, Cin) or rank 3 (H, W, Cin)")
        oh, ow = _spatial_out(name, shape, kernel, strides, pads)
        kw, kb = jax.random.split(key)
        params = {"w": w_init(kw, kernel + (shape[-1], out_channels), dtype)}
        if use_bias:
            params["b"] = b_init(kb, (out_channels,), dtype)
        return shape[:-3] + (oh, ow, out_channels), params, ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_dict(name, "params", params, keys)
        check_no_params(name, (), state)
        w = params["w"]
        want = kernel + ("Cin", out_channels)
        if len(shape_of(w)) != 4 or shape_of(w)[:2] != kernel or shape_of(w)[3] != out_channels:
            raise ValueError(f"{name}: params['w'] has shape {shape_of(w)}, expected "
                             f"{fmt(want)} (params of another layer or model?)")
        if use_bias and shape_of(params["b"]) != (out_channels,):
            raise ValueError(f"{name}: params['b'] has shape {shape_of(params['b'])}, "
                             f"expected ({out_channels},)")
        cin = shape_of(w)[2]
        if x.ndim not in (3, 4):
            raise ValueError(f"{name}: input has shape {fmt(x.shape)}, expected rank 4 "
                             f"(N, H, W, {cin}) or one example (H, W, {cin})")
        if x.shape[-1] != cin:
            raise ValueError(f"{name}: input has {x.shape[-1]} channels but params['w'] "
                             f"expects {cin} (w shape {shape_of(w)}, input shape "
                             f"{fmt(x.shape)})")
        _spatial_out(name, x.shape, kernel, strides, pads)
        check_float_input(name, x, w, "params['w']")
        x, (w, b) = promote(x, (w, params["b"] if use_bias else None))
        y = _batched(lambda xb: ops.conv2d(xb, w, b, stride=strides, padding=padding), x)
        return y, state

    return Layer(init, apply, name)


def _pool(kind: str, op_name: str, window, stride, padding) -> Layer:
    win = pair(kind, "window", window)
    strides = win if stride is None else pair(kind, "stride", stride)
    pads = padding_pairs(kind, padding)
    name = f"{kind}({window if isinstance(window, int) else tuple(window)})"

    def init(key, input_shape):
        del key
        shape = check_init_shape(name, input_shape, (3, 4),
                                 "rank 4 (N, H, W, C) or rank 3 (H, W, C)")
        oh, ow = _spatial_out(name, shape, win, strides, pads)
        return shape[:-3] + (oh, ow, shape[-1]), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        if x.ndim not in (3, 4):
            raise ValueError(f"{name}: input has shape {fmt(x.shape)}, expected rank 4 "
                             f"(N, H, W, C) or one example (H, W, C)")
        _spatial_out(name, x.shape, win, strides, pads)
        check_float_input(name, x)
        op = getattr(ops, op_name)
        return _batched(lambda xb: op(xb, window=win, stride=strides, padding=padding), x), state

    return Layer(init, apply, name)


def MaxPool2D(window=2, stride=None, padding=0) -> Layer:
    """Max pooling over ``window`` patches of each channel (:func:`funcnet.ops.max_pool2d`).

    ``y[n, oh, ow, c] = max_{i,j} xp[n, sh*oh + i, sw*ow + j, c]``; the backward pass routes
    the gradient to the argmax of each window.

    Shapes: input ``(N, H, W, C)`` or ``(H, W, C)``; output ``(N, OH, OW, C)``.
    Params ``()``, state ``()``.

    Args:
      window: ``k`` or ``(KH, KW)``.
      stride: defaults to the window (non-overlapping pooling).
      padding: as in :func:`Conv2D`.
    """
    return _pool("MaxPool2D", "max_pool2d", window, stride, padding)


def AvgPool2D(window=2, stride=None, padding=0) -> Layer:
    """Average pooling over ``window`` patches (:func:`funcnet.ops.avg_pool2d`).

    ``y[n, oh, ow, c] = 1/(KH*KW) sum_{i,j} xp[n, sh*oh + i, sw*ow + j, c]``.

    Shapes: input ``(N, H, W, C)`` or ``(H, W, C)``; output ``(N, OH, OW, C)``.
    Params ``()``, state ``()``. Arguments as in :func:`MaxPool2D`.
    """
    return _pool("AvgPool2D", "avg_pool2d", window, stride, padding)


def Flatten() -> Layer:
    """Flatten every axis but the leading batch axis: ``(N, d1, ..., dk) -> (N, d1*...*dk)``.

    Row-major (C order), so an NHWC ``(N, H, W, C)`` becomes ``(N, H*W*C)``. The leading axis
    is always taken as the batch, so a model written for one example must not use Flatten
    (reshape the example with ``x.reshape(-1)`` instead).

    Shapes: input rank >= 2; output ``(N, prod(rest))``. Params ``()``, state ``()``.
    """
    name = "Flatten"

    def init(key, input_shape):
        del key
        shape = check_init_shape(name, input_shape, range(2, 32), "rank >= 2 (N, ...)")
        return (shape[0], prod(shape[1:])), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        if x.ndim < 2:
            raise ValueError(f"{name}: input has shape {fmt(x.shape)}, expected rank >= 2 "
                             "(N, ...)")
        return x.reshape(x.shape[0], prod(x.shape[1:])), state

    return Layer(init, apply, name)
