"""2-D max and average pooling primitives, NHWC (note 003, "Pooling layer").

Both ops have two lowerings, chosen at trace time from the static geometry (one tested
code path each):

* reshape path, when ``stride == window`` and there is no padding (the common case):
  ``x`` is cropped to whole windows and viewed as ``(N, OH, KH, OW, KW, C)``, so the
  forward pass is a reduction over two axes and the backward pass an elementwise select
  reshaped back (no scatter). Max pooling's argmax for the backward pass is taken per
  platform (``lax.platform_dependent``): on CPU over the windows transposed last, elsewhere
  in one elementwise pass over the window's strided slices (the transpose and the gather
  made the book CNN 2x slower on an H200); both give the same ``y`` and argmax.
* general path: the ``KH*KW`` strided slices of the padded input
  (:func:`funcnet.ops._window.window_slices`) are combined elementwise, and the backward
  pass places the per-offset pieces back with :func:`funcnet.ops._window.col2im`.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.ops import _window
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def check_pool_args(fn, x, window, stride, padding):
    """The checks of the pooling ops (and their twins); returns the static geometry
    ``(window, stride, pads, in_hw)``. An empty batch or ``C = 0`` is computed."""
    _checks.check_float(fn, "x", x)
    _checks.check_rank(fn, "x", x, 4, "(N, H, W, C)")
    window = _checks.normalize_pair(fn, "window", window)
    stride = window if stride is None else _checks.normalize_pair(fn, "stride", stride)
    pads = _window.resolve_padding(fn, padding, x.shape[1:3], window, stride)
    for (lo, hi), k in zip(pads, window):
        if max(lo, hi) >= k:
            raise ValueError(
                f"{fn}: padding {pads} must be smaller than the window {window} on every "
                "side, so that every window holds at least one element of x")
    _window.output_hw(fn, x.shape, window, stride, pads)
    return window, stride, pads, tuple(x.shape[1:3])


def _is_reshape_path(geom) -> bool:
    window, stride, pads, _ = geom
    return window == stride and pads == ((0, 0), (0, 0))


def _blocks(x, geom):
    """Reshape path: crop to whole windows, view as ``(N, OH, KH, OW, KW, C)``."""
    (kh, kw), _, _, (h, w) = geom
    oh, ow = h // kh, w // kw
    n, _, _, c = x.shape
    return x[:, :oh * kh, :ow * kw, :].reshape(n, oh, kh, ow, kw, c)


def _unblock(blocks, geom):
    """Inverse of :func:`_blocks`: ``(N, OH, KH, OW, KW, C)`` -> ``(N, H, W, C)``, zeros
    for the cropped rows/columns."""
    n, oh, kh, ow, kw, c = blocks.shape
    h, w = geom[3]
    dx = blocks.reshape(n, oh * kh, ow * kw, c)
    return _window.pad_hw(dx, ((0, h - oh * kh), (0, w - ow * kw)))


def _offsets(geom):
    """Row-major window offsets ``k = i*KW + j`` laid out like :func:`_blocks` output."""
    (kh, kw) = geom[0]
    return (lax.broadcasted_iota(jnp.int32, (1, 1, kh, 1, kw, 1), 2) * kw
            + lax.broadcasted_iota(jnp.int32, (1, 1, kh, 1, kw, 1), 4))


def _index_dtype(geom):
    kh, kw = geom[0]
    return jnp.int8 if kh * kw <= 127 else jnp.int32


# ----------------------------------------------------------------------------- max pool

def _max_pool_slices(x, geom):
    """``(y, idx)`` in one elementwise pass over the ``KH*KW`` strided slices of the
    padded input: the general path on every platform, and the reshape path off CPU (no
    transpose of the window axes, no argmax over them and no gather: on an H200 those
    made the book CNN's max-pool forward+backward 3.3x XLA's own at batch 4096)."""
    window, stride, pads, _ = geom
    xp = _window.pad_hw(x, pads, -jnp.inf)
    slices = _window.window_slices(xp, window, stride,
                                   _window.output_hw("max_pool2d", x.shape, window, stride, pads))
    y, idx = slices[0], jnp.zeros(slices[0].shape, _index_dtype(geom))
    for k, s in enumerate(slices[1:], start=1):
        # strict '>': the earliest offset wins ties; the first NaN wins, as in jnp.max
        better = (s > y) | (jnp.isnan(s) & ~jnp.isnan(y))
        y = jnp.where(better, s, y)
        idx = jnp.where(better, jnp.asarray(k, idx.dtype), idx)
    return y, idx


def _max_pool_blocks(x, geom):
    """``(y, idx)`` on the reshape path on CPU: the windows transposed last, one argmax
    (the first maximum, or the first NaN, as ``jnp.max``) and a take of its value.

    On a 2-core XLA:CPU (``python -m benchmarks.pool_lowering``, forward and backward)
    this takes 0.16-1.0x the slice pass's time on most shapes (the book CNN's pool 0.42-0.5x
    at batch 100 and 0.8x at 4096, 3x3 windows 0.2-0.7x, 8 channels 0.16x) and at worst
    1.1-1.45x (16-128 channels at some sizes): the slice pass's time swings with the
    channel count (6x slower at 8 channels than at 24), this one's does not, so the CPU
    keeps it for every shape."""
    xb = _blocks(x, geom)                                       # (N, OH, KH, OW, KW, C)
    n, oh, kh, ow, kw, c = xb.shape
    xw = xb.transpose(0, 1, 3, 5, 2, 4).reshape(n, oh, ow, c, kh * kw)
    idx = jnp.argmax(xw, axis=-1)
    y = jnp.take_along_axis(xw, idx[..., None], axis=-1, mode="promise_in_bounds")
    return y[..., 0], idx.astype(_index_dtype(geom))


def reshape_lowering(platform: str) -> str:
    """The reshape path's forward lowering on ``platform``: ``"blocks"`` on CPU,
    ``"slices"`` elsewhere (``benchmarks/pool_lowering.py`` times both per shape)."""
    return "blocks" if platform == "cpu" else "slices"


RESHAPE_LOWERINGS = {"blocks": _max_pool_blocks, "slices": _max_pool_slices}


def _max_pool_fwd_impl(x, geom):
    """Returns ``(y, idx)``; ``idx`` is the first row-major offset holding the max.

    ``y`` is the element at ``idx`` itself (a selection), so its forward-mode
    derivative, which ``jax.hessian`` takes of this rule, is ``dx`` at the first maximum
    as in the backward rule (``jnp.max``'s averages over tied maxima, which made the
    second derivative at ties asymmetric and unequal to the twin's). The reshape path
    picks its lowering per platform (``lax.platform_dependent``); both give the same
    ``y`` and ``idx``.
    """
    if _is_reshape_path(geom):
        cpu, other = (RESHAPE_LOWERINGS[reshape_lowering(p)] for p in ("cpu", "default"))
        return lax.platform_dependent(x, cpu=partial(cpu, geom=geom),
                                      default=partial(other, geom=geom))
    return _max_pool_slices(x, geom)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool2d(x, geom):
    # the value alone (not differentiated): a max over each window, with no argmax to
    # compute and select by (the same numbers as the rule's selection)
    if _is_reshape_path(geom):
        return jnp.max(_blocks(x, geom), axis=(2, 4))
    return _max_pool_fwd_impl(x, geom)[0]


def _max_pool2d_fwd(x, geom):
    return _max_pool_fwd_impl(x, geom)          # (y, residual idx)


def _max_pool2d_bwd(geom, idx, dy):
    window, stride, pads, in_hw = geom
    zero = jnp.zeros((), dy.dtype)
    if _is_reshape_path(geom):
        hit = _offsets(geom) == idx[:, :, None, :, None, :].astype(jnp.int32)
        return (_unblock(jnp.where(hit, dy[:, :, None, :, None, :], zero), geom),)
    pieces = [jnp.where(idx == k, dy, zero) for k in range(window[0] * window[1])]
    return (_window.col2im(pieces, window, stride, pads, in_hw),)


defvjp(_max_pool2d, _max_pool2d_fwd, _max_pool2d_bwd)


@has_twin
def max_pool2d(x, window=2, stride=None, padding=0):
    """Max pooling over ``KH x KW`` windows (note 003, Pooling layer; "max routes").

    Forward: ``y[n, oh, ow, c] = max_{i, j} xp[n, sh*oh + i, sw*ow + j, c]`` where ``xp``
    is ``x`` padded with ``-inf`` (padding never wins).

    Backward: the whole ``dy[n, oh, ow, c]`` goes to ONE input position, the argmax
    ``(i*, j*)`` of its window: ``dx[n, sh*oh + i* - lo_h, sw*ow + j* - lo_w, c] +=
    dy[n, oh, ow, c]`` (overlapping windows add up). Ties: the FIRST maximum in row-major
    window order (smallest ``i``, then smallest ``j``) gets the gradient. JAX's own
    gradient of ``lax.reduce_window`` may choose another element at ties; second order
    (``jax.hessian``) follows the same first-maximum rule. A NaN in a window propagates
    to ``y`` (as ``jnp.max``) and its first NaN gets the gradient.

    Residuals: only the argmax offset ``i*KW + j`` per output, ``(N, OH, OW, C)`` int8
    (int32 for windows of more than 127 elements).

    Args:
      x: ``(N, H, W, C)`` floating array.
      window: int or ``(KH, KW)``. Static.
      stride: int, ``(SH, SW)`` or ``None`` (= window). Static.
      padding: int, pair, pair of ``(lo, hi)`` pairs, ``'VALID'`` or ``'SAME'``; every
        pad must be smaller than the window. Static.

    Returns:
      ``(N, OH, OW, C)`` with ``OH = (H + lo + hi - KH) // SH + 1``.

    Raises:
      ValueError: ``x`` not rank 4, non-positive window/stride, padding >= window,
        window larger than the padded input.
      TypeError: non-floating ``x``, malformed window/stride/padding.

    References:
      Note 003 section 7; note 001 ("max routes the gradient").
      See ``docs/formulas.md``.
    """
    geom = check_pool_args("max_pool2d", x, window, stride, padding)
    return _max_pool2d(x, geom)


# ----------------------------------------------------------------------------- avg pool

def _avg_pool_impl(x, geom):
    window, stride, pads, _ = geom
    count = window[0] * window[1]
    if _is_reshape_path(geom):
        return jnp.sum(_blocks(x, geom), axis=(2, 4)) / count
    slices = _window.window_slices(_window.pad_hw(x, pads), window, stride,
                                   _window.output_hw("avg_pool2d", x.shape, window, stride, pads))
    return sum(slices[1:], slices[0]) / count


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _avg_pool2d(x, geom):
    return _avg_pool_impl(x, geom)


def _avg_pool2d_fwd(x, geom):
    return _avg_pool_impl(x, geom), None


def _avg_pool2d_bwd(geom, res, dy):
    del res
    window, stride, pads, in_hw = geom
    g = dy / (window[0] * window[1])
    if _is_reshape_path(geom):
        n, oh, ow, c = dy.shape
        blocks = jnp.broadcast_to(g[:, :, None, :, None, :], (n, oh, window[0], ow, window[1], c))
        return (_unblock(blocks, geom),)
    return (_window.col2im([g] * (window[0] * window[1]), window, stride, pads, in_hw),)


defvjp(_avg_pool2d, _avg_pool2d_fwd, _avg_pool2d_bwd)


@has_twin
def avg_pool2d(x, window=2, stride=None, padding=0):
    """Average pooling over ``KH x KW`` windows; padding counts as zeros.

    Forward: ``y[n, oh, ow, c] = (1 / (KH*KW)) sum_{i, j} xp[n, sh*oh + i, sw*ow + j, c]``
    with ``xp`` the ZERO-padded input: the divisor is always ``KH*KW``, padded positions
    included (PyTorch's default ``count_include_pad=True``; TensorFlow's 'SAME' average
    excludes them instead).

    Backward: every position of a window receives ``dy / (KH*KW)``:
    ``dx[n, sh*oh + i - lo_h, sw*ow + j - lo_w, c] += dy[n, oh, ow, c] / (KH*KW)``
    (contributions to the padding are dropped). No ties. Residuals: none (the op is
    linear; only the static geometry is kept).

    Args:
      x: ``(N, H, W, C)`` floating array.
      window, stride, padding: as in :func:`max_pool2d`. Static.

    Returns:
      ``(N, OH, OW, C)``.

    Raises:
      ValueError, TypeError: as in :func:`max_pool2d`.

    References:
      Note 003 section 7. See ``docs/formulas.md``.
    """
    geom = check_pool_args("avg_pool2d", x, window, stride, padding)
    return _avg_pool2d(x, geom)
