"""Transposed convolution layers (NHWC), the learned upsampling of U-Net, DCGAN and VAE
decoders: ``ConvTranspose2D`` and ``ConvTranspose1D`` over
:func:`funcnet.ops.conv_transpose2d` (PyTorch's ``ConvTranspose2d`` / ``1d``: the adjoint
of a conv with the same kernel w.r.t. its input).

A U-Net decoder step, 2x upsampling then a skip connection::

    up = nn.ConvTranspose2D(64, 4, stride=2, padding=1)      # (N, H, W, 128) -> (N, 2H, 2W, 64)
    # ... or padding="SAME" (Flax's / Keras' meaning): (N, H*s, W*s, 64) for any kernel

Kernel ``w: (KH, KW, features/groups, Cin)``: the HWIO kernel of the conv from
``features`` to ``Cin`` channels that the layer transposes, the layout of Keras'
``Conv2DTranspose``, of ``lax.conv_transpose(..., transpose_kernel=True)`` and of Flax's
``ConvTranspose(..., transpose_kernel=True)``; PyTorch's weight ``(Cin, features/groups,
KH, KW)`` is ``w.transpose(3, 2, 0, 1)`` (see :func:`funcnet.ops.conv_transpose2d`).

Initialisation: He normal with ``fan_in = KH*KW*Cin / (groups * sh * sw)``, the average
number of products summed into one output (each input pixel is spread over ``KH*KW``
outputs, the outputs are ``sh*sw`` times more numerous). It is the counterpart of
Conv2D's ``KH*KW*Cin/groups``, and keeps ``E[y^2] = 2 E[x^2]`` in the forward pass at any
stride (He et al. 2015). PyTorch and Keras compute ``KH*KW*features/groups`` (the fan-in
of the conv transposed, ``jax.nn.initializers.he_normal()`` on this layout), which keeps
the backward pass's variance instead; Flax ``KH*KW*Cin`` (no stride, no groups): pass the
initializer you want as ``w_init``.

References:
  Dumoulin, Visin (2016), "A guide to convolution arithmetic for deep learning",
  https://arxiv.org/abs/1603.07285; Ronneberger, Fischer, Brox (2015), "U-Net"; Radford,
  Metz, Chintala (2016), "DCGAN"; He, Zhang, Ren, Sun (2015), "Delving Deep into
  Rectifiers" (the fan).
"""
from __future__ import annotations

from funcnet import _checks, ops
from funcnet._describe import described
from funcnet.nn import initializers
from funcnet.nn.base import Layer, check_weight_args, padding_1d, probe
from funcnet.nn.conv import conv_layer

__all__ = ["ConvTranspose2D", "ConvTranspose1D"]


def _he_transposed(stride, groups: int):
    """He normal over ``fan_in = KH*KW*Cin / (groups * sh * sw)`` on a kernel ``(KH, KW,
    Cout/groups, Cin)`` (module docstring): ``Var[w] = 2 groups sh sw / (KH KW Cin)``."""
    return initializers.variance_scaling(2.0 * groups * stride[0] * stride[1], "fan_in",
                                         "normal", in_axis=-1, out_axis=-2)


