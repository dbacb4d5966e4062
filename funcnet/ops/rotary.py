"""Rotary position embedding (RoPE) of queries and keys (beyond the notes).

Instead of adding a position vector to the input, RoPE rotates each pair of features of a
query or key by an angle proportional to the token's position. The dot product of a query
rotated for position ``m`` and a key rotated for position ``n`` then depends on the
positions only through ``m - n`` (Su et al. 2021): attention sees relative positions,
and a key rotated once can be cached and reused at every later decoding step.

The backward rule is the rotation by the opposite angle (a rotation's transpose is its
inverse), recomputed from the integer positions: no array of ``x``'s size is saved.

References:
  Su, Lu, Pan, Murtadha, Wen & Liu (2021), "RoFormer: Enhanced Transformer with Rotary
  Position Embedding", https://arxiv.org/abs/2104.09864.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.ops._arrays import compute_dtype, expand_leading
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp

__all__ = ["rotary_embedding"]

_LAYOUT = "(..., T, H, Dh)"


class Plan(NamedTuple):
    """Static facts of one call (hashable: a ``nondiff_argnums`` argument)."""

    base: float
    rotary_dim: int
    interleaved: bool

    def inverse_frequencies(self) -> np.ndarray:
        """``theta_i = base^(-2i / rotary_dim)``, ``i < rotary_dim / 2``, in float64."""
        return self.base ** (-np.arange(0, self.rotary_dim, 2, dtype=np.float64)
                             / self.rotary_dim)


def check_rotary_args(fn, x, positions, base, rotary_dim, interleaved) -> Plan:
    """Shared checks of ``rotary_embedding`` and its twin; returns the static :class:`Plan`."""
    _checks.check_float(fn, "x", x)
    _checks.check_min_rank(fn, "x", x, 3)
    shape = _checks.shape_of(x)
    dh = shape[-1]
    if rotary_dim is None:
        if dh % 2:
            raise ValueError(f"{fn}: rotary_dim defaults to the head size Dh = {dh} of x "
                             f"{shape}, which is odd; pass an even rotary_dim <= {dh}")
        rotary_dim = dh
    rotary_dim = _checks.static_int(fn, "rotary_dim", rotary_dim, minimum=2)
    if rotary_dim % 2:
        raise ValueError(f"{fn}: rotary_dim must be even (features are rotated in pairs), "
                         f"got {rotary_dim}")
    if rotary_dim > dh:
        raise ValueError(f"{fn}: rotary_dim is {rotary_dim}, expected at most the head size "
                         f"Dh = {dh} of x {shape} {_LAYOUT}")
    base = _checks.static_float(fn, "base", base, 1.0, low_inclusive=False)
    interleaved = _checks.static_bool(fn, "interleaved", interleaved)
    if positions is not None:
        _check_positions(fn, positions, shape)
    return Plan(base, rotary_dim, interleaved)


def _check_positions(fn, positions, xs):
    """Integer ``(*B, T)`` with ``T`` the sequence axis of ``x`` and ``*B`` broadcastable
    to ``x``'s batch axes ``xs[:-3]`` (each size 1 or equal)."""
    _checks.check_integer(fn, "positions", positions, "token positions")
    ps, t = _checks.shape_of(positions), xs[-3]
    batch = xs[:-3]
    want = f"(..., T) with T = {t} (axis -3 of x {xs} {_LAYOUT})"
    if not ps or ps[-1] != t:
        raise ValueError(f"{fn}: positions has shape {ps}, expected {want}")
    lead = ps[:-1]
    if len(lead) > len(batch) or any(p not in (1, b) for p, b in zip(lead[::-1], batch[::-1])):
        raise ValueError(f"{fn}: positions has shape {ps}, expected {want}, its leading "
                         f"axes broadcastable to the batch axes {batch} of x (each size 1 "
                         "or equal)")


