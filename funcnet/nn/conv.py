"""Convolution layers (NHWC images with HWIO kernels, note 003 §7) and ``Flatten``.

The book's CNN (note 003 §7.1) is ``Conv -> ReLU -> Pool -> ... -> Affine -> ReLU ->
Affine``; in funcnet::

    serial(Conv2D(30, 5), ReLU(), MaxPool2D(2), Flatten(), Dense(100), ReLU(), Dense(10))

Kernel size, stride and padding are normalised and checked at construction
(``funcnet._checks.normalize_pair`` / ``normalize_padding``, then a shape-only trace of
the op), so a bad padding fails before any data is seen. Output sizes are the op's:
``out = (size + lo + hi - k) // s + 1``, or ``ceil(size / s)`` with ``padding='SAME'``.
Conv2D also accepts one example ``(H, W, C)`` (e.g. inside ``jax.vmap``), Conv1D one
sequence ``(L, C)``; Flatten always treats the leading axis as the batch.

References:
  LeCun, Bottou, Bengio, Haffner (1998), "Gradient-Based Learning Applied to Document
  Recognition", Proc. IEEE. Note 003 §7.
"""
from __future__ import annotations

import math

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, apply_shape, check_dtype, check_input_shape,
                             check_no_params, check_weight_args, init_checked, kernel_and_bias,
                             probe, weights_and_input, with_batch)
from funcnet._describe import described

__all__ = ["Conv2D", "Conv1D", "Flatten"]


def _conv(name, out_channels, kernel_shape, to_2d, ranks, layout, stride, pads, use_bias,
          w_init, b_init, dtype, where=None) -> Layer:
    """A convolution layer over ``ops.conv2d``; ``to_2d(x, w) -> (x4, w4, back)`` maps the
    layer's input and kernel to NHWC / HWIO (identity for Conv2D); ``where`` prefixes the
    op's errors (default ``name``)."""
    check_weight_args(name, dtype, use_bias, w_init=w_init, b_init=b_init)
    kh, kw = (1,) + kernel_shape if len(kernel_shape) == 1 else kernel_shape
    where = name if where is None else where
    probe(where, lambda x, w: ops.conv2d(x, w, stride=stride, padding=pads),
          (1, kh, kw, 1), (kh, kw, 1, 1))
    shapes = {"w": kernel_shape + (None, out_channels)}
    if use_bias:
        shapes["b"] = (out_channels,)

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, ranks, layout,
                                  needs=max(ranks) - 1)
        dt = check_dtype(name, dtype)
        return init_checked(name, apply, lambda k: (kernel_and_bias(
            k, kernel_shape + (shape[-1], out_channels), use_bias, w_init, b_init, dt), ()),
            key, shape, dt)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, params = weights_and_input(name, params, state, x, shapes)
        _checks.check_rank(name, "x", x, ranks, layout)
        x4, w4, back = to_2d(x, params["w"])
        y = with_batch(where, x4, lambda xb: ops.conv2d(xb, w4, params.get("b"), stride=stride,
                                                       padding=pads))
        return back(y), state

    return Layer(init, apply, name)


@described
def Conv2D(out_channels: int, kernel_size, stride=1, padding=0, *, use_bias: bool = True,
           w_init=initializers.he_normal(), b_init=initializers.zeros, dtype=None) -> Layer:
    """2-D convolution (cross-correlation) ``y = x * W + b`` via :func:`funcnet.ops.conv2d`.

    ``y[n, oh, ow, o] = b[o] + sum_{i,j,c} xp[n, sh*oh + i, sw*ow + j, c] w[i, j, c, o]``
    with ``xp`` the zero-padded input.

    Shapes:
      input: ``(N, H, W, Cin)`` or one example ``(H, W, Cin)``.
      output: ``(N, OH, OW, out_channels)`` (or ``(OH, OW, out_channels)``).
      params: ``{"w": (KH, KW, Cin, out_channels), "b": (out_channels,)}`` (no ``"b"`` when
        ``use_bias=False``); state ``()``.

    Args:
      out_channels: ``Cout``, an int >= 1.
      kernel_size: ``k`` or ``(KH, KW)``.
      stride: ``s`` or ``(sh, sw)``.
      padding: int, pair ``(ph, pw)``, pair of ``(lo, hi)`` pairs, ``'SAME'`` or ``'VALID'``.
        Default ``0``, i.e. ``'VALID'`` (the notes' and PyTorch's default); Flax's ``Conv``
        defaults to ``'SAME'``: pass ``padding='SAME'`` for its output size.
      use_bias: add a bias per output channel.
      w_init: kernel initializer; default He normal, a plain normal with ``Var = 2 /
        fan_in``, ``fan_in = KH*KW*Cin`` (for a ReLU that follows). Flax's ``Conv``
        defaults to LeCun normal truncated at 2 sigma (``Var = 1 / fan_in``): pass
        ``jax.nn.initializers.lecun_normal()`` for it.
      b_init: bias initializer; default zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. Input and params
        are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"Conv2D(out_channels)"``.

    Raises:
      TypeError, ValueError: bad constructor arguments (at construction); a bad
        ``input_shape`` (in ``init``); an input that is not rank 3/4 or not floating,
        params that are not ``{"w": (KH, KW, Cin, Cout), "b": (Cout,)}`` for this layer;
        and :func:`funcnet.ops.conv2d`'s errors (channel mismatch, kernel larger than the
        padded input), prefixed with the layer name.

    References:
      LeCun et al. (1998); He et al. (2015) for the default initializer; note 003 §7.
    """
    C = _checks.static_int("Conv2D", "out_channels", out_channels, minimum=1)
    name = f"Conv2D({C})"
    kernel = _checks.normalize_pair(name, "kernel_size", kernel_size)
    strides = _checks.normalize_pair(name, "stride", stride)
    pads = _checks.normalize_padding(name, padding)
    return _conv(name, C, kernel, lambda x, w: (x, w, lambda y: y), (3, 4),
                 "(N, H, W, Cin) or one example (H, W, Cin)", strides, pads, use_bias,
                 w_init, b_init, dtype)


