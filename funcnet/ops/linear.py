"""Matrix product and affine primitives (notes 002 and 004).

Row-vector convention: ``x`` is ``(..., D)``, ``w`` is ``(D, H)``; any number of leading
axes is allowed and is treated as the batch. The backward rules are the notes' formulas
``dx = dy W^T``, ``dW = x^T dy``, ``db = sum(dy)``, with every leading axis contracted as
the batch, so each is one matmul. The rules are written as contractions (no transposed
copies), so under a mesh a sharded ``w`` is gathered once for the forward and the backward,
and their cotangents are typed for ``shard_map`` (``funcnet/ops/_mesh.py``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_rows, expand_leading, rows_sum, rows_t_dot
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def check_matmul_args(fn: str, x, w) -> None:
    """The checks of :func:`matmul` (and its twin). Zero sizes are allowed (empty batch,
    ``D = 0``: a sum over nothing is 0, ``H = 0``: an empty output)."""
    _checks.check_float(fn, "x", x)
    _checks.check_float(fn, "w", w)
    _checks.check_min_rank(fn, "x", x, 1)
    _checks.check_rank(fn, "w", w, 2, "(D, H)")
    _checks.check_same_dtype(fn, "x", x, "w", w)
    if x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{fn}: x has shape {tuple(x.shape)} and w has shape {tuple(w.shape)}; the last "
            f"axis of x ({x.shape[-1]}) must equal the first axis of w ({w.shape[0]})")


def check_affine_args(fn: str, x, w, b) -> None:
    """The checks of :func:`affine` (and its twin)."""
    check_matmul_args(fn, x, w)
    _checks.check_float(fn, "b", b)
    _checks.check_shape(fn, "b", b, (w.shape[1],),
                        f"one bias per output column of w {tuple(w.shape)}")
    _checks.check_same_dtype(fn, "x", x, "b", b)


@jax.custom_vjp
def _matmul(x, w):
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _matmul_bwd(res, g):
    x, w = res
    # dx = dy W^T and dW = x^T dy as contractions, without materialised transposes: a
    # weight sharded over a mesh is then gathered once for the forward and the backward.
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    return dx, rows_t_dot(x, as_rows(g), w)


defvjp(_matmul, _matmul_fwd, _matmul_bwd)


@has_twin
def matmul(x, w):
    """Matrix product ``y = x @ w`` with the notes' backward rule.

    Forward (note 002, "MatMul"): ``y = x W``.
    Backward: ``dx = dy W^T``, ``dW = x^T dy`` where every leading axis of ``x`` and
    ``dy`` is contracted as one batch axis. Residuals: ``x`` and ``w``.

    Args:
      x: ``(..., D)`` floating array.
      w: ``(D, H)`` array of the same dtype.

    Returns:
      ``(..., H)``.

    Raises:
      ValueError: ``w`` is not rank 2 or ``x.shape[-1] != w.shape[0]``.
      TypeError: non-floating inputs or mismatched dtypes.

    See ``docs/formulas.md`` (MatMul).
    """
    check_matmul_args("matmul", x, w)
    return _matmul(x, w)


def _affine_forward(x, w, b):
    y = x @ w
    return y + expand_leading(b, y.ndim)


@jax.custom_vjp
def _affine(x, w, b):
    return _affine_forward(x, w, b)


def _affine_fwd(x, w, b):
    return _affine_forward(x, w, b), (x, w)


def _affine_bwd(res, g):
    x, w = res
    dx, dw = _matmul_bwd(res, g)
    db = rows_sum(as_rows(g))
    return dx, dw, db


defvjp(_affine, _affine_fwd, _affine_bwd)


@has_twin
def affine(x, w, b):
    """Affine map ``y = x @ w + b`` (the Affine / Dense layer of notes 002 and 004).

    Backward (note 002): ``dx = dy W^T``, ``dW = x^T dy``, ``db = sum_n dy_n`` where the sum
    runs over every leading axis of ``dy``. Note 004 writes ``dE/dB = dE/dY`` for a single
    row; over a batch the rows are summed. Residuals: ``x`` and ``w`` (not ``b``).

    Args:
      x: ``(..., D)`` floating array.
      w: ``(D, H)``, same dtype.
      b: ``(H,)``, same dtype. No broadcasting of other shapes.

    Returns:
      ``(..., H)``.

    Raises:
      ValueError: shape mismatch between ``x``, ``w`` and ``b``.
      TypeError: non-floating inputs or mismatched dtypes.

    See ``docs/formulas.md`` (Affine).
    """
    check_affine_args("affine", x, w, b)
    return _affine(x, w, b)
