"""Schedules against their closed forms, traced hyperparameters, huge steps, and the one
validation policy (counts: ints >= 0; values: finite and >= 0)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

STEPS = np.arange(0, 130)


def _closed_warmup_cosine(t, init, peak, warm, total, end):
    if t < warm:
        return init + (peak - init) * t / warm
    s = min(t - warm, total - warm)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * s / (total - warm)))


SCHEDULES = [
    ("constant", optim.constant_schedule(0.3), lambda t: 0.3),
    ("exponential", optim.exponential_decay(0.5, 40, 0.1), lambda t: 0.5 * 0.1 ** (t / 40)),
    ("exponential_staircase", optim.exponential_decay(0.5, 40, 0.1, staircase=True),
     lambda t: 0.5 * 0.1 ** (t // 40)),
    ("exponential_begin_end", optim.exponential_decay(0.5, 10, 0.5, 20, end_value=0.1),
     lambda t: max(0.1, 0.5 * 0.5 ** (max(t - 20, 0) / 10))),
    ("cosine", optim.cosine_decay_schedule(0.2, 100),
     lambda t: 0.2 * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100))),
    ("cosine_alpha_exponent", optim.cosine_decay_schedule(0.2, 100, alpha=0.1, exponent=2.0),
     lambda t: 0.2 * (0.9 * (0.5 * (1 + math.cos(math.pi * min(t, 100) / 100))) ** 2 + 0.1)),
    ("warmup_cosine", optim.warmup_cosine_decay_schedule(0.01, 1.0, 20, 110, end_value=0.05),
     lambda t: _closed_warmup_cosine(t, 0.01, 1.0, 20, 110, 0.05)),
    ("warmup_cosine_no_warmup", optim.warmup_cosine_decay_schedule(0.0, 1.0, 0, 50),
     lambda t: _closed_warmup_cosine(t, 0.0, 1.0, 0, 50, 0.0)),
    ("piecewise", optim.piecewise_constant_schedule(1.0, {50: 0.5, 10: 0.1}),
     lambda t: 1.0 * (0.1 if t >= 10 else 1.0) * (0.5 if t >= 50 else 1.0)),
    ("linear_begin", optim.linear_schedule(1.0, 0.2, 40, transition_begin=30),
     lambda t: 1.0 + (0.2 - 1.0) * min(max(t - 30, 0), 40) / 40),
    ("polynomial", optim.polynomial_schedule(1.0, 0.1, 3, 100),
     lambda t: (1.0 - 0.1) * (1 - min(t, 100) / 100) ** 3 + 0.1),
    ("warmup_exponential", optim.warmup_exponential_decay_schedule(0.0, 1.0, 10, 20, 0.5),
     lambda t: t / 10 if t < 10 else 0.5 ** ((t - 10) / 20)),
    ("join", optim.join_schedules([optim.constant_schedule(0.1),
                                   optim.linear_schedule(0.1, 0.0, 50)], [60]),
     lambda t: 0.1 if t < 60 else 0.1 * (1 - min(t - 60, 50) / 50)),
]


@pytest.mark.parametrize("name,sched,closed", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedule_closed_form(name, sched, closed):
    got = jax.jit(jax.vmap(sched))(jnp.asarray(STEPS, jnp.int32))
    want = np.array([closed(int(t)) for t in STEPS])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sched(7), closed(7), rtol=1e-12)  # eager, Python int step


def test_short_names_are_the_optax_named_functions():
    assert optim.constant is optim.constant_schedule
    assert optim.cosine_decay is optim.cosine_decay_schedule
    assert optim.warmup_cosine_decay is optim.warmup_cosine_decay_schedule
    assert optim.piecewise_constant is optim.piecewise_constant_schedule


def test_exponential_decay_takes_optax_argument_order():
    """(init_value, transition_steps, decay_rate): exponential_decay(1.0, 10, 2) doubles
    every 10 steps (the old funcnet order read it as rate 10 per 2 steps)."""
    np.testing.assert_allclose(optim.exponential_decay(1.0, 10, 2)(20), 4.0, rtol=1e-12)


@pytest.mark.parametrize("step", [int(1e9), int(3e9), int(1e10), 2 ** 40])
def test_huge_steps_do_not_overflow_int32(step):
    sched = optim.cosine_decay_schedule(1000.0, int(1e10))
    want = 1000.0 * 0.5 * (1 + math.cos(math.pi * min(step, 1e10) / 1e10))
    np.testing.assert_allclose(sched(step), want, rtol=1e-9, atol=1e-9)
    linear = optim.linear_schedule(1.0, 0.0, int(1e10), transition_begin=int(5e9))
    np.testing.assert_allclose(linear(step), 1.0 - min(max(step - 5e9, 0), 1e10) / 1e10,
                               rtol=1e-9, atol=1e-12)


def test_warmup_cosine_endpoints():
    s = optim.warmup_cosine_decay_schedule(0.0, 2.0, 10, 30, end_value=0.5)
    assert float(s(0)) == 0.0 and float(s(10)) == 2.0 and float(s(30)) == 0.5
    assert float(s(1000)) == 0.5


def test_schedule_hyperparameters_can_be_traced():
    peaks = jnp.array([0.5, 1.0, 2.0])
    got = jax.jit(jax.vmap(
        lambda p: optim.warmup_cosine_decay_schedule(0.0, p, 10, 30)(15)))(peaks)
    np.testing.assert_allclose(got, peaks * 0.5 * (1 + math.cos(math.pi * 5 / 20)), rtol=1e-12)
    rates = jnp.array([0.5, 2.0])
    got = jax.vmap(lambda r: optim.exponential_decay(1.0, 10, r, end_value=1.0)(20))(rates)
    np.testing.assert_allclose(got, [1.0, 1.0], rtol=1e-12)  # clipped on the right side


def test_schedules_match_optax():
    optax = pytest.importorskip("optax")
    pairs = [
        (optim.exponential_decay(0.5, 40, 0.1, staircase=True),
         optax.exponential_decay(0.5, 40, 0.1, staircase=True)),
        (optim.cosine_decay_schedule(0.2, 100, alpha=0.1),
         optax.cosine_decay_schedule(0.2, 100, 0.1)),
        (optim.warmup_cosine_decay_schedule(0.01, 1.0, 20, 110, end_value=0.05),
         optax.warmup_cosine_decay_schedule(0.01, 1.0, 20, 110, end_value=0.05)),
        (optim.piecewise_constant_schedule(1.0, {50: 0.5, 10: 0.1}),
         optax.piecewise_constant_schedule(1.0, {50: 0.5, 10: 0.1})),
        (optim.polynomial_schedule(1.0, 0.1, 2, 50, 10),
         optax.polynomial_schedule(1.0, 0.1, 2, 50, 10)),
    ]
    with jax.numpy_dtype_promotion("standard"):
        for ours, theirs in pairs:
            for t in (0, 1, 9, 10, 11, 20, 49, 50, 99, 110, 129):
                np.testing.assert_allclose(ours(t), theirs(t), rtol=1e-6, atol=1e-9)


def test_schedule_learning_rate_is_evaluated_at_update_count():
    """sgd(schedule): update k (k = 0, 1, ...) uses lr(k)."""
    opt, p = optim.sgd(optim.piecewise_constant_schedule(1.0, {2: 0.1})), jnp.zeros(1)
    s, got = opt.init(p), []
    for _ in range(4):
        u, s = opt.update(jnp.ones(1), s, p)
        got.append(float(u[0]))
    np.testing.assert_allclose(got, [-1.0, -1.0, -0.1, -0.1], rtol=1e-12)


BAD = [
    # non-int counts: TypeError (4.0 and 1e4 too: write int(1e4))
    (TypeError, r"cosine_decay_schedule: decay_steps must be an int, got float 10\.0",
     lambda: optim.cosine_decay_schedule(1.0, 10.0)),
    (TypeError, r"exponential_decay: transition_steps must be an int, got float 0\.5",
     lambda: optim.exponential_decay(1.0, 0.5, 10)),
    (TypeError, r"linear_schedule: polynomial_schedule: transition_begin must be an int",
     lambda: optim.linear_schedule(1.0, 0.0, 10, transition_begin=2.5)),
    (TypeError, r"warmup_cosine_decay_schedule: warmup_steps must be an int, got bool",
     lambda: optim.warmup_cosine_decay_schedule(0.0, 1.0, True, 10)),
    (TypeError, r"piecewise_constant_schedule: boundaries_and_scales must be a dict",
     lambda: optim.piecewise_constant_schedule(1.0, [(10, 0.5)])),
    (TypeError, r"join_schedules: schedules\[1\] must be callable",
     lambda: optim.join_schedules([optim.constant_schedule(1.0), 0.5], [3])),
    (TypeError, r"constant_schedule: value must be a number or a scalar array, got str",
     lambda: optim.constant_schedule("0.1")),
    # counts out of range, values negative or not finite: ValueError
    (ValueError, r"exponential_decay: transition_begin must be >= 0, got -1",
     lambda: optim.exponential_decay(1.0, 10, 0.5, transition_begin=-1)),
    (ValueError, r"cosine_decay_schedule: decay_steps must be >= 1, got 0",
     lambda: optim.cosine_decay_schedule(1.0, 0)),
    (ValueError, r"piecewise_constant_schedule: boundary must be >= 0, got -1",
     lambda: optim.piecewise_constant_schedule(1.0, {-1: 0.5})),
    (ValueError, r"piecewise_constant_schedule: scale at boundary 3 must be in \[0, inf\)",
     lambda: optim.piecewise_constant_schedule(1.0, {3: -0.5})),
    (ValueError, r"constant_schedule: value must be in \[0, inf\), got -0\.1",
     lambda: optim.constant_schedule(-0.1)),
    (ValueError, r"linear_schedule: polynomial_schedule: end_value must be in \[0, inf\)",
     lambda: optim.linear_schedule(1.0, -1.0, 10)),
    (ValueError, r"cosine_decay_schedule: init_value must be finite, got nan",
     lambda: optim.cosine_decay_schedule(float("nan"), 10)),
    (ValueError, r"warmup_cosine_decay_schedule: peak_value must be finite, got inf",
     lambda: optim.warmup_cosine_decay_schedule(0.0, jnp.inf, 10, 20)),
    (ValueError, r"exponential_decay: decay_rate must be in \(0, inf\), got 0",
     lambda: optim.exponential_decay(1.0, 10, 0.0)),
    (ValueError, r"cosine_decay_schedule: exponent must be in \[0, inf\), got -1",
     lambda: optim.cosine_decay_schedule(1.0, 10, exponent=-1.0)),
    (ValueError, r"warmup_exponential_decay_schedule: exponential_decay: end_value must be",
     lambda: optim.warmup_exponential_decay_schedule(0.0, 1.0, 5, 10, 0.5, end_value=-1.0)),
    (ValueError, r"join_schedules: got 2 schedules and 2 boundaries, expected 1",
     lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 2, [3, 6])),
]


@pytest.mark.parametrize("exc,match,make", BAD, ids=[b[1][:60] for b in BAD])
def test_bad_schedule_arguments(exc, match, make):
    with pytest.raises(exc, match=match):
        make()
    with pytest.raises(exc, match=match):  # the same at trace time under jit
        jax.jit(lambda: make()(0))()


def test_traced_schedule_values_are_not_validated():
    """A negative *traced* value is the caller's business (vmapped sweeps trace values)."""
    out = jax.jit(lambda v: optim.constant_schedule(v)(0))(-1.0)
    assert float(out) == -1.0
