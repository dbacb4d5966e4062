"""train_step / make_train_step: one update, metrics rule, accumulation, mixed precision."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, train
from funcnet.ops import reference
from funcnet.gradcheck import assert_close
from tests.train._setup import ADAM, BN_MLP, MLP, X_TRAIN, Y_TRAIN, init

STEP = train.make_train_step(BN_MLP, ADAM)


def test_step_decreases_loss_and_updates_bn_state():
    params, state = init(BN_MLP)
    opt_state = ADAM.init(params)
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


def test_make_train_step_is_the_jitted_step_and_donates():
    """No Python wrapper per call: the factory returns jax.jit's own object."""
    assert type(STEP) is type(jax.jit(lambda a: a))
    params, state = init(BN_MLP)
    opt_state = ADAM.init(params)
    out = STEP(params, state, opt_state, X_TRAIN[:128], Y_TRAIN[:128], jax.random.PRNGKey(0))
    assert all(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves((params, opt_state)))
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(out))
    kept = train.make_train_step(MLP, ADAM, donate=False)
    p, s = init(MLP)
    kept(p, s, ADAM.init(p), X_TRAIN[:8], Y_TRAIN[:8])       # key=None: no dropout
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(p))


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
    np.testing.assert_allclose(m["accuracy"], train.accuracy(MLP.apply(params, state, x)[0], y))


LOGITS = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
INT_Y = jnp.asarray([0, 1, 2, 0, 1, 2], jnp.int32)
ONE_HOT = jax.nn.one_hot(INT_Y, 3, dtype=jnp.float32)


@pytest.mark.parametrize("loss_fn, logits, labels, keys", [
    (ops.softmax_cross_entropy, LOGITS, INT_Y, {"accuracy"}),
    (ops.softmax_cross_entropy, LOGITS, ONE_HOT, {"accuracy"}),
    (ops.multiclass_hinge, LOGITS, INT_Y, {"accuracy"}),
    (ops.mean_squared_error, LOGITS, ONE_HOT, set()),        # a regression on 3 outputs
    (ops.mean_squared_error, LOGITS[:, :1], ONE_HOT[:, :1], set()),
    (lambda lg, y: ops.sigmoid_binary_cross_entropy(lg[:, 0], y.astype(jnp.float32)),
     LOGITS[:, :1], INT_Y % 2, set()),                    # one logit: no softmax classes
    (ops.sigmoid_binary_cross_entropy, LOGITS, ONE_HOT, set()),
    (lambda lg, y: ops.softmax_cross_entropy(lg, y), LOGITS, ONE_HOT, set()),  # unknown loss
    (lambda lg, y: ops.softmax_cross_entropy(lg, y), LOGITS, INT_Y, {"accuracy"}),
    (functools.partial(ops.softmax_cross_entropy, label_smoothing=0.1), LOGITS, ONE_HOT,
     {"accuracy"}),
])
def test_default_metrics_rule(loss_fn, logits, labels, keys):
    got = train.default_metrics(loss_fn)(logits, labels)
    assert set(got) == keys
    if keys:
        want = np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(INT_Y))
        np.testing.assert_allclose(got["accuracy"], want)


def test_a_one_logit_binary_classifier_with_integer_labels_trains_and_evaluates():
    """0/1 integer labels of a (N, 1) output are no class indices of a 1-class softmax:
    fit and evaluate take them with a sigmoid loss (they were refused as out of range
    for 1 class), report no argmax accuracy, and accuracy() says why it has none."""
    model = nn.serial(nn.Dense(8), nn.ReLU(), nn.Dense(1))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, X_TRAIN.shape[1]))
    y = (np.asarray(Y_TRAIN) % 2).astype(np.int32)

    def bce(logits, labels):
        return ops.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(jnp.float32))

    *_, hist = train.fit(model, params, state, ADAM, (X_TRAIN, y), 2, batch_size=50,
                         key=0, progress=False, loss_fn=bce)
    assert set(hist) == {"epoch", "loss", "learning_rate", "epoch_time"}
    assert hist["loss"][1] < hist["loss"][0]
    got = train.evaluate(model, params, state, X_TRAIN, y, loss_fn=bce)
    assert got == {"loss": pytest.approx(float(bce(model.apply(params, state, X_TRAIN)[0],
                                                       y)), rel=1e-5)}
    with pytest.raises(ValueError, match=r"accuracy: logits of shape \(6, 1\) hold one "
                                         r"output, not class scores"):
        train.accuracy(LOGITS[:, :1], INT_Y % 2)


