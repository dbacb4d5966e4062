"""train_step / make_train_step / evaluate: one update, mixed precision, eval batching."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import ops, optim, train
from tests.train._setup import ADAM, BN_MLP, MLP, X_TEST, X_TRAIN, Y_TEST, Y_TRAIN, init

STEP = train.make_train_step(BN_MLP, ADAM)


def test_step_decreases_loss_and_updates_bn_state():
    params, state = init(BN_MLP)
    opt_state = ADAM.init(params)  # adam shares one zeros tree for mu and nu: must not break
    x, y = X_TRAIN[:128], Y_TRAIN[:128]
    state0 = jax.tree_util.tree_map(np.asarray, state)
    losses = []
    for i in range(15):
        params, state, opt_state, m = STEP(params, state, opt_state, x, y,
                                           jax.random.PRNGKey(i))
        losses.append(float(m["loss"]))
    assert set(m) == {"loss", "accuracy"}
    assert losses[-1] < 0.5 * losses[0]
    assert 0.0 <= float(m["accuracy"]) <= 1.0
    assert not np.allclose(state[1]["mean"], state0[1]["mean"])  # running stats moved


def test_pure_step_matches_manual_update():
    params, state = init(MLP)
    opt = optim.sgd(0.1)
    x, y = X_TRAIN[:16], Y_TRAIN[:16]
    step = train.train_step(MLP, opt)
    new_params, _, _, m = step(params, state, opt.init(params), x, y, jax.random.PRNGKey(0))

    def loss(p):
        return ops.softmax_cross_entropy(MLP.apply(p, state, x)[0], y)

    grads = jax.grad(loss)(params)
    expected = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    for a, b in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["loss"], loss(params), rtol=1e-6)


def test_mixed_precision_keeps_float32_master_weights():
    params, state = init(BN_MLP)
    step = train.make_train_step(BN_MLP, ADAM, compute_dtype=jnp.bfloat16)
    opt_state = ADAM.init(params)
    jaxpr = str(jax.make_jaxpr(train.train_step(BN_MLP, ADAM, compute_dtype=jnp.bfloat16))(
        params, state, opt_state, X_TRAIN[:64], Y_TRAIN[:64], jax.random.PRNGKey(0)))
    assert "bf16" in jaxpr
    for i in range(10):
        params, state, opt_state, m = step(params, state, opt_state, X_TRAIN[:64],
                                           Y_TRAIN[:64], jax.random.PRNGKey(i))
    for tree in (params, state, opt_state):
        for leaf in jax.tree_util.tree_leaves(tree):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32
    assert m["loss"].dtype == jnp.float32 and np.isfinite(m["loss"])
    assert float(m["loss"]) < 2.0


def test_evaluate_counts_every_example_once():
    params, state = init(BN_MLP)
    x, y = X_TEST[:101], Y_TEST[:101]
    got = train.evaluate(BN_MLP, params, state, x, y, batch_size=32)  # 3 full + 5 padded
    logits, _ = BN_MLP.apply(params, state, x)
    np.testing.assert_allclose(got["loss"], ops.softmax_cross_entropy(logits, y), rtol=1e-5)
    assert got["accuracy"] == pytest.approx(float(train.accuracy(logits, y)))
    one_hot = jax.nn.one_hot(y, 10, dtype=jnp.float32)
    got_oh = train.evaluate(BN_MLP, params, state, x, one_hot, batch_size=500)
    assert got_oh["accuracy"] == pytest.approx(got["accuracy"])
    np.testing.assert_allclose(got_oh["loss"], got["loss"], rtol=1e-5)


def test_evaluate_rejects_bad_input():
    params, state = init(MLP)
    with pytest.raises(ValueError, match="evaluate: data x has 10 rows but y has 9"):
        train.evaluate(MLP, params, state, X_TEST[:10], Y_TEST[:9])
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        train.evaluate(MLP, params, state, X_TEST[:10], Y_TEST[:10], batch_size=0)
    with pytest.raises(TypeError, match="model must be a funcnet.nn.Layer"):
        train.evaluate(lambda x: x, params, state, X_TEST[:10], Y_TEST[:10])
    with pytest.raises(TypeError, match="opt must be an optimizer"):
        train.make_train_step(MLP, "adam")
