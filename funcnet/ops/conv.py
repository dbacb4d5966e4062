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
* ``'auto'`` (default): the lowerings :func:`auto_lowering` names for the platform and
  the kernel, picked by ``lax.platform_dependent`` inside one jitted function. On a 2-core
  XLA:CPU (``benchmarks/results/cpu/conv_lowering.md``) im2col wins where a patch row is
  short (``Cin/groups * KH * KW <= 27``: the book CNN's first layer 0.25x XLA's time, an
  RGB 3x3 conv 0.7x), for grouped kernels (0.19x; depthwise 0.6x) and 1x1 kernels (no
  patches to build: 0.4x); for longer patch rows (a ResNet's 3x3 convs, a 7x7 RGB stem,
  a dilated conv) XLA's backward convolutions are faster (im2col 1.1-6.5x their time).
  On a CUDA GPU a short patch row (``groups = 1``) takes the im2col backward and a forward
  without any convolution, ``y = sum_{i, j, c} slice_{ij}(x)[..., c] W[i, j, c, :]``
  (:func:`_forward_slices`, one elementwise loop, float32 or wider accumulation): cuDNN
  spent 0.5 ms on the book CNN's forward and 0.8 ms on its ``dW`` at batch 4096 on an
  H200, where the whole step now takes 1.69 ms (``benchmarks/cnn_lowering_probe.py``,
  ``benchmarks/results/gpu/``); longer rows and other platforms keep XLA's convolutions.

Dilation (``rhs_dilation``) and feature groups (``feature_group_count``) are covered by
both lowerings: ``'xla'`` passes them to the transposed convolution (``dx``) and to the
weight-gradient convolution (window strides = the dilation, ``batch_group_count`` =
the groups, as JAX's own transpose rule); ``'im2col'`` takes the slices ``d*k`` apart and
makes both matmuls ``dot_general`` s batched over the groups (no block-diagonal weight).
A depthwise kernel (``Cin/groups == 1``, ConvNeXt, MobileNet) needs no matmul at all:
its im2col rule is per-offset elementwise products and sums (``dW`` in a ``lax.map`` over
the ``KH*KW`` offsets), and never holds the ``KH*KW`` patches.

Each lowering is two pieces, ``_dx_*`` and ``_dw_*``, chosen by :func:`lowered`: they
also make :func:`funcnet.ops.conv_transpose2d`, whose forward is ``dx`` and whose
backward is this forward and ``dW``.
"""
from __future__ import annotations

import functools
import operator
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


def _conv_forward(x, w, stride, pads, dilation, groups):
    return lax.conv_general_dilated(x, w, stride, pads, rhs_dilation=dilation,
                                    dimension_numbers=_DN, feature_group_count=groups)


def _forward_slices(x, w, stride, pads, dilation, groups):
    """The forward of a ``groups = 1`` kernel without a convolution: ``y = sum_{k, c}
    slice_k(x)[..., c:c+1] * W[k, c, :]`` over the ``KH*KW`` window offsets ``k`` and the
    input channels (one elementwise loop; meant for short patch rows), accumulated in
    float32 or wider and returned in ``x``'s dtype."""
    del groups
    kh, kw, cin, cout = w.shape
    out_hw = _window.output_hw("conv2d", x.shape, _window.extent((kh, kw), dilation), stride,
                               pads)
    acc = _checks.compute_dtype(x.dtype)
    slices = _window.window_slices(_window.pad_hw(x.astype(acc), pads), (kh, kw), stride,
                                   out_hw, dilation)
    wk = w.astype(acc).reshape(kh * kw, cin, 1, 1, 1, cout)
    terms = [piece[..., c:c + 1] * wk[k, c] for k, piece in enumerate(slices)
             for c in range(cin)]
    if not terms:   # Cin = 0: a sum over nothing
        return jnp.zeros(x.shape[:1] + out_hw + (cout,), x.dtype)
    return functools.reduce(operator.add, terms).astype(x.dtype)


def forward(x, w, stride, pads, dilation, groups, impl):
    """conv2d's forward: XLA's convolution, or with ``impl='auto'`` on a platform where
    :func:`auto_lowering` names ``'slices'``, :func:`_forward_slices` there."""
    geometry = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    conv = partial(_conv_forward, **geometry)
    return _per_platform(impl, 0, w.shape, groups,
                         {"xla": conv, "im2col": conv,
                          "slices": partial(_forward_slices, **geometry)}, x, w)


def _dx_xla(in_hw, w, dy, stride, pads, dilation, groups):
    """``dx`` of an input of spatial size ``in_hw``: the transposed conv of ``dy`` with the
    flipped kernel (also the forward of :func:`funcnet.ops.conv_transpose2d`)."""
    kh, kw, cg, cout = w.shape
    (sh, sw), (dh, dw_) = stride, dilation
    (h, wd), (_, oh, ow, _) = in_hw, dy.shape
    # dilate dy by the stride, pad so that a VALID conv with the flipped, in/out swapped
    # (per group) kernel yields exactly (H, W); negative high padding crops.
    lo_h, lo_w = dh * (kh - 1) - pads[0][0], dw_ * (kw - 1) - pads[1][0]
    dx_pads = ((lo_h, h + dh * (kh - 1) - lo_h - (sh * (oh - 1) + 1)),
               (lo_w, wd + dw_ * (kw - 1) - lo_w - (sw * (ow - 1) + 1)))
    kg = cout // groups    # (KH, KW, Cg, G*Kg) -> (KH, KW, Kg, G*Cg)
    w_t = jnp.flip(w, (0, 1)).reshape(kh, kw, cg, groups, kg).transpose(0, 1, 4, 3, 2)
    return lax.conv_general_dilated(dy, w_t.reshape(kh, kw, kg, groups * cg), (1, 1), dx_pads,
                                    lhs_dilation=stride, rhs_dilation=dilation,
                                    dimension_numbers=_DN, feature_group_count=groups)


def _dw_xla(x, w, dy, stride, pads, dilation, groups):
    """``dW`` = corr(x, dy) (``w`` gives the kernel size and the ``out_sharding``)."""
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw_) = stride, dilation
    (_, h, wd, _), (_, oh, ow, _) = x.shape, dy.shape
    # the batch axis of x becomes the contracted feature axis and its channels the
    # batch (split into the groups), dy the kernel, dilated by the stride; window strides
    # = the dilation, high padding chosen so the output is exactly (KH, KW).
    dw_pads = ((pads[0][0], dh * (kh - 1) + sh * (oh - 1) + 1 - h - pads[0][0]),
               (pads[1][0], dw_ * (kw - 1) + sw * (ow - 1) + 1 - wd - pads[1][0]))
    return lax.conv_general_dilated(x, dy, dilation, dw_pads, rhs_dilation=stride,
                                    dimension_numbers=("CHWN", "IHWO", "HWNC"),
                                    batch_group_count=groups, out_sharding=explicit_sharding(w))