def _padding_1d(name: str, padding):
    """1-D padding (``p``, ``(lo, hi)``, ``'SAME'``, ``'VALID'``) as conv2d's 2-D padding."""
    if isinstance(padding, str):
        return _checks.normalize_padding(name, padding)
    pair = (padding, padding) if not isinstance(padding, (tuple, list)) else tuple(padding)
    if len(pair) != 2:
        raise TypeError(f"{name}: padding must be an int, a pair (lo, hi), 'SAME' or 'VALID', "
                        f"got {padding!r}")
    lo, hi = (_checks.static_int(name, "padding", p, minimum=0) for p in pair)
    return ((0, 0), (lo, hi))


@described
def Conv1D(out_channels: int, kernel_size: int, stride: int = 1, padding=0, *,
           use_bias: bool = True, w_init=initializers.he_normal(), b_init=initializers.zeros,
           dtype=None) -> Layer:
    """1-D convolution over sequences ``(N, L, C)``: :func:`Conv2D` on ``(N, 1, L, C)``.

    ``y[n, ol, o] = b[o] + sum_{i,c} xp[n, s*ol + i, c] w[i, c, o]`` with ``xp`` the
    zero-padded sequence; computed by :func:`funcnet.ops.conv2d` on the input reshaped to
    ``(N, 1, L, C)`` and the kernel to ``(1, K, C, out_channels)`` (a reshape: values and
    gradients are conv2d's, exactly). Output length ``(L + lo + hi - K) // s + 1``, or
    ``ceil(L / s)`` with ``'SAME'``.

    Shapes:
      input: ``(N, L, Cin)`` (batch-major, features last, as Flax's ``Conv``) or one
        sequence ``(L, Cin)``; output ``(N, OL, out_channels)``.
      params: ``{"w": (K, Cin, out_channels), "b": (out_channels,)}``; state ``()``.

    Args:
      out_channels: an int >= 1.
      kernel_size: ``K``, an int >= 1.
      stride: an int >= 1.
      padding: an int, a pair ``(lo, hi)``, ``'SAME'`` or ``'VALID'``; default ``0``
        (``'VALID'``; Flax: ``'SAME'``), as in :func:`Conv2D`.
      use_bias, w_init, b_init, dtype: as in :func:`Conv2D` (He normal with
        ``fan_in = K*Cin``; Flax: truncated LeCun normal).

    Returns:
      A :class:`Layer` named ``"Conv1D(out_channels)"``. Errors of conv2d name the 4-D
      shapes it saw, under the prefix ``"Conv1D(C) (as conv2d on (N, 1, L, C))"``.
    """
    C = _checks.static_int("Conv1D", "out_channels", out_channels, minimum=1)
    name = f"Conv1D({C})"
    k = _checks.static_int(name, "kernel_size", kernel_size, minimum=1)
    s = _checks.static_int(name, "stride", stride, minimum=1)
    pads = _padding_1d(name, padding)

    def to_2d(x, w):
        return x[..., None, :, :], w[None], lambda y: y[..., 0, :, :]

    return _conv(name, C, (k,), to_2d, (2, 3), "(N, L, Cin) or one sequence (L, Cin)",
                 (1, s), pads, use_bias, w_init, b_init, dtype,
                 where=f"{name} (as conv2d on (N, 1, L, C))")


@described
def Flatten() -> Layer:
    """Flatten every axis but the leading batch axis: ``(N, d1, ..., dk) -> (N, d1*...*dk)``.

    Row-major (C order), so an NHWC ``(N, H, W, C)`` becomes ``(N, H*W*C)``. The leading axis
    is always taken as the batch, so a model written for one example must not use Flatten
    (reshape the example with ``x.reshape(-1)`` instead).

    Shapes: input rank >= 2; output ``(N, prod(rest))``. Params ``()``, state ``()``.
    """
    name = "Flatten"

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, range(2, 64), "(N, ...)",
                                  batch_axis=0)
        return apply_shape(name, apply, (), (), shape, check_dtype(name, None)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        _checks.check_array(name, "x", x)
        _checks.check_min_rank(name, "x", x, 2)
        return x.reshape(x.shape[0], math.prod(x.shape[1:])), state

    return Layer(init, apply, name)
