"""Schedules against their closed forms, traced hyperparameters, huge steps, and the one
validation policy (counts: ints >= 0; values: finite and >= 0)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

STEPS = np.arange(0, 130)


def _closed_warmup_cosine(t, init, peak, warm, total, end, exponent=1.0):
    if t < warm:
        return init + (peak - init) * t / warm
    s = min(t - warm, total - warm)
    return end + (peak - end) * (0.5 * (1 + math.cos(math.pi * s / (total - warm)))) ** exponent


def _closed_interpolate(t, knots, cosine):
    """knots [(b_k, v_k)]: linear or cosine from v_k to v_(k+1) on [b_k, b_(k+1))."""
    for (b0, v0), (b1, v1) in zip(knots, knots[1:]):
        if b0 <= t < b1:
            p = (t - b0) / (b1 - b0)
            return v1 + (v0 - v1) * (0.5 * (1 + math.cos(math.pi * p)) if cosine else 1 - p)
    return knots[-1][1]


SGDR_CYCLES = [dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=50),
               dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=40,
                    end_value=0.05),
               dict(init_value=0.2, peak_value=0.4, warmup_steps=5, decay_steps=30,
                    exponent=2.0)]


def _closed_sgdr(t):
    start = 0
    for i, c in enumerate(SGDR_CYCLES):
        if t < start + c["decay_steps"] or i == len(SGDR_CYCLES) - 1:
            return _closed_warmup_cosine(t - start, c["init_value"], c["peak_value"],
                                         c["warmup_steps"], c["decay_steps"],
                                         c.get("end_value", 0.0), c.get("exponent", 1.0))
        start += c["decay_steps"]


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
    ("piecewise_interpolate_linear",
     optim.piecewise_interpolate_schedule("linear", 1.0, {80: 0.2, 30: 0.5}),
     lambda t: _closed_interpolate(t, [(0, 1.0), (30, 0.5), (80, 0.1)], False)),
    ("piecewise_interpolate_cosine_zero_boundary",
     optim.piecewise_interpolate_schedule("cosine", 2.0, {60: 3.0, 0: 0.5, 20: 0.1}),
     lambda t: _closed_interpolate(t, [(0, 1.0), (20, 0.1), (60, 0.3)], True)),
    ("linear_onecycle", optim.linear_onecycle_schedule(100, 2.0, 0.25, 0.75, 10.0, 50.0),
     lambda t: _closed_interpolate(t, [(0, 0.2), (25, 2.0), (75, 0.2), (100, 0.004)], False)),
    ("cosine_onecycle_defaults", optim.cosine_onecycle_schedule(120, 1.0),
     lambda t: _closed_interpolate(t, [(0, 0.04), (36, 1.0), (120, 0.04 / 1e4)], True)),
    ("sgdr", optim.sgdr_schedule(iter(SGDR_CYCLES)), _closed_sgdr),
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


@pytest.mark.parametrize("step", [int(3e9), int(1e10) + 7])
def test_huge_steps_in_joined_schedules(step):
    """sgdr/one-cycle (join_schedules inside) at steps beyond int32: float64 here, and in
    float32 (x64 off) from a Python int step; an int32 count never reaches a boundary
    beyond int32 (no OverflowError when the boundary is compared with it)."""
    cycles = [dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=int(2e9))] * 3
    s = min(step - int(2e9), int(2e9)) - 10
    want = 0.5 * (1 + math.cos(math.pi * s / (2e9 - 10)))
    onecycle = optim.linear_onecycle_schedule(int(4e9), 1.0, 0.5, 1.0, 2.0, 4.0)
    want_one = 1.0 - 0.5 * min(step - 2e9, 2e9) / 2e9 if step < 4e9 else 0.125
    for x64, rtol in ((True, 1e-9), (False, 1e-5)):
        with jax.enable_x64(x64):
            sgdr = optim.sgdr_schedule(cycles)
            np.testing.assert_allclose(sgdr(step), want, rtol=rtol, atol=rtol)
            np.testing.assert_allclose(onecycle(step), want_one, rtol=rtol)
    with jax.enable_x64(False):
        got = jax.jit(jax.vmap(optim.sgdr_schedule(cycles)))(jnp.array([5, 10], jnp.int32))
        np.testing.assert_allclose(got, [0.5, 1.0], rtol=1e-6)


def test_interpolated_schedule_hyperparameters_can_be_traced():
    """jit(vmap) over peak/init values (the boundaries and pcts stay static)."""
    peaks = jnp.array([0.5, 1.0, 2.0])
    step = jnp.asarray(60, jnp.int32)  # on the way down: cosine from p at 30 to p/25e4 at 100
    got = jax.jit(jax.vmap(lambda p: optim.cosine_onecycle_schedule(100, p)(step)))(peaks)
    w = 0.5 * (1 + math.cos(math.pi * 30 / 70))
    np.testing.assert_allclose(got, peaks * (1 / 25e4 + (1 - 1 / 25e4) * w), rtol=1e-12)
    got = jax.jit(jax.vmap(lambda p: optim.linear_onecycle_schedule(100, p)(step)))(peaks)
    np.testing.assert_allclose(got, peaks * (1.0 - (1 - 1 / 25) * 30 / 55), rtol=1e-12)
    got = jax.jit(jax.vmap(
        lambda v: optim.piecewise_interpolate_schedule("linear", v, {10: 4.0})(step // 12)))(
        peaks)
    np.testing.assert_allclose(got, peaks * 2.5, rtol=1e-12)
    got = jax.jit(jax.vmap(lambda p: optim.sgdr_schedule(
        [dict(init_value=0.0, peak_value=p, warmup_steps=10, decay_steps=50)] * 2)(step - 25)
                           ))(peaks)  # step 35: cycle 1, 25 steps into its 40-step cosine
    np.testing.assert_allclose(got, peaks * 0.5 * (1 + math.cos(math.pi * 25 / 40)),
                               rtol=1e-12)


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
    # piecewise interpolation, one-cycle, sgdr
    (ValueError, r"piecewise_interpolate_schedule: interpolate_type must be one of "
                 r"'linear', 'cosine', got 'linar'",
     lambda: optim.piecewise_interpolate_schedule("linar", 13.0)),
    (TypeError, r"piecewise_interpolate_schedule: boundary must be an int, got float 5\.0",
     lambda: optim.piecewise_interpolate_schedule("linear", 13.0, {5.0: 2.0})),
    (ValueError, r"piecewise_interpolate_schedule: init_value must be finite, got nan",
     lambda: optim.piecewise_interpolate_schedule("cosine", float("nan"), {5: 2.0})),
    (ValueError, r"piecewise_interpolate_schedule: scale at boundary 5 must be finite",
     lambda: optim.piecewise_interpolate_schedule("cosine", 1.0, {5: jnp.inf})),
    (TypeError, r"linear_onecycle_schedule: transition_steps must be an int, got float "
                r"10000\.0",
     lambda: optim.linear_onecycle_schedule(1e4, 0.1)),
    (ValueError, r"cosine_onecycle_schedule: transition_steps must be >= 1, got -5",
     lambda: optim.cosine_onecycle_schedule(-5, 0.1)),
    (ValueError, r"linear_onecycle_schedule: peak_value must be in \[0, inf\), got -0\.1",
     lambda: optim.linear_onecycle_schedule(100, -0.1)),
    (ValueError, r"cosine_onecycle_schedule: div_factor must be in \(0, inf\), got 0",
     lambda: optim.cosine_onecycle_schedule(100, 0.1, div_factor=0.0)),
    (ValueError, r"linear_onecycle_schedule: final_div_factor must be finite, got inf",
     lambda: optim.linear_onecycle_schedule(100, 0.1, final_div_factor=float("inf"))),
    (ValueError, r"cosine_onecycle_schedule: pct_start must be in \[0, 1\], got 1\.5",
     lambda: optim.cosine_onecycle_schedule(100, 0.1, pct_start=1.5)),
    (ValueError, r"linear_onecycle_schedule: pct_start must be <= pct_final, got "
                 r"pct_start=0\.9, pct_final=0\.5",
     lambda: optim.linear_onecycle_schedule(100, 0.1, pct_start=0.9, pct_final=0.5)),
    (TypeError, r"linear_onecycle_schedule: pct_final must be a Python float, got str",
     lambda: optim.linear_onecycle_schedule(100, 0.1, pct_final="0.8")),
    (TypeError, r"sgdr_schedule: cosine_kwargs must be an iterable of dicts, got dict",
     lambda: optim.sgdr_schedule(SGDR_CYCLES[0])),
    (TypeError, r"sgdr_schedule: cosine_kwargs\[1\] must be a dict of "
                r"warmup_cosine_decay_schedule arguments, got int",
     lambda: optim.sgdr_schedule([SGDR_CYCLES[0], 5])),
    (ValueError, r"sgdr_schedule: cosine_kwargs is empty, expected at least one cycle",
     lambda: optim.sgdr_schedule([])),
    (ValueError, r"sgdr_schedule: cosine_kwargs\[1\]: warmup_cosine_decay_schedule: "
                 r"peak_value must be in \[0, inf\), got -1",
     lambda: optim.sgdr_schedule([SGDR_CYCLES[0], {**SGDR_CYCLES[1], "peak_value": -1.0}])),
    (TypeError, r"sgdr_schedule: cosine_kwargs\[0\]: warmup_cosine_decay_schedule: "
                r"decay_steps must be an int, got float 50\.0",
     lambda: optim.sgdr_schedule([{**SGDR_CYCLES[0], "decay_steps": 50.0}])),
    (TypeError, r"sgdr_schedule: cosine_kwargs\[0\]: .*missing 1 required positional "
                r"argument: 'decay_steps'",
     lambda: optim.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=10)])),
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
