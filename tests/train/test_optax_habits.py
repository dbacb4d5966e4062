"""Habits brought from optax work in fit and the training step: optax.MultiSteps as the
optimizer, optimizers that read the loss (value=, e.g. reduce_on_plateau), loss and metrics
functions that are unhashable callable objects, and a metrics function returning None."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import checkpoint, nn, ops, train
from tests.train._setup import ADAM, FIT, MLP, assert_trees_equal, init, subset

X, Y = subset(192)


@pytest.mark.parametrize("scan", [True, False])
def test_optax_multisteps_object_is_an_optimizer(scan, tmp_path):
    """It has init and update but is not a tuple; fit used to refuse it."""
    params, state = init(MLP)
    wrapped = optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2)
    with jax.numpy_dtype_promotion("standard"):    # optax's MultiSteps mixes float and int
        direct = train.fit(MLP, params, state, wrapped, (X, Y), 2, scan=scan,
                           checkpoint=checkpoint.CheckpointManager(tmp_path), **FIT)
        plain = train.fit(MLP, params, state, wrapped.gradient_transformation(), (X, Y), 2,
                          scan=scan, **FIT)
    assert_trees_equal(direct[:3], plain[:3])
    assert int(direct[2].gradient_step) == 6                 # 12 steps, one update per 2


@jax.numpy_dtype_promotion("standard")                  # optax's plateau rule mixes dtypes
def test_an_update_that_reads_the_loss_gets_value():
    """optax.contrib.reduce_on_plateau needs update(..., value=loss): the step passes the
    batch loss, as a hand-written optax loop does."""
    opt = optax.chain(optax.sgd(0.5), optax.contrib.reduce_on_plateau(
        factor=0.5, patience=1, accumulation_size=1, rtol=0.5))
    model = nn.serial(nn.Dense(32), nn.ReLU(), nn.Dense(10))      # float64: exact compare
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 64))
    step = jax.jit(train.train_step(model, opt))
    p, s, o = params, state, opt.init(params)
    mp, mo = params, opt.init(params)

    def loss_of(p_, x, y):
        return ops.softmax_cross_entropy(model.apply(p_, state, x, train=True)[0], y)

    @jax.jit
    def manual_step(mp, mo, x, y):     # the hand-written loop's step (jitted, as users do)
        value, g = jax.value_and_grad(loss_of)(mp, x, y)
        updates, mo = opt.update(g, mo, mp, value=value)
        return optax.apply_updates(mp, updates), mo, value

    for i in range(6):
        x, y = X[32 * i:32 * (i + 1)], Y[32 * i:32 * (i + 1)]
        p, s, o, m = step(p, s, o, x, y)
        mp, mo, value = manual_step(mp, mo, x, y)
        np.testing.assert_allclose(m["loss"], value, rtol=1e-12)
    assert float(mo[1].scale) < 1.0                     # the plateau rule did act
    for a, b in zip(jax.tree_util.tree_leaves((p, o)), jax.tree_util.tree_leaves((mp, mo))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-15)


@dataclasses.dataclass
class Smoothed:                                          # eq=True: instances are unhashable
    eps: float = 0.1

    def __call__(self, logits, labels):
        onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return ops.softmax_cross_entropy(logits, onehot * (1 - self.eps) + self.eps / 10)


@dataclasses.dataclass
class TopClass:
    def __call__(self, logits, labels):
        hit = jnp.argmax(logits, -1).astype(labels.dtype) == labels
        return {"top": jnp.mean(hit.astype(jnp.float32))}


def test_unhashable_loss_and_metrics_objects_train_and_evaluate():
    params, state = init(MLP)
    loss, metrics = Smoothed(), TopClass()
    with pytest.raises(TypeError):
        hash(loss)
    out = train.fit(MLP, params, state, ADAM, (X, Y), 2, loss_fn=loss,
                    metrics_fn=metrics, eval_data=(X, Y), **FIT)
    ref = train.fit(MLP, params, state, ADAM, (X, Y), 2,
                    loss_fn=lambda lg, t: loss(lg, t),
                    metrics_fn=lambda lg, t: metrics(lg, t), eval_data=(X, Y), **FIT)
    assert_trees_equal(out[:3], ref[:3])
    assert out[3]["top"] == ref[3]["top"] and out[3]["eval_top"] == ref[3]["eval_top"]
    ev = train.evaluate(MLP, out[0], out[1], X, Y, loss_fn=loss, metrics_fn=metrics)
    assert ev == pytest.approx({"loss": out[3]["eval_loss"][-1], "top": out[3]["eval_top"][-1]})


def test_a_metrics_function_may_return_none():
    params, state = init(MLP)
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 1,
                         metrics_fn=lambda lg, t: None, eval_data=(X, Y), **FIT)
    assert [k for k in hist if k.endswith("loss")] == ["loss", "eval_loss"]
    assert "accuracy" not in hist and "eval_accuracy" not in hist


def test_an_optimizer_state_holding_a_typed_key_checkpoints_and_resumes(tmp_path):
    """optax.noisy_sgd keeps a typed PRNG key (key<fry>) in its state: fit with a
    checkpoint failed before its first step (the resume template canonicalised every
    dtype); the resumed run equals the uninterrupted one, noise included."""
    params, state = init(MLP)
    opt = optax.noisy_sgd(1e-2, key=jax.random.key(3))
    manager = checkpoint.CheckpointManager(tmp_path)
    with jax.numpy_dtype_promotion("standard"):      # optax's noise mixes dtypes
        train.fit(MLP, params, state, opt, (X, Y), 1, checkpoint=manager, **FIT)
        resumed = train.fit(MLP, params, state, opt, (X, Y), 2, checkpoint=manager, **FIT)
        whole = train.fit(MLP, params, state, opt, (X, Y), 2, **FIT)
    assert jax.dtypes.issubdtype(resumed[2][0].rng_key.dtype, jax.dtypes.prng_key)
    assert resumed[3]["epoch"] == [1, 2]
    assert_trees_equal(resumed[:2], whole[:2])
    np.testing.assert_array_equal(jax.random.key_data(resumed[2][0].rng_key),
                                  jax.random.key_data(whole[2][0].rng_key))


def test_a_run_saved_when_the_optimizer_state_held_a_raw_key_resumes(tmp_path):
    """funcnet's noisy_sgd kept a raw ``uint32[2]`` key in its state before it kept a
    typed one: a run checkpointed then (its state and fingerprint rewritten here as that
    release wrote them) resumes, and equals the uninterrupted run, noise included."""
    from funcnet import optim
    from funcnet._checks import is_key
    from funcnet.train.run import META_KEY, describe_leaves, tree_signature

    params, state = init(MLP)
    opt = optim.noisy_sgd(1e-2, key=jax.random.key(3))
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MLP, params, state, opt, (X, Y), 1, checkpoint=manager, **FIT)
    step = manager.latest_step()
    tree, meta = manager.restore(step)[1], manager.metadata(step)
    old = jax.tree_util.tree_map(
        lambda a: np.asarray(jax.random.key_data(a)) if is_key(a) else a, tree["opt_state"])
    fp = meta[META_KEY]["fingerprint"]
    assert fp.pop("raw_keys") == {"opt_state": tree_signature(old)}
    fp.update(opt_state=tree_signature(old))
    fp["leaves"]["opt_state"] = describe_leaves(old)
    manager.save(step, {**tree, "opt_state": old}, metadata=meta)

    resumed = train.fit(MLP, params, state, opt, (X, Y), 2, checkpoint=manager, **FIT)
    whole = train.fit(MLP, params, state, opt, (X, Y), 2, **FIT)
    assert resumed[3]["epoch"] == [1, 2]
    assert_trees_equal(resumed[:2], whole[:2])
    keys = [o.rng_key for o in (resumed[2][0], whole[2][0])]
    assert all(is_key(k) for k in keys)
    np.testing.assert_array_equal(*map(jax.random.key_data, keys))


LBFGS_X, LBFGS_Y = subset(64, seed=1)
LBFGS_X = np.asarray(LBFGS_X, np.float64)
LBFGS_MODEL = nn.serial(nn.Dense(10))


@functools.lru_cache(maxsize=None)
def optax_lbfgs_loop(steps: int = 4):
    """optax's documented L-BFGS loop on the full batch: the losses and final params."""
    _, params, state = LBFGS_MODEL.init(jax.random.PRNGKey(0), (-1, 64))

    def f(p):
        return ops.softmax_cross_entropy(LBFGS_MODEL.apply(p, state, LBFGS_X)[0], LBFGS_Y)

    opt = optax.lbfgs()

    @jax.jit
    def iteration(p, s):
        value, grad = optax.value_and_grad_from_state(f)(p, state=s)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(p, updates), s, value

    with jax.numpy_dtype_promotion("standard"):       # optax's line search mixes ints
        p, s, values = params, opt.init(params), []
        for _ in range(steps):
            p, s, value = iteration(p, s)
            values.append(float(value))
    return values, p


