"""Sliding-window helpers shared by ``conv`` and ``pool`` (and their reference twins).

The static parsing of window, stride and padding arguments is
:func:`funcnet._checks.normalize_pair` / :func:`funcnet._checks.normalize_padding`; this
module resolves ``'SAME'`` padding and the output size from the input shape, and holds
the two array helpers that every windowed backward rule here is built from:

* :func:`window_slices` -- im2col without a gather: the ``KH*KW`` strided slices
  ``x[:, i : i + s*(OH-1)+1 : s, j : ..., :]`` of the (padded) input, one per window
  offset ``(i, j)`` in row-major order.
* :func:`col2im` -- the transpose of :func:`window_slices` composed with the padding:
  it places each offset's ``(N, OH, OW, C)`` piece back at rows ``i - pad_lo + s*oh``
  with one ``lax.pad`` (interior padding ``s - 1`` spreads the stride, negative edge
  padding crops the zero padding away) and sums the pieces. XLA fuses the sum into one
  loop, so this is the cheap CPU replacement for a transposed convolution.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet import _checks


def resolve_padding(fn: str, padding, in_hw, window, stride):
    """Padding spec -> ``((lo_h, hi_h), (lo_w, hi_w))`` of non-negative Python ints.

    The static parsing is :func:`funcnet._checks.normalize_padding` (ints, pairs, pairs of
    ``(lo, hi)`` pairs, ``'VALID'``, ``'SAME'``); this resolves ``'SAME'``, whose sizes
    depend on the input: output size ``ceil(in / stride)``, the extra row/column going to
    the high side, as in ``lax.padtype_to_pads``.
    """
    pads = _checks.normalize_padding(fn, padding)
    if pads == "SAME":
        pads = lax.padtype_to_pads(tuple(in_hw), tuple(window), tuple(stride), "SAME")
        return tuple((int(lo), int(hi)) for lo, hi in pads)
    return pads


def extent(window, dilation) -> tuple[int, int]:
    """The span ``d (k - 1) + 1`` of a window ``k`` dilated by ``d``, per spatial dim."""
    return tuple(d * (k - 1) + 1 for d, k in zip(dilation, window))


def output_hw(fn: str, x_shape, window, stride, pads, what="window") -> tuple[int, int]:
    """``OH = (H + lo + hi - KH) // s + 1`` per spatial dim; ValueError if < 1."""
    out = []
    for size, k, s, (lo, hi) in zip(x_shape[1:3], window, stride, pads):
        padded = size + lo + hi
        if padded < k:
            raise ValueError(
                f"{fn}: {what} {tuple(window)} is larger than the padded input "
                f"{(x_shape[1] + sum(pads[0]), x_shape[2] + sum(pads[1]))} of x {tuple(x_shape)}")
        out.append((padded - k) // s + 1)
    return tuple(out)


def pad_hw(x, pads, value=0.0):
    """Pad the two spatial axes of an NHWC array with ``value``."""
    if not any(lo or hi for lo, hi in pads):
        return x
    cfg = ((0, 0, 0), (pads[0][0], pads[0][1], 0), (pads[1][0], pads[1][1], 0), (0, 0, 0))
    return lax.pad(x, jnp.asarray(value, x.dtype), cfg)


def window_slices(xp, window, stride, out_hw, dilation=(1, 1)):
    """The ``KH*KW`` strided slices of padded ``xp``, row-major over ``(i, j)``.

    Slice ``(i, j)`` has shape ``(N, OH, OW, C)`` and holds ``xp[n, d_h*i + s_h*oh,
    d_w*j + s_w*ow, c]`` (``dilation`` ``(d_h, d_w)`` spaces the window's taps).
    """
    (kh, kw), (sh, sw), (oh, ow), (dh, dw) = window, stride, out_hw, dilation
    n, _, _, c = xp.shape
    return [lax.slice(xp, (0, dh * i, dw * j, 0),
                      (n, dh * i + sh * (oh - 1) + 1, dw * j + sw * (ow - 1) + 1, c),
                      (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]


def col2im(pieces, window, stride, pads, in_hw, dilation=(1, 1)):
    """Transpose of ``window_slices(pad_hw(x, pads), ...)``: sum pieces back into x.

    Args:
      pieces: ``KH*KW`` arrays ``(N, OH, OW, C)``, row-major over the window offsets.
      window, stride: ``(KH, KW)``, ``(SH, SW)``.
      pads: ``((lo_h, hi_h), (lo_w, hi_w))`` padding that was applied to x.
      in_hw: ``(H, W)`` of the unpadded x.
      dilation: ``(DH, DW)`` of the slices (default ``(1, 1)``).

    Returns:
      ``(N, H, W, C)``: ``dx[n, h, w, c] = sum over (i, j, oh, ow) with
      h = DH*i - lo_h + SH*oh, w = DW*j - lo_w + SW*ow of pieces[(i, j)][n, oh, ow, c]``.
    """
    (kh, kw), (sh, sw) = window, stride
    _, oh, ow, _ = pieces[0].shape
    total = None
    for idx, piece in enumerate(pieces):
        i, j = divmod(idx, kw)
        lo_h, lo_w = dilation[0] * i - pads[0][0], dilation[1] * j - pads[1][0]
        cfg = ((0, 0, 0),
               (lo_h, in_hw[0] - lo_h - sh * (oh - 1) - 1, sh - 1),
               (lo_w, in_hw[1] - lo_w - sw * (ow - 1) - 1, sw - 1),
               (0, 0, 0))
        placed = lax.pad(piece, jnp.zeros((), piece.dtype), cfg)
        total = placed if total is None else total + placed
    return total
