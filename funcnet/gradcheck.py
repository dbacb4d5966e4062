"""Numerical gradients and checks of custom backward rules (note 001).

Use these to prove a hand-written ``jax.custom_vjp`` rule, funcnet's or your own:

    >>> check_vjp(funcnet.ops.affine, funcnet.ops.reference.affine, (x, w, b))

``check_vjp`` compares the op's output and its VJP (for a random cotangent) with
``jax.vjp`` of the reference, then compares the VJP with central differences of the
scalar ``<cotangent, f(args)>``. Run it in float64 (``jax.config.update(
"jax_enable_x64", True)``): central differences in float32 are only good to ~1e-3.
``jax.test_util.check_grads`` works too, but only with ``modes=["rev"]``: a
``custom_vjp`` function has no forward mode (see :func:`check_grads_rev`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def numerical_grad(f: Callable, x, eps: float = 1e-6, *, chunk: int = 256):
    """Gradient of a scalar function by central differences (note 001).

    ``df/dx_i ~= (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``, an ``O(eps^2)`` error,
    unlike the one-sided ``(f(x + h) - f(x)) / h`` of note 001 (``O(h)``). The ``2 n``
    evaluations are batched with ``jax.vmap`` in chunks of ``chunk`` directions.

    Args:
      f: scalar-valued function of one pytree argument.
      x: a pytree of floating arrays (the point).
      eps: step size; ~1e-6 in float64.
      chunk: directions evaluated per ``vmap`` call.

    Returns:
      A pytree like ``x`` with the numerical gradient.
    """
    flat, unravel = ravel_pytree(x)
    if not _is_float(flat):
        raise TypeError(f"numerical_grad: x must hold floating arrays, got {flat.dtype}")
    n = flat.size
    f_flat = jax.jit(jax.vmap(lambda v: f(unravel(v))))
    out = np.zeros(n, dtype=np.float64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        basis = np.zeros((stop - start, n), dtype=flat.dtype)
        basis[np.arange(stop - start), np.arange(start, stop)] = eps
        step = jnp.asarray(basis)
        plus = np.asarray(f_flat(flat[None, :] + step), np.float64)
        minus = np.asarray(f_flat(flat[None, :] - step), np.float64)
        out[start:stop] = (plus - minus) / (2 * eps)
    return unravel(jnp.asarray(out, flat.dtype))


def _random_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [jax.random.normal(k, l.shape, l.dtype) if _is_float(l)
           else np.zeros(l.shape, jax.dtypes.float0) for k, l in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


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


def check_vjp(f: Callable, reference: Callable, args: Sequence, *, argnums=None,
              rtol: float = 1e-10, fd_rtol: float = 1e-6, fd_eps: float = 1e-6,
              key=None, cotangent=None, jit: bool = True) -> dict:
    """Check ``f``'s reverse-mode derivative against ``reference`` and central differences.

    1. ``f(*args)`` equals ``reference(*args)`` to ``rtol``.
    2. ``vjp_f(ct)`` equals ``vjp_reference(ct)`` to ``rtol`` for a random cotangent ``ct``
       (or the given ``cotangent``), for the floating arguments in ``argnums``.
    3. ``vjp_f(ct)`` equals the central-difference gradient of ``<ct, f(args)>`` to
       ``fd_rtol`` (skip with ``fd_rtol=None``, e.g. for large inputs).

    Args:
      f: the function under test (e.g. a ``custom_vjp`` op), positional args only.
      reference: a plain-JAX function with the same signature.
      args: the positional arguments; pytrees allowed.
      argnums: indices of ``args`` to differentiate; default every floating argument.
      rtol: tolerance against the reference (1e-10 for float64).
      fd_rtol, fd_eps: tolerance and step of the central-difference check.
      key: PRNG key for the random cotangent.
      cotangent: explicit output cotangent.
      jit: compile each VJP computation (one compilation instead of one per primitive).

    Returns:
      ``{"value": y, "grads": tuple of cotangents for argnums}``.

    Raises:
      AssertionError: with the first mismatching leaf and its error.
    """
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

    diff_args = tuple(args[i] for i in argnums)
    out_shape = jax.eval_shape(restrict(f), *diff_args)
    ct = cotangent if cotangent is not None else _random_like(
        key if key is not None else jax.random.PRNGKey(0), out_shape)

    def value_and_vjp(fn):
        def run(d, c):
            y, vjp = jax.vjp(restrict(fn), *d)
            return y, vjp(c)
        return jax.jit(run) if jit else run

    y, grads = value_and_vjp(f)(diff_args, ct)
    y_ref, grads_ref = value_and_vjp(reference)(diff_args, ct)
    assert_close(y, y_ref, rtol, "output")
    assert_close(grads, grads_ref, rtol, "vjp vs reference")
    if fd_rtol is not None:
        scalar = lambda d: _vdot(ct, restrict(f)(*d))  # noqa: E731
        num = numerical_grad(scalar, diff_args, eps=fd_eps)
        assert_close(grads, num, fd_rtol, "vjp vs central differences")
    return {"value": y, "grads": grads}


def check_grads_rev(f: Callable, args: Sequence, order: int = 1, **kwargs) -> None:
    """``jax.test_util.check_grads`` in reverse mode only (``custom_vjp`` has no JVP)."""
    from jax.test_util import check_grads
    check_grads(f, tuple(args), order=order, modes=["rev"], **kwargs)
