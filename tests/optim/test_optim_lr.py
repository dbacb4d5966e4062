"""current_learning_rate(opt, opt_state): the learning rate the NEXT update will use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

P = {"w": jnp.array([1.0, -2.0])}
G = {"w": jnp.array([0.5, 0.25])}


def _effective_lr(opt, state):
    """The learning rate an update really applies: sgd-style -u / g."""
    u, state = opt.update(G, state, P)
    return float(-u["w"][0] / G["w"][0]), state


@pytest.mark.parametrize("make", [
    lambda: optim.sgd(0.1),
    lambda: optim.sgd(optim.piecewise_constant_schedule(0.1, {2: 0.5, 4: 0.1})),
    lambda: optim.chain(optim.clip_by_global_norm(10.0),
                        optim.sgd(optim.exponential_decay(0.1, 1, 0.5))),
    lambda: optim.masked(optim.sgd(optim.linear_schedule(0.1, 0.0, 4)), {"w": True}),
    lambda: optim.apply_if_finite(optim.sgd(optim.cosine_decay_schedule(0.1, 5)), 2),
    lambda: optim.inject_hyperparams(optim.sgd)(learning_rate=0.1),
    lambda: optim.inject_hyperparams(optim.sgd)(
        learning_rate=optim.piecewise_constant_schedule(0.1, {1: 0.5})),
    lambda: optim.inject_hyperparams(optim.sgd)(learning_rate=optim.exponential_decay(
        0.1, 1, 0.5), momentum=0.0),
], ids=["constant", "schedule", "chain", "masked", "apply_if_finite", "inject_constant",
        "inject_schedule", "inject_schedule_momentum"])
def test_reports_the_rate_of_the_next_update(make):
    opt = make()
    state = opt.init(P)
    for _ in range(5):
        expected = optim.current_learning_rate(opt, state)
        assert isinstance(expected, jax.Array) and expected.shape == ()
        used, state = _effective_lr(opt, state)
        np.testing.assert_allclose(used, float(expected), rtol=1e-12)


def test_adam_constant_and_schedule_values():
    assert float(optim.current_learning_rate(optim.adam(1e-3), optim.adam(1e-3).init(P))) == 1e-3
    sched = optim.warmup_cosine_decay_schedule(0.0, 1.0, 4, 20)
    opt = optim.adamw(sched, weight_decay=0.1)
    state = opt.init(P)
    for k in range(6):
        np.testing.assert_allclose(optim.current_learning_rate(opt, state), sched(k),
                                   rtol=1e-12)
        _, state = opt.update(G, state, P)


def test_accumulate_reports_the_next_real_step():
    sched = optim.linear_schedule(1.0, 0.0, 10)
    opt = optim.accumulate(optim.adam(sched), 3)
    state = opt.init(P)
    seen = []
    for _ in range(7):
        seen.append(float(optim.current_learning_rate(opt, state)))
        _, state = opt.update(G, state, P)
    np.testing.assert_allclose(seen, [1.0, 1.0, 1.0, 0.9, 0.9, 0.9, 0.8], rtol=1e-12)


def test_multisteps_reports_the_next_real_step():
    """optax's class interface read None (only accumulate's Optimizer carried the
    reader), so fit logged no learning rate for MultiSteps(opt, k)."""
    opt = optim.MultiSteps(optim.lion(optim.linear_schedule(1.0, 0.0, 10)), 2)
    state = opt.init(P)
    seen = []
    for _ in range(4):
        seen.append(float(optim.current_learning_rate(opt, state)))
        _, state = opt.update(G, state, P)
    np.testing.assert_allclose(seen, [1.0, 1.0, 0.9, 0.9], rtol=1e-12)


def test_user_set_injected_value_is_reported():
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=0.1)
    state = opt.init(P)
    state.hyperparams["learning_rate"] = jnp.asarray(0.02)
    assert float(optim.current_learning_rate(opt, state)) == pytest.approx(0.02)


def test_multi_transform_and_lr_free_blocks_give_none():
    mt = optim.multi_transform({"a": optim.sgd(0.1), "b": optim.adam(0.2)}, {"w": "a"})
    assert optim.current_learning_rate(mt, mt.init(P)) is None
    block = optim.scale_by_adam()
    assert optim.current_learning_rate(block, block.init(P)) is None


def test_under_jit_vmap_and_scan():
    def final_lr(lr0):
        opt = optim.sgd(optim.exponential_decay(lr0, 1, 0.5))

        def body(s, _):
            return opt.update(G, s, P)[1], optim.current_learning_rate(opt, s)

        state, seen = jax.lax.scan(body, opt.init(P), None, length=3)
        return optim.current_learning_rate(opt, state), seen

    last, seen = jax.jit(jax.vmap(final_lr))(jnp.array([0.1, 1.0]))
    np.testing.assert_allclose(last, [0.0125, 0.125], rtol=1e-12)
    np.testing.assert_allclose(seen[1], [1.0, 0.5, 0.25], rtol=1e-12)


def test_optax_optimizers():
    optax = pytest.importorskip("optax")
    with jax.numpy_dtype_promotion("standard"):
        injected = optax.inject_hyperparams(optax.adam)(learning_rate=0.05)
        state = injected.init(P)
        assert float(optim.current_learning_rate(injected, state)) == pytest.approx(0.05)
        # an optax inject_hyperparams state inside a funcnet chain is found too
        chained = optim.chain(optim.clip_by_global_norm(1.0), injected)
        assert float(optim.current_learning_rate(chained, chained.init(P))) == \
            pytest.approx(0.05)
        # optax stores the value of the LAST update for a scheduled rate (documented)
        sched = optax.inject_hyperparams(optax.sgd)(
            learning_rate=optax.piecewise_constant_schedule(1.0, {1: 0.5}))
        s = sched.init(P)
        _, s = sched.update(G, s, P)
        assert float(optim.current_learning_rate(sched, s)) == 1.0
        # a plain optax alias keeps its rate out of its state: None
        plain = optax.adam(1e-3)
        assert optim.current_learning_rate(plain, plain.init(P)) is None


@pytest.mark.parametrize("make", [
    lambda lr: optim.lion(lr), lambda lr: optim.radam(lr), lambda lr: optim.lamb(lr),
    lambda lr: optim.lars(lr), lambda lr: optim.adafactor(lr),
], ids=["lion", "radam", "lamb", "lars", "adafactor"])
def test_new_optimizers_report_their_schedule(make):
    """The schedule's value at the state's count; adafactor scales by +lr (flip_sign=False)
    and still reports lr; without a learning rate it has none."""
    sched = optim.linear_schedule(0.1, 0.0, 4)
    opt = make(sched)
    state = opt.init(P)
    for t in range(3):
        np.testing.assert_allclose(optim.current_learning_rate(opt, state), sched(t), rtol=1e-12)
        _, state = opt.update(G, state, P)
    assert optim.current_learning_rate(optim.adafactor(), optim.adafactor().init(P)) is None
