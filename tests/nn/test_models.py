"""Whole models: the MLP with BatchNorm/Dropout and the book CNN against reference twins.

Each model is initialised from shapes alone (batch -1), run jitted in train and eval mode,
and its gradient (``jax.grad`` of softmax-CE of ``apply``, through funcnet's custom-VJP
ops) must equal that of the same model written with ``funcnet.ops.reference`` (plain
autodiff) to 1e-10 in float64, with the same params and keys.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import ops
from funcnet.ops import reference as R
from tests.nn._models import cnn, mlp, numpy_init, randint, randn, ref_cnn, ref_mlp

F64 = jnp.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _assert_trees_close(a, b, **tol):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def _data(shape, n_classes=10, seed=0):
    return randn(shape, seed), randint(shape[:1], n_classes, seed + 100)


@pytest.fixture(scope="module")
def mlp_setup():
    model = mlp()
    out_shape, params, state = numpy_init(model, (-1, 784), seed=1)
    # Non-trivial BN params/state so every term of the gradient is exercised.
    for i in (1, 5):
        params[i]["gamma"] = randn((100,), i, scale=0.1, shift=1.0)
        params[i]["beta"] = randn((100,), i + 10, scale=0.1, shift=-0.05)
        state[i]["mean"] = randn((100,), i + 20, scale=0.1)
        state[i]["var"] = jnp.abs(randn((100,), i + 30)) + 1.0
    return model, out_shape, params, state


def test_mlp_init_from_shapes(mlp_setup):
    model, out_shape, params, state = mlp_setup
    assert out_shape == (-1, 10)
    assert [p["w"].shape for p in (params[0], params[4], params[8])] == \
        [(784, 100), (100, 100), (100, 10)]
    assert all(params[i] == () for i in (2, 3, 6, 7))
    assert state[1]["mean"].shape == (100,) and state[0] == ()
    assert all(a.dtype == F64 for a in jax.tree_util.tree_leaves((params, state)))


@pytest.mark.parametrize("train", [True, False])
def test_mlp_grads_equal_reference(mlp_setup, train):
    model, _, params, state = mlp_setup
    x, y = _data((8, 784))
    key = jax.random.PRNGKey(7)

    @jax.jit     # one program computes both (one compile per train value)
    def loss_and_grad(params, state):
        def loss(p, use_ref):
            if use_ref:
                logits, s = ref_mlp(p, state, x, key, train)
                return R.softmax_cross_entropy(logits, y), (logits, s)
            logits, s = model.apply(p, state, x, key=key, train=train)
            return ops.softmax_cross_entropy(logits, y), (logits, s)
        return [jax.value_and_grad(loss, has_aux=True)(params, r) for r in (False, True)]

    ((l1, (logits1, s1)), g1), ((l2, (logits2, s2)), g2) = loss_and_grad(params, state)
    np.testing.assert_allclose(logits1, logits2, **TOL)
    np.testing.assert_allclose(l1, l2, **TOL)
    _assert_trees_close(g1, g2, **TOL)
    _assert_trees_close(s1, s2, **TOL)
    # The gradient is not trivially zero anywhere that matters.
    assert all(float(jnp.abs(g1[i]["w"]).max()) > 0 for i in (0, 4, 8))
    if train:
        assert not np.allclose(s1[1]["mean"], state[1]["mean"])   # running stats moved
    else:
        _assert_trees_close(s1, state, rtol=0, atol=0)              # eval leaves them


def test_mlp_train_and_eval_differ_and_dropout_key_matters(mlp_setup):
    model, _, params, state = mlp_setup
    x, _ = _data((4, 784))
    apply = jax.jit(model.apply, static_argnames="train")
    a = apply(params, state, x, key=jax.random.PRNGKey(0), train=True)[0]
    b = apply(params, state, x, key=jax.random.PRNGKey(0), train=True)[0]
    c = apply(params, state, x, key=jax.random.PRNGKey(1), train=True)[0]
    e1 = apply(params, state, x, train=False)[0]
    e2 = apply(params, state, x, key=jax.random.PRNGKey(1), train=False)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(e1, e2)                # eval ignores the key
    assert not np.allclose(a, e1)
    assert e1.shape == (4, 10) and e1.dtype == F64


@pytest.fixture(scope="module")
def cnn_setup():
    model = cnn()
    out_shape, params, state = numpy_init(model, (-1, 28, 28, 1), seed=3)
    params[0]["b"] = 0.01 * jnp.arange(30, dtype=F64)
    return model, out_shape, params, state


def test_cnn_grads_equal_reference(cnn_setup):
    model, out_shape, params, state = cnn_setup
    assert out_shape == (-1, 10)
    assert params[0]["w"].shape == (5, 5, 1, 30) and params[4]["w"].shape == (4320, 100)
    assert state == ((),) * 7
    x, y = _data((2, 28, 28, 1))

    @jax.jit     # the reference and both modes in one program (one compile)
    def loss_and_grad(params):
        def loss(p, use_ref, train):
            if use_ref:
                return R.softmax_cross_entropy(ref_cnn(p, x), y)
            logits, _ = model.apply(p, state, x, key=jax.random.PRNGKey(0), train=train)
            return ops.softmax_cross_entropy(logits, y)
        return [jax.value_and_grad(loss)(params, *flags)
                for flags in ((True, False), (False, True), (False, False))]

    (l_ref, g_ref), *ours = loss_and_grad(params)
    for l1, g1 in ours:                     # no stochastic layer: both modes agree
        np.testing.assert_allclose(l1, l_ref, **TOL)
        _assert_trees_close(g1, g_ref, **TOL)
    assert float(jnp.abs(g_ref[0]["w"]).max()) > 0


def test_layers_call_the_custom_vjp_ops(cnn_setup):
    """The layers call funcnet.ops (custom_vjp primitives), not re-derived jnp code."""
    model, _, params, state = cnn_setup
    x, y = _data((1, 28, 28, 1))
    jaxpr = str(jax.make_jaxpr(
        lambda p: ops.softmax_cross_entropy(model.apply(p, state, x)[0], y))(params))
    names = re.findall(r"custom_vjp_call\[\s*name=(\w+)", jaxpr)
    assert len(names) == 7                              # 6 layer ops + the loss
    for op, times in (("conv2d", 1), ("relu", 2), ("max_pool2d", 1), ("affine", 2)):
        assert sum(op in n for n in names) == times, (op, names)
