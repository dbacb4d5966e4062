"""Plain-JAX twins of :func:`funcnet.ops.max_pool2d` / :func:`funcnet.ops.avg_pool2d`.

Built on ``lax.reduce_window`` and differentiated by JAX. Same names, signatures, checks
and forward numbers. At tied maxima JAX's gradient may pick another element than
funcnet's documented rule (first maximum in row-major window order), so tie tests use
:func:`max_pool2d_tie_rule_grad` below instead.
"""
from __future__ import annotations

import numpy as np
from jax import lax

from funcnet.ops.pool import check_pool_args


def _reduce(x, init, op, geom):
    window, stride, pads, _ = geom
    # a NumPy (not traced) init value, so lax picks the differentiable monoid reducer
    return lax.reduce_window(x, np.asarray(init, x.dtype), op, (1, *window, 1),
                             (1, *stride, 1), ((0, 0), *pads, (0, 0)))


def max_pool2d(x, window=2, stride=None, padding=0):
    """Reference max pooling (``-inf`` padding); see :func:`funcnet.ops.max_pool2d`."""
    geom = check_pool_args("max_pool2d", x, window, stride, padding)
    return _reduce(x, -np.inf, lax.max, geom)


def avg_pool2d(x, window=2, stride=None, padding=0):
    """Reference average pooling, zero padding counted (divisor ``KH*KW``)."""
    geom = check_pool_args("avg_pool2d", x, window, stride, padding)
    return _reduce(x, 0.0, lax.add, geom) / (geom[0][0] * geom[0][1])


def max_pool2d_tie_rule_grad(x, dy, window=2, stride=None, padding=0):
    """NumPy loops implementing funcnet's max-pool backward rule, ties included.

    For each output ``(n, oh, ow, c)`` the whole ``dy`` goes to the first maximum of the
    window in row-major order (padding is ``-inf`` and never chosen).

    Args:
      x: ``(N, H, W, C)``; dy: ``(N, OH, OW, C)`` (NumPy-convertible, concrete).

    Returns:
      ``dx``: ``(N, H, W, C)`` NumPy array.
    """
    (kh, kw), (sh, sw), ((lh, hh), (lw, hw)), _ = check_pool_args(
        "max_pool2d", x, window, stride, padding)
    x, dy = np.asarray(x), np.asarray(dy)
    xp = np.pad(x, ((0, 0), (lh, hh), (lw, hw), (0, 0)), constant_values=-np.inf)
    dxp = np.zeros_like(xp)
    n_, oh_, ow_, c_ = dy.shape
    for n in range(n_):
        for oh in range(oh_):
            for ow in range(ow_):
                for c in range(c_):
                    win = xp[n, sh * oh:sh * oh + kh, sw * ow:sw * ow + kw, c]
                    i, j = divmod(int(np.argmax(win)), kw)   # argmax: first occurrence
                    dxp[n, sh * oh + i, sw * ow + j, c] += dy[n, oh, ow, c]
    return dxp[:, lh:lh + x.shape[1], lw:lw + x.shape[2], :]
