"""Resampling layers on NHWC images: ``Upsample2D`` (by whole factors) and ``Resize2D``
(to a fixed size), both :func:`funcnet.ops.resize2d`.

The decoders of U-Nets, FPNs and diffusion models upsample with these (nearest or
bilinear, often followed by a 3x3 ``Conv2D``) or with a strided transposed convolution.
Each layer also accepts one example ``(H, W, C)``.

References:
  Ronneberger, Fischer, Brox (2015), "U-Net", https://arxiv.org/abs/1505.04597;
  Odena, Dumoulin, Olah (2016), "Deconvolution and Checkerboard Artifacts",
  https://distill.pub/2016/deconv-checkerboard/ (resize, then convolve).
"""
from __future__ import annotations

from funcnet import _checks, ops
from funcnet._describe import described
from funcnet.nn.base import Layer
from funcnet.nn.pooling import _pool_layer

__all__ = ["Upsample2D", "Resize2D"]

_METHODS = ("nearest", "linear", "bilinear")


def _method(name: str, method):
    return _checks.static_choice(name, "method", method, _METHODS)


@described
def Upsample2D(scale=2, method="nearest") -> Layer:
    """Upsample ``(N, H, W, C) -> (N, sh*H, sw*W, C)`` (:func:`funcnet.ops.resize2d`).

    ``'nearest'`` repeats each pixel in an ``sh x sw`` block (its backward pass sums each
    block of the gradient); ``'linear'``/``'bilinear'`` interpolates with half-pixel
    centres (PyTorch's ``Upsample(mode='bilinear', align_corners=False)``).

    Shapes: input ``(N, H, W, C)`` or ``(H, W, C)``; output ``(N, sh*H, sw*W, C)``.
    Params ``()``, state ``()``.

    Args:
      scale: ``s`` or ``(sh, sw)``, positive ints.
      method: ``'nearest'`` (default, as PyTorch's and Keras' upsampling layers),
        ``'linear'`` or ``'bilinear'``.

    Raises:
      TypeError, ValueError: at construction for a bad scale or method; in
        ``init``/``apply`` the op's errors, prefixed with the layer name.
    """
    sh, sw = _checks.normalize_pair("Upsample2D", "scale", scale)
    method = _method("Upsample2D", method)
    name = f"Upsample2D({scale if isinstance(scale, int) else (sh, sw)})"

    def fn(x):
        return ops.resize2d(x, (sh * x.shape[1], sw * x.shape[2]), method)

    return _pool_layer(name, fn)


@described
def Resize2D(size, method="linear") -> Layer:
    """Resize every image to ``size`` (:func:`funcnet.ops.resize2d`), up or down, without
    antialiasing: ``(N, H, W, C) -> (N, OH, OW, C)``.

    Shapes: input ``(N, H, W, C)`` or ``(H, W, C)``; output ``(N, OH, OW, C)``.
    Params ``()``, state ``()``.

    Args:
      size: ``s`` or ``(OH, OW)``, positive ints.
      method: ``'linear'`` (default, as ``jax.image.resize``'s usual choice),
        ``'bilinear'`` or ``'nearest'``.

    Raises:
      TypeError, ValueError: at construction for a bad size or method; in
        ``init``/``apply`` the op's errors, prefixed with the layer name.
    """
    out = _checks.normalize_pair("Resize2D", "size", size)
    method = _method("Resize2D", method)
    name = f"Resize2D({size if isinstance(size, int) else out})"
    return _pool_layer(name, lambda x: ops.resize2d(x, out, method))
