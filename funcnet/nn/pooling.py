"""Pooling layers on NHWC images, ``MaxPool2D``, ``AvgPool2D``, ``GlobalAvgPool2D``,
``GlobalMaxPool2D``, and on ``(N, L, C)`` sequences, ``MaxPool1D``, ``AvgPool1D`` (the 2-D
ops on ``(N, 1, L, C)``, as ``Conv1D`` is conv2d's).

Window, stride and padding are normalised and checked at construction (the op's own
rules, by a shape-only trace), so ``MaxPool2D(2, padding=2)`` fails when it is built,
not at the first batch. Each layer also accepts one example ``(H, W, C)`` (``(L, C)``).

References:
  Note 003 §7 (Pooling layer). Lin, Chen, Yan (2014), "Network In Network",
  https://arxiv.org/abs/1312.4400 (global average pooling).
"""
from __future__ import annotations

from funcnet import _checks, ops
from funcnet.nn.base import (Layer, apply_shape, check_dtype, check_input_shape,
                             check_no_params, padding_1d, probe, with_batch)
from funcnet._describe import described

__all__ = ["AvgPool1D", "AvgPool2D", "GlobalAvgPool2D", "GlobalMaxPool2D", "MaxPool1D",
           "MaxPool2D"]

_LAYOUT = "(N, H, W, C) or one example (H, W, C)"
_LAYOUT_1D = "(N, L, C) or one sequence (L, C)"