def _bwd_xla(x, w, dy, stride, pads, dilation, groups):
    """``dx`` = transposed conv of ``dy`` with the flipped kernel; ``dW`` = corr(x, dy)."""
    geometry = (stride, pads, dilation, groups)
    return _dx_xla(x.shape[1:3], w, dy, *geometry), _dw_xla(x, w, dy, *geometry)


def _dw_im2col(x, w, dy, stride, pads, dilation, groups):
    """``dW = P^T dy``: one matmul over N*OH*OW, batched over the groups, of the patches
    ``P`` of ``x``; a depthwise kernel (``Cin/groups = 1``) takes :func:`_dw_depthwise`."""
    kh, kw, cg, cout = w.shape
    n, oh, ow, _ = dy.shape
    kk, kg = kh * kw, cout // groups
    if groups > 1 and cg == 1:
        return _dw_depthwise(x, w, dy, stride, pads, dilation)
    slices = _window.window_slices(_window.pad_hw(x, pads), (kh, kw), stride, (oh, ow),
                                   dilation)
    patches = jnp.stack(slices, axis=0)                      # (KH*KW, N, OH, OW, Cin)
    if groups == 1:   # a plain matmul (the grouped form below costs a transpose here)
        return lax.dot_general(patches, dy, (((1, 2, 3), (0, 1, 2)), ((), ())),
                               out_sharding=explicit_sharding(w)).reshape(kh, kw, cg, cout)
    # patches (KK, N, OH, OW, G, Cg); dy as (N, OH, OW, G, Kg)
    dw = lax.dot_general(patches.reshape(kk, n, oh, ow, groups, cg),
                         dy.reshape(n, oh, ow, groups, kg),
                         (((1, 2, 3), (0, 1, 2)), ((4,), (3,))),
                         out_sharding=explicit_sharding(w))      # (G, KK, Cg, Kg)
    return jnp.moveaxis(dw, 0, 2).reshape(kh, kw, cg, cout)


