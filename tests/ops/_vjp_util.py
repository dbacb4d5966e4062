"""Test helpers for the conv / pool / rnn / dropout tests: cheap inputs, one-compile VJP
checks. Inputs come from NumPy (a new ``jax.random.normal`` shape costs a compilation)."""
import jax
import jax.numpy as jnp
import numpy as np

from funcnet.gradcheck import assert_close, numerical_grad


def rand(shape, seed=0, dtype=np.float64):
    """Standard-normal NumPy array (no JAX compilation)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def check_vjps(fs, reference, args, *, rtol=1e-10, fd_rtol=1e-6, fd_eps=1e-6, seed=1):
    """Outputs and VJPs of every function in ``fs`` equal those of ``reference``.

    All VJPs (one random NumPy cotangent, every floating array argument) are computed
    in ONE jitted function, then ``fs[0]``'s VJP is compared with central differences
    of ``<ct, fs[0](args)>`` (one more compilation). ``None`` arguments stay fixed.

    Returns:
      The reference ``(y, grads)``.
    """
    argnums = tuple(i for i, a in enumerate(args)
                    if a is not None and jnp.issubdtype(jnp.result_type(a), jnp.floating))

    def restrict(fn):
        def g(*diff):
            full = list(args)
            for i, d in zip(argnums, diff):
                full[i] = d
            return fn(*full)
        return g

    diff = tuple(jnp.asarray(args[i]) for i in argnums)
    out = jax.eval_shape(restrict(reference), *diff)
    ct = jnp.asarray(rand(out.shape, seed, out.dtype))

    @jax.jit
    def run(d, c):
        res = []
        for fn in (reference, *fs):
            y, vjp = jax.vjp(restrict(fn), *d)
            res.append((y, vjp(c)))
        return res

    (y_ref, g_ref), *rest = run(diff, ct)
    for k, (y, g) in enumerate(rest):
        assert_close(y, y_ref, rtol, f"output of fs[{k}]")
        assert_close(g, g_ref, rtol, f"vjp of fs[{k}] vs reference")
    if fd_rtol is not None:
        f0 = restrict(fs[0])
        n = sum(int(np.size(d)) for d in diff)
        num = numerical_grad(lambda d: jnp.vdot(ct, f0(*d)), diff, eps=fd_eps, chunk=n)
        assert_close(rest[0][1], num, fd_rtol, "vjp vs central differences")
    return y_ref, g_ref
