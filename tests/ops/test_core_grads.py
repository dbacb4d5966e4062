"""Every core op: custom VJP == jax.vjp of its reference twin (1e-10) == central differences (1e-6)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as ref
from tests.ops._cases import CORE_CASES, labels, normal



@pytest.mark.parametrize("case_id,name,make", CORE_CASES, ids=[c[0] for c in CORE_CASES])
def test_vjp_matches_reference_and_central_differences(case_id, name, make):
    args = make()
    check_vjp(getattr(ops, name), getattr(ref, name), args, rtol=1e-10, fd_rtol=1e-6)


@pytest.mark.parametrize("case_id,name,make", CORE_CASES, ids=[c[0] for c in CORE_CASES])
def test_op_is_custom_vjp(case_id, name, make):
    jaxpr = str(jax.make_jaxpr(getattr(ops, name))(*make()))
    assert "custom_vjp_call" in jaxpr
    assert "custom_vjp_call" not in str(jax.make_jaxpr(getattr(ref, name))(*make()))


def test_twins_cover_every_op():
    public = {n for n in ops.__all__ if n not in ("reference", "reference_mode")}
    missing = {n for n in public if not hasattr(ref, n)}
    assert not missing


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_second_order_grad_matches_reference(name):
    x = normal(60, (7,), 2.0)
    f = lambda v: jnp.sum(getattr(ops, name)(v) ** 2)  # noqa: E731
    fr = lambda v: jnp.sum(getattr(ref, name)(v) ** 2)  # noqa: E731
    h, hr = jax.jit(lambda x: [jax.grad(lambda v: jnp.sum(jax.grad(g)(v)))(x)
                               for g in (f, fr)])(x)     # one program for both
    assert_close(h, hr, 1e-10, "grad(grad)")


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_second_order_softmax(name):
    x = normal(61, (3, 5))
    f = lambda v: jnp.sum(jnp.sin(getattr(ops, name)(v)))  # noqa: E731
    fr = lambda v: jnp.sum(jnp.sin(getattr(ref, name)(v)))  # noqa: E731
    h, hr = jax.jit(lambda x: (jax.hessian(f)(x), jax.hessian(fr)(x)))(x)   # one program
    assert_close(h, hr, 1e-9, "hessian")


def test_per_example_grads_with_vmap_and_jit():
    x, w, b = normal(62, (6, 4)), normal(63, (4, 3)), normal(64, (3,))
    y = labels(65, (6,), 3)

    def loss(params, xi, yi, mod):
        h = mod.tanh(mod.affine(xi[None], params[0], params[1]))
        return mod.softmax_cross_entropy(h, yi[None])

    per_ex = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0, None)), static_argnums=3)
    got = per_ex((w, b), x, y, ops)
    want = jax.jit(lambda p, x, y: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[
        jax.grad(loss)(p, x[i], y[i], ref) for i in range(6)]))((w, b), x, y)   # a loop
    assert_close(got, want, 1e-10, "per-example grads")


def test_grad_under_jit_matches_eager():
    x, t = normal(66, (4, 6)), labels(67, (4,), 6)
    g_eager = jax.grad(ops.softmax_cross_entropy)(x, t)
    g_jit = jax.jit(jax.grad(ops.softmax_cross_entropy))(x, t)
    np.testing.assert_allclose(g_jit, g_eager, rtol=1e-12)
