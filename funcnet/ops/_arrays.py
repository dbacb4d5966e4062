"""Array helpers shared by the ops and their reference twins (no argument checks here).

Every helper is plain ``jnp``/``lax`` code on static shapes, so it works under ``jit``,
``vmap`` and every autodiff mode, and never relies on implicit rank or dtype promotion
(the test suite runs with ``jax_numpy_rank_promotion="raise"`` and strict promotion).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._mesh import explicit_sharding

compute_dtype = _checks.compute_dtype   # at least float32 (one source, in _checks)


def as_array(x):
    """``x`` itself if it is an array (NumPy, JAX, tracer), else ``jnp.asarray(x)``.

    For the Python numbers that :func:`funcnet._checks.check_float` accepts.
    """
    return x if hasattr(x, "dtype") and hasattr(x, "shape") else jnp.asarray(x)


def einsum(spec: str, a, b, dtype):
    """``jnp.einsum(spec, a, b)`` accumulated and returned in ``dtype`` (float32 for
    half-precision operands).

    Accelerators get ``preferred_element_type=dtype`` (half-precision matrix units, f32
    accumulation). XLA:CPU in JAX 0.8 has no ``bf16 x bf16 -> f32`` dot kernel ("Unsupported
    element type for DotThunk"), so on CPU the operands are cast to ``dtype`` first; the
    products of two half-precision numbers are exact in float32, so both give the same
    result up to the order of the sums.
    """
    if a.dtype == dtype and b.dtype == dtype:
        return jnp.einsum(spec, a, b)
    return jax.lax.platform_dependent(
        a, b, cpu=lambda a, b: jnp.einsum(spec, a.astype(dtype), b.astype(dtype)),
        default=lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=dtype))


def flat(a):
    """``(..., K) -> (prod(...), K)``, also when ``K == 0`` (``reshape(-1, 0)`` is not)."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def as_rows(a):
    """``flat(a)``: the rows ``(prod(...), K)`` of a ``(..., K)`` array (a batch, or the
    ``T*N`` steps of a time-major ``(T, N, K)`` one), for a backward rule's products over
    all of them at once; ``a`` itself on a mesh with ``Explicit`` axes, where a split axis
    other than the first cannot be merged into one (the products then contract every
    leading axis: ``@`` on the last axis, :func:`rows_t_dot`, :func:`rows_sum`)."""
    return a if explicit_sharding(a) is not None else flat(a)


def rows_t_dot(a, rows, w):
    """The gradient of the weight ``w``: ``a^T rows`` summed over every leading axis
    (``a`` ``(..., K)``, ``rows`` from :func:`as_rows`), written as a contraction without
    a materialised transpose. On a mesh with ``Explicit`` axes it contracts the split
    batch axis, so it is given ``w``'s sharding, which JAX cannot infer there."""
    lead = tuple(range(rows.ndim - 1))
    return jax.lax.dot_general(flat(a) if rows.ndim == 2 else a, rows,
                               ((lead, lead), ((), ())), out_sharding=explicit_sharding(w))


def rows_sum(rows):
    """The gradient of a bias: ``rows`` (from :func:`as_rows`) summed over every leading
    axis."""
    return jnp.sum(rows, axis=tuple(range(rows.ndim - 1)))


def project(xs, w, b):
    """``xs @ w + b`` for every step of a time-major ``(T, N, D)`` input at once, as one
    ``(T*N, D) @ (D, G)`` matmul: ``(T, N, G)`` (the input projection of the RNNs; a
    ``(T, N, D) @ (D, G)`` product on a mesh with ``Explicit`` axes)."""
    t, n, _ = xs.shape
    if explicit_sharding(xs) is not None:  # N may be split there: no (T*N) rows to merge
        return xs @ w + expand_leading(b, 3)
    return (flat(xs) @ w + expand_leading(b, 2)).reshape(t, n, w.shape[1])


def scan_projected(step, init, xs, w, b, *extras):
    """``lax.scan(step, init, xs @ w + b)`` over a time-major ``(T, N, D)`` input.

    ``step(carry, a_x, *extras_t)``: ``extras`` are more ``(T, ...)`` arrays scanned
    along (e.g. the mask of the real steps of padded sequences).

    On accelerators the input projection of every step is one ``(T*N, D) @ (D, G)``
    matmul before the loop (:func:`project`, as cuDNN does). On XLA:CPU that is slower:
    the ``(T, N, G)`` projection leaves the caches, and the loop reads it back step by
    step (a GRU with T=50, N=64, H=256 runs its forward 1.5x slower than projecting each
    ``(N, D)`` step inside the loop, where the result stays in cache); so on CPU each
    step projects its own input. Both compute the same numbers.
    """
    def inside(xs, w, b, *extras):
        bias = expand_leading(b, 2)
        return jax.lax.scan(lambda c, inp: step(c, inp[0] @ w + bias, *inp[1:]), init,
                            (xs, *extras))

    def before(xs, w, b, *extras):
        return jax.lax.scan(lambda c, inp: step(c, *inp), init, (project(xs, w, b), *extras))

    return jax.lax.platform_dependent(xs, w, b, *extras, cpu=inside, default=before)


def previous(first, seq):
    """``(first, seq[0], ..., seq[T-2])``: the previous step's value at every step."""
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def expand_leading(v, ndim: int):
    """Reshape ``v`` to rank ``ndim`` by adding leading unit axes (explicit broadcasting).

    funcnet never relies on implicit rank promotion: ``x + expand_leading(b, x.ndim)``.
    """
    return v.reshape((1,) * (ndim - v.ndim) + tuple(v.shape))


@functools.lru_cache(maxsize=None)
def _common(a, b):
    with jax.numpy_dtype_promotion("standard"):
        return jnp.dtype(jnp.result_type(a, b))


def promote_pair(a, b):
    """``(a, b)`` cast to their common dtype by JAX's standard promotion (optax's rule).

    The casts are explicit, so this works under ``jax_numpy_dtype_promotion="strict"``;
    the dtype pair is looked up in a cache (no promotion context on the hot path).
    """
    dt = _common(a.dtype, b.dtype)
    return (a if a.dtype == dt else a.astype(dt)), (b if b.dtype == dt else b.astype(dt))
