"""Plain-JAX twin of :func:`funcnet.ops.conv_transpose2d` (autodiff through
``lax.conv_general_dilated`` with ``lhs_dilation``).

Same name, signature, checks and forward numbers as the custom-VJP op, written from the
textbook form of a transposed convolution rather than from conv2d's backward rules
(Dumoulin & Visin 2016, section 4): insert ``s - 1`` zeros between the input pixels,
pad each side by ``d*(K-1) - p``, and convolve (stride 1) with the spatially flipped
kernel whose input and output channels are swapped within each group. Gradients come
from JAX's own transpose rules, so it also supports forward mode (``jax.jvp``).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet.ops.conv_transpose import check_conv_transpose2d_args


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, *, impl="auto"):
    """Reference transposed 2-D convolution, NHWC; see :func:`funcnet.ops.conv_transpose2d`.

    Args:
      x: ``(N, H, W, Cin)``; w: ``(KH, KW, Cout/groups, Cin)``; b: ``(Cout,)`` or ``None``.
      stride, padding, output_padding, dilation, groups: as in the op.
      impl: validated as in the op; it names a lowering of the op, so it does not change
        this function.

    Returns:
      ``(N, OH, OW, Cout)``.
    """
    _, stride, pads, dilation, groups = check_conv_transpose2d_args(
        "conv_transpose2d", x, w, b, stride, padding, output_padding, dilation, groups, impl)
    kh, kw, kg, cin = w.shape
    cg = cin // groups
    # kernel of the lhs-dilated conv, HWIO with I = Cin/G: k[i, j, c, g*Kg + o] =
    # w[KH-1-i, KW-1-j, o, g*Cg + c]
    k = jnp.einsum("ijogc->ijcgo", w[::-1, ::-1].reshape(kh, kw, kg, groups, cg))
    edges = [(d * (size - 1) - lo, d * (size - 1) - hi)
             for d, size, (lo, hi) in zip(dilation, (kh, kw), pads)]
    y = lax.conv_general_dilated(x, k.reshape(kh, kw, cg, groups * kg), (1, 1), edges,
                                 lhs_dilation=stride, rhs_dilation=dilation,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups)
    return y if b is None else y + b[None, None, None, :]
