"""Resizing NHWC images, nearest and bilinear (U-Net, FPN and diffusion decoders).

Both methods are separable linear maps, so the op is two contractions with constant
interpolation matrices built at trace time from the static sizes,
``y[n] = A_h x[n] A_w^T`` per channel, and the backward pass is the two transposed
contractions ``dx[n] = A_h^T dy[n] A_w``: nothing is saved for it. Nearest upsampling by
a whole factor is a broadcast forward and a block sum backward instead (no matmul).
Sampling follows ``jax.image.resize`` (half-pixel centres, PyTorch's
``align_corners=False``).
"""
from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet import _checks
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp

METHODS = ("nearest", "linear")
_ALIASES = {"bilinear": "linear"}


@lru_cache(maxsize=256)
def resize_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
    """The ``(out_size, in_size)`` float64 interpolation matrix of one axis.

    Output sample ``o`` sits at input coordinate ``u = (o + 1/2) in/out - 1/2``.
    ``'nearest'``: a one at column ``min(floor(u + 1/2), in - 1)``. ``'linear'``: the
    triangle weights ``max(0, 1 - |u - i|)``, each row divided by its sum, so a sample
    past the first or last pixel centre takes that pixel (as ``jax.image.resize`` without
    antialiasing and PyTorch's ``align_corners=False``).
    """
    u = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    if method == "nearest":
        a = np.zeros((out_size, in_size))
        a[np.arange(out_size), np.minimum(np.floor(u + 0.5), in_size - 1).astype(int)] = 1.0
        return a
    a = np.maximum(0.0, 1.0 - np.abs(u[:, None] - np.arange(in_size)[None, :]))
    return a / a.sum(axis=1, keepdims=True)


def check_resize_args(fn, x, size, method):
    """The checks of :func:`resize2d` (and its twin); returns ``((OH, OW), method)``."""
    _checks.check_float(fn, "x", x)
    _checks.check_rank(fn, "x", x, 4, "(N, H, W, C)")
    if isinstance(method, str):
        method = _ALIASES.get(method, method)
    method = _checks.static_choice(fn, "method", method, METHODS)
    size = _checks.normalize_pair(fn, "size", size)
    if 0 in x.shape[1:3]:
        raise ValueError(f"{fn}: x has shape {tuple(x.shape)}: an empty image (H or W = 0) "
                         "cannot be resized")
    return size, method


def _whole_factor(in_hw, size, method):
    """``(sh, sw)`` when nearest upsampling repeats every pixel a whole number of times."""
    if method != "nearest" or any(o % i for i, o in zip(in_hw, size)):
        return None
    return size[0] // in_hw[0], size[1] // in_hw[1]


def _apply(x, in_hw, size, method, transpose=False):
    """``A_h x A_w^T`` over the spatial axes (``transpose``: ``A_h^T x A_w``, from an
    ``(N, OH, OW, C)`` ``x`` back to ``in_hw``)."""
    a_h, a_w = (resize_matrix(i, o, method) for i, o in zip(in_hw, size))
    if transpose:
        a_h, a_w = a_h.T, a_w.T
    hi = lax.Precision.HIGHEST    # the weights are exact; no bf16 passes of x on TPU
    y = jnp.einsum("ph,nhwc->npwc", jnp.asarray(a_h, x.dtype), x, precision=hi)
    return jnp.einsum("qw,npwc->npqc", jnp.asarray(a_w, x.dtype), y, precision=hi)


def _resize_impl(x, size, method):
    n, h, w, c = x.shape
    rep = _whole_factor((h, w), size, method)
    if rep is not None:
        return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, rep[0], w, rep[1], c)) \
            .reshape(n, *size, c)
    return _apply(x, (h, w), size, method)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _resize2d(x, size, method):
    return _resize_impl(x, size, method)


def _resize2d_fwd(x, size, method):
    return _resize_impl(x, size, method), x.shape[1:3]


def _resize2d_bwd(size, method, in_hw, dy):
    rep = _whole_factor(in_hw, size, method)
    if rep is not None:
        n, _, _, c = dy.shape
        return (dy.reshape(n, in_hw[0], rep[0], in_hw[1], rep[1], c).sum(axis=(2, 4)),)
    return (_apply(dy, in_hw, size, method, transpose=True),)


defvjp(_resize2d, _resize2d_fwd, _resize2d_bwd)


@has_twin
def resize2d(x, size, method="linear"):
    """Resize ``(N, H, W, C)`` images to ``(N, OH, OW, C)`` (up or down, no antialiasing).

    Forward: ``y[n, :, :, c] = A_h x[n, :, :, c] A_w^T`` with the ``(OH, H)`` and
    ``(OW, W)`` interpolation matrices of :func:`resize_matrix`: output sample ``o`` sits
    at input coordinate ``u = (o + 1/2) H/OH - 1/2``; ``'nearest'`` copies the pixel
    ``floor(u + 1/2)``, ``'linear'`` (alias ``'bilinear'``) weighs the two pixels around
    ``u`` by ``1 - |u - i|`` (a sample outside the pixel centres takes the edge pixel).
    The values equal ``jax.image.resize(x, (N, OH, OW, C), method, antialias=False)`` and,
    when upsampling, ``antialias=True`` too (PyTorch's ``interpolate`` with
    ``'nearest-exact'`` / ``'bilinear', align_corners=False``; PyTorch's plain
    ``'nearest'`` samples ``floor(o H/OH)`` instead).

    Backward: ``dx[n, :, :, c] = A_h^T dy[n, :, :, c] A_w``: each input pixel gathers
    the output gradients it was blended into, with the same weights. For nearest
    upsampling by whole factors ``(sh, sw)`` the forward pass repeats each pixel in an
    ``sh x sw`` block and the backward pass sums each block of ``dy``.

    Residuals: none (the matrices are rebuilt from the static sizes).

    Args:
      x: ``(N, H, W, C)`` floating array, ``H, W >= 1``.
      size: int or ``(OH, OW)``, positive. Static.
      method: ``'linear'`` (default, alias ``'bilinear'``) or ``'nearest'``. Static.

    Returns:
      ``(N, OH, OW, C)`` array of ``x``'s dtype.

    Raises:
      ValueError: ``x`` not rank 4 or with an empty image, a size below 1, an unknown
        method.
      TypeError: non-floating ``x``, a size that is not an int or a pair of ints.

    References:
      Beyond the notes (a decoder's upsampling; Ronneberger et al. 2015, "U-Net"). See
      ``docs/formulas.md``, "Beyond the notes".
    """
    size, method = check_resize_args("resize2d", x, size, method)
    if tuple(x.shape[1:3]) == size:
        return x
    return _resize2d(x, size, method)