def _dx_im2col(in_hw, w, dy, stride, pads, dilation, groups):
    """``dx = col2im(dy W^T)`` onto an input of spatial size ``in_hw`` (the matmul batched
    over the groups); a depthwise kernel takes :func:`_dx_depthwise`."""
    kh, kw, cg, cout = w.shape
    n, oh, ow, _ = dy.shape
    kk, kg = kh * kw, cout // groups
    if groups > 1 and cg == 1:
        return _dx_depthwise(in_hw, w, dy, stride, pads, dilation, groups)
    if groups == 1:
        g = lax.dot_general(dy, flat(w), (((3,), (1,)), ((), ()))).reshape(n, oh, ow, kk, cg)
    else:  # dy as (N, OH, OW, G, Kg); W as (KK, Cg, G, Kg)
        g = lax.dot_general(dy.reshape(n, oh, ow, groups, kg), w.reshape(kk, cg, groups, kg),
                            (((4,), (3,)), ((3,), (2,))))          # (G, N, OH, OW, KK, Cg)
        g = jnp.moveaxis(g, 0, 4).reshape(n, oh, ow, kk, groups * cg)
    return _window.col2im([g[:, :, :, k, :] for k in range(kk)], (kh, kw), stride, pads,
                          in_hw, dilation)


def _bwd_im2col(x, w, dy, stride, pads, dilation, groups):
    """``dW = P^T dy`` (one matmul over N*OH*OW, batched over the groups), ``dx =
    col2im(dy W^T)``; a depthwise kernel (``Cin/groups = 1``) needs no matmul."""
    geometry = (stride, pads, dilation, groups)
    dw = _dw_im2col(x, w, dy, *geometry)
    return _dx_im2col(x.shape[1:3], w, dy, *geometry), dw


