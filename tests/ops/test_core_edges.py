"""Edge cases of the core ops: kinks, saturation, ties, degenerate batches, low precision."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as ref
from tests.ops._cases import labels, normal


def test_relu_gradient_at_zero_is_zero():
    x = jnp.array([-1.0, 0.0, 0.0, 2.0])
    g = jax.grad(lambda v: jnp.sum(ops.relu(v)))(x)
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(g, jax.grad(lambda v: jnp.sum(ref.relu(v)))(x))


def test_relu_residual_is_a_boolean_mask():
    x = normal(0, (3, 4))
    _, res = ops.activations._relu_fwd(x)
    assert res.dtype == jnp.bool_ and res.shape == x.shape


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturated_activations_have_finite_zero_gradients(name):
    x = jnp.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    y = getattr(ops, name)(x)
    g = jax.grad(lambda v: jnp.sum(getattr(ops, name)(v)))(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    assert g[0] == 0.0 and g[-1] == 0.0
    check_vjp(getattr(ops, name), getattr(ref, name), (x,), fd_rtol=None)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_large_logits(name):
    x = jnp.array([[1000.0, 0.0, -1000.0], [5e4, 5e4, 5e4]])
    check_vjp(getattr(ops, name), getattr(ref, name), (x,), fd_rtol=None)
    assert np.all(np.isfinite(getattr(ops, name)(x)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_low_precision_large_logits_no_nan(dtype):
    logits = jnp.array([[3e4, -3e4, 0.0], [-1e4, 2e4, 1.0]], dtype)
    t = jnp.array([1, 0], jnp.int32)
    for fn in (ops.softmax_cross_entropy, lambda x, y: jnp.sum(ops.log_softmax(x)),
               lambda x, y: jnp.sum(ops.softmax(x))):
        v, g = jax.value_and_grad(fn)(logits, t)
        assert np.isfinite(np.asarray(v, np.float32)) and g.dtype == dtype
        assert np.all(np.isfinite(np.asarray(g, np.float32)))
    s, gs = jax.value_and_grad(ops.sigmoid_binary_cross_entropy)(
        logits, jnp.ones_like(logits))
    assert np.isfinite(np.asarray(s, np.float32)) and np.all(np.isfinite(np.asarray(gs, np.float32)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_low_precision_ops_keep_dtype(dtype):
    x, w, b = (normal(1, (4, 3), dtype=dtype), normal(2, (3, 2), dtype=dtype),
               normal(3, (2,), dtype=dtype))
    gx, gw, gb = jax.grad(lambda *a: jnp.sum(ops.affine(*a)).astype(jnp.float32),
                          argnums=(0, 1, 2))(x, w, b)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    y, mean, var = ops.batch_norm(x, jnp.ones(3, dtype), jnp.zeros(3, dtype))
    assert y.dtype == dtype and mean.dtype == var.dtype == jnp.float32
    yr = ref.batch_norm(x.astype(jnp.float32), jnp.ones(3, jnp.float32), jnp.zeros(3, jnp.float32))[0]
    tol = 1e-2 if dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(y, np.float32), yr, atol=tol * 4)


def test_index_and_one_hot_labels_agree():
    logits, idx = normal(4, (6, 5), 2.0), labels(5, (6,), 5)
    onehot = jax.nn.one_hot(idx, 5, dtype=jnp.float64)
    li, gi = jax.value_and_grad(ops.softmax_cross_entropy)(logits, idx)
    lo, go = jax.value_and_grad(ops.softmax_cross_entropy)(logits, onehot)
    assert abs(li - lo) < 1e-14
    assert_close(gi, go, 1e-14, "index vs one-hot grad")
    probs = ops.softmax(logits)
    assert abs(ops.cross_entropy(probs, idx) - ops.cross_entropy(probs, onehot)) < 1e-14


def test_softmax_cross_entropy_gradient_is_notes_formula():
    logits, idx = normal(6, (4, 3)), labels(7, (4,), 3)
    g = jax.grad(ops.softmax_cross_entropy)(logits, idx)
    expected = (jax.nn.softmax(logits) - jax.nn.one_hot(idx, 3, dtype=jnp.float64)) / 4
    assert_close(g, expected, 1e-13, "(y - t) / N")


def test_batch_of_one():
    x = normal(8, (1, 4))
    check_vjp(ops.softmax_cross_entropy, ref.softmax_cross_entropy, (x, labels(9, (1,), 4)))
    check_vjp(ops.affine, ref.affine, (x, normal(10, (4, 2)), normal(11, (2,))))


def test_hinge_ties_take_zero_subgradient():
    scores = jnp.array([[2.0, 1.0, 0.5], [0.0, 0.0, 0.0]])
    t = jnp.array([0, 1], jnp.int32)
    # Row 0: s_1 - s_0 + 1 == 0 exactly (tie); row 1: every margin is 1 > 0.
    g = jax.grad(ops.multiclass_hinge)(scores, t)
    np.testing.assert_array_equal(g, [[0.0, 0.0, 0.0], [0.5, -1.0, 0.5]])
    check_vjp(ops.multiclass_hinge, ref.multiclass_hinge, (scores, t), fd_rtol=None)
    assert float(ops.multiclass_hinge(scores, t)) == pytest.approx(1.0)


def test_hinge_matches_note_001_example_value():
    # cs231n's worked example (the one note 001 follows): scores for three images.
    scores = jnp.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    t = jnp.array([0, 1, 2], jnp.int32)
    assert float(ops.multiclass_hinge(scores, t)) == pytest.approx((2.9 + 0.0 + 12.9) / 3)


def test_batch_norm_constant_feature():
    x = jnp.concatenate([jnp.full((5, 1), 3.0), normal(12, (5, 2))], axis=1)
    gamma, beta = normal(13, (3,)), normal(14, (3,))
    out = check_vjp(ops.batch_norm, ref.batch_norm, (x, gamma, beta), fd_rtol=1e-5)
    y, mean, var = out["value"]
    np.testing.assert_allclose(y[:, 0], jnp.full(5, beta[0]), atol=1e-12)
    assert var[0] == 0.0 and mean[0] == 3.0


def test_batch_norm_gradient_is_notes_compact_formula():
    x, gamma, beta, dy = normal(15, (7, 3)), normal(16, (3,)), normal(17, (3,)), normal(18, (7, 3))
    _, vjp = jax.vjp(lambda a: ops.batch_norm(a, gamma, beta)[0], x)
    mu, var = x.mean(0, keepdims=True), x.var(0, keepdims=True)
    xhat = (x - mu) / jnp.sqrt(var + 1e-5)
    expected = (gamma[None] / jnp.sqrt(var + 1e-5)
                * (dy - dy.mean(0, keepdims=True) - xhat * (dy * xhat).mean(0, keepdims=True)))
    assert_close(vjp(dy)[0], expected, 1e-12, "note 000 compact formula")


def test_batch_norm_sync_under_vmap_equals_global_batch():
    x, gamma, beta = normal(19, (4, 3, 2)), normal(20, (2,)), normal(21, (2,))
    dy = normal(22, (4, 3, 2))

    def per_shard(f):
        return jax.vmap(lambda a: f(a, gamma, beta, 1e-5, "d")[0], axis_name="d")

    def glob(a):
        return ops.batch_norm(a.reshape(12, 2), gamma, beta)[0].reshape(4, 3, 2)

    @jax.jit
    def run(x, dy):                    # one program (eagerly: one compile per primitive)
        return (per_shard(ops.batch_norm)(x), glob(x),
                *(jax.vjp(f, x)[1](dy)[0]
                  for f in (per_shard(ops.batch_norm), per_shard(ref.batch_norm), glob)))

    y_sync, y_glob, gx, gx_ref, gx_glob = run(x, dy)
    assert_close(y_sync, y_glob, 1e-12, "sync forward")
    assert_close(gx, gx_ref, 1e-10, "sync backward vs reference")
    assert_close(gx, gx_glob, 1e-10, "sync backward vs global batch")


def test_batch_norm_stat_outputs_are_differentiable():
    x, gamma, beta = normal(23, (5, 3)), normal(24, (3,)), normal(25, (3,))
    f = lambda mod: (lambda a: jnp.sum(jnp.sin(mod.batch_norm(a, gamma, beta)[1]))  # noqa: E731
                     + jnp.sum(mod.batch_norm(a, gamma, beta)[2] ** 2))
    got, want = jax.jit(lambda x: (jax.grad(f(ops))(x), jax.grad(f(ref))(x)))(x)
    assert_close(got, want, 1e-10, "stats grads")


def test_bce_clips_instead_of_nan():
    p = jnp.array([0.0, 1.0, 0.5]); t = jnp.array([1.0, 0.0, 1.0])
    v, g = jax.value_and_grad(ops.binary_cross_entropy)(p, t)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[:2], [0.0, 0.0])


def test_l2_penalty_gradient_is_weight_decay_times_w():
    params = {"w": normal(26, (3, 2)), "b": normal(27, (2,))}
    g = jax.grad(ops.l2_penalty)(params, 0.3)
    assert_close(g, jax.tree_util.tree_map(lambda p: 0.3 * p, params), 1e-14, "wd * W")


def test_relu_propagates_nan_under_grad():
    x = jnp.array([jnp.nan, -1.0, 2.0])
    y, vjp = jax.vjp(ops.relu, x)
    assert np.isnan(y[0]) and np.isnan(jax.jit(ops.relu)(x)[0])
    np.testing.assert_array_equal(vjp(jnp.ones(3))[0], [0.0, 0.0, 1.0])
