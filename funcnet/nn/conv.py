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
                             padding_1d, probe, weights_and_input, with_batch)
from funcnet._describe import described

__all__ = ["Conv2D", "Conv1D", "Flatten"]


def _conv(name, out_channels, kernel_shape, to_2d, ranks, layout, stride, pads, dilation,
          groups, use_bias, w_init, b_init, dtype, where=None) -> Layer:
    """A convolution layer over ``ops.conv2d``; ``to_2d(x, w) -> (x4, w4, back)`` maps the
    layer's input and kernel to NHWC / HWIO (identity for Conv2D); ``where`` prefixes the
    op's errors (default ``name``). ``dilation`` is 2-D (conv2d's); ``groups`` a checked
    int, and ``out_channels`` is checked against it here (a constructor argument)."""
    check_weight_args(name, dtype, use_bias, w_init=w_init, b_init=b_init)
    _checks.check_groups(name, f"out_channels {out_channels}", out_channels, groups)
    kh, kw = (1,) + kernel_shape if len(kernel_shape) == 1 else kernel_shape
    where = name if where is None else where
    conv = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    probe(where, lambda x, w: ops.conv2d(x, w, **conv),
          (1, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1, groups),
          (kh, kw, 1, groups))
    return conv_layer(name, kernel_shape + (None, out_channels), out_channels,
                      lambda cin: kernel_shape + (cin // groups, out_channels), to_2d, ranks,
                      layout, groups, use_bias, w_init, b_init, dtype, where,
                      lambda xb, w4, b: ops.conv2d(xb, w4, b, **conv))


def conv_layer(name, w_spec, features, w_shape, to_2d, ranks, layout, groups, use_bias,
               w_init, b_init, dtype, where, call) -> Layer:
    """The init/apply of a convolution layer (``Conv2D``/``Conv1D`` and the transposed
    ones): ``w_spec`` the kernel's checked shape (``None`` for the input channels' axis),
    ``w_shape(in_channels)`` the kernel ``init`` draws, ``features`` the bias size, ``to_2d``
    as in :func:`_conv`, ``call(x4, w4, b)`` the op on NHWC."""
    shapes = {"w": w_spec}
    if use_bias:
        shapes["b"] = (features,)

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, ranks, layout,
                                  needs=max(ranks) - 1)
        _checks.check_groups(name, f"input_shape {shape}: in_channels {shape[-1]}",
                             shape[-1], groups)
        dt = check_dtype(name, dtype)
        kernel = w_shape(shape[-1])
        return init_checked(name, apply, lambda k: (kernel_and_bias(
            k, kernel, use_bias, w_init, b_init, dt, features), ()), key, shape, dt)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, params = weights_and_input(name, params, state, x, shapes)
        _checks.check_rank(name, "x", x, ranks, layout)
        x4, w4, back = to_2d(x, params["w"])
        y = with_batch(where, x4, lambda xb: call(xb, w4, params.get("b")))
        return back(y), state

    return Layer(init, apply, name)


