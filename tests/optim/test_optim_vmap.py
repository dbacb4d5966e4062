"""Hyperparameter and seed sweeps with jax.vmap: one compiled call == separate runs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import funcnet.optim as optim
from tests.optim._cases import QUAD_PARAMS, mlp_loss, quad_loss, run


LRS = [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3]


def _flat(tree):
    return ravel_pytree(tree)[0]


def test_vmap_over_learning_rates_equals_separate_runs():
    def train(lr):
        p, losses = run(optim.adam(lr), quad_loss, QUAD_PARAMS)
        return _flat(p), losses

    swept, swept_losses = jax.jit(jax.vmap(train))(jnp.asarray(LRS))
    # Separate runs with Python-float learning rates (constants baked into each program).
    single = jax.jit(lambda: [train(lr) for lr in LRS])()
    for i, (p, losses) in enumerate(single):
        np.testing.assert_allclose(swept[i], p, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(swept_losses[i], losses, rtol=1e-10, atol=1e-12)
    assert len({round(float(x), 6) for x in swept[:, 0]}) == len(LRS)  # really different


def test_vmap_over_seeds_equals_separate_runs():
    keys = jax.random.split(jax.random.PRNGKey(42), 8)

    def train(key):
        ka, kb = jax.random.split(key)
        init = {"a": jax.random.normal(ka, (3,), jnp.float64),
                "b": jax.random.normal(kb, (2,), jnp.float64)}
        p, losses = run(optim.adam(0.05), quad_loss, init)
        return _flat(p), losses[-1]

    swept, final = jax.jit(jax.vmap(train))(keys)
    train_one = jax.jit(train)
    single = [train_one(k) for k in keys]
    for i, (p, loss) in enumerate(single):
        np.testing.assert_allclose(swept[i], p, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(final[i], loss, rtol=1e-9)
    assert np.unique(np.round(np.asarray(swept[:, 0]), 8)).size == 8


def test_vmap_over_several_hyperparameters_adamw():
    """b1, b2, eps, weight decay and a schedule's peak, all batched at once."""
    hp = {"lr": jnp.array([0.1, 0.05, 0.02]), "b1": jnp.array([0.9, 0.8, 0.0]),
          "b2": jnp.array([0.999, 0.99, 0.9]), "eps": jnp.array([1e-8, 1e-6, 1e-3]),
          "wd": jnp.array([0.0, 0.1, 0.01])}

    def train(h):
        sched = optim.warmup_cosine_decay(0.0, h["lr"], 5, 50)
        opt = optim.adamw(sched, h["b1"], h["b2"], h["eps"], weight_decay=h["wd"])
        return _flat(run(opt, quad_loss, QUAD_PARAMS, steps=50)[0])

    swept = jax.jit(jax.vmap(train))(hp)
    rows = [{k: float(v[i]) for k, v in hp.items()} for i in range(3)]
    single = jax.jit(lambda: [train(r) for r in rows])()
    for i in range(3):
        np.testing.assert_allclose(swept[i], single[i], rtol=1e-10, atol=1e-12)


def test_vmap_over_initial_states_with_shared_optimizer():
    """opt.init and opt.update vmapped directly over a batch of parameter trees."""
    opt = optim.rmsprop(0.01)
    rng = np.random.default_rng(3)
    batch = {"w1": jnp.asarray(rng.normal(size=(4, 8, 16))), "b1": jnp.asarray(rng.normal(size=(4, 16))),
             "w2": jnp.asarray(rng.normal(size=(4, 16, 3))), "b2": jnp.asarray(rng.normal(size=(4, 3)))}

    def one_step(p):
        u, _ = opt.update(jax.grad(mlp_loss)(p), opt.init(p), p)
        return u

    @jax.jit
    def batched(batch):
        states = jax.vmap(opt.init)(batch)
        grads = jax.vmap(jax.grad(mlp_loss))(batch)
        return states, jax.vmap(opt.update)(grads, states, batch)[0]

    states, u = batched(batch)
    assert states[0].nu["w1"].shape == (4, 8, 16)
    single = jax.jit(one_step)
    for i in range(4):
        ui = single(jax.tree_util.tree_map(lambda x: x[i], batch))
        np.testing.assert_allclose(u["w1"][i], ui["w1"], rtol=1e-12)


NEW = {  # the optimizers of aliases_more, with a learning rate to sweep
    "lion": lambda lr: optim.lion(lr),
    "adamax": lambda lr: optim.adamax(lr),
    "adamaxw": lambda lr: optim.adamaxw(lr, weight_decay=0.1),
    "amsgrad": lambda lr: optim.amsgrad(lr),
    "adabelief": lambda lr: optim.adabelief(lr, nesterov=True),
    "radam": lambda lr: optim.radam(lr),
    "lamb": lambda lr: optim.lamb(lr, weight_decay=0.01),
    "lars": lambda lr: optim.lars(lr, trust_coefficient=0.1, nesterov=True),
    "adafactor": lambda lr: optim.adafactor(lr, momentum=0.5),
}
NEW_LRS = [0.01, 0.03, 0.1]


@functools.lru_cache(maxsize=None)
def _new_sweeps():
    """Every optimizer of NEW: vmapped over NEW_LRS and run once per learning rate (Python
    floats), all in one compiled program."""
    def both():
        out = {}
        for name, make in NEW.items():
            train = lambda lr, make=make: _flat(run(make(lr), quad_loss, QUAD_PARAMS, 30)[0])
            out[name] = (jax.vmap(train)(jnp.asarray(NEW_LRS)), [train(lr) for lr in NEW_LRS])
        return out
    return jax.jit(both)()


@pytest.mark.parametrize("name", list(NEW))
def test_vmap_over_learning_rates_new_optimizers(name):
    swept, single = _new_sweeps()[name]
    for i, p in enumerate(single):
        np.testing.assert_allclose(swept[i], p, rtol=1e-10, atol=1e-12)
    assert len({round(float(x), 8) for x in swept[:, 0]}) == len(NEW_LRS)  # really different
