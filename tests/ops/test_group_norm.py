"""group_norm: custom VJP vs its twin and central differences (ranks 2-4, one group,
instance norm), PyTorch's formula in NumPy, layer norm at G = 1, second order, vmap,
residuals, edge cases, low precision, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, rand


def _args(shape, seed=0, gamma=True, beta=True):
    c = shape[-1]
    return (3.0 * rand(shape, seed) + 1.0, rand((c,), seed + 1) if gamma else None,
            rand((c,), seed + 2) if beta else None)


# (id, x shape, num_groups, eps, gamma, beta)
CASES = [
    ("rank2", (4, 6), 3, 1e-5, True, True),
    ("rank3", (2, 5, 6), 2, 1e-3, True, True),
    ("rank4", (2, 3, 3, 4), 2, 1e-5, True, True),
    ("rank5", (1, 2, 2, 2, 4), 2, 1e-5, True, True),
    ("one_group", (2, 3, 4), 1, 1e-5, True, True),
    ("instance", (2, 3, 2, 4), 4, 1e-5, True, True),
    ("instance_rank2", (3, 4), 4, 0.5, True, True),       # groups of one value: y = beta
    ("no_scale", (2, 3, 4), 2, 1e-5, False, True),
    ("no_shift", (2, 3, 4), 2, 1e-5, True, False),
    ("neither", (2, 3, 4), 2, 1e-5, False, False),
]


@pytest.mark.parametrize("case_id,shape,groups,eps,gamma,beta", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(case_id, shape, groups, eps, gamma, beta):
    args = _args(shape, len(case_id), gamma, beta)
    check_vjp(lambda *a: ops.group_norm(*a, groups, eps),
              lambda *a: R.group_norm(*a, groups, eps), args, seed=100, fd_rtol=1e-5)


def _torch_group_norm(x, gamma, beta, groups, eps):
    """``torch.nn.functional.group_norm`` written in NumPy float64 on the channels-first
    transpose of ``x``: ``(N, C, *) -> (N, G, -1)``, biased variance, affine per channel."""
    xt = np.moveaxis(x, -1, 1)
    n, c = xt.shape[:2]
    v = xt.reshape(n, groups, -1)
    mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    norm = ((v - mean) / np.sqrt(var + eps)).reshape(xt.shape)
    affine = (1, c) + (1,) * (xt.ndim - 2)
    return np.moveaxis(norm * gamma.reshape(affine) + beta.reshape(affine), 1, -1)


def test_values_and_backward_are_pytorchs_and_the_documented_formulas():
    """Forward: PyTorch's definition in NumPy. Backward: the docstring's compact formula,
    ``dx = (1/sigma) (dxhat - mean_S dxhat - xhat mean_S(dxhat xhat))`` per group, in
    NumPy on the ``(N, positions, G, C/G)`` view."""
    x, g, b = _args((2, 3, 2, 6), 20)
    dy = rand(x.shape, 23)
    eps, groups = 1e-5, 3
    y, vjp = jax.vjp(lambda *a: ops.group_norm(*a, groups, eps), x, g, b)
    np.testing.assert_allclose(y, _torch_group_norm(x, g, b, groups, eps), rtol=1e-12,
                               atol=1e-12)

    def grouped(a):
        return a.reshape(2, 6, groups, 2)
    mean = grouped(x).mean((1, 3), keepdims=True)
    sig = np.sqrt(((grouped(x) - mean) ** 2).mean((1, 3), keepdims=True) + eps)
    xhat = (grouped(x) - mean) / sig
    dxhat = grouped(dy * g)
    want_dx = (dxhat - dxhat.mean((1, 3), keepdims=True)
               - xhat * (dxhat * xhat).mean((1, 3), keepdims=True)) / sig
    want = (want_dx.reshape(x.shape), (dy * xhat.reshape(x.shape)).sum((0, 1, 2)),
            dy.sum((0, 1, 2)))
    for got, w in zip(vjp(dy), want):
        np.testing.assert_allclose(got, w, rtol=1e-10, atol=1e-13)


def test_one_group_is_layer_norm_and_c_groups_is_instance_norm():
    """G = 1: layer norm over each example's flattened features (values and gradients;
    on ``(N, C)`` with gamma and beta, ``ops.layer_norm`` itself). G = C: each channel
    over its positions."""
    x, g, b = (jnp.asarray(a) for a in _args((3, 2, 2, 4), 30))
    x2 = x.reshape(3, 16)[:, :4]
    flat = lambda v: v.reshape(3, 16)  # noqa: E731

    @jax.jit
    def run(x, x2, g, b):
        gn = lambda v: ops.group_norm(v, None, None, 1)  # noqa: E731
        ln = lambda v: ops.layer_norm(flat(v), None, None).reshape(v.shape)  # noqa: E731
        pairs = [(gn, ln), (lambda v: ops.group_norm(v, g, b, 1),
                            lambda v: ops.layer_norm(v, g, b))]
        out = []
        for (f1, f2), v in zip(pairs, (x, x2)):
            out.append([(f(v), jax.grad(lambda v: jnp.sum(jnp.sin(f(v)) * v))(v))
                        for f in (f1, f2)])
        return out, ops.group_norm(x, g, b, 4)

    pairs, inst = run(x, x2, g, b)
    for got, want in pairs:
        assert_close(got, want, 1e-12, "group_norm(G=1) vs layer_norm")
    xn = np.asarray(x)
    mu, var = xn.mean((1, 2), keepdims=True), xn.var((1, 2), keepdims=True)
    np.testing.assert_allclose(inst, (xn - mu) / np.sqrt(var + 1e-5) * np.asarray(g)
                               + np.asarray(b), rtol=1e-12)


def test_second_order_vmap_and_jit():
    """grad(grad) and per-example gradients (vmap over the batch) equal the twin's, and
    vmap of the op over an extra leading axis equals the op on each slice."""
    x, g, b = (jnp.asarray(a) for a in _args((3, 2, 2, 4), 40))
    w = jnp.arange(4.0).reshape(1, 1, 1, 4)

    def loss(mod):
        return lambda x, g, b: jnp.sum(jnp.sin(mod.group_norm(x, g, b, 2)) * w)

    @jax.jit
    def run(x, g, b):
        per = []
        for mod in (ops, R):
            f = loss(mod)
            gg = jax.grad(lambda x: jnp.sum(jax.grad(f, argnums=(0, 1))(x, g, b)[1] ** 2))
            per.append((gg(x), jax.vmap(jax.grad(f, argnums=(0, 1)),
                                        in_axes=(0, None, None))(x[:, None], g, b)))
        stacked = jax.vmap(lambda v: ops.group_norm(v, g, b, 2))(x[:, None])
        return per, stacked, ops.group_norm(x[:1], g, b, 2)

    (got, want), stacked, first = run(x, g, b)
    assert_close(got, want, 1e-10, "grad(grad), vmap(grad)")
    np.testing.assert_allclose(stacked[0], first, rtol=1e-14)


def test_residuals_are_xhat_and_one_inverse_sigma_per_group():
    x, g, b = (jnp.asarray(a) for a in _args((2, 3, 3, 8), 50))
    kept = sorted(r.shape for r in saved_residuals(lambda x, g, b: ops.group_norm(x, g, b, 4),
                                                   x, g, b) if not r.is_argument and r.nbytes)
    assert kept == [(2, 1, 4, 1), (2, 3, 3, 8)], kept
    mine = sum(r.nbytes for r in saved_residuals(lambda *a: ops.group_norm(*a, 4), x, g, b)
               if not r.is_argument)
    autodiff = sum(r.nbytes for r in saved_residuals(lambda *a: R.group_norm(*a, 4), x, g, b)
                   if not r.is_argument)
    assert mine < autodiff
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda x: ops.group_norm(x, g, b, 4))(x))


def test_training_step_keeps_no_input_sized_temporary():
    """The backward takes its group means from per-channel sums: XLA's temp buffers of a
    compiled value_and_grad are no more than autodiff's (jax 0.10: below one input-sized
    array, where ``dy gamma`` and ``gamma`` broadcast to x's shape were kept: 3 input-sized
    buffers against autodiff's 2; jax 0.8: about 2 for both)."""
    x = jnp.ones((4, 16, 16, 64), jnp.float32)
    g, b, ct = jnp.ones(64, jnp.float32), jnp.zeros(64, jnp.float32), jnp.ones_like(x)

    def temp(f):
        step = jax.jit(jax.value_and_grad(lambda *a: jnp.vdot(ct, f(*a, 8)), (0, 1, 2)))
        return step.lower(x, g, b).compile().memory_analysis().temp_size_in_bytes

    mine, autodiff = temp(ops.group_norm), temp(R.group_norm)
    assert mine < 1.1 * autodiff and autodiff >= x.nbytes, (mine, autodiff, x.nbytes)