@described(added=("dilation", "groups"))
def Conv2D(out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
           *, use_bias: bool = True, w_init=initializers.he_normal(), b_init=initializers.zeros,
           dtype=None) -> Layer:
    """2-D convolution (cross-correlation) ``y = x * W + b`` via :func:`funcnet.ops.conv2d`.

    ``y[n, oh, ow, o] = b[o] + sum_{i,j,c} xp[n, sh*oh + dh*i, sw*ow + dw*j, c] w[i, j, c, o]``
    with ``xp`` the zero-padded input (``c`` over the ``Cin/groups`` input channels of
    output channel ``o``'s group).

    Shapes:
      input: ``(N, H, W, Cin)`` or one example ``(H, W, Cin)``.
      output: ``(N, OH, OW, out_channels)`` (or ``(OH, OW, out_channels)``).
      params: ``{"w": (KH, KW, Cin/groups, out_channels), "b": (out_channels,)}`` (no
        ``"b"`` when ``use_bias=False``; Flax's and Equinox's kernels hold the same numbers,
        Equinox's as ``(out_channels, Cin/groups, KH, KW)``); state ``()``.

    Args:
      out_channels: ``Cout``, an int >= 1.
      kernel_size: ``k`` or ``(KH, KW)``.
      stride: ``s`` or ``(sh, sw)``.
      padding: int, pair ``(ph, pw)``, pair of ``(lo, hi)`` pairs, ``'SAME'`` or ``'VALID'``.
        Default ``0``, i.e. ``'VALID'`` (the notes' and PyTorch's default); Flax's ``Conv``
        defaults to ``'SAME'``: pass ``padding='SAME'`` for its output size.
      dilation: ``d`` or ``(dh, dw)``, the kernel dilation (PyTorch's and Equinox's
        ``dilation``, Flax's ``kernel_dilation``); a kernel spans ``d*(K-1) + 1`` pixels.
      groups: feature groups dividing ``Cin`` and ``out_channels`` (PyTorch's ``groups``,
        Flax's ``feature_group_count``); ``groups = Cin`` is a depthwise convolution.
      use_bias: add a bias per output channel.
      w_init: kernel initializer; default He normal, a plain normal with ``Var = 2 /
        fan_in``, ``fan_in = KH*KW*Cin/groups`` (per group, as Flax and PyTorch; for a ReLU
        that follows). Flax's ``Conv``
        defaults to LeCun normal truncated at 2 sigma (``Var = 1 / fan_in``): pass
        ``jax.nn.initializers.lecun_normal()`` for it.
      b_init: bias initializer; default zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. Input and params
        are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"Conv2D(out_channels)"``.

    Raises:
      TypeError, ValueError: bad constructor arguments (at construction, e.g.
        ``out_channels`` not divisible by ``groups``); a bad ``input_shape`` (in ``init``,
        e.g. ``Cin`` not divisible by ``groups``); an input that is not rank 3/4 or not floating,
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
    dilations = _checks.normalize_pair(name, "dilation", dilation)
    groups = _checks.static_int(name, "groups", groups, minimum=1)
    return _conv(name, C, kernel, lambda x, w: (x, w, lambda y: y), (3, 4),
                 "(N, H, W, Cin) or one example (H, W, Cin)", strides, pads, dilations,
                 groups, use_bias, w_init, b_init, dtype)


@described(added=("dilation", "groups"))
def Conv1D(out_channels: int, kernel_size: int, stride: int = 1, padding=0,
           dilation: int = 1, groups: int = 1, *, use_bias: bool = True,
           w_init=initializers.he_normal(), b_init=initializers.zeros, dtype=None) -> Layer:
    """1-D convolution over sequences ``(N, L, C)``: :func:`Conv2D` on ``(N, 1, L, C)``.

    ``y[n, ol, o] = b[o] + sum_{i,c} xp[n, s*ol + d*i, c] w[i, c, o]`` with ``xp`` the
    zero-padded sequence (``c`` over the ``Cin/groups`` channels of ``o``'s group);
    computed by :func:`funcnet.ops.conv2d` on the input reshaped to ``(N, 1, L, C)`` and
    the kernel to ``(1, K, C/groups, out_channels)`` (a reshape: values and
    gradients are conv2d's, exactly). Output length ``(L + lo + hi - d*(K-1) - 1) // s +
    1``, or ``ceil(L / s)`` with ``'SAME'``. Dilated causal stacks (WaveNet) are
    ``Conv1D(C, 2, dilation=d, padding=(d, 0))``.

    Shapes:
      input: ``(N, L, Cin)`` (batch-major, features last, as Flax's ``Conv``) or one
        sequence ``(L, Cin)``; output ``(N, OL, out_channels)``.
      params: ``{"w": (K, Cin/groups, out_channels), "b": (out_channels,)}``; state ``()``.

    Args:
      out_channels: an int >= 1.
      kernel_size: ``K``, an int >= 1.
      stride: an int >= 1.
      padding: an int, a pair ``(lo, hi)``, ``'SAME'`` or ``'VALID'``; default ``0``
        (``'VALID'``; Flax: ``'SAME'``), as in :func:`Conv2D`.
      dilation: an int >= 1, the kernel dilation.
      groups: feature groups dividing ``Cin`` and ``out_channels``, as in :func:`Conv2D`.
      use_bias, w_init, b_init, dtype: as in :func:`Conv2D` (He normal with
        ``fan_in = K*Cin/groups``; Flax: truncated LeCun normal).

    Returns:
      A :class:`Layer` named ``"Conv1D(out_channels)"``. Errors of conv2d name the 4-D
      shapes it saw, under the prefix ``"Conv1D(C) (as conv2d on (N, 1, L, C))"``.
    """
    C = _checks.static_int("Conv1D", "out_channels", out_channels, minimum=1)
    name = f"Conv1D({C})"
    k = _checks.static_int(name, "kernel_size", kernel_size, minimum=1)
    s = _checks.static_int(name, "stride", stride, minimum=1)
    d = _checks.static_int(name, "dilation", dilation, minimum=1)
    groups = _checks.static_int(name, "groups", groups, minimum=1)
    pads = padding_1d(name, padding)

    def to_2d(x, w):
        return x[..., None, :, :], w[None], lambda y: y[..., 0, :, :]

    return _conv(name, C, (k,), to_2d, (2, 3), "(N, L, Cin) or one sequence (L, Cin)",
                 (1, s), pads, (1, d), groups, use_bias, w_init, b_init, dtype,
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
