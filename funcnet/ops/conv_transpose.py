"""Transposed 2-D convolution (fractionally strided convolution), NHWC: PyTorch's
``ConvTranspose2d``, the exact adjoint of :func:`funcnet.ops.conv2d` w.r.t. its input.

The upsampling layer of U-Net, DCGAN and VAE decoders. No new lowering: the transposed
convolution *is* conv2d's ``dx`` and its backward pass is conv2d's forward (for ``dx``)
and conv2d's weight gradient with the roles of input and output cotangent swapped (for
``dW``), so every piece comes from :mod:`funcnet.ops.conv`:

* forward: ``conv._dx_xla`` (``impl='xla'``: ``lax.conv_general_dilated`` with
  ``lhs_dilation`` = the stride and the flipped kernel) or ``conv._dx_im2col`` (``'im2col'``:
  one matmul ``x W^T`` into patch rows, then col2im; a depthwise kernel without matmul);
* backward: ``dx`` = ``conv.forward`` (conv2d's forward, the same lowering per platform),
  ``dW`` = ``conv._dw_xla`` / ``conv._dw_im2col`` on ``(dy, x)``;
* ``impl='auto'``: the choice of ``conv.lowered`` for this kernel, as conv2d's
  (:func:`funcnet.ops.conv.auto_lowering`, measured for conv2d).

Kernel layout ``w: (KH, KW, Cout/groups, Cin)``: the HWIO kernel of the conv2d that this
op transposes (that conv maps ``Cout`` channels to ``Cin``), so one array serves both:
``conv_transpose2d(y, w, s, p) = vjp(lambda x: conv2d(x, w, None, s, p), x)(y)``. It is
the kernel of ``lax.conv_transpose(..., transpose_kernel=True)``, of Keras/TF's
``Conv2DTranspose`` (``(KH, KW, filters, in)``) and of Flax's ``ConvTranspose(...,
transpose_kernel=True)``, and PyTorch's weight ``(Cin, Cout/groups, KH, KW)`` converted
as any PyTorch conv weight (``w.permute(2, 3, 1, 0)``). Flax's default
``ConvTranspose`` kernel ``k`` ``(KH, KW, Cin, Cout)`` (no flip) is ``jnp.flip(k, (0,
1)).swapaxes(2, 3)`` here.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops import _window
from funcnet.ops import conv as _conv
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin


def _forward(x, w, b, out_hw, stride, pads, dilation, groups, impl):
    geometry = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    y = _conv.lowered(impl, w.shape, groups, partial(_conv._dx_xla, out_hw, **geometry),
                      partial(_conv._dx_im2col, out_hw, **geometry), w, x)
    return _conv.add_bias(y, b)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7, 8))
def _conv_transpose2d(x, w, b, out_hw, stride, pads, dilation, groups, impl):
    return _forward(x, w, b, out_hw, stride, pads, dilation, groups, impl)


def _conv_transpose2d_fwd(x, w, b, out_hw, stride, pads, dilation, groups, impl):
    # ``None`` vs ``()`` records (as an empty pytree) whether a bias was given.
    y = _forward(x, w, b, out_hw, stride, pads, dilation, groups, impl)
    return y, (x, w, None if b is None else ())


def _conv_transpose2d_bwd(out_hw, stride, pads, dilation, groups, impl, res, dy):
    del out_hw
    x, w, has_b = res
    geometry = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    dx = _conv.forward(dy, w, stride, pads, dilation, groups, impl)
    # dW: conv2d's weight gradient of the conv dy -> x (its input dy, its cotangent x)
    dw = _conv.lowered(impl, w.shape, groups, partial(_conv._dw_xla, **geometry),
                       partial(_conv._dw_im2col, **geometry), dy, w, x)
    db = None if has_b is None else jnp.sum(dy, axis=(0, 1, 2))
    return dx, dw, db


defvjp(_conv_transpose2d, _conv_transpose2d_fwd, _conv_transpose2d_bwd)


def _string_padding(fn, padding, in_hw, window, stride, extra):
    """``'SAME'`` / ``'VALID'`` -> ``(out_hw, low pads)`` (Flax's / Keras' sizes)."""
    mode = padding.upper()
    if mode not in ("SAME", "VALID"):
        _checks.normalize_padding(fn, padding)          # raises its ValueError
    if extra != (0, 0):
        raise ValueError(f"{fn}: output_padding {extra} needs an int or pair padding; "
                         f"padding {padding!r} fixes the output size, expected "
                         f"output_padding 0")
    if mode == "SAME":      # conv2d 'SAME' on (H*s, W*s) gives (H, W)
        out = tuple(n * s for n, s in zip(in_hw, stride))
        return out, tuple(lo for lo, _ in _window.resolve_padding(fn, "SAME", out, window,
                                                                   stride))
    return tuple(n * s + max(k - s, 0) for n, s, k in zip(in_hw, stride, window)), (0, 0)


def check_conv_transpose2d_args(fn, x, w, b, stride=1, padding=0, output_padding=0,
                                dilation=1, groups=1, impl="auto"):
    """The checks of :func:`conv_transpose2d` (and its twin); returns the static
    ``(out_hw, stride, pads, dilation, groups)`` with ``pads`` the padding of the conv2d
    that is transposed, the one that maps ``out_hw`` onto ``x``'s ``(H, W)`` exactly
    (``OH + lo + hi = (H - 1)*s + d*(KH - 1) + 1``): ``((lo_h, hi_h - output_padding_h),
    (lo_w, hi_w - output_padding_w))`` for int padding; a negative high padding crops.

    An empty batch is computed; a kernel or an input with a zero spatial size and an
    output size below 1 are refused (``ValueError``).
    """
    groups = _conv.check_operands(fn, x, w, groups, impl, "(KH, KW, Cout/groups, Cin)")
    cin = x.shape[3]
    if w.shape[3] != cin:
        raise ValueError(f"{fn}: w has shape {tuple(w.shape)}, expected in_channels {cin} on "
                         f"its last axis (KH, KW, Cout/groups, Cin) to match x "
                         f"{tuple(x.shape)}")
    _checks.check_nonempty(fn, "w", w, "a kernel of at least 1x1 (KH, KW >= 1)", (0, 1))
    _checks.check_nonempty(fn, "x", x, "at least one row and one column (H, W >= 1)", (1, 2))
    _conv.check_bias(fn, x, b, w.shape[2] * groups, f"one bias per output channel, Cout = "
                     f"w.shape[2] * groups for w {tuple(w.shape)}")
    stride = _checks.normalize_pair(fn, "stride", stride)
    dilation = _checks.normalize_pair(fn, "dilation", dilation)
    extra = _checks.normalize_pair(fn, "output_padding", output_padding, minimum=0)
    limit = tuple(max(s, d) for s, d in zip(stride, dilation))
    if any(e >= m for e, m in zip(extra, limit)):
        raise ValueError(f"{fn}: output_padding {extra} must be smaller than max(stride, "
                         f"dilation) = {limit} on each axis (as PyTorch)")
    window = _window.extent(w.shape[:2], dilation)
    in_hw = tuple(x.shape[1:3])
    if isinstance(padding, str):
        out, low = _string_padding(fn, padding, in_hw, window, stride, extra)
    else:
        user = _checks.normalize_padding(fn, padding)
        out = tuple((n - 1) * s - lo - hi + k + e
                    for n, s, (lo, hi), k, e in zip(in_hw, stride, user, window, extra))
        low = tuple(lo for lo, _ in user)
        if min(out) < 1:
            raise ValueError(
                f"{fn}: output size {out} of x {tuple(x.shape)} is below 1: padding {user} "
                f"crops more than the (H - 1) * stride + dilation * (KH - 1) + 1 + "
                f"output_padding rows and columns there are")
    pads = tuple((lo, (n - 1) * s + k - o - lo)
                 for lo, n, s, k, o in zip(low, in_hw, stride, window, out))
    return out, stride, pads, dilation, groups


@has_twin
def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, *, impl="auto"):
    """Transposed 2-D convolution ``y = x *^T W + b`` (PyTorch's ``conv_transpose2d``).

    The adjoint of :func:`funcnet.ops.conv2d` (note 003's Convolution layer) w.r.t. its
    input: with ``conv(z) = conv2d(z, w, None, stride, pads, dilation, groups)`` on ``z``
    of shape ``(N, OH, OW, Cout)`` (``pads`` below), ``conv_transpose2d(x, w) =
    vjp(conv, z)(x)`` and ``<conv(z), x> = <z, conv_transpose2d(x, w)>``. Forward, each
    input pixel scatters ``x[n, h, w, :] W`` onto a ``KH x KW`` window of the output (taps
    ``d`` apart), windows ``s`` apart, the padding cropped from the borders::

        y[n, s_h*h - lo_h + d_h*i, s_w*w - lo_w + d_w*j, g*Kg + o] +=
            sum_{c < Cg} x[n, h, w, g*Cg + c] W[i, j, o, g*Cg + c]

    (``Cg = Cin/G``, ``Kg = Cout/G``; zero where nothing lands, then ``+ b``).
    Equivalently ``y = col2im(x W_2d^T) + b`` per group, with ``W_2d =
    W.reshape(KH*KW*Kg, Cin)`` the im2col matrix of the conv transposed. Output size
    (Dumoulin & Visin 2016, relationship 14, with dilation)::

        OH = (H - 1)*s_h - lo_h - hi_h + d_h*(KH - 1) + 1 + output_padding_h

    Backward (the transposed conv's transpose is the conv; ``dW`` is conv2d's weight
    gradient with input ``dy`` and output cotangent ``x``)::

        dx = conv2d(dy, W, stride, pads, dilation, groups)       (no bias)
        dW[i, j, o, g*Cg + c] = sum_{n,h,w} dy[n, s_h*h - lo_h + d_h*i, ..., g*Kg + o]
                                            x[n, h, w, g*Cg + c]   (= P(dy)^T x per group)
        db = sum_{n, oh, ow} dy[n, oh, ow, :]

    Residuals: ``x`` and ``W`` only (no patches, no output). The op is linear in ``x`` and
    in ``W``: there are no kinks or ties.

    Args:
      x: ``(N, H, W, Cin)`` floating array.
      w: ``(KH, KW, Cout/groups, Cin)`` kernel, same dtype: the HWIO kernel of the conv2d
        from ``Cout`` to ``Cin`` channels that this transposes (module docstring; PyTorch's
        ``(Cin, Cout/groups, KH, KW)`` weight is ``w.transpose(3, 2, 0, 1)``).
      b: ``(Cout,)`` bias (``Cout = w.shape[2] * groups``), same dtype, or ``None`` (then
        its cotangent is ``None``).
      stride: int or ``(sh, sw)``, positive: the upsampling factor. Static.
      padding: PyTorch's meaning: an int ``p`` or a pair ``(ph, pw)`` removes ``p`` rows
        (columns) from each border of the full output; a pair of ``(lo, hi)`` pairs
        removes them per side; the padding of the conv2d transposed (``pads = ((lo_h, hi_h
        - output_padding_h), ...)``). Or a string, with ``output_padding=0``:
        ``'SAME'``: ``OH = H * s_h`` (Flax's and Keras' ``'SAME'``: the adjoint of
        conv2d's ``'SAME'`` on an ``(H*s_h, W*s_w)`` input); ``'VALID'``: ``OH = H * s_h +
        max(d_h*(KH-1) + 1 - s_h, 0)`` (Flax's, Keras': padding 0 with output_padding
        ``max(s - window, 0)``). Static.
      output_padding: int or pair, ``0 <= output_padding < max(stride, dilation)`` per
        axis (PyTorch's rule): rows added at the high end of the output, which selects
        among the ``s`` input sizes that a strided conv maps to ``H``. Static.
      dilation: int or ``(dh, dw)``, positive: the kernel dilation. Static.
      groups: int >= 1 dividing ``Cin``: output channel group ``g`` reads input channels
        ``g*Cg .. (g+1)*Cg - 1`` only (``groups = Cin = Cout``: depthwise). Static.
      impl: ``'auto'`` (default), ``'xla'`` or ``'im2col'``: the lowering of the forward
        pass (conv2d's ``dx``) and of ``dW``; ``dx`` is XLA's forward convolution always.
        Keyword-only, static. All three compute the same numbers.

    Returns:
      ``(N, OH, OW, Cout)``.

    Raises:
      ValueError: wrong ranks, ``Cin`` mismatch between ``x`` and ``w``'s last axis,
        ``Cin`` not divisible by ``groups``, bad bias shape, non-positive stride,
        dilation or groups, negative padding or output_padding, ``output_padding >=
        max(stride, dilation)``, ``output_padding`` with a string padding, a kernel or
        input with a zero spatial size, an output size below 1, unknown ``impl`` or
        padding string.
      TypeError: non-floating or mismatched dtypes, malformed stride, padding,
        output_padding or dilation, a non-int ``groups``.

    References:
      Dumoulin, Visin, "A guide to convolution arithmetic for deep learning", 2016,
      https://arxiv.org/abs/1603.07285 (section 4); Zeiler, Krishnan, Taylor, Fergus,
      "Deconvolutional Networks", 2010; Long, Shelhamer, Darrell, "Fully Convolutional
      Networks for Semantic Segmentation", 2015; Ronneberger, Fischer, Brox, "U-Net",
      2015; Radford, Metz, Chintala, "DCGAN", 2016. Note 003 section 7 for the conv it
      transposes. ``docs/formulas.md``, "Beyond the notes", transposed convolution.
    """
    args = check_conv_transpose2d_args("conv_transpose2d", x, w, b, stride, padding,
                                       output_padding, dilation, groups, impl)
    return _conv_transpose2d(x, w, b, *args, impl)
