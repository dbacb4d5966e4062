"""Round 5's optimizers: errors at update time (eager and under jit), the learning rate
a chain with ``reduce_on_plateau`` reports, sweeps over traced hyperparameters (vmap,
``inject_hyperparams``) and properties checked by hand (SM3's memory, the zero first
steps of ADOPT and Rprop, AdEMAMix's schedules). Construction errors are in
``test_optim_errors.py``.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._both_ways import assert_sweep_equals_separate_runs

P = {"w": jnp.arange(6.0).reshape(2, 3) / 6 - 0.4, "b": jnp.array([0.3, -0.2])}
G = jax.tree_util.tree_map(lambda x: 0.5 * x + 0.1, P)

UPDATE_ERRORS = [   # (optimizer, update's extra arguments, params, exception, message)
    (optim.reduce_on_plateau(), {}, P, TypeError, r"reduce_on_plateau: update needs value="),
    (optim.chain(optim.sgd(0.1), optim.reduce_on_plateau()), {"value": jnp.ones(2)}, P,
     ValueError, r"chain: reduce_on_plateau: value must be a scalar, got shape \(2,\)"),
    (optim.polyak_sgd(), {}, P, TypeError, r"polyak_sgd: scale_by_polyak: update needs value="),
    (optim.prodigy(), {}, None, ValueError, r"prodigy: update needs params"),
    (optim.sam(optim.sgd(0.1), optim.sgd(0.1)), {}, None, ValueError,
     r"sam: update needs params"),
    (optim.sam(optim.sgd(0.1), optim.sgd(0.1), opaque_mode=True), {}, P, ValueError,
     r"sam: opaque_mode=True needs update\(\.\.\., grad_fn=\)"),
    (optim.lookahead(optim.sgd(0.1), 2, 0.5), {}, P, ValueError,
     r"lookahead: update needs params=LookaheadParams\(fast, slow\)"),
    (optim.fromage(0.1), {}, None, ValueError,
     r"fromage: scale_by_trust_ratio: update needs params"),
]


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("opt, extra, params, exc, match", UPDATE_ERRORS,
                         ids=[m[:40] for *_, m in UPDATE_ERRORS])
def test_update_errors(opt, extra, params, exc, match, under_jit):
    with warnings.catch_warnings():     # lookahead's init warns about plain params
        warnings.simplefilter("ignore", UserWarning)
        state = opt.init(P)
    update = jax.jit(opt.update) if under_jit else opt.update
    with pytest.raises(exc, match=match):
        update(G, state, params, **extra)


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_sm3_refuses_scalar_and_complex_params(under_jit):
    init = jax.jit(optim.sm3(0.1).init) if under_jit else optim.sm3(0.1).init
    with pytest.raises(ValueError, match=r"sm3: scale_by_sm3: a scalar parameter has no axis"):
        init({"s": jnp.array(1.0)})
    with pytest.raises(TypeError, match=r"scale_by_sm3: complex parameters are not supported"):
        init(jnp.ones(2, jnp.complex128))


def test_sm3_keeps_one_accumulator_per_axis():
    """A (4, 5, 6) leaf keeps 4 + 5 + 6 numbers: the maxima of v over the other axes."""
    opt = optim.scale_by_sm3(b1=0.0)
    g = jnp.arange(120.0).reshape(4, 5, 6) / 100 - 0.6
    u, state = opt.update(g, opt.init(g))
    assert [a.shape for a in state.mu] == [(4,), (5,), (6,)]
    v = g * g                                          # the first step: v = g^2
    np.testing.assert_allclose(state.mu[1], v.max(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(u, g / np.sqrt(v + 1e-8), rtol=1e-12)
    _, state = opt.update(g, state)     # then v = g^2 + min over axes of the maxima
    low = np.minimum(np.minimum(v.max(axis=(1, 2))[:, None, None], v.max(axis=(0, 2))[
        None, :, None]), v.max(axis=(0, 1))[None, None, :])
    np.testing.assert_allclose(state.mu[0], (v + low).max(axis=(1, 2)), rtol=1e-12)


def test_first_steps_of_adopt_and_rprop_are_zero():
    """ADOPT's first step only fills v; Rprop's output is the previous step's."""
    for opt in (optim.adopt(0.1), optim.rprop(0.1)):
        u, state = opt.update(G, opt.init(P), P)
        assert all(np.all(x == 0) for x in jax.tree_util.tree_leaves(u))
        u, _ = opt.update(G, state, P)
        assert all(np.any(x != 0) for x in jax.tree_util.tree_leaves(u))
    _, state = optim.scale_by_adopt().update(G, optim.scale_by_adopt().init(P))
    np.testing.assert_allclose(state.nu["w"], G["w"] ** 2, rtol=1e-12)


