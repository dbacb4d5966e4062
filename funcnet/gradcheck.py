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


def numerical_grad(f: Callable, x, eps: float = 1e-6, *, chunk: int = 256):
    """Gradient of a scalar function by central differences (note 001).

    ``df/dx_i ~= (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``, an ``O(eps^2)`` error,
    unlike the one-sided ``(f(x + h) - f(x)) / h`` of note 001 (``O(h)``). The ``2 n``
    evaluations are batched with ``jax.vmap``, ``+eps`` and ``-eps`` together, in equal
    chunks of at most ``chunk`` directions (the last padded with zero steps), so ``f`` is
    compiled once whatever ``x``'s size.

    Args:
      f: scalar-valued function of one pytree argument.
      x: a pytree of floating arrays (the point).
      eps: step size; ~1e-6 in float64.
      chunk: the most directions evaluated per ``vmap`` call.

    Returns:
      A pytree like ``x`` with the numerical gradient.
    """
    leaves, treedef = jax.tree_util.tree_flatten(x)
    # each leaf in JAX's dtype for it (float64 becomes float32 without jax_enable_x64)
    arrays = [np.asarray(leaf, jnp.result_type(leaf)) for leaf in leaves]
    dtype = jnp.result_type(*arrays) if arrays else np.dtype(np.float64)
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"numerical_grad: x must hold floating arrays, got {dtype}")
    # flattened on the host and unflattened inside the one compiled function, so no
    # shape of x costs an eager op
    sizes = [a.size for a in arrays]
    splits = np.cumsum(sizes)[:-1]
    flat = np.concatenate([a.ravel().astype(dtype) for a in arrays] or [np.zeros(0, dtype)])

    def unravel(v, xp):
        return treedef.unflatten([part.reshape(a.shape).astype(a.dtype)
                                  for part, a in zip(xp.split(v, splits), arrays)])

    n = flat.size
    out = np.zeros(n, dtype=np.float64)
    size = -(-n // -(-n // max(int(chunk), 1))) if n else 1   # ceil(n / number of chunks)
    f_flat = jax.jit(lambda p, steps: jax.vmap(lambda v: f(unravel(v, jnp)))(p[None] + steps))
    for start in range(0, n, size):
        stop = min(start + size, n)
        basis = np.zeros((size, n), dtype=dtype)
        basis[np.arange(stop - start), np.arange(start, stop)] = eps
        values = np.asarray(f_flat(flat, np.concatenate([basis, -basis])), np.float64)
        out[start:stop] = (values[:stop - start] - values[size:size + stop - start]) / (2 * eps)
    return jax.tree_util.tree_map(jnp.asarray, unravel(out.astype(dtype), np))


def _random_like(seed, tree):
    """A standard-normal cotangent like ``tree`` (NumPy RNG: no compilation per shape)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda l: jnp.asarray(rng.standard_normal(l.shape), l.dtype) if _is_float(l)
        else np.zeros(l.shape, jax.dtypes.float0), tree)


def _vdot(a, b):
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return sum(jnp.vdot(x, y) for x, y in pairs if _is_float(x))


def assert_close(actual, expected, rtol: float, what: str = "value") -> None:
    """Elementwise ``|a - e| <= rtol * (|e| + max|e|)`` over pytrees (scale-aware)."""
    la, ta = jax.tree_util.tree_flatten(actual)
    le, te = jax.tree_util.tree_flatten(expected)
    if ta != te:
        raise AssertionError(f"{what}: tree structures differ:\n  {ta}\n  {te}")
    for i, (a, e) in enumerate(zip(la, le)):
        if a is None or e is None or not _is_float(e):
            continue
        a64, e64 = np.asarray(a, np.float64), np.asarray(e, np.float64)
        if a64.shape != e64.shape:
            raise AssertionError(f"{what}[{i}]: shape {a64.shape} != {e64.shape}")
        scale = np.max(np.abs(e64)) if e64.size else 0.0
        err = np.abs(a64 - e64)
        bound = rtol * (np.abs(e64) + scale) + 1e-300
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
      args: the positional arguments; pytrees allowed; ``None`` and integer arguments
        are held fixed.
      argnums: indices of ``args`` to differentiate; default every floating argument.
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
                        if all(_is_float(l) for l in jax.tree_util.tree_leaves(a))
                        and jax.tree_util.tree_leaves(a))
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
        num = numerical_grad(lambda d: _vdot(ct, first(*d)), diff_args, eps=fd_eps)
        assert_close(outs[0][1], num, fd_rtol, "vjp vs central differences")
    return {"value": outs[0][0], "grads": outs[0][1]}


def check_grads_rev(f: Callable, args: Sequence, order: int = 1, **kwargs) -> None:
    """``jax.test_util.check_grads`` in reverse mode only (``custom_vjp`` has no JVP)."""
    from jax.test_util import check_grads
    check_grads(f, tuple(args), order=order, modes=["rev"], **kwargs)