def test_default_metrics_follow_the_loss_class_axis():
    """``partial(softmax_cross_entropy, axis=...)``: the accuracy's argmax runs over the
    loss's class axes (channels-first logits, a tuple of axes, the reference twin), for
    index and one-hot labels, in a step and in ``evaluate``; one metrics function per
    axis (so steps compile once)."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5, 3)), jnp.float32)
    y = jnp.asarray([[0, 1, 2], [3, 4, 0], [1, 1, 1], [4, 3, 2]], jnp.int32)   # (N, T)
    want = np.mean(np.argmax(np.asarray(x), 1) == np.asarray(y))
    assert 0 < want < 1
    sce1 = functools.partial(ops.softmax_cross_entropy, axis=1)
    for loss_fn in (sce1, functools.partial(reference.softmax_cross_entropy, axis=-2)):
        m = train.default_metrics(loss_fn)
        np.testing.assert_allclose(m(x, y)["accuracy"], want)
        np.testing.assert_allclose(m(x, jax.nn.one_hot(y, 5, axis=1))["accuracy"], want)
    assert train.default_metrics(sce1) is train.default_metrics(
        functools.partial(ops.softmax_cross_entropy, axis=1))
    flat = train.default_metrics(functools.partial(ops.softmax_cross_entropy, axis=(1, 2)))
    yf = np.argmax(np.asarray(x).reshape(4, -1), 1).astype(np.int32)
    yf[2:] = (yf[2:] + 1) % 15                       # two of four rows right
    np.testing.assert_allclose(flat(x, jnp.asarray(yf))["accuracy"], 0.5)
    # a sequence model whose logits are (N, C, T), trained and evaluated with the axis
    model = nn.serial(nn.Embedding(7, 6), nn.Dense(5), nn.SwapAxes(1, 2))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 3))
    tokens = jnp.asarray([[0, 1, 2], [3, 4, 5], [6, 0, 1], [2, 3, 4]], jnp.int32)
    logits = model.apply(params, state, tokens)[0]
    acc = np.mean(np.argmax(np.asarray(logits), 1) == np.asarray(y))
    step = train.train_step(model, optim.sgd(0.1), sce1)
    m = step(params, state, optim.sgd(0.1).init(params), tokens, y)[3]
    np.testing.assert_allclose(m["accuracy"], acc)
    np.testing.assert_allclose(m["loss"], sce1(logits, y), rtol=1e-6)
    ev = train.evaluate(model, params, state, tokens, y, batch_size=3, loss_fn=sce1)
    np.testing.assert_allclose(ev["accuracy"], acc, rtol=1e-6)
    np.testing.assert_allclose(ev["loss"], sce1(logits, y), rtol=1e-6)
    # the host check of the labels counts the classes on the loss's axis (5, not T = 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 5\)"):
        train.evaluate(model, params, state, tokens, y.at[0, 0].set(5), loss_fn=sce1)


def test_regression_step_reports_no_accuracy_and_custom_metrics_are_used():
    model = nn.serial(nn.Dense(1, dtype=np.float32))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 64))
    target = X_TRAIN[:32, :1]
    step = train.train_step(model, optim.sgd(0.1), ops.mean_squared_error)
    assert set(step(params, state, optim.sgd(0.1).init(params), X_TRAIN[:32], target)[3]) == {
        "loss"}
    mae = lambda lg, t: {"mae": jnp.mean(jnp.abs(lg - t))}  # noqa: E731
    step = train.train_step(model, optim.sgd(0.1), ops.mean_squared_error, metrics_fn=mae)
    m = step(params, state, optim.sgd(0.1).init(params), X_TRAIN[:32], target)[3]
    pred = model.apply(params, state, X_TRAIN[:32])[0]
    np.testing.assert_allclose(m["mae"], np.mean(np.abs(pred - target)), rtol=1e-6)


def test_accumulation_equals_optim_accumulate_on_strided_micro_batches():
    """accum_steps=2 == two steps with optim.accumulate(opt, 2) on x[0::2], x[1::2] (BN too)."""
    model = nn.serial(nn.Dense(16), nn.BatchNorm(), nn.ReLU(), nn.Dense(10))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 64))
    x, y = X_TRAIN[:32].astype(np.float64), Y_TRAIN[:32]
    acc = optim.accumulate(ADAM, 2)
    ref = jax.jit(train.train_step(model, acc))
    p, s, o = params, state, acc.init(params)
    losses = []
    for i in range(2):
        p, s, o, m = ref(p, s, o, x[i::2], y[i::2])
        losses.append(m["loss"])
    got = jax.jit(train.train_step(model, ADAM, accum_steps=2))(params, state,
                                                                ADAM.init(params), x, y)
    assert_close(got[:3], (p, s, o.inner_opt_state), 1e-12, "accumulation")
    np.testing.assert_allclose(got[3]["loss"], np.mean(losses), rtol=1e-12)
    with pytest.raises(ValueError, match=r"train_step: x has shape \(30, 64\); "
                                         r"its leading size must be divisible by 4"):
        train.train_step(model, ADAM, accum_steps=4)(params, state, ADAM.init(params),
                                                     x[:30], y[:30])


def test_accumulated_masked_metrics_are_the_whole_batch_metrics():
    """Targets {"labels", "mask"} kept unevenly over the micro-batches (one keeps 1 entry,
    the other 4): with accum_steps=2 the masked accuracy is the whole batch's, as without
    accumulation (each micro-batch weighted by its kept entries); the loss, a mean over all
    rows, is the mean of the micro-batches'."""
    params, state = init(MLP)
    x = X_TRAIN[:8]
    pred = np.argmax(MLP.apply(params, state, x)[0], axis=-1)
    labels = np.where(np.arange(8) % 3 == 0, pred, (pred + 1) % 10)   # right on 0, 3, 6
    mask = np.array([1, 1, 1, 0, 1, 0, 1, 0], bool)   # x[0::2] keeps 4 rows, x[1::2] one
    y = {"labels": labels, "mask": mask}

    def loss_fn(logits, t):
        return ops.softmax_cross_entropy(logits, t["labels"], where=t["mask"])

    sgd = optim.sgd(0.1)
    whole, accumulated = (jax.jit(train.train_step(MLP, sgd, loss_fn, accum_steps=k))(
        params, state, sgd.init(params), x, y)[3] for k in (1, 2))
    np.testing.assert_allclose(whole["accuracy"], 2 / 5, rtol=1e-6)
    np.testing.assert_allclose(accumulated["accuracy"], whole["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(accumulated["loss"], whole["loss"], rtol=1e-6)


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


def test_top_k_accuracy():
    """k > 1: the label among the k largest logits (ties to the lower index, as argmax);
    k = 1 is the argmax accuracy; where= counts the kept rows only."""
    logits = jnp.asarray([[0.1, 0.5, 0.3, 0.9], [2.0, 1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 0.0]])
    labels = jnp.asarray([2, 2, 1])
    assert float(train.accuracy(logits, labels)) == 0.0
    np.testing.assert_allclose(train.accuracy(logits, labels, k=2), 1 / 3)    # row 3 tie
    np.testing.assert_allclose(train.accuracy(logits, labels, k=3), 1.0)
    np.testing.assert_allclose(train.accuracy(logits, jax.nn.one_hot(labels, 4), k=3), 1.0)
    np.testing.assert_allclose(
        train.accuracy(logits, labels, jnp.asarray([True, False, True]), k=3), 1.0)
    rng = np.random.default_rng(0)
    big, y = jnp.asarray(rng.standard_normal((64, 10))), jnp.asarray(rng.integers(0, 10, 64))
    assert float(train.accuracy(big, y, k=1)) == float(train.accuracy(big, y))
    rank = np.sum(np.asarray(big) > np.asarray(big)[np.arange(64), y][:, None], axis=1)
    np.testing.assert_allclose(train.accuracy(big, y, k=5), np.mean(rank < 5), rtol=1e-7)
    with pytest.raises(ValueError, match=r"accuracy: k = 11 is more than the 10 classes"):
        train.accuracy(big, y, k=11)
    with pytest.raises(TypeError, match=r"accuracy: k must be an int"):
        train.accuracy(big, y, k=2.0)
