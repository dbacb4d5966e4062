"""2-D convolution primitive, NHWC / HWIO (note 003, "Convolution layer").

The forward pass is XLA's forward convolution on every backend (fast everywhere). The
backward pass has two lowerings, chosen by the static ``impl`` argument:

* ``'xla'``: ``dx`` is the transposed convolution of ``dy`` with the flipped kernel and
  ``dW`` the correlation of ``x`` with ``dy``, both written as
  ``lax.conv_general_dilated`` calls. Best on GPU/TPU.
* ``'im2col'``: ``dW = P^T dy`` as ONE matmul of the im2col patches ``P`` (recomputed
  from ``x`` by ``KH*KW`` strided slices, not stored) with ``dy``, and ``dx`` as the
  matmul ``G = dy W^T`` into a patch gradient followed by col2im (``KH*KW`` shifted,
  strided ``lax.pad`` pieces summed in one fused loop). On a 2-core CPU, for the book
  CNN's first layer (batch 100, 28x28x1, 30 5x5 filters), XLA's backward convolutions
  took ~21 ms (dW) and ~37 ms (dx) against ~4 ms each for these matmul forms (see
  ``benchmarks/results/conv_cnn_cpu.md``).
* ``'auto'`` (default): ``lax.platform_dependent`` picks ``'im2col'`` on CPU and ``'xla'``
  elsewhere inside one jitted function.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops import _window
from funcnet.ops._arrays import flat
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp, explicit_sharding

_DN = ("NHWC", "HWIO", "NHWC")
IMPLS = ("auto", "xla", "im2col")


def _conv_forward(x, w, stride, pads):
    return lax.conv_general_dilated(x, w, stride, pads, dimension_numbers=_DN)


def _bwd_xla(x, w, dy, stride, pads):
    """``dx`` = transposed conv of ``dy`` with the flipped kernel; ``dW`` = corr(x, dy)."""
    (kh, kw), (sh, sw) = w.shape[:2], stride
    (_, h, wd, _), (_, oh, ow, _) = x.shape, dy.shape
    # dx: dilate dy by the stride, pad so that a VALID conv with the flipped, in/out
    # swapped kernel yields exactly (H, W); negative high padding crops.
    lo_h, lo_w = kh - 1 - pads[0][0], kw - 1 - pads[1][0]
    dx_pads = ((lo_h, h + kh - 1 - lo_h - (sh * (oh - 1) + 1)),
               (lo_w, wd + kw - 1 - lo_w - (sw * (ow - 1) + 1)))
    w_t = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)
    dx = lax.conv_general_dilated(dy, w_t, (1, 1), dx_pads, lhs_dilation=stride,
                                  dimension_numbers=_DN)
    # dW: the batch axis of x becomes the contracted feature axis, dy the kernel,
    # dilated by the stride; high padding chosen so the output is exactly (KH, KW).
    dw_pads = ((pads[0][0], kh + sh * (oh - 1) - h - pads[0][0]),
               (pads[1][0], kw + sw * (ow - 1) - wd - pads[1][0]))
    dw = lax.conv_general_dilated(x, dy, (1, 1), dw_pads, rhs_dilation=stride,
                                  dimension_numbers=("CHWN", "IHWO", "HWNC"),
                                  out_sharding=explicit_sharding(w))
    return dx, dw


def _bwd_im2col(x, w, dy, stride, pads):
    """``dW = P^T dy`` (one matmul over N*OH*OW), ``dx = col2im(dy W^T)``."""
    kh, kw, cin, cout = w.shape
    n, oh, ow, _ = dy.shape
    slices = _window.window_slices(_window.pad_hw(x, pads), (kh, kw), stride, (oh, ow))
    patches = jnp.stack(slices, axis=0)                      # (KH*KW, N, OH, OW, Cin)
    dw = lax.dot_general(patches, dy, (((1, 2, 3), (0, 1, 2)), ((), ())),
                         out_sharding=explicit_sharding(w))
    dw = dw.reshape(kh, kw, cin, cout)
    g = lax.dot_general(dy, flat(w), (((3,), (1,)), ((), ()))).reshape(n, oh, ow, kh * kw, cin)
    dx = _window.col2im([g[:, :, :, k, :] for k in range(kh * kw)], (kh, kw), stride,
                        pads, x.shape[1:3])
    return dx, dw


def _conv_bias_forward(x, w, b, stride, pads):
    y = _conv_forward(x, w, stride, pads)
    return y if b is None else y + b[None, None, None, :]


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv2d(x, w, b, stride, pads, impl):
    return _conv_bias_forward(x, w, b, stride, pads)


def _conv2d_fwd(x, w, b, stride, pads, impl):
    # Not _conv2d itself: a custom_vjp call inside fwd breaks jvp-of-grad.
    # ``None`` vs ``()`` records (as an empty pytree) whether a bias was given.
    return _conv_bias_forward(x, w, b, stride, pads), (x, w, None if b is None else ())


def _conv2d_bwd(stride, pads, impl, res, dy):
    x, w, has_b = res
    xla = partial(_bwd_xla, stride=stride, pads=pads)
    im2col = partial(_bwd_im2col, stride=stride, pads=pads)
    if impl == "xla":
        dx, dw = xla(x, w, dy)
    elif impl == "im2col":
        dx, dw = im2col(x, w, dy)
    else:
        dx, dw = lax.platform_dependent(x, w, dy, cpu=im2col, default=xla)
    db = None if has_b is None else jnp.sum(dy, axis=(0, 1, 2))
    return dx, dw, db


defvjp(_conv2d, _conv2d_fwd, _conv2d_bwd)


def check_conv2d_args(fn, x, w, b, stride, padding, impl="auto"):
    """The checks of :func:`conv2d` (and its twin); returns the static ``(stride, pads)``.

    Zero sizes: an empty batch, ``Cin = 0`` (a sum over nothing: ``y = b``) and ``Cout =
    0`` are computed; a kernel with ``KH = 0`` or ``KW = 0`` and a kernel larger than the
    padded input are refused (``ValueError``).
    """
    _checks.static_choice(fn, "impl", impl, IMPLS)
    _checks.check_float(fn, "x", x)
    _checks.check_float(fn, "w", w)
    _checks.check_rank(fn, "x", x, 4, "(N, H, W, Cin)")
    _checks.check_rank(fn, "w", w, 4, "(KH, KW, Cin, Cout)")
    _checks.check_same_dtype(fn, "x", x, "w", w)
    if w.shape[2] != x.shape[3]:
        raise ValueError(
            f"{fn}: w has shape {tuple(w.shape)}, expected in_channels {x.shape[3]} to "
            f"match x {tuple(x.shape)}")
    _checks.check_nonempty(fn, "w", w, "a kernel of at least 1x1 (KH, KW >= 1)", (0, 1))
    if b is not None:
        _checks.check_float(fn, "b", b)
        _checks.check_shape(fn, "b", b, (w.shape[3],),
                            f"one bias per output channel of w {tuple(w.shape)}")
        _checks.check_same_dtype(fn, "x", x, "b", b)
    stride = _checks.normalize_pair(fn, "stride", stride)
    pads = _window.resolve_padding(fn, padding, x.shape[1:3], w.shape[:2], stride)
    _window.output_hw(fn, x.shape, w.shape[:2], stride, pads, what="kernel")
    return stride, pads


@has_twin
def conv2d(x, w, b=None, stride=1, padding=0, *, impl="auto"):
    """2-D cross-correlation ``y = x * W + b`` (the Convolution layer of note 003).

    Forward, with ``xp`` the zero-padded input::

        y[n, oh, ow, o] = b[o] + sum_{i, j, c} xp[n, sh*oh + i, sw*ow + j, c] * W[i, j, c, o]

    Equivalently ``y = P W_2d + b`` with the im2col patch matrix ``P``
    ``(N*OH*OW, KH*KW*Cin)`` and ``W_2d = W.reshape(KH*KW*Cin, Cout)``.

    Backward (same formulas as the Affine layer, applied to the patch matrix)::

        dW = P^T dy                      (correlation of x with dy)
        dx = col2im(dy W_2d^T)           (transposed conv of dy with the flipped kernel)
        db = sum_{n, oh, ow} dy[n, oh, ow, :]

    Residuals: ``x`` and ``W`` only; the patches are recomputed in the backward pass
    (``KH*KW`` times smaller residual than saving ``P``). Output size per spatial dim:
    ``OH = (H + lo + hi - KH) // sh + 1`` (rows that do not fit a whole window are
    dropped, as in ``lax.conv_general_dilated``).

    Args:
      x: ``(N, H, W, Cin)`` floating array.
      w: ``(KH, KW, Cin, Cout)`` kernel, same dtype.
      b: ``(Cout,)`` bias of the same dtype, or ``None`` (then its cotangent is ``None``).
      stride: int or ``(sh, sw)``, positive. Static.
      padding: int ``p``, pair ``(ph, pw)`` (symmetric), pair of ``(lo, hi)`` pairs,
        ``'VALID'`` (= 0) or ``'SAME'`` (output ``ceil(H / sh)``, extra padding on the high
        side). Zero padding. Static.
      impl: ``'auto'`` (default; ``'im2col'`` on CPU, ``'xla'`` elsewhere, chosen per
        platform by ``lax.platform_dependent``), ``'xla'`` or ``'im2col'``: the lowering
        of the backward pass. Keyword-only, static. All three compute the same numbers.

    Returns:
      ``(N, OH, OW, Cout)``.

    Raises:
      ValueError: wrong ranks, ``Cin`` mismatch, bad bias shape, non-positive stride,
        negative padding, a kernel with ``KH = 0`` or ``KW = 0`` or larger than the padded
        input, unknown ``impl``. (An empty batch, ``Cin = 0`` or ``Cout = 0`` is computed.)
      TypeError: non-floating or mismatched dtypes, malformed stride/padding.

    References:
      Note 003 section 7 (CNN structure); Chellapilla, Puri, Simard, "High Performance
      Convolutional Neural Networks for Document Processing", 2006 (im2col),
      https://inria.hal.science/inria-00112631. See ``docs/formulas.md``.
    """
    stride, pads = check_conv2d_args("conv2d", x, w, b, stride, padding, impl)
    return _conv2d(x, w, b, stride, pads, impl)