def test_constant_groups_large_offsets_and_empty_batch():
    """A constant group normalises to beta with finite gradients; a large common offset
    keeps the signal (two-pass variance); a batch of 0 examples gives an empty result."""
    x = np.zeros((3, 2, 4))
    x[0] = 3.0                                   # example 0: both groups constant
    x[1, :, :2] = [[1.0, 2.0], [3.0, 4.0]]       # example 1: group 1 constant (0)
    x[2] = 1e8 + np.arange(8.0).reshape(2, 4)
    g, b = jnp.asarray(rand((4,), 60)), jnp.asarray(rand((4,), 61))

    @jax.jit
    def run(x):
        f = lambda v: ops.group_norm(v, g, b, 2)  # noqa: E731
        return f(x), jax.grad(lambda v: jnp.sum(jnp.sin(f(v))))(x)

    y, dx = run(jnp.asarray(x))
    assert jnp.all(jnp.isfinite(dx))
    np.testing.assert_allclose(y[0], np.broadcast_to(b, (2, 4)), rtol=1e-12)
    np.testing.assert_allclose(y[1, :, 2:], np.broadcast_to(b[2:], (2, 2)), rtol=1e-12)
    np.testing.assert_allclose(y[2], _torch_group_norm(x[2:] - 1e8, np.asarray(g),
                                                       np.asarray(b), 2, 1e-5)[0], rtol=1e-7)
    assert ops.group_norm(jnp.zeros((0, 2, 4)), g, b, 2).shape == (0, 2, 4)


