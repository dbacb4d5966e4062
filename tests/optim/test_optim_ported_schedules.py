"""optax's schedule, join and inject_hyperparams tests, ported to funcnet's shared names.

Sources (optax 0.2.8): ``schedules/_schedule_test.py``, ``_join_test.py``,
``_inject_test.py``. Same inputs and expected values (optax's tolerances); the cases
funcnet refuses on purpose (negative values, zero decay rate, negative step counts) are
in ``test_optim_differences.py``. Schedules are jitted as in optax; one compile per
schedule is cheap (scalar programs).
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim


def _values(schedule, n):
    fn = jax.jit(schedule)
    return np.array([fn(count) for count in range(n)])


def test_constant():
    np.testing.assert_allclose(_values(optim.constant_schedule(10), 15), [10.0] * 15, atol=1e-3)


def test_polynomial_linear():
    sched = optim.polynomial_schedule(init_value=10.0, end_value=20.0, power=1,
                                      transition_steps=10)
    np.testing.assert_allclose(_values(sched, 15), list(range(10, 20)) + [20] * 5, atol=1e-3)


def test_polynomial_zero_steps_schedule():
    sched = optim.polynomial_schedule(init_value=10.0, end_value=20.0, power=1,
                                      transition_steps=0)  # optax also tries -1: refused
    np.testing.assert_allclose(_values(sched, 15), [10.0] * 15)


def test_polynomial_nonlinear():
    sched = optim.polynomial_schedule(init_value=25.0, end_value=10.0, power=2,
                                      transition_steps=10)
    want = [10.0 + 15.0 * (1.0 - n / 10) ** 2 for n in range(10)] + [10] * 5
    np.testing.assert_allclose(_values(sched, 15), want, atol=1e-3)


def test_polynomial_with_decay_begin():
    sched = optim.polynomial_schedule(init_value=30.0, end_value=10.0, power=2,
                                      transition_steps=10, transition_begin=4)
    want = [30.0] * 4 + [10.0 + 20.0 * (1.0 - n / 10) ** 2 for n in range(10)] + [10] * 6
    np.testing.assert_allclose(_values(sched, 20), want, atol=1e-3)


def test_piecewise_constant_positive():
    sched = optim.piecewise_constant_schedule(0.1, {3: 2.0, 6: 0.5})
    np.testing.assert_allclose(_values(sched, 10), [0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.1, 0.1,
                                                     0.1, 0.1], atol=1e-3)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_constant_schedule(staircase):
    sched = optim.exponential_decay(init_value=1.0, transition_steps=15, decay_rate=1.0,
                                    staircase=staircase)
    np.testing.assert_allclose(_values(sched, 15), [1.0] * 15, atol=1e-3)


def _staircased(count, steps, staircase):
    p = count / steps
    return np.floor(p) if staircase else p


@pytest.mark.parametrize("staircase,transition_begin", [(False, 0), (True, 0), (False, 5),
                                                        (True, 5)])
def test_exponential(staircase, transition_begin):
    sched = optim.exponential_decay(init_value=1.0, transition_steps=2, decay_rate=2.0,
                                    transition_begin=transition_begin, staircase=staircase)
    want = [1.0] * transition_begin + [2.0 ** _staircased(c, 2, staircase) for c in range(15)]
    np.testing.assert_allclose(_values(sched, 15 + transition_begin), want, atol=1e-3)


@pytest.mark.parametrize("decay_rate,end_value,staircase", [
    (0.2, 0.1, False), (1.0, 0.1, False), (2.0, 3.0, False),
    (0.2, 0.1, True), (1.0, 0.1, True), (2.0, 3.0, True)])
def test_exponential_end_value_with_staircase(decay_rate, end_value, staircase):
    sched = optim.exponential_decay(init_value=1.0, transition_steps=2, decay_rate=decay_rate,
                                    transition_begin=3, staircase=staircase,
                                    end_value=end_value)
    want = np.array([1.0] * 3 + [decay_rate ** _staircased(c, 2, staircase)
                                 for c in range(11)], np.float32)
    want = np.maximum(want, end_value) if decay_rate < 1.0 else np.minimum(want, end_value)
    np.testing.assert_allclose(_values(sched, 14), want, atol=1e-3)


def test_exponential_immutable_count():
    sched = optim.exponential_decay(init_value=32.0, transition_steps=1, decay_rate=0.5)
    np.testing.assert_allclose(_values(sched, 5), [32, 16, 8, 4, 2], atol=1e-3)


def _cosine_multipliers(fractions):
    return 0.5 + 0.5 * np.cos(np.pi * np.array(fractions))


def test_cosine_decay_count_smaller_count():
    sched = optim.cosine_decay_schedule(0.1, 10, 0.0)
    np.testing.assert_allclose(_values(sched, 10), 0.1 * _cosine_multipliers(
        np.arange(10) / 10), atol=1e-3)


def test_cosine_decay_count_greater_count():
    sched = optim.cosine_decay_schedule(0.1, 5, 0.0)
    np.testing.assert_allclose(_values(sched, 12), 0.1 * _cosine_multipliers(
        np.minimum(np.arange(12) / 5, 1.0)), atol=1e-3)


def test_cosine_decay_count_greater_count_with_alpha():
    sched = optim.cosine_decay_schedule(0.1, 5, 0.1)
    mult = 0.9 * _cosine_multipliers(np.minimum(np.arange(12) / 5, 1.0)) + 0.1
    np.testing.assert_allclose(_values(sched, 12), 0.1 * mult, atol=1e-3)


def test_cosine_with_exponent():
    sched = jax.jit(optim.cosine_decay_schedule(init_value=0.1, decay_steps=100, alpha=0.0,
                                                exponent=2))
    np.testing.assert_allclose(sched(np.array([0, 10, 50, 75, 100])),
                               [0.1, 0.09516553580760956, 0.025, 0.0021446612663567066, 0.0],
                               rtol=1e-6, atol=1e-8)


def test_cosine_with_giant_int_steps():
    sched = jax.jit(optim.cosine_decay_schedule(init_value=1000.0, decay_steps=int(1e10),
                                                alpha=0.0, exponent=1))
    np.testing.assert_allclose(sched(int(1e9)), 975.52826)


@pytest.mark.parametrize("init_value,peak_value,end_value", [(10, 0.5, 1e-4), (5, 3, 0.0)],
                         ids=["with end value", "without end value"])
def test_warmup_cosine_limits(init_value, peak_value, end_value):
    sched = jax.jit(optim.warmup_cosine_decay_schedule(
        init_value=init_value, peak_value=peak_value, warmup_steps=100, decay_steps=1000,
        end_value=end_value))
    np.testing.assert_allclose(init_value, sched(0))
    np.testing.assert_allclose(peak_value, sched(100))
    np.testing.assert_allclose(end_value, sched(1000), rtol=1e-3)


def test_warmup_cosine_monotonicity_and_exponent_ordering():
    kw = dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=25, end_value=0.1)
    steps = np.arange(26)
    vals = np.asarray(optim.warmup_cosine_decay_schedule(**kw, exponent=1.0)(steps))
    vals2 = np.asarray(optim.warmup_cosine_decay_schedule(**kw, exponent=2.0)(steps))
    assert np.all(np.diff(vals[:6]) > 0)
    np.testing.assert_allclose(vals[5], 1.0, atol=1e-6)
    assert np.all(np.diff(vals[5:]) <= 0)
    np.testing.assert_allclose(vals[-1], 0.1, atol=1e-6)
    assert np.all(vals2[5:] <= vals[5:] + 1e-12)


def test_warmup_cosine_raises_when_decay_equals_warmup():
    with pytest.raises(ValueError, match="decay_steps must be > warmup_steps"):
        optim.warmup_cosine_decay_schedule(init_value=0.2, peak_value=1.2, warmup_steps=10,
                                           decay_steps=10, end_value=0.0)


def test_join_schedules():
    sched = optim.join_schedules(schedules=[optim.constant_schedule(1.0),
                                            optim.constant_schedule(2.0),
                                            optim.constant_schedule(1.0)], boundaries=[3, 6])
    np.testing.assert_allclose([sched(i) for i in range(7)], [1, 1, 1, 2, 2, 2, 1], atol=0.0)


# ------------------------------- sgdr, piecewise interpolation, one-cycle (optax 0.2.8)


def _sgdr_kwargs(lr0, lr1, lr2):
    return [{"decay_steps": int(step), "peak_value": lr, "init_value": 0, "end_value": 0.0,
             "warmup_steps": 500} for step, lr in zip([2e3, 3e3, 5e3], [lr0, lr1, lr2])]


@pytest.mark.parametrize("lr0,lr1,lr2", [(1.6, 0.8, 0.4), (1.6, 1.6, 1.6)],
                         ids=["with step decay", "without step_decay"])
def test_sgdr_limits(lr0, lr1, lr2):
    sched = jax.jit(optim.sgdr_schedule(_sgdr_kwargs(lr0, lr1, lr2)))
    np.testing.assert_allclose(lr0, sched(500))
    np.testing.assert_allclose(lr1, sched(2500))
    np.testing.assert_allclose(lr2, sched(5500))


# optax's cases: (id, build(lib), steps, optax's expected values); lib is optim or optax
INTERPOLATED = [
    ("linear_piecewise",
     lambda m: m.piecewise_interpolate_schedule("linear", 200.0, {5: 1.5, 10: 0.25}), 13,
     [200.0, 220.0, 240.0, 260.0, 280.0, 300.0, 255.0, 210.0, 165.0, 120.0, 75.0, 75.0,
      75.0]),
    ("cos_piecewise",
     lambda m: m.piecewise_interpolate_schedule("cosine", 400.0, {5: 1.2, 3: 0.6, 7: 1.0}),
     9, [400.0, 360.0, 280.0, 240.0, 264.0, 288.0, 288.0, 288.0, 288.0]),
    ("empty_dict", lambda m: m.piecewise_interpolate_schedule("linear", 13.0, {}), 5,
     [13.0] * 5),
    ("no_dict", lambda m: m.piecewise_interpolate_schedule("cosine", 17.0), 3, [17.0] * 3),
    ("onecycle_linear",
     lambda m: m.linear_onecycle_schedule(transition_steps=10, peak_value=1000,
                                          pct_start=0.3, pct_final=0.7, div_factor=10.0,
                                          final_div_factor=100.0), 12,
     [100.0, 400.0, 700.0, 1000.0, 775.0, 550.0, 325.0, 100.0, 67.0, 34.0, 1.0, 1.0]),
    ("onecycle_cosine",
     lambda m: m.cosine_onecycle_schedule(transition_steps=5, peak_value=1000.0,
                                          pct_start=0.4, div_factor=10.0,
                                          final_div_factor=100.0), 7,
     [100.0, 550.0, 1000.0, 750.25, 250.75, 1.0, 1.0]),
]


@pytest.mark.parametrize("name,build,n,want", INTERPOLATED, ids=[c[0] for c in INTERPOLATED])
def test_interpolated(name, build, n, want):
    np.testing.assert_allclose(_values(build(optim), n), want, atol=1e-3)


def test_piecewise_interpolate_zero_interval_size():
    sched = optim.piecewise_interpolate_schedule("linear", 13.0, {0: 2.0, 5: 3.0})
    assert all(jnp.isfinite(sched(i)) for i in range(6))
    np.testing.assert_allclose(sched(0), 26.0, rtol=1e-12)  # 13.0 * 2.0
    np.testing.assert_allclose(sched(5), 78.0, rtol=1e-12)  # 26.0 * 3.0


@pytest.mark.parametrize("interpolate_type", ["linar", "", None])
def test_piecewise_interpolate_invalid_type(interpolate_type):
    with pytest.raises(ValueError, match="piecewise_interpolate_schedule: interpolate_type "
                                         "must be one of 'linear', 'cosine'"):
        optim.piecewise_interpolate_schedule(interpolate_type, 13.0, {5: 3.0})


def test_piecewise_interpolate_invalid_scale():
    with pytest.raises(ValueError, match=r"piecewise_interpolate_schedule: scale at boundary "
                                         r"5 must be in \[0, inf\), got -3"):
        optim.piecewise_interpolate_schedule("linear", 13.0, {5: -3})


def test_onecycle_nonpositive_transition_steps():
    with pytest.raises(ValueError, match="cosine_onecycle_schedule: transition_steps must be "
                                         ">= 1, got 0"):
        optim.cosine_onecycle_schedule(transition_steps=0, peak_value=5.0)
    with pytest.raises(ValueError, match="linear_onecycle_schedule: transition_steps must be "
                                         ">= 1, got 0"):
        optim.linear_onecycle_schedule(transition_steps=0, peak_value=5.0)


# The same cases against optax itself, both in float32 (x64 off in this block only): every
# value to rtol 1e-6. Long runs (sgdr, optax's defaults) also get atol = 1e-7 * peak: near
# a small value both libraries' float32 formulas cancel differently (optax's warm-up
# ``(0 - 0.8) (1 - 2/500) + 0.8`` is 2e-6 off 0.0032; both cosines are ~2e-4 off the exact
# value near the end of a one-cycle), so rtol alone would test float32 rounding.
AGAINST_OPTAX = [(c[0], c[1], range(c[2]), 0.0) for c in INTERPOLATED] + [
    ("zero_interval", lambda m: m.piecewise_interpolate_schedule("linear", 13.0,
                                                                 {0: 2.0, 5: 3.0}),
     range(7), 0.0),
    ("sgdr", lambda m: m.sgdr_schedule(_sgdr_kwargs(1.6, 0.8, 0.4)), range(0, 11000, 7),
     1.6e-7),
    ("linear_onecycle_defaults", lambda m: m.linear_onecycle_schedule(1000, 0.1),
     range(1100), 1e-8),
    ("cosine_onecycle_defaults", lambda m: m.cosine_onecycle_schedule(1000, 0.1),
     range(1100), 1e-8),
]


@pytest.mark.parametrize("name,build,steps,atol", AGAINST_OPTAX,
                         ids=[c[0] for c in AGAINST_OPTAX])
def test_interpolated_match_optax_float32(name, build, steps, atol):
    optax = pytest.importorskip("optax")
    steps = np.asarray(steps, np.int32)
    with jax.enable_x64(False):
        ours = np.asarray(jax.jit(jax.vmap(build(optim)))(steps))
        with jax.numpy_dtype_promotion("standard"):
            theirs = np.asarray(jax.jit(jax.vmap(build(optax)))(steps))
        eager = [build(optim)(int(t)) for t in steps[:3]]  # Python int steps, no jit
    assert ours.dtype == theirs.dtype == np.float32
    assert all(v.dtype == np.float32 for v in eager)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(eager, theirs[:3], rtol=1e-6, atol=atol)


# --------------------------------------------------------------- inject_hyperparams


def test_inject_updates():
    opt = optim.inject_hyperparams(optim.scale)(
        step_size=optim.piecewise_constant_schedule(3.0, {1: 5, 7: 2, 12: 1.5}))
    params = [jnp.zeros([], jnp.float32)]
    state = jax.jit(opt.init)(params)
    update = jax.jit(opt.update)
    expected = [3.0] * 2 + [15.0] * 6 + [30.0] * 5 + [45.0] * 3
    for i in range(15):
        updates, state = update([jnp.ones([], jnp.float32)], state, params=params)
        np.testing.assert_almost_equal(np.asarray(updates[0]), expected[i + 1])


def test_inject_hyperparams_state():
    opt = optim.inject_hyperparams(optim.trace)(
        decay=optim.piecewise_constant_schedule(0.8, {3: 0.5, 9: 1.25}), nesterov=True)
    params = [jnp.zeros([2, 3]) for _ in range(3)]
    state = jax.jit(opt.init)(params)
    update = jax.jit(opt.update)
    expected = [0.8] * 4 + [0.4] * 6 + [0.5] * 2
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    for i in range(12):
        np.testing.assert_almost_equal(np.asarray(state.hyperparams["decay"]), expected[i])
        _, state = update(grads, state)
    np.testing.assert_almost_equal(np.asarray(state.hyperparams["decay"]), expected[-1])


def test_inject_constant_hyperparams():
    opt = optim.inject_hyperparams(optim.scale_by_adam)(b1=0.0, b2=0.0)
    params = [jnp.zeros([2, 3]) for _ in range(3)]
    state = jax.jit(opt.init)(params)
    update = jax.jit(opt.update)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    for _ in range(5):
        updates, state = update(grads, state, params)
        for name, value in (("b1", 0.0), ("b2", 0.0), ("eps", 1e-8), ("eps_root", 0.0)):
            np.testing.assert_almost_equal(np.asarray(state.hyperparams[name]), value)
        for u, g in zip(updates, grads):
            np.testing.assert_allclose(u, g, rtol=1e-6)


def test_inject_overriding_hyperparam():
    opt = optim.inject_hyperparams(optim.clip_by_global_norm)(0.1)
    params = jnp.zeros((3, 5, 7))
    state = jax.jit(opt.init)(params)
    update = jax.jit(opt.update)
    for i in range(5):
        state.hyperparams["max_norm"] = i
        updates, state = update(jnp.ones_like(params), state)
        assert np.isclose(jnp.linalg.norm(updates.ravel()), i)


@pytest.mark.parametrize("static_args", ["mask", ["mask"]], ids=["string", "list"])
def test_inject_static_args(static_args):
    @functools.partial(optim.inject_hyperparams, static_args=static_args)
    def custom_optim(learning_rate, mask):
        return optim.masked(optim.scale(-learning_rate), mask)

    opt = custom_optim(0.1, functools.partial(jax.tree_util.tree_map, lambda x: x.ndim > 1))
    params = [jnp.ones((1, 2)), jnp.ones(2), jnp.ones((1, 1, 1))]
    updates, state = jax.jit(opt.update)(params, jax.jit(opt.init)(params))
    assert set(state.hyperparams) == {"learning_rate"}
    for u, p in zip(updates, params):
        np.testing.assert_allclose(u, -0.1 * p if p.ndim > 1 else p, rtol=1e-6)


@pytest.mark.parametrize("static_args", ["b1", ["b1", "b2"]], ids=["one_arg", "two_arg"])
def test_inject_numeric_static_args(static_args):
    opt = optim.inject_hyperparams(optim.scale_by_adam, static_args=static_args)(b1=0.9,
                                                                                 b2=0.95)
    params = [jnp.ones((1, 2)), jnp.ones(2), jnp.ones((1, 1, 1))]
    _, state = jax.jit(opt.update)(params, jax.jit(opt.init)(params))
    assert not set(state.hyperparams).intersection(
        {static_args} if isinstance(static_args, str) else set(static_args))


def test_inject_prng_key_not_hyperparameter():
    def random_noise_optimizer(key, scale):
        def update(updates, state, params=None):
            key, scale = state
            keys = iter(jax.random.split(key, len(jax.tree_util.tree_leaves(updates)) + 1))
            return (jax.tree_util.tree_map(
                lambda x: scale * jax.random.normal(next(keys), x.shape), updates),
                (next(keys), scale))
        return optim.Optimizer(lambda p: (key, scale), update)

    opt = optim.inject_hyperparams(random_noise_optimizer)(key=jax.random.key(17), scale=1e-3)
    params = [jnp.ones((1, 2)), jnp.ones(2), jnp.ones((1, 1, 1))]
    jax.jit(opt.update)(params, jax.jit(opt.init)(params))


@pytest.mark.parametrize("hyper,param,grad", [
    (jnp.bfloat16, jnp.float32, jnp.bfloat16), (jnp.bfloat16, jnp.float32, jnp.float32),
    (jnp.float32, jnp.bfloat16, jnp.bfloat16), (jnp.float32, jnp.float32, jnp.bfloat16),
    (jnp.float32, jnp.bfloat16, jnp.float32)])
def test_inject_hyperparam_dtypes(hyper, param, grad):
    opt = optim.inject_hyperparams(optim.scale_by_adam, hyperparam_dtype=hyper)(b1=0.9, b2=0.95)
    params = [jnp.ones((1, 2), param), jnp.ones(2, param), jnp.ones((1, 1, 1), param)]
    state = jax.jit(opt.init)(params)
    assert state.hyperparams["b1"].dtype == hyper and state.hyperparams["b2"].dtype == hyper
    _, state = jax.jit(opt.update)([p.astype(grad) for p in params], state)
    assert state.hyperparams["b1"].dtype == hyper and state.hyperparams["b2"].dtype == hyper


@pytest.mark.parametrize("param_dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
def test_inject_hyperparam_default_dtype(param_dtype):
    params = [jnp.ones((1, 2), param_dtype), jnp.ones(2, param_dtype)]
    inject = optim.inject_hyperparams(optim.scale_by_adam)
    for b1, b2, want in ((0.9, 0.95, (param_dtype,) * 2),
                         (jnp.asarray(0.9), jnp.asarray(0.95), (param_dtype,) * 2),
                         (jnp.array(0.9, jnp.float32), jnp.asarray(0.95, jnp.bfloat16),
                          (jnp.float32, jnp.bfloat16))):
        state = jax.jit(inject(b1=b1, b2=b2).init)(params)
        assert (state.hyperparams["b1"].dtype, state.hyperparams["b2"].dtype) == want


@pytest.mark.parametrize("static_args", ["lr", ["lr"]], ids=["string", "list"])
def test_inject_static_args_error(static_args):
    with pytest.raises(ValueError, match=r"inject_hyperparams: static_args \['lr'\]"):
        optim.inject_hyperparams(optim.scale, static_args=static_args)


def test_inject_hyperparams_starts_with_step_count_zero():
    opt = optim.inject_hyperparams(optim.scale)(lambda count: count)
    updates, _ = jax.jit(opt.update)(jnp.array([-1, 0, 1]), opt.init(jnp.zeros(3)))
    np.testing.assert_array_equal(updates, np.zeros(3))


class ExampleState(NamedTuple):
    total: jax.Array


class ExampleStatefulSchedule:  # optax's: init/update/__call__ (the StatefulSchedule protocol)
    def init(self):
        return ExampleState(total=jnp.zeros([], dtype=jnp.int32))

    def update(self, state, **extra_args):
        return ExampleState(total=state.total + extra_args["addendum"])

    def __call__(self, state, **extra_args):
        return state.total


def test_inject_stateful_hyperparams():
    grads = (jnp.ones((3,), jnp.float32), jnp.ones((2,), jnp.float32))
    tx = optim.inject_hyperparams(optim.scale)(step_size=ExampleStatefulSchedule())
    extra = {"addendum": 0.3 * jnp.ones((), jnp.float32)}
    with jax.numpy_dtype_promotion("standard"):  # the schedule adds float32 to int32
        state = jax.jit(tx.init)(grads)
        for _ in range(2):
            _, state = jax.jit(tx.update)(grads, state, params=grads, **extra)
    np.testing.assert_allclose(state.hyperparams["step_size"], extra["addendum"], atol=0.0)
    np.testing.assert_allclose(state.hyperparams_states["step_size"].total,
                               2 * extra["addendum"], atol=0.0)
