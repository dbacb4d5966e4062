"""layer_norm and rms_norm: custom VJPs vs twins and central differences, the plain
formulas (values and the compact backward), second order, vmap, residuals, edge cases,
low precision, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, rand


def _ln_args(shape, seed=0, gamma=True, beta=True):
    f = shape[-1]
    return (3.0 * rand(shape, seed) + 1.0, rand((f,), seed + 1) if gamma else None,
            rand((f,), seed + 2) if beta else None)


# (id, op name, args, kwargs)
CASES = [
    ("ln_2d", "layer_norm", _ln_args((5, 6)), {}),
    ("ln_rank3", "layer_norm", _ln_args((2, 3, 4), 1), {"eps": 1e-3}),
    ("ln_rank1", "layer_norm", _ln_args((7,), 2), {}),
    ("ln_one_row", "layer_norm", _ln_args((1, 5), 3), {}),
    ("ln_two_features", "layer_norm", _ln_args((4, 2), 4), {"eps": 0.1}),
    ("ln_no_scale", "layer_norm", _ln_args((4, 5), 5, gamma=False), {}),
    ("ln_no_shift", "layer_norm", _ln_args((4, 5), 6, beta=False), {}),
    ("ln_neither", "layer_norm", _ln_args((4, 5), 7, gamma=False, beta=False), {}),
    ("rms_2d", "rms_norm", _ln_args((5, 6), 8)[:2], {}),
    ("rms_rank3", "rms_norm", _ln_args((2, 3, 4), 9)[:2], {"eps": 1e-2}),
    ("rms_rank1", "rms_norm", _ln_args((7,), 10)[:2], {}),
    ("rms_one_feature", "rms_norm", _ln_args((3, 1), 11)[:2], {"eps": 0.5}),
    ("rms_no_scale", "rms_norm", _ln_args((4, 5), 12, gamma=False)[:2], {}),
]
IDS = [c[0] for c in CASES]


def _fns(name, kw):
    return (lambda *a: getattr(ops, name)(*a, **kw)), (lambda *a: getattr(R, name)(*a, **kw))


@pytest.mark.parametrize("case_id,name,args,kw", CASES, ids=IDS)
def test_vjp_matches_reference_and_central_differences(case_id, name, args, kw):
    op, twin = _fns(name, kw)
    check_vjp(op, twin, args, seed=100, fd_rtol=1e-5)


def test_values_and_backward_are_the_documented_formulas():
    """NumPy transcription of the docstrings: forward, and the compact backward
    ``dx = (1/sigma) (dxhat - mean(dxhat) - xhat mean(dxhat xhat))`` per row."""
    x, g, b = _ln_args((4, 6), 20)
    dy = rand((4, 6), 23)
    eps = 1e-5
    mu = x.mean(-1, keepdims=True)
    sig = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mu) / sig
    dxhat = dy * g
    want_dx = (dxhat - dxhat.mean(-1, keepdims=True)
               - xhat * (dxhat * xhat).mean(-1, keepdims=True)) / sig
    y, vjp = jax.vjp(ops.layer_norm, x, g, b)
    np.testing.assert_allclose(y, xhat * g + b, rtol=1e-12)
    for got, want in zip(vjp(dy), (want_dx, (dy * xhat).sum(0), dy.sum(0))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    # Flax's LayerNorm computes var = mean(x^2) - mean(x)^2: the same up to rounding
    var_fast = (x * x).mean(-1, keepdims=True) - mu ** 2
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var_fast + eps) * g + b, rtol=1e-9)

    r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
    y, vjp = jax.vjp(ops.rms_norm, x, g)
    np.testing.assert_allclose(y, x * r * g, rtol=1e-12)
    want_dx = r * (dxhat - x * r * (dxhat * x * r).mean(-1, keepdims=True))
    for got, want in zip(vjp(dy), (want_dx, (dy * x * r).sum(0))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_second_order_vmap_and_jit():
    x, g, b = (jnp.asarray(a) for a in _ln_args((3, 5), 30))

    def loss(mod, name):
        def f(x, g, b):
            y = mod.layer_norm(x, g, b) if name == "layer_norm" else mod.rms_norm(x, g)
            return jnp.sum(jnp.sin(y) * jnp.arange(5.0)[None, :])
        return f

    @jax.jit
    def run(x, g, b):
        out = []
        for name in ("layer_norm", "rms_norm"):
            per = []
            for mod in (ops, R):
                f = loss(mod, name)
                gg = jax.grad(lambda x: jnp.sum(jax.grad(f, argnums=(0, 1))(x, g, b)[1] ** 2))
                per.append((gg(x), jax.vmap(jax.grad(f, argnums=(0, 1)),
                                            in_axes=(0, None, None))(x[:, None], g, b)))
            out.append(per)
        return out

    for name, (got, want) in zip(("layer_norm", "rms_norm"), run(x, g, b)):
        assert_close(got, want, 1e-10, f"{name}: grad(grad), vmap(grad)")


def test_residuals_are_xhat_and_inverse_sigma():
    x, g, b = (jnp.asarray(a) for a in _ln_args((6, 8), 40))
    for fn, args in ((ops.layer_norm, (x, g, b)), (ops.rms_norm, (x, g))):
        kept = sorted((r.shape for r in saved_residuals(fn, *args)
                       if not r.is_argument and r.nbytes))
        assert kept == [(6, 1), (6, 8)], (fn.__name__, kept)
    autodiff = sum(r.nbytes for r in saved_residuals(R.layer_norm, x, g, b)
                   if not r.is_argument)
    ours = sum(r.nbytes for r in saved_residuals(ops.layer_norm, x, g, b) if not r.is_argument)
    assert ours < autodiff
    assert "custom_vjp_call" in str(jax.make_jaxpr(ops.layer_norm)(x, g, b))
    assert "custom_vjp_call" in str(jax.make_jaxpr(ops.rms_norm)(x, g))


def test_constant_rows_and_large_offsets():
    """A constant row normalises to 0 (beta) with finite gradients; a large common offset
    does not lose the signal (two-pass variance)."""
    x = jnp.asarray(np.stack([np.full(4, 3.0), np.zeros(4), 1e8 + np.arange(4.0)]))
    g, b = jnp.asarray(rand((4,), 50)), jnp.asarray(rand((4,), 51))

    @jax.jit
    def run(x):
        return [(f(x), jax.grad(lambda v: jnp.sum(jnp.sin(f(v))))(x))
                for f in (lambda v: ops.layer_norm(v, g, b), lambda v: ops.rms_norm(v, g))]

    (y, dx), (y_rms, dx_rms) = run(x)
    assert jnp.all(jnp.isfinite(dx)) and jnp.all(jnp.isfinite(dx_rms))
    np.testing.assert_allclose(y[0], b, rtol=1e-12)
    np.testing.assert_allclose(y_rms[1], 0.0)
    z = (np.arange(4.0) - 1.5) / np.sqrt(1.25 + 1e-5)
    np.testing.assert_allclose(y[2], z * g + b, rtol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_computes_statistics_in_float32(dtype):
    x32 = jnp.asarray(_ln_args((4, 16), 60)[0], jnp.float32)
    x = x32.astype(dtype)
    g, b = jnp.ones(16, jnp.float32), jnp.zeros(16, jnp.float32)
    y, vjp = jax.vjp(ops.layer_norm, x, g, b)
    dx, dg, db = vjp(jnp.ones_like(y))
    assert y.dtype == dtype and dx.dtype == dtype and dg.dtype == jnp.float32
    want = ops.layer_norm(x.astype(jnp.float32), g, b)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=2e-2)
    assert np.asarray(ops.rms_norm(x, None)).dtype == dtype


ERRORS = [
    (lambda x, g, b: ops.layer_norm(x, g[:3], b), ValueError,
     r"layer_norm: gamma has shape \(3,\), expected \(5,\) \(one per feature of x \(4, 5\)\)"),
    (lambda x, g, b: ops.layer_norm(x, g, b[None]), ValueError,
     r"layer_norm: beta has shape \(1, 5\), expected \(5,\)"),
    (lambda x, g, b: ops.layer_norm(x.astype(jnp.int32), g, b), TypeError,
     r"layer_norm: x must have a floating dtype, got int32"),
    (lambda x, g, b: ops.layer_norm(x, g, b.astype(jnp.float32)), TypeError,
     r"layer_norm: gamma has dtype float64 but beta has dtype float32"),
    (lambda x, g, b: ops.layer_norm(x[0, 0], g, b), ValueError,
     r"layer_norm: x has shape \(\), expected rank >= 1"),
    (lambda x, g, b: ops.layer_norm(x[:, :0], None, None), ValueError,
     r"layer_norm: x has shape \(4, 0\), expected at least one feature"),
    (lambda x, g, b: ops.layer_norm(x, g, b, eps=-1.0), ValueError,
     r"layer_norm: eps must be in \[0, inf\), got -1"),
    (lambda x, g, b: ops.layer_norm(x, g, b, eps=float("inf")), ValueError,
     r"layer_norm: eps must be finite"),
    (lambda x, g, b: ops.rms_norm(x, g.astype(jnp.int32)), TypeError,
     r"rms_norm: gamma must have a floating dtype, got int32"),
    (lambda x, g, b: ops.rms_norm(x, g[:4]), ValueError,
     r"rms_norm: gamma has shape \(4,\), expected \(5,\)"),
    (lambda x, g, b: ops.rms_norm(x, g, eps="1e-6"), TypeError,
     r"rms_norm: eps must be a Python float, got str"),
]


@pytest.mark.parametrize("call, exc, match", ERRORS)
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, tuple(jnp.asarray(a) for a in _ln_args((4, 5), 70)),
                             exc, match)


def test_reference_mode_gives_forward_mode():
    x, g, b = (jnp.asarray(a) for a in _ln_args((3, 4), 80))
    ln = lambda x, g, b: ops.layer_norm(x, g, b, eps=0.0)  # noqa: E731
    rms = lambda x, g: ops.rms_norm(x, g, eps=0.0)  # noqa: E731
    with ops.reference_mode():
        _, y_dot = jax.jvp(ln, (x, g, b), (x, g, b))
        _, r_dot = jax.jvp(rms, (x, g), (x, g))
    # with eps = 0, xhat is scale-invariant in x: d/ds LN(s x, s g, s b) at s = 1 is
    # gamma xhat + beta = y itself
    np.testing.assert_allclose(y_dot, ln(x, g, b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r_dot, rms(x, g), rtol=1e-12, atol=1e-12)
