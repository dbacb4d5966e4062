"""Plain-JAX twin of :func:`funcnet.ops.conv2d` (autodiff through ``lax.conv_general_dilated``).

Same name, signature, checks and forward numbers as the custom-VJP op; gradients come
from JAX's own transpose rules, so it also supports forward mode (``jax.jvp``).
"""
from __future__ import annotations

from jax import lax

from funcnet.ops.conv import check_conv2d_args


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, impl="auto"):
    """Reference 2-D cross-correlation, NHWC / HWIO; see :func:`funcnet.ops.conv2d`.

    Args:
      x: ``(N, H, W, Cin)``; w: ``(KH, KW, Cin/groups, Cout)``; b: ``(Cout,)`` or ``None``.
      stride, padding, dilation, groups: as in :func:`funcnet.ops.conv2d` (``dilation`` is
        ``lax.conv_general_dilated``'s ``rhs_dilation``, ``groups`` its
        ``feature_group_count``).
      impl: validated as in :func:`funcnet.ops.conv2d`; it names a lowering of the op's
        backward pass, so it does not change this function.

    Returns:
      ``(N, OH, OW, Cout)``.
    """
    stride, pads, dilation, groups = check_conv2d_args("conv2d", x, w, b, stride, padding,
                                                       dilation, groups, impl)
    y = lax.conv_general_dilated(x, w, stride, pads, rhs_dilation=dilation,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups)
    return y if b is None else y + b[None, None, None, :]