def test_bfloat16_computes_statistics_in_float32():
    x32 = jnp.asarray(_args((2, 3, 3, 8), 70)[0], jnp.float32)
    x = x32.astype(jnp.bfloat16)
    g, b = jnp.ones(8, jnp.float32), jnp.zeros(8, jnp.float32)
    y, vjp = jax.vjp(lambda *a: ops.group_norm(*a, 4), x, g, b)
    dx, dg, db = vjp(jnp.ones_like(y))
    assert y.dtype == dx.dtype == jnp.bfloat16 and dg.dtype == db.dtype == jnp.float32
    want = ops.group_norm(x.astype(jnp.float32), g, b, 4)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=2e-2)
    kept = {r.dtype for r in saved_residuals(lambda x: ops.group_norm(x, g, b, 4), x)
            if not r.is_argument and r.nbytes}
    assert kept == {jnp.dtype(jnp.float32)}


ERRORS = [
    (lambda x, g, b: ops.group_norm(x, g, b, 4), ValueError,
     r"^group_norm: x has shape \(4, 2, 6\), expected a number of channels \(last axis\) "
     r"divisible by num_groups=4"),
    (lambda x, g, b: ops.group_norm(x, g[:3], b, 2), ValueError,
     r"^group_norm: gamma has shape \(3,\), expected \(6,\) \(one per feature of x "
     r"\(4, 2, 6\)\)"),
    (lambda x, g, b: ops.group_norm(x, g, b[None], 2), ValueError,
     r"^group_norm: beta has shape \(1, 6\), expected \(6,\)"),
    (lambda x, g, b: ops.group_norm(x[0, 0], g, b, 2), ValueError,
     r"^group_norm: x has shape \(6,\), expected rank >= 2"),
    (lambda x, g, b: ops.group_norm(x[:, :0], g, b, 2), ValueError,
     r"^group_norm: x has shape \(4, 0, 6\), expected a nonempty size on every axis but "
     r"the batch"),
    (lambda x, g, b: ops.group_norm(x, g, b, 0), ValueError,
     r"^group_norm: num_groups must be >= 1, got 0"),
    (lambda x, g, b: ops.group_norm(x, g, b, 2.0), TypeError,
     r"^group_norm: num_groups must be an int, got float 2.0"),
    (lambda x, g, b: ops.group_norm(x.astype(jnp.int32), g, b, 2), TypeError,
     r"^group_norm: x must have a floating dtype, got int32"),
    (lambda x, g, b: ops.group_norm(x, g, b.astype(jnp.float32), 2), TypeError,
     r"^group_norm: gamma has dtype float64 but beta has dtype float32"),
    (lambda x, g, b: ops.group_norm(x, g, b, 2, eps=-1.0), ValueError,
     r"^group_norm: eps must be in \[0, inf\), got -1"),
]


@pytest.mark.parametrize("call, exc, match", ERRORS)
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, tuple(jnp.asarray(a) for a in _args((4, 2, 6), 80)),
                             exc, match)


def test_reference_mode_gives_forward_mode():
    x, g, b = (jnp.asarray(a) for a in _args((2, 3, 4), 90))
    gn = lambda x, g, b: ops.group_norm(x, g, b, 2, eps=0.0)  # noqa: E731
    with ops.reference_mode():
        _, y_dot = jax.jvp(gn, (x, g, b), (x, g, b))
    # with eps = 0, xhat is scale-invariant in x: d/ds GN(s x, s g, s b) at s = 1 is y
    np.testing.assert_allclose(y_dot, gn(x, g, b), rtol=1e-12, atol=1e-12)