def _dw_depthwise(x, w, dy, stride, pads, dilation):
    """The im2col ``dW`` of a depthwise kernel ``(KH, KW, 1, C*M)`` without any matmul and
    without the patches: per window offset ``k``, ``dW[k] = sum_{n,oh,ow} slice_k * dy``
    (a ``lax.map`` over the offsets: one window slice of ``x`` is live at a time, where
    ``KH*KW`` unrolled reductions made XLA:CPU keep every slice, 49x the input for 7x7)."""
    kh, kw, _, cout = w.shape
    n, oh, ow, c = dy.shape[:3] + (x.shape[3],)
    (sh, sw), (dh, dw_) = stride, dilation
    dy_m = dy.reshape(n, oh, ow, c, cout // c)
    xp = _window.pad_hw(x, pads)

    def dw_at(k):
        span = lax.dynamic_slice(xp, (0, dh * (k // kw), dw_ * (k % kw), 0),
                                 (n, sh * (oh - 1) + 1, sw * (ow - 1) + 1, c))
        window = lax.slice(span, (0, 0, 0, 0), span.shape, (1, sh, sw, 1))
        return jnp.sum(window[..., None] * dy_m, axis=(0, 1, 2))

    return lax.map(dw_at, jnp.arange(kh * kw)).reshape(kh, kw, 1, cout)


def _dx_depthwise(in_hw, w, dy, stride, pads, dilation, c):
    """The im2col ``dx`` of a depthwise kernel ``(KH, KW, 1, C*M)`` (``c = C`` input
    channels): per offset the piece ``sum_m dy * W[k]``, products that XLA fuses into
    col2im."""
    kh, kw, _, cout = w.shape
    n, oh, ow, _ = dy.shape
    dy_m = dy.reshape(n, oh, ow, c, cout // c)
    w_m = w.reshape(kh * kw, 1, 1, 1, c, cout // c)
    pieces = [jnp.sum(dy_m * w_m[k], axis=-1) for k in range(kh * kw)]
    return _window.col2im(pieces, (kh, kw), stride, pads, in_hw, dilation)


def add_bias(y, b):
    """``y + b`` over the channels of an NHWC ``y``; ``y`` itself for ``b = None``."""
    return y if b is None else y + b[None, None, None, :]


def _conv_bias_forward(x, w, b, stride, pads, dilation, groups, impl):
    return add_bias(forward(x, w, stride, pads, dilation, groups, impl), b)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _conv2d(x, w, b, stride, pads, dilation, groups, impl):
    return _conv_bias_forward(x, w, b, stride, pads, dilation, groups, impl)


def _conv2d_fwd(x, w, b, stride, pads, dilation, groups, impl):
    # Not _conv2d itself: a custom_vjp call inside fwd breaks jvp-of-grad.
    # ``None`` vs ``()`` records (as an empty pytree) whether a bias was given.
    y = _conv_bias_forward(x, w, b, stride, pads, dilation, groups, impl)
    return y, (x, w, None if b is None else ())


IM2COL_MAX_PATCH = 27     # Cin/groups * KH * KW up to which im2col wins on XLA:CPU
PLATFORMS = ("cpu", "cuda")   # the platforms auto_lowering distinguishes (others: XLA's)


def cpu_backward(w_shape, groups: int) -> str:
    """The lowering ``impl='auto'`` takes on CPU for a kernel ``(KH, KW, Cin/groups,
    Cout)``: ``'im2col'`` for short patch rows (``Cin/groups * KH * KW <= 27``, e.g. one
    or three input channels under a 3x3 kernel), ``groups > 1`` or a 1x1 kernel (where
    XLA:CPU's backward convolutions are slow, or im2col builds no patches), ``'xla'``
    otherwise (module docstring; ``benchmarks/conv_lowering.py``)."""
    kh, kw, cg, _ = w_shape
    short = cg * kh * kw <= IM2COL_MAX_PATCH
    return "im2col" if short or groups > 1 or kh * kw == 1 else "xla"


def auto_lowering(platform: str, w_shape, groups: int) -> tuple[str, str]:
    """``(forward, backward)``: the lowerings ``impl='auto'`` compiles on ``platform``
    (``'cpu'``, ``'cuda'``, ...) for a kernel ``(KH, KW, Cin/groups, Cout)``.

    * ``'cpu'``: XLA's forward convolution, :func:`cpu_backward`'s backward;
    * ``'cuda'``: for a short patch row (``Cin * KH * KW <= 27``) and ``groups = 1``,
      :func:`_forward_slices` (``'slices'``) and the im2col backward (on an H200 the book
      CNN's whole step 1.69 against 2.33 ms with cuDNN's convolutions, Equinox 1.92 ms:
      ``benchmarks/cnn_lowering_probe.py``); XLA's convolutions otherwise;
    * any other platform (TPU, ROCm: not measured): XLA's convolutions.
    """
    kh, kw, cg, _ = w_shape
    if platform == "cpu":
        return "xla", cpu_backward(w_shape, groups)
    if platform == "cuda" and groups == 1 and cg * kh * kw <= IM2COL_MAX_PATCH:
        return "slices", "im2col"
    return "xla", "xla"


def default_platform() -> str:
    """The platform name ``lax.platform_dependent`` sees for the default backend:
    ``'cpu'``, ``'cuda'`` or ``'rocm'`` (where ``jax.default_backend()`` says ``'gpu'``),
    ``'tpu'``."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version else "cuda"


def _per_platform(impl: str, part: int, w_shape, groups: int, fns, *args):
    """``fns[name](*args)`` for the lowering ``impl`` names (``'xla'``, ``'im2col'``);
    with ``'auto'``, :func:`auto_lowering`'s choice per platform (``part`` 0: the forward,
    1: the backward), picked by ``lax.platform_dependent`` (``fns['xla']`` called directly
    where every platform's choice is XLA's, and on the platforms it does not name)."""
    if impl == "auto":
        picks = {p: auto_lowering(p, w_shape, groups)[part] for p in PLATFORMS}
        if all(v == "xla" for v in picks.values()):
            impl = "xla"        # XLA's convolutions on every platform
    if impl != "auto":
        return fns[impl](*args)
    return lax.platform_dependent(*args, default=fns["xla"],
                                  **{p: fns[v] for p, v in picks.items()})


def lowered(impl: str, w_shape, groups: int, xla, im2col, *args):
    """``xla(*args)`` or ``im2col(*args)``, the backward lowering ``impl`` names;
    ``'auto'`` is :func:`auto_lowering`'s choice per platform (:func:`_per_platform`)."""
    return _per_platform(impl, 1, w_shape, groups, {"xla": xla, "im2col": im2col}, *args)


def _conv2d_bwd(stride, pads, dilation, groups, impl, res, dy):
    x, w, has_b = res
    geometry = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    dx, dw = lowered(impl, w.shape, groups, partial(_bwd_xla, **geometry),
                     partial(_bwd_im2col, **geometry), x, w, dy)
    db = None if has_b is None else jnp.sum(dy, axis=(0, 1, 2))
    return dx, dw, db


defvjp(_conv2d, _conv2d_fwd, _conv2d_bwd)


def check_operands(fn, x, w, groups, impl, kernel_layout: str) -> int:
    """The checks a convolution op opens with (conv2d, conv_transpose2d): ``impl``, ``x``
    ``(N, H, W, Cin)`` and a rank-4 kernel ``w`` (``kernel_layout``), both floating and of
    one dtype, ``groups`` an int >= 1 dividing ``Cin``; returns ``groups``."""
    _checks.static_choice(fn, "impl", impl, IMPLS)
    _checks.check_float(fn, "x", x)
    _checks.check_float(fn, "w", w)
    _checks.check_rank(fn, "x", x, 4, "(N, H, W, Cin)")
    _checks.check_rank(fn, "w", w, 4, kernel_layout)
    _checks.check_same_dtype(fn, "x", x, "w", w)
    groups = _checks.static_int(fn, "groups", groups, minimum=1)
    _checks.check_groups(fn, f"x has shape {tuple(x.shape)}: in_channels {x.shape[3]}",
                         x.shape[3], groups)
    return groups


def check_bias(fn, x, b, cout: int, why: str) -> None:
    """``b`` is ``None`` or a floating ``(cout,)`` array of ``x``'s dtype."""
    if b is not None:
        _checks.check_float(fn, "b", b)
        _checks.check_shape(fn, "b", b, (cout,), why)
        _checks.check_same_dtype(fn, "x", x, "b", b)


def check_conv2d_args(fn, x, w, b, stride, padding, dilation=1, groups=1, impl="auto"):
    """The checks of :func:`conv2d` (and its twin); returns the static ``(stride, pads,
    dilation, groups)``.

    Zero sizes: an empty batch, ``Cin = 0`` (a sum over nothing: ``y = b``) and ``Cout =
    0`` are computed; a kernel with ``KH = 0`` or ``KW = 0`` and a (dilated) kernel larger
    than the padded input are refused (``ValueError``).
    """
    groups = check_operands(fn, x, w, groups, impl, "(KH, KW, Cin/groups, Cout)")
    _checks.check_groups(fn, f"w has shape {tuple(w.shape)}: out_channels {w.shape[3]}",
                         w.shape[3], groups)
    if w.shape[2] * groups != x.shape[3]:
        per = "" if groups == 1 else f" / groups {groups} = {x.shape[3] // groups}"
        raise ValueError(
            f"{fn}: w has shape {tuple(w.shape)}, expected in_channels {x.shape[3]}{per} to "
            f"match x {tuple(x.shape)}")
    _checks.check_nonempty(fn, "w", w, "a kernel of at least 1x1 (KH, KW >= 1)", (0, 1))
    check_bias(fn, x, b, w.shape[3], f"one bias per output channel of w {tuple(w.shape)}")
    stride = _checks.normalize_pair(fn, "stride", stride)
    dilation = _checks.normalize_pair(fn, "dilation", dilation)
    window = _window.extent(w.shape[:2], dilation)
    pads = _window.resolve_padding(fn, padding, x.shape[1:3], window, stride)
    _window.output_hw(fn, x.shape, window, stride, pads,
                      what="kernel" if dilation == (1, 1) else "dilated kernel")
    return stride, pads, dilation, groups


@has_twin
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, impl="auto"):
    """2-D cross-correlation ``y = x * W + b`` (the Convolution layer of note 003).

    Forward, with ``xp`` the zero-padded input::

        y[n, oh, ow, o] = b[o] + sum_{i, j, c} xp[n, sh*oh + i, sw*ow + j, c] * W[i, j, c, o]

    Equivalently ``y = P W_2d + b`` with the im2col patch matrix ``P``
    ``(N*OH*OW, KH*KW*Cin)`` and ``W_2d = W.reshape(KH*KW*Cin, Cout)``. With dilation
    ``(dh, dw)`` the taps are ``xp[n, sh*oh + dh*i, sw*ow + dw*j, ...]`` (a kernel spanning
    ``d*(K-1) + 1`` rows); with ``G = groups`` output channel ``o`` of group ``g = o //
    (Cout/G)`` sums over the input channels ``g*Cg + c``, ``c < Cg = Cin/G`` only, i.e. the
    formulas below hold per group with ``P_g``, ``W_g`` (``groups = Cin``: depthwise).

    Backward (same formulas as the Affine layer, applied to the patch matrix)::

        dW = P^T dy                      (correlation of x with dy)
        dx = col2im(dy W_2d^T)           (transposed conv of dy with the flipped kernel)
        db = sum_{n, oh, ow} dy[n, oh, ow, :]

    Residuals: ``x`` and ``W`` only; the patches are recomputed in the backward pass
    (``KH*KW`` times smaller residual than saving ``P``). Output size per spatial dim:
    ``OH = (H + lo + hi - dh*(KH-1) - 1) // sh + 1`` (rows that do not fit a whole window
    are dropped, as in ``lax.conv_general_dilated``).

    Args:
      x: ``(N, H, W, Cin)`` floating array.
      w: ``(KH, KW, Cin/groups, Cout)`` kernel, same dtype (``(KH, KW, Cin, Cout)`` when
        ``groups=1``; depthwise: ``(KH, KW, 1, M*Cin)``).
      b: ``(Cout,)`` bias of the same dtype, or ``None`` (then its cotangent is ``None``).
      stride: int or ``(sh, sw)``, positive. Static.
      padding: int ``p``, pair ``(ph, pw)`` (symmetric), pair of ``(lo, hi)`` pairs,
        ``'VALID'`` (= 0) or ``'SAME'`` (output ``ceil(H / sh)``, extra padding on the high
        side). Zero padding. Static.
      dilation: int or ``(dh, dw)``, positive: the kernel (``rhs``) dilation, PyTorch's
        ``dilation``, Flax's ``kernel_dilation``. Static.
      groups: int >= 1 dividing ``Cin`` and ``Cout``: PyTorch's ``groups``, Flax's /
        XLA's ``feature_group_count``. Static.
      impl: ``'auto'`` (default; :func:`auto_lowering`'s choice for this kernel per
        platform, by ``lax.platform_dependent``: on CPU :func:`cpu_backward`'s backward,
        on a CUDA GPU for short patch rows a forward without convolution and the im2col
        backward, elsewhere XLA's), ``'xla'`` or ``'im2col'``: the lowering of the
        backward pass (with XLA's forward). Keyword-only, static. All three compute the
        same numbers.

    Returns:
      ``(N, OH, OW, Cout)``.

    Raises:
      ValueError: wrong ranks, ``Cin`` mismatch, ``Cin`` or ``Cout`` not divisible by
        ``groups``, bad bias shape, non-positive stride, dilation or groups, negative
        padding, a kernel with ``KH = 0`` or ``KW = 0`` or (dilated) larger than the padded
        input, unknown ``impl``. (An empty batch, ``Cin = 0`` or ``Cout = 0`` is computed.)
      TypeError: non-floating or mismatched dtypes, malformed stride/padding/dilation, a
        non-int ``groups``.

    References:
      Note 003 section 7 (CNN structure); Chellapilla, Puri, Simard, "High Performance
      Convolutional Neural Networks for Document Processing", 2006 (im2col),
      https://inria.hal.science/inria-00112631; Yu, Koltun, "Multi-Scale Context
      Aggregation by Dilated Convolutions", 2016; Xie et al., "Aggregated Residual
      Transformations" (ResNeXt), 2017; Howard et al., "MobileNets", 2017 (depthwise).
      See ``docs/formulas.md``.
    """
    args = check_conv2d_args("conv2d", x, w, b, stride, padding, dilation, groups, impl)
    return _conv2d(x, w, b, *args, impl)