def rotary_tables(positions, t: int, plan: Plan, dtype, ndim: int):
    """``cos(p theta)``, ``sin(p theta)`` of shape ``(..., T, 1, rotary_dim / 2)`` (rank
    ``ndim``, unit axes where ``x`` has batch axes that ``positions`` lacks) in ``dtype``.

    ``positions=None`` means ``arange(T)``. Integer positions become ``dtype`` exactly up
    to ``2^24`` (float32) before the product with ``theta`` (rounded once from float64).
    """
    p = jnp.arange(t, dtype=dtype) if positions is None else jnp.asarray(positions).astype(dtype)
    theta = jnp.asarray(plan.inverse_frequencies(), dtype)
    angles = p[..., None, None] * expand_leading(theta, p.ndim + 2)
    angles = expand_leading(angles, ndim)
    return jnp.cos(angles), jnp.sin(angles)


def rotate(x, cos, sin, plan: Plan):
    """Rotate the pairs of the first ``rotary_dim`` features of ``x`` by the angles whose
    cosine and sine are given (in their dtype), pass the rest through; ``x``'s dtype."""
    d, half = plan.rotary_dim, plan.rotary_dim // 2
    rot = x[..., :d].astype(cos.dtype)
    if plan.interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., :half], rot[..., half:]
    y1, y2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    if plan.interleaved:
        y = jnp.stack([y1, y2], axis=-1).reshape(rot.shape)
    else:
        y = jnp.concatenate([y1, y2], axis=-1)
    y = y.astype(x.dtype)
    return y if d == x.shape[-1] else jnp.concatenate([y, x[..., d:]], axis=-1)


def rotary_forward(x, positions, plan: Plan):
    """``y`` of the docstring (shared by the op and its twin)."""
    cos, sin = rotary_tables(positions, x.shape[-3], plan, compute_dtype(x.dtype), x.ndim)
    return rotate(x, cos, sin, plan)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rotary(x, positions, plan):
    return rotary_forward(x, positions, plan)


def _rotary_fwd(x, positions, plan):
    return rotary_forward(x, positions, plan), positions


def _rotary_bwd(plan, positions, g):
    cos, sin = rotary_tables(positions, g.shape[-3], plan, compute_dtype(g.dtype), g.ndim)
    return rotate(g, cos, -sin, plan), None


defvjp(_rotary, _rotary_fwd, _rotary_bwd)


