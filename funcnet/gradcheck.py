"""Numerical gradients and checks of custom backward rules (note 001).

Use these to prove a hand-written ``jax.custom_vjp`` rule, funcnet's or your own:

    >>> import jax, numpy as np, funcnet
    >>> from funcnet.gradcheck import check_vjp
    >>> jax.config.update("jax_enable_x64", True)
    >>> rng = np.random.default_rng(0)
    >>> x, w, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    >>> out = check_vjp(funcnet.ops.affine, funcnet.ops.reference.affine, (x, w, b))
    >>> out["value"].shape, [g.shape for g in out["grads"]]  # raises if the rule is wrong
    ((4, 2), [(4, 3), (3, 2), (2,)])

``check_vjp`` compares the op's output and its VJP (for a random cotangent) with
``jax.vjp`` of the reference, then compares the VJP with central differences of the
scalar ``<cotangent, f(args)>``. Run it in float64 (``jax.config.update(
"jax_enable_x64", True)``): central differences in float32 are only good to ~1e-3.
``jax.test_util.check_grads`` works too, but only with ``modes=["rev"]``: a
``custom_vjp`` function has no forward mode (see :func:`check_grads_rev`); inside
``funcnet.ops.reference_mode()`` funcnet's ops are their plain-JAX twins and every mode
works.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _is_complex(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)


def numerical_grad(f: Callable, x, eps: float = 1e-6, *, chunk: int = 256):
    """Gradient of a scalar function by central differences (note 001).

    ``df/dx_i ~= (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``, an ``O(eps^2)`` error,
    unlike the one-sided ``(f(x + h) - f(x)) / h`` of note 001 (``O(h)``). The ``2 n``
    evaluations are batched with ``jax.vmap``, ``+eps`` and ``-eps`` together, in equal
    chunks of at most ``chunk`` directions (the last padded with zero steps), so ``f`` is
    compiled once whatever ``x``'s size.

    A complex entry ``z = a + ib`` is stepped along ``a`` and ``b``, and its gradient is
    ``df/da - i df/db``: ``jax.grad``'s convention (``jax.grad(lambda z: abs(z) ** 2)`` is
    ``2 conj(z)``). Integer leaves of ``x`` are held fixed (gradient 0).

    Args:
      f: real-scalar-valued function of one pytree argument.
      x: a pytree of arrays (the point), at least one floating or complex.
      eps: step size; ~1e-6 in float64.
      chunk: the most directions evaluated per ``vmap`` call.

    Returns:
      A pytree like ``x`` with the numerical gradient.

    Raises:
      TypeError: ``x`` has no floating leaf, or ``f`` returns a complex number.
    """
    leaves, treedef = jax.tree_util.tree_flatten(x)
    # each leaf in JAX's dtype for it (float64 becomes float32 without jax_enable_x64)
    arrays = [np.asarray(leaf, jnp.result_type(leaf)) for leaf in leaves]
    floats = [a for a in arrays if _is_float(a)]
    if arrays and not floats:
        raise TypeError(f"numerical_grad: x must hold floating arrays, got "
                        f"{sorted({str(a.dtype) for a in arrays})}")
    with jax.numpy_dtype_promotion("standard"):      # float and complex leaves together
        dtype = jnp.result_type(*floats) if floats else np.dtype(np.float64)
    # flattened on the host and unflattened inside the one compiled function, so no
    # shape of x costs an eager op
    sizes = [a.size for a in arrays]
    splits = np.cumsum(sizes)[:-1]
    flat = np.concatenate([a.ravel().astype(dtype) for a in arrays] or [np.zeros(0, dtype)])

    def unravel(v, xp):
        return treedef.unflatten([
            (part if _is_complex(a) else xp.real(part)).reshape(a.shape).astype(a.dtype)
            for part, a in zip(xp.split(v, splits), arrays)])

    # the directions: every floating entry's real axis, then every complex entry's
    # imaginary axis (integer entries are not stepped)
    kinds = np.concatenate([np.full(a.size, 2 if _is_complex(a) else int(_is_float(a)))
                            for a in arrays] or [np.zeros(0, int)])
    where = np.concatenate([np.flatnonzero(kinds >= 1), np.flatnonzero(kinds == 2)])
    n, m, real = flat.size, where.size, np.count_nonzero(kinds >= 1)
    steps = np.full(m, eps, dtype)
    if m > real:                             # only complex x has imaginary directions
        steps[real:] = 1j * eps
    found = np.zeros(m, dtype=np.float64)
    size = -(-m // -(-m // max(int(chunk), 1))) if m else 1   # ceil(m / number of chunks)
    f_flat = jax.jit(lambda p, steps: jax.vmap(lambda v: f(unravel(v, jnp)))(p[None] + steps))
    for start in range(0, m, size):
        stop = min(start + size, m)
        basis = np.zeros((size, n), dtype=dtype)
        basis[np.arange(stop - start), where[start:stop]] = steps[start:stop]
        values = np.asarray(f_flat(flat, np.concatenate([basis, -basis])))
        if np.iscomplexobj(values):
            raise TypeError(f"numerical_grad: f must return a real scalar, got {values.dtype}")
        values = values.astype(np.float64)
        found[start:stop] = (values[:stop - start]
                             - values[size:size + stop - start]) / (2 * eps)
    out = np.zeros(n, dtype=dtype)
    out[where[:real]] = found[:real]
    if m > real:                             # df/da - i df/db
        out[where[real:]] = out[where[real:]] - 1j * found[real:]
    return jax.tree_util.tree_map(jnp.asarray, unravel(out, np))


def _random_like(seed, tree):
    """A standard-normal cotangent like ``tree`` (complex leaves: real and imaginary parts
    standard normal; NumPy RNG: no compilation per shape)."""
    rng = np.random.default_rng(seed)

    def leaf(x):
        if not _is_float(x):
            return np.zeros(x.shape, jax.dtypes.float0)
        ct = rng.standard_normal(x.shape)
        if _is_complex(x):
            ct = ct + 1j * rng.standard_normal(x.shape)
        return jnp.asarray(ct, x.dtype)
    return jax.tree_util.tree_map(leaf, tree)


def _pairing(ct, y):
    """``sum Re(ct * y)`` over the floating leaves: the real scalar whose gradient is the
    VJP of ``ct`` (JAX's convention, complex leaves included)."""
    pairs = zip(jax.tree_util.tree_leaves(ct), jax.tree_util.tree_leaves(y))
    return sum(jnp.sum(jnp.real(c * v)) for c, v in pairs if _is_float(v))


def assert_close(actual, expected, rtol: float, what: str = "value") -> None:
    """Elementwise ``|a - e| <= rtol * (|e| + max|e|)`` over pytrees (scale-aware; complex
    leaves by the modulus of the difference, ``max`` over ``e``'s finite entries). Where
    ``e`` is not finite, ``a`` must be the same: the same infinity, or NaN."""
    la, ta = jax.tree_util.tree_flatten(actual)
    le, te = jax.tree_util.tree_flatten(expected)
    if ta != te:
        raise AssertionError(f"{what}: tree structures differ:\n  {ta}\n  {te}")
    for i, (a, e) in enumerate(zip(la, le)):
        if a is None or e is None or not _is_float(e):
            continue
        kind = np.complex128 if _is_complex(e) or _is_complex(a) else np.float64
        a64, e64 = np.asarray(a, kind), np.asarray(e, kind)
        if a64.shape != e64.shape:
            raise AssertionError(f"{what}[{i}]: shape {a64.shape} != {e64.shape}")
        finite = np.isfinite(e64)
        same = (a64 == e64) | (np.isnan(a64) & np.isnan(e64))
        if not np.all(finite | same):
            worst = np.flatnonzero(~(finite | same))[0]
            raise AssertionError(
                f"{what}[{i}]: got {a64.ravel()[worst]!r} where {e64.ravel()[worst]!r} was "
                f"expected (flat index {worst})")
        scale = np.max(np.abs(e64[finite])) if finite.any() else 0.0
        err = np.where(finite, np.abs(a64 - np.where(finite, e64, 0)), 0.0)
        err = np.where(np.isnan(err), np.inf, err)
        bound = rtol * (np.abs(np.where(finite, e64, 0)) + scale) + 1e-300
        if not np.all(err <= bound):
            worst = np.argmax(err - bound)
            raise AssertionError(
                f"{what}[{i}]: max abs error {err.max():.3e} exceeds rtol {rtol:g} "
                f"(at flat index {worst}: got {a64.ravel()[worst]!r}, expected "
                f"{e64.ravel()[worst]!r}; leaf scale {scale:.3e})")


def check_vjp(f, reference: Callable, args: Sequence, *, argnums=None,
              rtol: float = 1e-10, fd_rtol: float = 1e-6, fd_eps: float = 1e-6,
              seed: int = 0, cotangent=None, jit: bool = True) -> dict:
    """Check ``f``'s reverse-mode derivative against ``reference`` and central differences.

    1. ``f(*args)`` equals ``reference(*args)`` to ``rtol``.
    2. ``vjp_f(ct)`` equals ``vjp_reference(ct)`` to ``rtol`` for a random cotangent ``ct``
       (or the given ``cotangent``), for the floating arguments in ``argnums``.
    3. ``vjp_f(ct)`` equals the central-difference gradient of ``<ct, f(args)>`` to
       ``fd_rtol`` (skip with ``fd_rtol=None``, e.g. for large inputs).

    Args:
      f: the function under test (e.g. a ``custom_vjp`` op), positional args only; or a
        sequence of implementations of the same function (e.g. one per lowering), all
        checked against ``reference`` in one compilation (central differences use the
        first).
      reference: a plain-JAX function with the same signature.
      args: the positional arguments; pytrees allowed; ``None`` and integer arguments,
        and the integer leaves of a pytree argument, are held fixed. Complex arguments
        and outputs are checked in JAX's convention (a complex cotangent; central
        differences along the real and imaginary axes, see :func:`numerical_grad`).
      argnums: indices of ``args`` to differentiate; default every argument with a
        floating or complex leaf.
      rtol: tolerance against the reference (1e-10 for float64).
      fd_rtol, fd_eps: tolerance and step of the central-difference check.
      seed: seed of the random cotangent.
      cotangent: explicit output cotangent.
      jit: compile the VJP computations (one compilation instead of one per primitive).

    Returns:
      ``{"value": y, "grads": tuple of cotangents for argnums}`` of (the first) ``f``.

    Raises:
      AssertionError: with the first mismatching leaf and its error.
    """
    fs = tuple(f) if isinstance(f, (list, tuple)) else (f,)
    args = tuple(args)
    if argnums is None:
        argnums = tuple(i for i, a in enumerate(args)
                        if any(_is_float(leaf) for leaf in jax.tree_util.tree_leaves(a)))
    argnums = tuple(argnums)

    def restrict(fn):
        def g(*diff):
            full = list(args)
            for i, d in zip(argnums, diff):
                full[i] = d
            return fn(*full)
        return g

    diff_args = tuple(jax.tree_util.tree_map(jnp.asarray, args[i]) for i in argnums)
    out_shape = jax.eval_shape(restrict(reference), *diff_args)
    ct = cotangent if cotangent is not None else _random_like(seed, out_shape)

    def run(d, c):
        results = []
        for fn in (reference, *fs):
            y, vjp = jax.vjp(restrict(fn), *d)
            results.append((y, vjp(c)))
        return results

    (y_ref, grads_ref), *outs = (jax.jit(run) if jit else run)(diff_args, ct)
    for k, (y, grads) in enumerate(outs):
        which = f"[{k}] " if len(fs) > 1 else ""
        assert_close(y, y_ref, rtol, f"{which}output")
        assert_close(grads, grads_ref, rtol, f"{which}vjp vs reference")
    if fd_rtol is not None:
        first = restrict(fs[0])
        num = numerical_grad(lambda d: _pairing(ct, first(*d)), diff_args, eps=fd_eps)
        assert_close(outs[0][1], num, fd_rtol, "vjp vs central differences")
    return {"value": outs[0][0], "grads": outs[0][1]}


def check_grads_rev(f: Callable, args: Sequence, order: int = 1, **kwargs) -> None:
    """``jax.test_util.check_grads`` in reverse mode only (``custom_vjp`` has no JVP)."""
    from jax.test_util import check_grads
    check_grads(f, tuple(args), order=order, modes=["rev"], **kwargs)