def _layer(name, features, kernel_shape, to_2d, ranks, layout, geometry, use_bias, w_init,
           b_init, dtype, where) -> Layer:
    """A transposed-conv layer over ``ops.conv_transpose2d``; ``to_2d(x, w) -> (x4, w4,
    back)`` maps the layer's input and kernel to NHWC / ``(KH, KW, Kg, Cin)``; ``geometry``
    holds the op's 2-D ``stride``, ``padding``, ``output_padding``, ``dilation``,
    ``groups`` and ``impl``, which a shape-only call of the op checks here."""
    groups = geometry["groups"]
    check_weight_args(name, dtype, use_bias, b_init=b_init)
    w_init = _he_transposed(geometry["stride"], groups) if w_init is None else w_init
    _checks.check_callable(name, "w_init", w_init, "(key, shape, dtype)")
    _checks.check_groups(name, f"features {features}", features, groups)
    kh, kw = (1,) + kernel_shape if len(kernel_shape) == 1 else kernel_shape
    pads = geometry["padding"]
    rows = 1 if isinstance(pads, str) else 1 + max(lo + hi for lo, hi in pads)
    probe(where, lambda x, w: ops.conv_transpose2d(x, w, **geometry), (1, rows, rows, groups),
          (kh, kw, 1, groups))
    return conv_layer(name, kernel_shape + (features // groups, None), features,
                      lambda cin: kernel_shape + (features // groups, cin), to_2d, ranks,
                      layout, groups, use_bias, w_init, b_init, dtype, where,
                      lambda xb, w4, b: ops.conv_transpose2d(xb, w4, b, **geometry))


@described
def ConvTranspose2D(features: int, kernel_size, stride=1, padding=0, output_padding=0,
                    dilation=1, groups: int = 1, *, use_bias: bool = True, w_init=None,
                    b_init=initializers.zeros, dtype=None, impl: str = "auto") -> Layer:
    """Transposed 2-D convolution via :func:`funcnet.ops.conv_transpose2d` (PyTorch's
    ``ConvTranspose2d``).

    ``y[n, sh*h - lo_h + dh*i, sw*w - lo_w + dw*j, g*Kg + o] += sum_c x[n, h, w, g*Cg + c]
    w[i, j, o, g*Cg + c]``, then ``+ b`` (``Cg = Cin/groups``, ``Kg = features/groups``):
    each input pixel scatters a ``KH x KW`` window, ``s`` apart, onto the output.

    Shapes:
      input: ``(N, H, W, Cin)`` or one example ``(H, W, Cin)``.
      output: ``(N, OH, OW, features)``, ``OH = (H - 1)*sh - lo - hi + dh*(KH - 1) + 1 +
        output_padding`` (``H*sh`` with ``padding='SAME'``).
      params: ``{"w": (KH, KW, features/groups, Cin), "b": (features,)}`` (no ``"b"``
        when ``use_bias=False``); state ``()``.

    Args:
      features: output channels, an int >= 1 divisible by ``groups``.
      kernel_size: ``k`` or ``(KH, KW)``.
      stride: ``s`` or ``(sh, sw)``: the upsampling factor.
      padding: PyTorch's meaning (default ``0``): an int or a pair ``(ph, pw)`` crops that
        many rows/columns from each border, a pair of ``(lo, hi)`` pairs per side; or
        ``'SAME'`` (``OH = H*sh``) or ``'VALID'`` (``OH = H*sh + max(dh*(KH-1) + 1 - sh,
        0)``), Flax's and Keras' meanings (Flax's ``ConvTranspose`` defaults to
        ``'SAME'``). ``k = 2s, padding = s/2`` (e.g. 4, 2, 1) or ``padding='SAME'``
        doubles the size at stride 2.
      output_padding: int or pair ``< max(stride, dilation)``: rows/columns added at the
        high end (PyTorch's); only with int padding.
      dilation: ``d`` or ``(dh, dw)``, the kernel dilation.
      groups: feature groups dividing ``Cin`` and ``features``.
      use_bias: add a bias per output channel.
      w_init: kernel initializer; ``None`` (default): He normal with ``fan_in =
        KH*KW*Cin / (groups*sh*sw)`` (module docstring; PyTorch's and Keras' fan is
        ``jax.nn.initializers.he_normal()`` on this layout).
      b_init: bias initializer; default zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. Input and params
        are promoted to their common dtype.
      impl: the op's lowering, ``'auto'``, ``'xla'`` or ``'im2col'``.

    Returns:
      A :class:`Layer` named ``"ConvTranspose2D(features)"``.

    Raises:
      TypeError, ValueError: bad constructor arguments (at construction, e.g.
        ``features`` not divisible by ``groups``, ``output_padding >= max(stride,
        dilation)``); a bad ``input_shape`` (in ``init``); params that are not this
        layer's; and :func:`funcnet.ops.conv_transpose2d`'s errors, prefixed with the
        layer name.
    """
    C = _checks.static_int("ConvTranspose2D", "features", features, minimum=1)
    name = f"ConvTranspose2D({C})"
    kernel = _checks.normalize_pair(name, "kernel_size", kernel_size)
    geometry = dict(
        stride=_checks.normalize_pair(name, "stride", stride),
        padding=padding if isinstance(padding, str) else _checks.normalize_padding(name,
                                                                                   padding),
        output_padding=output_padding, dilation=_checks.normalize_pair(name, "dilation",
                                                                        dilation),
        groups=_checks.static_int(name, "groups", groups, minimum=1), impl=impl)
    return _layer(name, C, kernel, lambda x, w: (x, w, lambda y: y), (3, 4),
                  "(N, H, W, Cin) or one example (H, W, Cin)", geometry, use_bias, w_init,
                  b_init, dtype, name)


@described
def ConvTranspose1D(features: int, kernel_size: int, stride: int = 1, padding=0,
                    output_padding: int = 0, dilation: int = 1, groups: int = 1, *,
                    use_bias: bool = True, w_init=None, b_init=initializers.zeros,
                    dtype=None, impl: str = "auto") -> Layer:
    """Transposed 1-D convolution over sequences ``(N, L, C)``: :func:`ConvTranspose2D`
    on ``(N, 1, L, C)`` (PyTorch's ``ConvTranspose1d``).

    ``y[n, s*l - lo + d*i, g*Kg + o] += sum_c x[n, l, g*Cg + c] w[i, o, g*Cg + c]``, then
    ``+ b``; computed by :func:`funcnet.ops.conv_transpose2d` on the input reshaped to
    ``(N, 1, L, C)`` and the kernel to ``(1, K, features/groups, Cin)`` (a reshape: values
    and gradients are the 2-D op's). Output length ``(L - 1)*s - lo - hi + d*(K - 1) + 1 +
    output_padding`` (``L*s`` with ``'SAME'``).

    Shapes:
      input: ``(N, L, Cin)`` or one sequence ``(L, Cin)``; output ``(N, OL, features)``.
      params: ``{"w": (K, features/groups, Cin), "b": (features,)}``; state ``()``.

    Args:
      features: an int >= 1.
      kernel_size, stride, dilation, output_padding: ints (``output_padding <
        max(stride, dilation)``).
      padding: an int, a pair ``(lo, hi)``, ``'SAME'`` or ``'VALID'``, as in
        :func:`ConvTranspose2D`.
      groups, use_bias, w_init, b_init, dtype, impl: as in :func:`ConvTranspose2D` (the
        default He fan-in is ``K*Cin / (groups*s)``).

    Returns:
      A :class:`Layer` named ``"ConvTranspose1D(features)"``; errors of the 2-D op name
      the 4-D shapes it saw, under ``"ConvTranspose1D(C) (as conv_transpose2d on (N, 1,
      L, C))"``.
    """
    C = _checks.static_int("ConvTranspose1D", "features", features, minimum=1)
    name = f"ConvTranspose1D({C})"
    k = _checks.static_int(name, "kernel_size", kernel_size, minimum=1)
    geometry = dict(
        stride=(1, _checks.static_int(name, "stride", stride, minimum=1)),
        padding=padding if isinstance(padding, str) else padding_1d(name, padding),
        output_padding=(0, _checks.static_int(name, "output_padding", output_padding)),
        dilation=(1, _checks.static_int(name, "dilation", dilation, minimum=1)),
        groups=_checks.static_int(name, "groups", groups, minimum=1), impl=impl)

    def to_2d(x, w):
        return x[..., None, :, :], w[None], lambda y: y[..., 0, :, :]

    return _layer(name, C, (k,), to_2d, (2, 3), "(N, L, Cin) or one sequence (L, Cin)",
                  geometry, use_bias, w_init, b_init, dtype,
                  f"{name} (as conv_transpose2d on (N, 1, L, C))")