@has_twin
def rotary_embedding(x, positions=None, *, base: float = 10000.0, rotary_dim=None,
                     interleaved: bool = False):
    r"""Rotary position embedding (RoPE, Su et al. 2021) of queries or keys.

    ``x`` has the per-head layout of :func:`funcnet.ops.dot_product_attention`'s ``q`` and
    ``k``: ``(..., T, H, Dh)`` (``T`` tokens, ``H`` heads, ``Dh`` features per head). A
    tensor without a head axis is passed as ``x[..., None, :]``: a rank-3 ``x`` is always
    ``(T, H, Dh)``, never ``(B, T, Dh)``, since the two cannot be told apart when ``T``
    equals ``H``. With ``d = rotary_dim`` and position ``p`` of the token::

        theta_i = base^(-2i/d),   a_i = p theta_i                  (i = 0 .. d/2 - 1)
        (y_u, y_v) = (x_u cos a_i - x_v sin a_i,  x_v cos a_i + x_u sin a_i)
        y_j = x_j                                                   (j >= d)

    over the pairs ``(u, v) = (i, i + d/2)`` (``interleaved=False``: "rotate half", Hugging
    Face Llama/Mistral, GPT-NeoX) or ``(u, v) = (2i, 2i + 1)`` (``interleaved=True``: the
    paper, GPT-J, Meta's original Llama, where ``x_u + i x_v`` is multiplied by
    ``exp(i a_i)``). In vector form ``y = x cos(a) + R(x) sin(a)`` with ``R(x)_u = -x_v``,
    ``R(x)_v = x_u``. The two layouts are one permutation of the features apart: with
    ``perm = [0, 2, .., d-2, 1, 3, .., d-1]``, ``rope_half(x[perm]) = rope_interleaved(x)[perm]``
    (how converted Llama checkpoints permute the rows of ``W_q``, ``W_k``). ``d < Dh`` is
    GPT-NeoX's partial rotary (``rotary_pct``): the last ``Dh - d`` features pass through.

    Each pair is rotated by ``a_i``, so ``|y| = |x|`` per pair, ``p = 0`` is the identity,
    and for ``q`` at position ``m`` and ``k`` at ``n``,
    ``<rope(q, m), rope(k, n)> = <rope(q, m - n), k>``: attention logits depend on
    relative positions only.

    Backward, the rotation by ``-a`` (the transpose of a rotation; no cotangent for the
    integer positions)::

        (dx_u, dx_v) = (g_u cos a_i + g_v sin a_i,  g_v cos a_i - g_u sin a_i),  dx_j = g_j

    i.e. ``dx = g cos(a) - R(g sin(a))``. Residuals: ``positions`` only (one integer per
    token and batch row of ``positions``; nothing for ``positions=None``); ``cos``/``sin``
    are recomputed from them in the backward pass (``d`` transcendentals per token and
    batch row of ``positions``, shared by all heads). Autodiff of the twin keeps both
    ``(..., T, 1, d/2)`` tables in the compute dtype instead: ``d`` floats per token.

    Precision: angles, ``cos``/``sin`` and the rotation run in
    ``promote_types(x.dtype, float32)`` (float64 stays float64); the result is cast to
    ``x``'s dtype. So bfloat16 queries at position 4096 are rotated by the float32 angle
    (an error of a few 1e-4 rad) rather than a bfloat16 one (positions 4096 and 4097 are the same
    bfloat16 number). Positions are exact in float32 up to ``2^24``.

    Args:
      x: ``(..., T, H, Dh)`` floating array, rank >= 3.
      positions: integer array ``(..., T)`` of token positions, its leading axes
        broadcastable to ``x``'s batch axes ``x.shape[:-3]`` (each size 1 or equal):
        ``(T,)`` for every sequence, ``(B, T)`` per sequence (left-padded batches, or
        decoding with a KV cache where the new tokens sit at offset ``index``:
        ``index + arange(T)``). ``None``: ``arange(T)``. Any values (negative too).
      base: static Python float > 1, the wavelength base (10000 in the paper and Llama 2;
        500000 in Llama 3, 1000000 in Code Llama).
      rotary_dim: static even int in ``[2, Dh]``, the number of rotated features (the
        first ones); default ``Dh`` (which must then be even).
      interleaved: static bool, the pair layout (above).

    Returns:
      ``y`` of ``x``'s shape and dtype.

    Raises:
      ValueError: ``x`` of rank < 3; ``rotary_dim`` odd, < 2 or > ``Dh`` (or ``Dh`` odd
        with the default); ``positions`` whose last axis is not ``T`` or whose leading
        axes do not broadcast to ``x``'s batch axes; ``base <= 1``, NaN or inf.
      TypeError: non-floating ``x``; non-integer ``positions`` (token indices: a float
        array there is most likely another argument passed by mistake, and bfloat16
        positions are already rounded above 256); a non-static or non-int
        ``rotary_dim``, non-float ``base``, non-bool ``interleaved``.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import ops
      >>> q = jnp.ones((2, 6, 4, 8), jnp.float32)               # (B, T, H, Dh)
      >>> ops.rotary_embedding(q, jnp.arange(6) + 10).shape     # tokens at 10 .. 15
      (2, 6, 4, 8)
      >>> bool(jnp.allclose(ops.rotary_embedding(q, jnp.zeros(6, jnp.int32)), q))
      True

    References:
      Su et al. (2021), RoFormer, https://arxiv.org/abs/2104.09864. Black et al.
      (2022), GPT-NeoX-20B, https://arxiv.org/abs/2204.06745 (partial rotary).
      ``docs/formulas.md``, "Beyond the notes".
    """
    plan = check_rotary_args("rotary_embedding", x, positions, base, rotary_dim, interleaved)
    return _rotary(x, None if positions is None else jnp.asarray(positions), plan)
