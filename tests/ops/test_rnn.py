"""rnn: BPTT custom VJP vs autodiff of the lax.scan twin and central differences,
transforms (jit, vmap per-example grads, grad-of-grad, pmap), residuals, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from funcnet.ops.rnn import rnn
from funcnet.gradcheck import check_vjp
from tests.ops._cases import rand


def _args(t, n, d, h, seed=0, scale=0.5):
    return (rand((t, n, d), seed), rand((n, h), seed + 1),
            scale * rand((d, h), seed + 2), scale * rand((h, h), seed + 3), rand((h,), seed + 4))


@pytest.mark.parametrize("t, n, d, h", [(1, 2, 3, 4), (20, 3, 2, 5), (7, 1, 1, 3)],
                         ids=["T1", "T20", "batch1"])
def test_rnn_vjp_matches_reference_and_finite_differences(t, n, d, h):
    y = check_vjp([rnn], R.rnn, _args(t, n, d, h), seed=1)["value"]
    assert y.shape == (t, n, h)


def test_rnn_saturated_units():
    """Large weights push tanh into saturation (1 - h^2 ~ 0): still exact."""
    check_vjp([rnn], R.rnn, _args(5, 2, 3, 4, seed=3, scale=4.0), fd_rtol=None)


def test_op_is_custom_vjp_with_one_reverse_scan():
    args = _args(4, 2, 3, 5)
    assert "custom_vjp_call" in str(jax.make_jaxpr(rnn)(*args))
    jaxpr = jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(rnn(*a)), argnums=(0, 1, 2, 3, 4)))(*args)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert [e.params["reverse"] for e in scans] == [False, True]   # forward + ONE BPTT


def _loss(f):
    def loss(params, xs):
        hs = f(xs, params["h0"], params["wx"], params["wh"], params["b"])
        return jnp.sum(jnp.sin(hs[-1])) + 0.1 * jnp.sum(hs * hs)
    return loss


def test_vmap_per_example_grads_and_grad_of_grad():
    xs_all, h0, wx, wh, b = _args(6, 4, 3, 5)
    params = {"h0": h0[0], "wx": wx, "wh": wh, "b": b}
    per = jnp.asarray(xs_all).transpose(1, 0, 2)[:, :, None, :]   # 4 sequences, N = 1
    per_params = dict(params, h0=params["h0"][None])
    # grad of grad: curvature of the loss along wh; all in one compilation
    gg = lambda f, p, xs: jax.grad(lambda wh: jnp.sum(jax.grad(_loss(f))(  # noqa: E731
        dict(p, wh=wh), xs)["wx"] ** 2))(p["wh"])
    run = jax.jit(lambda p, xs: [[jax.vmap(jax.grad(_loss(f)), in_axes=(None, 0))(p, xs),
                                  jax.grad(_loss(f))(p, xs[2]), gg(f, p, xs[0])]
                                 for f in (rnn, R.rnn)])
    (got, one, got2), (want, _, want2) = run(per_params, per)
    assert_close(jax.tree_util.tree_map(lambda g: g[2], got), one, 1e-12, "vmap vs single")
    assert_close(got, want, 1e-10, "vmap(grad) vs reference")
    assert_close(got2, want2, 1e-10, "grad(grad)")


def test_pmap_over_one_device():
    xs, h0, wx, wh, b = _args(3, 2, 3, 4)
    params = {"h0": h0, "wx": wx, "wh": wh, "b": b}
    g = jax.pmap(jax.grad(_loss(rnn)), in_axes=(None, 0))(params, jnp.asarray(xs)[None])
    want = jax.jit(jax.grad(_loss(R.rnn)))(params, xs)
    assert_close(jax.tree_util.tree_map(lambda a: a[0], g), want, 1e-10, "pmap")


@pytest.mark.parametrize("i, value, exc, match", [
    (0, np.zeros((4, 3)), ValueError, r"rnn: xs has shape \(4, 3\) \(rank 2\), expected rank 3 \(T, N, D\)"),
    (1, np.zeros((3, 5)), ValueError, r"rnn: h0 has shape \(3, 5\), expected \(2, 5\)"),
    (2, np.zeros((4, 5)), ValueError, r"rnn: wx has shape \(4, 5\), expected \(3, 5\)"),
    (3, np.zeros((5, 4)), ValueError, r"rnn: wh has shape \(5, 4\), expected \(5, 5\)"),
    (4, np.zeros((5, 1)), ValueError, r"rnn: b has shape \(5, 1\), expected \(5,\)"),
    (4, np.zeros((5,), np.float32), TypeError,
     r"rnn: xs has dtype float64 but b has dtype float32"),
    (0, np.zeros((4, 2, 3), np.int32), TypeError, r"rnn: xs must have a floating dtype"),
    (0, np.zeros((0, 2, 3)), ValueError, r"rnn: xs has shape \(0, 2, 3\), expected T >= 1"),
])
def test_rnn_bad_input_raises(i, value, exc, match):
    args = list(_args(4, 2, 3, 5))
    args[i] = value
    for fn in (rnn, R.rnn):
        with pytest.raises(exc, match=match):
            fn(*args)


def test_rnn_bad_lengths_and_return_carry_raise():
    """Eagerly, and under jit for what is static there (a bad length's value is not:
    under jit that sequence is NaN, see test_gated_rnn_lengths)."""
    args = _args(4, 2, 3, 5)
    for fn in (rnn, R.rnn):
        for call in (lambda f: f(*args), lambda f: jax.jit(f)(*args)):
            with pytest.raises(TypeError, match=r"rnn: return_carry must be a bool, got "
                                                r"int 1"):
                call(lambda *a: fn(*a, return_carry=1))
            with pytest.raises(TypeError, match=r"rnn: lengths must have an integer dtype"):
                call(lambda *a: fn(*a, lengths=np.array([1.0, 2.0])))
            with pytest.raises(ValueError, match=r"rnn: lengths has shape \(3,\), expected "
                                                 r"\(2,\)"):
                call(lambda *a: fn(*a, lengths=np.array([1, 2, 3])))
        with pytest.raises(ValueError, match=r"rnn: lengths hold 5 \(at index \(1,\)\), "
                                             r"expected lengths in \[0, T = 4\]"):
            fn(*args, lengths=np.array([1, 5]))