@pytest.mark.parametrize("lbfgs", ["funcnet", "optax"])
def test_full_batch_lbfgs_in_fit_equals_optax_documented_loop(lbfgs, tmp_path):
    """L-BFGS reads ``value``, ``grad`` and ``value_fn`` at update (its zoom line search
    evaluates the loss at trial points): fit passes all three, so one epoch of one full
    batch is one iteration of optax's own loop (``value_and_grad_from_state``), with
    funcnet's ``lbfgs`` and with optax's; funcnet's run checkpointed after 2 epochs
    resumes bit for bit (the memory and line-search state are in the checkpoint)."""
    from funcnet import optim

    _, params, state = LBFGS_MODEL.init(jax.random.PRNGKey(0), (-1, 64))
    strict = lbfgs == "funcnet"                        # optax's line search mixes ints
    opt = (optim if strict else optax).lbfgs()
    run = functools.partial(train.fit, LBFGS_MODEL, params, state, opt, (LBFGS_X, LBFGS_Y),
                            batch_size=64, key=jax.random.PRNGKey(0), progress=False)
    with jax.numpy_dtype_promotion("strict" if strict else "standard"):
        got = run(4)
        if strict:
            manager = checkpoint.CheckpointManager(tmp_path)
            run(2, checkpoint=manager)
            resumed = run(4, checkpoint=manager)
            assert resumed[3]["epoch"] == [1, 2, 3, 4]
            assert_trees_equal(resumed[:3], got[:3])
    values, p = optax_lbfgs_loop()
    np.testing.assert_allclose(got[3]["loss"], values, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(got[0]), jax.tree_util.tree_leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert values[-1] < 0.5 * values[0]