def _pool_layer(name: str, fn, rank: int = 4, layout: str = _LAYOUT,
                where: str | None = None) -> Layer:
    """A parameter-free layer computing ``fn(x)`` on inputs of ``rank`` (NHWC: 4, NLC: 3),
    one example (``rank - 1``) batched by 1; the op's errors are prefixed with ``where``
    (default the name)."""

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, (rank - 1, rank), layout,
                                  needs=rank - 1)
        return apply_shape(name, apply, (), (), shape, check_dtype(name, None)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        _checks.check_array(name, "x", x)
        _checks.check_rank(name, "x", x, (rank - 1, rank), layout)
        return with_batch(where or name, x, fn, rank - 1), state

    return Layer(init, apply, name)


def _window_pool(kind: str, op, window, stride, padding) -> Layer:
    win = _checks.normalize_pair(kind, "window", window)
    strides = win if stride is None else _checks.normalize_pair(kind, "stride", stride)
    pads = _checks.normalize_padding(kind, padding)
    name = f"{kind}({window if isinstance(window, int) else tuple(window)})"

    def fn(x):
        return op(x, window=win, stride=strides, padding=pads)

    probe(name, fn, (1,) + win + (1,))
    return _pool_layer(name, fn)


def _window_pool_1d(kind: str, op, window, stride, padding) -> Layer:
    """:func:`_window_pool` of ``(N, L, C)`` as the 2-D op on ``(N, 1, L, C)``."""
    k = _checks.static_int(kind, "window", window, minimum=1)
    s = k if stride is None else _checks.static_int(kind, "stride", stride, minimum=1)
    name = f"{kind}({k})"
    pads = padding_1d(name, padding)
    op_name = op.__name__

    def fn(x):
        return op(x[:, None], window=(1, k), stride=(1, s), padding=pads)[:, 0]

    probe(f"{name} (as {op_name} on (N, 1, L, C))", fn, (1, k, 1))
    return _pool_layer(name, fn, 3, _LAYOUT_1D, f"{name} (as {op_name} on (N, 1, L, C))")


@described
def MaxPool2D(window=2, stride=None, padding=0) -> Layer:
    """Max pooling over ``window`` patches of each channel (:func:`funcnet.ops.max_pool2d`).

    ``y[n, oh, ow, c] = max_{i,j} xp[n, sh*oh + i, sw*ow + j, c]``; the backward pass routes
    the gradient to the argmax of each window.

    Shapes: input ``(N, H, W, C)`` or ``(H, W, C)``; output ``(N, OH, OW, C)``.
    Params ``()``, state ``()``.

    Args:
      window: ``k`` or ``(KH, KW)``.
      stride: defaults to the window (non-overlapping pooling).
      padding: as in :func:`~funcnet.nn.Conv2D`; every pad must be smaller than the window.

    Raises:
      TypeError, ValueError: at construction for a bad window, stride or padding; in
        ``init``/``apply`` the op's errors (window larger than the padded input),
        prefixed with the layer name.
    """
    return _window_pool("MaxPool2D", ops.max_pool2d, window, stride, padding)


@described
def AvgPool2D(window=2, stride=None, padding=0) -> Layer:
    """Average pooling over ``window`` patches (:func:`funcnet.ops.avg_pool2d`).

    ``y[n, oh, ow, c] = 1/(KH*KW) sum_{i,j} xp[n, sh*oh + i, sw*ow + j, c]`` (zero padding
    counts in the divisor).

    Shapes: input ``(N, H, W, C)`` or ``(H, W, C)``; output ``(N, OH, OW, C)``.
    Params ``()``, state ``()``. Arguments and errors as in :func:`MaxPool2D`.
    """
    return _window_pool("AvgPool2D", ops.avg_pool2d, window, stride, padding)


@described
def GlobalAvgPool2D() -> Layer:
    """The mean of each channel over the whole image: ``(N, H, W, C) -> (N, C)``.

    ``y[n, c] = 1/(H*W) sum_{h,w} x[n, h, w, c]``, computed as
    :func:`funcnet.ops.avg_pool2d` with one window covering the image (window = stride =
    ``(H, W)``, no padding), then a reshape. That op's backward rule on this geometry is
    ``dx[n, h, w, c] = dy[n, c] / (H*W)``, the exact derivative of the mean, it saves no
    residual, and its forward is a reshape and a sum: the same numbers as
    ``jnp.mean(x, axis=(1, 2))``, while the op checks the input (rank, floating dtype)
    with its own messages.

    Shapes: input ``(N, H, W, C)`` or one example ``(H, W, C)``; output ``(N, C)`` (or
    ``(C,)``). Params ``()``, state ``()``.

    References:
      Lin, Chen, Yan (2014), "Network In Network", §3.2.
    """
    def fn(x):
        hw = tuple(x.shape[1:3])
        return ops.avg_pool2d(x, window=hw, stride=hw).reshape(x.shape[0], x.shape[3])

    return _pool_layer("GlobalAvgPool2D", fn)


@described
def GlobalMaxPool2D() -> Layer:
    """The maximum of each channel over the whole image: ``(N, H, W, C) -> (N, C)``.

    ``y[n, c] = max_{h,w} x[n, h, w, c]``, :func:`funcnet.ops.max_pool2d` with one window
    covering the image, then a reshape; its backward rule routes ``dy[n, c]`` to the
    argmax (the first one on ties), as the op does.

    Shapes: input ``(N, H, W, C)`` or one example ``(H, W, C)``; output ``(N, C)`` (or
    ``(C,)``). Params ``()``, state ``()``.
    """
    def fn(x):
        hw = tuple(x.shape[1:3])
        return ops.max_pool2d(x, window=hw, stride=hw).reshape(x.shape[0], x.shape[3])

    return _pool_layer("GlobalMaxPool2D", fn)


@described
def MaxPool1D(window: int = 2, stride: int | None = None, padding=0) -> Layer:
    """Max pooling of ``(N, L, C)`` sequences over ``window`` steps (Keras' and PyTorch's
    ``MaxPool1d`` channels-last): :func:`funcnet.ops.max_pool2d` on ``(N, 1, L, C)`` with
    the window ``(1, window)``; the gradient goes to each window's argmax.

    ``y[n, o, c] = max_i xp[n, s*o + i, c]``.

    Shapes: input ``(N, L, C)`` or one sequence ``(L, C)``; output ``(N, OL, C)`` with
    ``OL = (L + lo + hi - window) // stride + 1``. Params ``()``, state ``()``.

    Args:
      window: ``k``, an int >= 1.
      stride: an int >= 1; defaults to the window.
      padding: an int, a pair ``(lo, hi)``, ``'SAME'`` or ``'VALID'`` (as ``Conv1D``);
        every pad must be smaller than the window.

    Raises:
      TypeError, ValueError: at construction for a bad window, stride or padding; in
        ``init``/``apply`` the op's errors, prefixed ``"MaxPool1D(k) (as max_pool2d on
        (N, 1, L, C))"``.
    """
    return _window_pool_1d("MaxPool1D", ops.max_pool2d, window, stride, padding)


@described
def AvgPool1D(window: int = 2, stride: int | None = None, padding=0) -> Layer:
    """Average pooling of ``(N, L, C)`` sequences over ``window`` steps:
    :func:`funcnet.ops.avg_pool2d` on ``(N, 1, L, C)`` (zero padding counts in the
    divisor, as PyTorch's ``count_include_pad=True``).

    ``y[n, o, c] = 1/k sum_i xp[n, s*o + i, c]``. Shapes, arguments and errors as in
    :func:`MaxPool1D`.
    """
    return _window_pool_1d("AvgPool1D", ops.avg_pool2d, window, stride, padding)
