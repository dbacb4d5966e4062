"""The ported optax cases that funcnet answers differently ON PURPOSE, each with its reason.

Each test runs optax's inputs and asserts what funcnet does instead (a clear error) and,
where optax is installed, what optax does (so the difference is real and stays known).

| optax case | optax | funcnet | why |
| --- | --- | --- | --- |
| negative values in schedules / learning rates | accepted | ValueError | one policy for every hyperparameter and schedule value: finite and >= 0 (a negative learning rate is ascent; use ``scale(+lr)``) |
| ``exponential_decay`` with ``transition_steps <= 0`` or ``decay_rate = 0`` | constant schedule | ValueError | optax's own docstring says "must be positive"/"must not be zero"; a silent constant hides a typo |
| ``polynomial_schedule`` with ``transition_steps < 0`` | constant schedule | ValueError | negative counts are refused everywhere (``0`` keeps optax's constant) |
| integer (Python int) parameters | truncated by ``apply_updates`` | TypeError naming the leaf | an Adam step turns ``[1, 1]`` into ``[0, 0]`` silently |
| ``None`` updates / params, state ``0`` | ignored | ValueError | a state or tree of the wrong kind is reported with both structures |
| one-cycle phase boundaries on one step (``pct_final=1``, ``transition_steps=1``, ``pct_start=1``) | the dict ``{boundary: scale}`` keeps the last scale: peak or final value wrong | the empty phase is skipped: ``peak_value`` and ``peak_value / (div_factor * final_div_factor)`` are reached | optax's own phases, without the key collision |
| one-cycle ``pct_*`` outside ``[0, 1]`` or ``pct_start > pct_final``; ``sgdr_schedule([])`` | phases re-sorted (nonsense values); IndexError when called | ValueError | the phases' order is the schedule |
| float step counts: ``cosine_decay_schedule(0.1, 100.0)``, ``transition_steps=10.0``, ``warmup_steps=10.0``, ``{10.0: 0.5}``, one-cycle ``transition_steps=100.0`` | accepted | TypeError | counts are ints (the schedules' policy); write ``int(0.05 * total_steps)`` |
| decays out of range: ``adam(b1=1.5)``, ``sgd(momentum=1.5)`` or ``-0.5``, ``ema(1.0)``, ``incremental_update(..., 1.5)`` | accepted (diverges; ``ema(1.0)`` gives NaN) | ValueError | ``[0, 1)`` (``[0, 1]`` for a momentum and a step size) |
| ``adam(eps=-1)``, ``clip(-1.0)``, ``clip_by_global_norm(0.0)`` | accepted (``clip_by_global_norm(0)`` zeroes the updates) | ValueError | an eps or a bound is >= 0, a norm bound > 0 |
| ``sgd(nesterov='yes')``, ``adam('0.1')`` | accepted (truthy string; fails later) | TypeError | a flag is a bool, a hyperparameter a number |
| ``apply_if_finite(opt, -1)`` / ``(opt, 2.0)``, ``MultiSteps(opt, 0)`` | accepted | ValueError / TypeError | counts are ints, ``every_k >= 1`` |
| ``learning_rate=jnp.array([0.1])``; an updates leaf that broadcasts to its parameter in ``apply_updates`` | broadcast | ValueError | a shape (1,) learning rate or update is a bug upstream |
| ``join_schedules`` with ``len(boundaries) != len(schedules) - 1`` | extra ones ignored | ValueError | |
| integer gradients | updated | TypeError naming the leaf | as integer parameters |
| ``inject_hyperparams(adam)`` with bfloat16 params (``b2=0.999`` rounds to 1.0) | NaN updates | ValueError naming ``hyperparam_dtype`` (also under jit) | a silent NaN run |
| ``inject_hyperparams(f, hyperparam_dtype=float32)`` with bfloat16 params and grads | float32 updates | bfloat16 updates | hyperparameters take the gradients' dtype (strict-promotion clean) |
| bfloat16 params with float32 grads | moments become float32 at step 1 | moments keep their dtype (the params' or ``*_dtype``); updates float32 in both | a ``lax.scan`` carry keeps its dtypes |
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

optax = pytest.importorskip("optax")


@pytest.mark.parametrize("case,make_ours,make_theirs,match", [
    ("schedule_test.PolynomialTest.test_zero_steps_schedule[-1]",
     lambda: optim.polynomial_schedule(10.0, 20.0, 1, -1),
     lambda: optax.polynomial_schedule(10.0, 20.0, 1, -1),
     r"polynomial_schedule: transition_steps must be >= 0, got -1"),
    ("schedule_test.PiecewiseConstantTest.test_negative",
     lambda: optim.piecewise_constant_schedule(-0.1, {3: 2.0, 6: 0.5}),
     lambda: optax.piecewise_constant_schedule(-0.1, {3: 2.0, 6: 0.5}),
     r"piecewise_constant_schedule: init_value must be in \[0, inf\), got -0\.1"),
    *[(f"schedule_test.ExponentialTest.test_nonvalid_transition_steps[{staircase}, {n}]",
       lambda n=n, s=staircase: optim.exponential_decay(1.0, n, 1.0, staircase=s),
       lambda n=n, s=staircase: optax.exponential_decay(1.0, n, 1.0, staircase=s),
       rf"exponential_decay: transition_steps must be >= 1, got {n}")
      for staircase in (False, True) for n in (-1, 0)],
    *[(f"schedule_test.ExponentialTest.test_nonvalid_decay_rate[{staircase}]",
       lambda s=staircase: optim.exponential_decay(1.0, 2, 0.0, staircase=s),
       lambda s=staircase: optax.exponential_decay(1.0, 2, 0.0, staircase=s),
       r"exponential_decay: decay_rate must be in \(0, inf\), got 0")
      for staircase in (False, True)],
    ("schedule_test.WarmupCosineDecayTest.test_with_exponent",
     lambda: optim.warmup_cosine_decay_schedule(0.2, 1.21, 50, 100, -3.0, 2),
     lambda: optax.warmup_cosine_decay_schedule(0.2, 1.21, 50, 100, -3.0, 2),
     r"warmup_cosine_decay_schedule: end_value must be in \[0, inf\), got -3"),
    ("schedule_test.WarmupCosineDecayTest.test_zero_peak_value",
     lambda: optim.warmup_cosine_decay_schedule(0.2, 0, 50, 100, -3.0, 2),
     lambda: optax.warmup_cosine_decay_schedule(0.2, 0, 50, 100, -3.0, 2),
     r"warmup_cosine_decay_schedule: end_value must be in \[0, inf\), got -3"),
])
def test_schedule_values_and_counts_are_refused(case, make_ours, make_theirs, match):
    theirs = make_theirs()  # optax builds a schedule and evaluates it
    assert np.all(np.isfinite(np.asarray(theirs(3), np.float64)))
    with pytest.raises(ValueError, match=match):
        make_ours()


@pytest.mark.parametrize("case", ["combining_test.ExtraArgsTest.test_extra_args",
                                  "combining_test.ExtraArgsTest.test_extra_args_positional_params"])
def test_integer_params_are_refused(case):
    params = {"a": 1, "b": 2}  # optax's inputs: Python ints
    with jax.numpy_dtype_promotion("standard"):
        state = optax.adam(1e-3).init(params)
        optax.adam(1e-3).update(params, state)
    with pytest.raises(TypeError, match=r"adam: params\['a'\] must have a floating or complex "
                                         r"dtype, got int"):
        optim.adam(1e-3).init(params)
    with pytest.raises(TypeError, match=r"chain: params\['a'\] must have a floating"):
        optim.chain(optim.identity(), optim.identity()).init(params)


def test_add_decayed_weights_none_argument_is_refused():
    """adding_test.test_none_argument: ``update(None, 0, weights)``."""
    weights = (jnp.ones((2,)), {"a": jnp.ones((2,)), "b": jnp.ones((2,))})
    optax.add_decayed_weights(0.1, mask=None).update(None, 0, weights)
    with pytest.raises(ValueError, match=r"add_decayed_weights: opt_state is int"):
        optim.add_decayed_weights(0.1, mask=None).update(None, 0, weights)


@pytest.mark.parametrize("name", ["apply_updates", "incremental_update"])
def test_none_argument_is_refused(name):
    """update_test.test_none_argument: ``operation(None, x)``."""
    x = jnp.array([1.0, 2.0, 3.0])
    ours = {"apply_updates": optim.apply_updates,
            "incremental_update": lambda a, b: optim.incremental_update(a, b, 1)}[name]
    theirs = {"apply_updates": optax.apply_updates,
              "incremental_update": lambda a, b: optax.incremental_update(a, b, 1)}[name]
    theirs(None, x)
    with pytest.raises(ValueError, match=rf"{name}: \w+ tree structure does not match"):
        ours(None, x)


def test_negative_learning_rate_is_refused():
    """optax.sgd(-0.1) is gradient ascent; funcnet refuses it and points to scale(+lr)."""
    optax.sgd(-0.1)
    with pytest.raises(ValueError, match=r"sgd: scale_by_learning_rate: learning_rate must be "
                                         r"in \[0, inf\), got -0\.1"):
        optim.sgd(-0.1)
    u, _ = optim.scale(0.1).update(jnp.ones(2), optim.EmptyState())  # ascent, explicitly
    np.testing.assert_allclose(u, [0.1, 0.1])


def _knots(schedule, steps):
    return np.array([float(schedule(t)) for t in steps])


@pytest.mark.parametrize("name,args,steps,want", [
    # pct_final=1: phase 3 is empty; optax drops 1/div_factor and ends at peak/final_div
    ("linear_onecycle_schedule", (10, 1.0, 0.3, 1.0, 10.0, 100.0), (0, 3, 9, 10, 11),
     [0.1, 1.0, 0.1 + 0.9 / 7, 1e-3, 1e-3]),
    # transition_steps=1: every boundary is 0 or 1; optax never reaches peak/div at step 0
    ("linear_onecycle_schedule", (1, 1.0), (0, 1), [0.04, 4e-6]),
    # pct_start=1: the rise is the whole cycle; optax decays from the start instead
    ("cosine_onecycle_schedule", (10, 1.0, 1.0), (0, 5, 9, 10),
     [0.04, 0.52, 0.04 + 0.96 * 0.5 * (1 - np.cos(np.pi * 0.9)), 4e-6]),
])
def test_onecycle_coinciding_boundaries_keep_every_phase(name, args, steps, want):
    ours, theirs = getattr(optim, name)(*args), getattr(optax, name)(*args)
    np.testing.assert_allclose(_knots(ours, steps), want, rtol=1e-12)
    with jax.numpy_dtype_promotion("standard"):
        assert not np.allclose(_knots(theirs, steps), want, rtol=1e-3)


@pytest.mark.parametrize("make,optax_raises,match", [
    (lambda m: m.linear_onecycle_schedule(10, 1.0, pct_start=0.8, pct_final=0.3), None,
     r"linear_onecycle_schedule: pct_start must be <= pct_final, got pct_start=0\.8"),
    (lambda m: m.cosine_onecycle_schedule(10, 1.0, pct_start=1.5), None,
     r"cosine_onecycle_schedule: pct_start must be in \[0, 1\], got 1\.5"),
    (lambda m: m.sgdr_schedule([]), IndexError,
     r"sgdr_schedule: cosine_kwargs is empty, expected at least one cycle"),
])
def test_onecycle_phase_order_and_empty_sgdr_are_refused(make, optax_raises, match):
    theirs = make(optax)  # optax builds it; it evaluates it, or fails only when called
    with jax.numpy_dtype_promotion("standard"):
        if optax_raises is None:
            assert np.all(np.isfinite(_knots(theirs, range(12))))
        else:
            with pytest.raises(optax_raises):
                theirs(3)
    with pytest.raises(ValueError, match=match):
        make(optim)


# -------------------------------------------------- stricter validation, listed above

P = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
INT_GRADS = {"w": jnp.ones((3, 2), jnp.int32), "b": jnp.ones(2, jnp.int32)}


def _step(opt, grads=P):
    return opt.update(grads, opt.init(P), P)


def _exercise(out):
    """Run what optax built: an update of an optimizer, a value of a schedule."""
    if hasattr(out, "init") and hasattr(out, "update"):
        return _step(out)
    return out(3) if callable(out) else out


STRICTER = [
    ("cosine_decay_steps", lambda m: m.cosine_decay_schedule(0.1, 100.0), TypeError,
     r"cosine_decay_schedule: decay_steps must be an int, got float 100\.0"),
    ("linear_transition_steps", lambda m: m.linear_schedule(0.1, 0.0, 10.0), TypeError,
     r"linear_schedule: polynomial_schedule: transition_steps must be an int, got float"),
    ("exponential_transition_steps", lambda m: m.exponential_decay(0.1, 10.0, 0.5), TypeError,
     r"exponential_decay: transition_steps must be an int, got float 10\.0"),
    ("warmup_steps", lambda m: m.warmup_cosine_decay_schedule(0.0, 0.1, 10.0, 100), TypeError,
     r"warmup_cosine_decay_schedule: warmup_steps must be an int, got float 10\.0"),
    ("piecewise_boundary", lambda m: m.piecewise_constant_schedule(0.1, {10.0: 0.5}),
     TypeError, r"piecewise_constant_schedule: boundary must be an int, got float 10\.0"),
    ("onecycle_steps", lambda m: m.cosine_onecycle_schedule(100.0, 0.1), TypeError,
     r"cosine_onecycle_schedule: transition_steps must be an int, got float 100\.0"),
    ("adam_b1", lambda m: m.adam(0.1, b1=1.5), ValueError,
     r"adam: scale_by_adam: b1 must be in \[0, 1\), got 1\.5"),
    ("sgd_momentum_high", lambda m: m.sgd(0.1, momentum=1.5), ValueError,
     r"sgd: trace: decay must be in \[0, 1\], got 1\.5"),
    ("sgd_momentum_negative", lambda m: m.sgd(0.1, momentum=-0.5), ValueError,
     r"sgd: trace: decay must be in \[0, 1\], got -0\.5"),
    ("ema_one", lambda m: m.ema(1.0), ValueError, r"ema: decay must be in \[0, 1\), got 1"),
    ("incremental_step_size", lambda m: m.incremental_update(P, P, 1.5), ValueError,
     r"incremental_update: step_size must be in \[0, 1\], got 1\.5"),
    ("adam_eps", lambda m: m.adam(0.1, eps=-1.0), ValueError,
     r"adam: scale_by_adam: eps must be in \[0, inf\), got -1"),
    ("clip_negative", lambda m: m.clip(-1.0), ValueError,
     r"clip: max_delta must be in \[0, inf\), got -1"),
    ("clip_global_norm_zero", lambda m: m.clip_by_global_norm(0.0), ValueError,
     r"clip_by_global_norm: max_norm must be in \(0, inf\), got 0"),
    ("nesterov_string", lambda m: m.sgd(0.1, 0.9, nesterov="yes"), TypeError,
     r"sgd: nesterov must be a bool, got str 'yes'"),
    ("learning_rate_string", lambda m: m.adam("0.1"), TypeError,
     r"adam: scale_by_learning_rate: learning_rate must be a number or a scalar array, "
     r"got str '0\.1'"),
    ("apply_if_finite_negative", lambda m: m.apply_if_finite(m.sgd(0.1), -1), ValueError,
     r"apply_if_finite: max_consecutive_errors must be >= 0, got -1"),
    ("apply_if_finite_float", lambda m: m.apply_if_finite(m.sgd(0.1), 2.0), TypeError,
     r"apply_if_finite: max_consecutive_errors must be an int, got float 2\.0"),
    ("multisteps_zero", lambda m: m.MultiSteps(m.sgd(0.1), 0), ValueError,
     r"MultiSteps: every_k must be >= 1, got 0"),
    ("learning_rate_shape", lambda m: m.sgd(jnp.array([0.1])), ValueError,
     r"sgd: scale_by_learning_rate: learning_rate must be a scalar, got shape \(1,\)"),
    ("apply_updates_broadcast", lambda m: m.apply_updates(P, {**P, "w": jnp.ones(2)}),
     ValueError, r"apply_updates: updates\['w'\] has shape \(2,\), expected \(3, 2\) as in "
                 r"params\['w'\]"),
    ("join_schedules_boundaries", lambda m: m.join_schedules([m.constant_schedule(1.0)], [5]),
     ValueError, r"join_schedules: got 1 schedules and 1 boundaries, expected 0 boundaries"),
    ("integer_grads", lambda m: _step(m.sgd(0.1), INT_GRADS), TypeError,
     r"sgd: grads\['b'\] must have a floating or complex dtype, got int32"),
]


@pytest.mark.parametrize("case,make,exc,match", STRICTER, ids=[c[0] for c in STRICTER])
def test_stricter_inputs_are_refused_clearly(case, make, exc, match):
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        built = make(optax)  # optax builds it and (but for a string learning rate) runs it
        if case != "learning_rate_string":
            _exercise(built)
    with pytest.raises(exc, match=match):
        make(optim)
    with pytest.raises(exc, match=match):  # the same message while tracing
        jax.jit(lambda: (make(optim), 0)[1])()


def _dtypes_after(lib, make, params, grads, steps=2):
    """The updates' and the state's leaf dtypes after ``steps`` updates (abstractly)."""
    opt = make(lib)

    def run():
        with jax.numpy_dtype_promotion("standard"):
            state = opt.init(params)
            for _ in range(steps):
                updates, state = opt.update(grads, state, params)
            return updates, state
    return jax.tree_util.tree_map(lambda x: x.dtype, jax.eval_shape(run))


def test_injected_float32_hyperparameters_take_the_gradients_dtype():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    make = lambda m: m.inject_hyperparams(m.sgd, hyperparam_dtype=jnp.float32)(  # noqa: E731
        learning_rate=0.1)
    ours, theirs = (_dtypes_after(m, make, params, params)[0]["w"] for m in (optim, optax))
    assert (ours, theirs) == (jnp.bfloat16, jnp.float32)


@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "rmsprop", "adagrad"])
def test_wider_gradients_keep_the_state_dtype(name):
    make = {"adam": lambda m: m.adam(0.1), "sgd_momentum": lambda m: m.sgd(0.1, 0.9),
            "rmsprop": lambda m: m.rmsprop(0.1), "adagrad": lambda m: m.adagrad(0.1)}[name]
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    grads = {"w": jnp.full(3, 0.5, jnp.float32)}
    (u_ours, s_ours), (u_theirs, s_theirs) = (_dtypes_after(m, make, params, grads)
                                              for m in (optim, optax))
    assert u_ours == u_theirs == {"w": jnp.float32}
    floats = lambda s: {d for d in jax.tree_util.tree_leaves(s)  # noqa: E731
                        if jnp.issubdtype(d, jnp.floating)}
    assert floats(s_ours) == {jnp.dtype(jnp.bfloat16)}
    assert jnp.dtype(jnp.float32) in floats(s_theirs)