def test_ademamix_schedules_read_the_slow_count():
    """b3 and alpha are schedules of count_m2: with b3(0) = 0 the slow EMA is g_1."""
    opt = optim.scale_by_ademamix(b1=0.0, b2=0.0, b3=lambda c: jnp.where(c == 0, 0.0, 0.5),
                                  alpha=lambda c: 2.0 * (c + 1).astype(float), eps=0.0)
    u, state = opt.update(G, opt.init(P))
    np.testing.assert_allclose(state.m2["b"], G["b"], rtol=1e-12)
    np.testing.assert_allclose(u["b"], (G["b"] + 2.0 * G["b"]) / np.abs(G["b"]), rtol=1e-12)
    assert int(state.count_m2) == 1


def test_current_learning_rate_of_chains_with_a_plateau_and_of_the_new_aliases():
    plateau = optim.reduce_on_plateau(factor=0.5, patience=1)
    opt = optim.chain(optim.chain(optim.adam(0.1), plateau), optim.clip(1.0))
    state = opt.init(P)
    state = (( state[0][0], state[0][1]._replace(scale=jnp.asarray(0.25))), state[1])
    assert float(optim.current_learning_rate(opt, state)) == 0.025
    assert optim.current_learning_rate(plateau, plateau.init(P)) is None
    assert optim.current_learning_rate(optim.chain(optim.clip(1.0), plateau),
                                       (optim.EmptyState(), plateau.init(P))) is None
    sched = optim.linear_schedule(1.0, 0.0, 10)
    opt = optim.prodigy(sched)
    _, state = opt.update(G, opt.init(P), P)
    assert float(optim.current_learning_rate(opt, state)) == pytest.approx(0.9)
    lr = 0.3
    np.testing.assert_allclose(optim.current_learning_rate(optim.fromage(lr), optim.fromage(
        lr).init(P)), lr / np.sqrt(1 + lr ** 2), rtol=1e-12)


def test_int_hyperparameters_can_be_injected():
    """inject_hyperparams stores ints as arrays: patience, k and sync_period take them."""
    for opt, extra in ((optim.inject_hyperparams(optim.reduce_on_plateau)(patience=2),
                        {"value": 1.0}),
                       (optim.inject_hyperparams(optim.apply_every)(k=2), {}),
                       (optim.inject_hyperparams(optim.rprop)(learning_rate=0.1), {})):
        state = opt.init(P)
        for _ in range(2):
            u, state = jax.jit(opt.update)(G, state, P, **extra)
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(u))


MAKERS = {   # name: optimizer of a (traced) learning rate
    "adopt": lambda lr: optim.adopt(lr),
    "prodigy": lambda lr: optim.prodigy(lr),
    "rprop": lambda lr: optim.rprop(lr),
    "sam": lambda lr: optim.sam(optim.adam(lr), optim.chain(optim.normalize(),
                                                            optim.sgd(0.05))),
}
LRS = jnp.array([0.01, 0.05, 0.1])


def _run(make, lr):
    def loss(p):
        return jnp.sum(p["w"] ** 2 * jnp.cos(p["w"])) + jnp.sum((p["b"] - 1.0) ** 2)

    opt, p = make(lr), P
    state = opt.init(p)
    for _ in range(4):
        u, state = opt.update(jax.grad(loss)(p), state, p)
        p = optim.apply_updates(p, u)
    return p


def test_vmap_over_learning_rates_equals_separate_runs():
    assert_sweep_equals_separate_runs(_run, MAKERS, LRS, digits=8)
