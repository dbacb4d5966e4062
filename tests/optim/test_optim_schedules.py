"""Schedules against their closed forms (and optax's, when installed)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

jax.config.update("jax_enable_x64", True)

STEPS = np.arange(0, 130)


def _closed_warmup_cosine(t, init, peak, warm, total, end):
    if t < warm:
        return init + (peak - init) * t / warm
    s = min(t - warm, total - warm)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * s / (total - warm)))


SCHEDULES = [
    ("constant", optim.constant(0.3), lambda t: 0.3),
    ("exponential", optim.exponential_decay(0.5, 0.1, 40), lambda t: 0.5 * 0.1 ** (t / 40)),
    ("exponential_staircase", optim.exponential_decay(0.5, 0.1, 40, staircase=True),
     lambda t: 0.5 * 0.1 ** (t // 40)),
    ("cosine", optim.cosine_decay(0.2, 100),
     lambda t: 0.2 * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100))),
    ("cosine_alpha", optim.cosine_decay(0.2, 100, alpha=0.1),
     lambda t: 0.2 * (0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100)) + 0.1)),
    ("warmup_cosine", optim.warmup_cosine_decay(0.01, 1.0, 20, 110, end=0.05),
     lambda t: _closed_warmup_cosine(t, 0.01, 1.0, 20, 110, 0.05)),
    ("warmup_cosine_no_warmup", optim.warmup_cosine_decay(0.0, 1.0, 0, 50),
     lambda t: _closed_warmup_cosine(t, 0.0, 1.0, 0, 50, 0.0)),
    ("piecewise", optim.piecewise_constant(1.0, {50: 0.5, 10: 0.1}),
     lambda t: 1.0 * (0.1 if t >= 10 else 1.0) * (0.5 if t >= 50 else 1.0)),
]


@pytest.mark.parametrize("name,sched,closed", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedule_closed_form(name, sched, closed):
    got = jax.jit(jax.vmap(sched))(jnp.asarray(STEPS, jnp.int32))
    want = np.array([closed(int(t)) for t in STEPS])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sched(7), closed(7), rtol=1e-12)  # eager, Python int step


def test_warmup_cosine_endpoints():
    s = optim.warmup_cosine_decay(0.0, 2.0, 10, 30, end=0.5)
    assert float(s(0)) == 0.0 and float(s(10)) == 2.0 and float(s(30)) == 0.5
    assert float(s(1000)) == 0.5


def test_schedule_hyperparameters_can_be_traced():
    peaks = jnp.array([0.5, 1.0, 2.0])
    got = jax.jit(jax.vmap(lambda p: optim.warmup_cosine_decay(0.0, p, 10, 30)(15)))(peaks)
    np.testing.assert_allclose(got, peaks * 0.5 * (1 + math.cos(math.pi * 5 / 20)), rtol=1e-12)


def test_schedule_learning_rate_is_evaluated_at_update_count():
    """sgd(schedule): update k (k = 0, 1, ...) uses lr(k)."""
    sched = optim.piecewise_constant(1.0, {2: 0.1})
    opt, p = optim.sgd(sched), jnp.zeros(1)
    s = opt.init(p)
    got = []
    for _ in range(4):
        u, s = opt.update(jnp.ones(1), s, p)
        got.append(float(u[0]))
    np.testing.assert_allclose(got, [-1.0, -1.0, -0.1, -0.1], rtol=1e-12)


def test_schedules_match_optax():
    optax = pytest.importorskip("optax")
    pairs = [
        (optim.exponential_decay(0.5, 0.1, 40, staircase=True),
         optax.exponential_decay(0.5, 40, 0.1, staircase=True)),
        (optim.cosine_decay(0.2, 100, alpha=0.1), optax.cosine_decay_schedule(0.2, 100, 0.1)),
        (optim.warmup_cosine_decay(0.01, 1.0, 20, 110, end=0.05),
         optax.warmup_cosine_decay_schedule(0.01, 1.0, 20, 110, end_value=0.05)),
        (optim.piecewise_constant(1.0, {50: 0.5, 10: 0.1}),
         optax.piecewise_constant_schedule(1.0, {50: 0.5, 10: 0.1})),
    ]
    for ours, theirs in pairs:
        for t in (0, 1, 9, 10, 11, 20, 49, 50, 99, 110, 129):
            np.testing.assert_allclose(ours(t), theirs(t), rtol=1e-6, atol=1e-9)
