"""Interchange with optax beyond trajectories: inject_hyperparams' states, signatures and
dtypes, the ``schedules`` namespace, and the dtypes of mixed-precision updates (the
promoted dtype of the gradients and the optimizer's state, as optax)."""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from funcnet.optim import orthogonal

optax = pytest.importorskip("optax")

_dtypes = functools.partial(jax.tree_util.tree_map, lambda x: jnp.result_type(x))


# ------------------------------------------------------------------ inject_hyperparams


def test_inject_schedule_continues_an_optax_state_in_a_scan():
    """A scheduled hyperparameter's state is rebuilt with ``_replace``: an optax state
    keeps its classes, so it is a stable lax.scan carry under funcnet's update."""
    params = {"w": jnp.ones(2, jnp.float32)}  # optax's schedule gives float32 values
    state = optax.inject_hyperparams(optax.sgd)(
        learning_rate=optax.linear_schedule(0.1, 0.0, 10)).init(params)
    opt = optim.inject_hyperparams(optim.sgd)(learning_rate=optim.linear_schedule(0.1, 0.0, 10))
    out, lrs = jax.lax.scan(lambda s, _: (opt.update(params, s, params)[1],
                                          s.hyperparams["learning_rate"]),
                            state, None, length=3)
    assert type(out.hyperparams_states["learning_rate"]) is type(
        state.hyperparams_states["learning_rate"])
    assert int(out.hyperparams_states["learning_rate"].count) == 3
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.09], rtol=1e-6)


@pytest.mark.parametrize("param_dtype,hyperparam_dtype", [
    (jnp.bfloat16, None), (jnp.float32, None), (jnp.float32, jnp.float32),
    (jnp.float64, jnp.bfloat16)])
def test_inject_stores_scheduled_values_in_the_hyperparameter_dtype(param_dtype,
                                                                    hyperparam_dtype):
    """As optax: a schedule's value is cast to the hyperparameter dtype (float32 params
    under x64 keep float32 learning rates, not the schedule's float64)."""
    params = {"w": jnp.ones(2, param_dtype)}

    def states(lib):
        opt = lib.inject_hyperparams(lib.sgd, hyperparam_dtype=hyperparam_dtype)(
            learning_rate=lib.cosine_decay_schedule(0.1, 10), momentum=0.9)
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-clean
            state = opt.init(params)
            return state, opt.update(params, state, params)[1]

    want = jnp.dtype(hyperparam_dtype or param_dtype)
    for ours, theirs in zip(states(optim), states(optax)):
        assert _dtypes(ours.hyperparams) == _dtypes(theirs.hyperparams)
        assert ours.hyperparams["learning_rate"].dtype == want


@pytest.mark.parametrize("jit", [False, True])
def test_inject_bfloat16_rounding_error_names_hyperparam_dtype(jit):
    """b2 = 0.999 is 1.0 in bfloat16 (the parameters' dtype): optax's updates are NaN,
    funcnet refuses it and says why and what to pass, also under jit."""
    params = {"w": jnp.ones((2, 2), jnp.bfloat16)}
    with jax.numpy_dtype_promotion("standard"):
        theirs = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
        u, _ = theirs.update(params, theirs.init(params), params)
    assert np.isnan(np.asarray(u["w"], np.float32)).all()
    init = optim.inject_hyperparams(optim.adam)(learning_rate=1e-2).init
    with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\), got 1\n  inject_hyperparams: "
                                         r"float hyperparameters are cast to bfloat16 "
                                         r"\(hyperparam_dtype; default: the parameters' dtype\), "
                                         r"which rounds b2=0\.999 to 1\.0: pass "
                                         r"hyperparam_dtype=jnp\.float32"):
        (jax.jit(init) if jit else init)(params)
    fixed = optim.inject_hyperparams(optim.adam, hyperparam_dtype=jnp.float32)(
        learning_rate=1e-2)
    u, _ = fixed.update(params, fixed.init(params), params)
    assert np.isfinite(np.asarray(u["w"], np.float32)).all()
    with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\), got 1\.5$"):  # no hint
        optim.inject_hyperparams(optim.adam)(learning_rate=1e-2, b2=1.5).init(params)


# name: (funcnet's and optax's factory, hyperparameters, params, gradients)
_MATRIX = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.array([0.5, -0.2, 0.1])}
INT_HYPERPARAMS = {
    "muon ns_steps": (optim.muon, "contrib.muon", dict(learning_rate=0.1), _MATRIX,
                      jax.tree_util.tree_map(lambda a: jnp.cos(3 * a), _MATRIX)),
    "dpsgd seed": (optim.dpsgd, "contrib.dpsgd",
                   dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.5, seed=3),
                   _MATRIX, jax.tree_util.tree_map(lambda a: jnp.stack([a, -2 * a]), _MATRIX)),
}


@pytest.mark.filterwarnings("ignore:\"seed\" is deprecated:DeprecationWarning")   # optax's
@pytest.mark.parametrize("name", sorted(INT_HYPERPARAMS))
def test_int_hyperparameters_are_injected_as_optax_injects_them(name):
    """inject_hyperparams keeps an int (muon's ns_steps, dpsgd's seed) in its state as an
    integer array, as optax does: rebuilt from it eagerly and under jit (a traced int),
    the optimizer takes the plain optimizer's steps and optax's."""
    ours, theirs, hparams, params, grads = INT_HYPERPARAMS[name]
    theirs = functools.reduce(getattr, theirs.split("."), optax)
    plain, injected = ours(**hparams), optim.inject_hyperparams(ours)(**hparams)
    with jax.numpy_dtype_promotion("standard"):              # optax is not strict-clean
        reference = optax.inject_hyperparams(theirs)(**hparams)
        ref_state = reference.init(params)
        ref = [reference.update(grads, ref_state, params)[0]]
    plain_state, state = plain.init(params), injected.init(params)
    assert set(state.hyperparams) == set(ref_state.hyperparams)
    eager, _ = injected.update(grads, state, params)
    step = jax.jit(injected.update)
    for _ in range(3):
        want, plain_state = plain.update(grads, plain_state, params)
        got, state = step(grads, state, params)
        _assert_leaves_close(got, want, rtol=1e-12, atol=1e-15)
    _assert_leaves_close(eager, ref[0], rtol=1e-6, atol=1e-9)


STRUCTURAL_INTS = {   # name: (factory, hyperparameters, the int that fixes its program)
    "scale_by_lbfgs": (optim.scale_by_lbfgs, dict(memory_size=3), "memory_size"),
    "galore": (optim.galore, dict(learning_rate=0.1, rank=2), "rank"),
    "schedule_free_adamw": (optim.schedule_free_adamw,
                            dict(learning_rate=0.1, warmup_steps=2), "warmup_steps"),
    "adafactor": (optim.adafactor, dict(learning_rate=0.1, min_dim_size_to_factor=2),
                  "min_dim_size_to_factor"),
}


@pytest.mark.parametrize("name", sorted(STRUCTURAL_INTS))
def test_inject_keeps_an_int_that_fixes_the_program_static(name):
    """An int the optimizer needs as a Python int (a state shape, a schedule length) is
    found and kept static: with optax's call unchanged (no static_args) the injected
    optimizer takes the plain one's steps eagerly and under jit, and its float
    hyperparameters are still in the state."""
    factory, hparams, structural = STRUCTURAL_INTS[name]
    plain, injected = factory(**hparams), optim.inject_hyperparams(factory)(**hparams)
    params, grads = _MATRIX, jax.tree_util.tree_map(lambda a: jnp.cos(3 * a), _MATRIX)
    plain_state, state = plain.init(params), injected.init(params)
    assert structural not in state.hyperparams
    assert "learning_rate" in state.hyperparams or name == "scale_by_lbfgs"
    eager_state = state
    step = jax.jit(injected.update)
    for _ in range(3):
        want, plain_state = plain.update(grads, plain_state, params)
        got, state = step(grads, state, params)
        eager, eager_state = injected.update(grads, eager_state, params)
        _assert_leaves_close(got, want, rtol=1e-6, atol=1e-7)
        _assert_leaves_close(eager, want, rtol=1e-6, atol=1e-7)


def _assert_leaves_close(actual, expected, **tol):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, e, **tol)


def test_a_traced_ns_steps_runs_the_steps_of_the_int():
    """orthogonalize_via_newton_schulz with a traced (vmapped) ns_steps equals the calls
    with each int, 0 steps included."""
    x = jnp.linspace(-1.0, 2.0, 15).reshape(3, 5)
    coeffs = (3.4445, -4.7750, 2.0315)
    for preconditioning in ("frobenius", "aol"):
        swept = jax.vmap(lambda n: orthogonal.orthogonalize_via_newton_schulz(
            x, coeffs, n, preconditioning))(jnp.arange(4))
        for n in range(4):
            np.testing.assert_allclose(swept[n], orthogonal.orthogonalize_via_newton_schulz(
                x, coeffs, n, preconditioning), rtol=1e-12, atol=1e-14,
                err_msg=f"{preconditioning}, ns_steps={n}")


def test_inject_returns_a_function_with_the_inner_signature():
    """functools.wraps: optax's name and signature, so static_args work on a rewrap."""
    for lib in (optim, optax):
        wrapped = lib.inject_hyperparams(lib.adam)
        assert wrapped.__name__ == "adam"
        assert list(inspect.signature(wrapped).parameters)[:3] == ["learning_rate", "b1", "b2"]
    rewrapped = optim.inject_hyperparams(optim.inject_hyperparams(optim.adam),
                                         static_args=("b1",))(learning_rate=0.1)
    state = rewrapped.init({"w": jnp.ones(2)})
    assert "b1" not in state.hyperparams and "b1" in state.inner_state.hyperparams


def test_inject_state_classes_have_optax_fields():
    assert optim.InjectHyperparamsState._fields == optax.InjectHyperparamsState._fields
    assert (optim.InjectStatefulHyperparamsState._fields
            == optax.InjectStatefulHyperparamsState._fields)
    state = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1).init({"w": jnp.ones(2)})
    assert type(state) is optim.InjectStatefulHyperparamsState  # what optax returns too


def test_schedules_namespace_has_optax_schedules_names():
    """``funcnet.optim.schedules`` holds every schedule of ``optax.schedules`` (the
    compound ones included) and inject_hyperparams, the same objects as at top level."""
    not_provided = {"Schedule", "StatefulSchedule", "WrappedSchedule",
                    "inject_stateful_hyperparams"}  # types and a deprecated alias
    names = {n for n in dir(optax.schedules) if not n.startswith("_")} - not_provided
    for name in sorted(names):
        assert getattr(optim.schedules, name) is getattr(optim, name), name


# ------------------------------------------------------------------ mixed precision

MIXED_CALLS = ["sgd(0.05, momentum=0.9)", "sgd(0.05, 0.9, accumulator_dtype=jnp.float32)",
               "adam(1e-2)", "adam(1e-2, mu_dtype=jnp.float32)", "nadamw(1e-2)",
               "adamw(1e-2, weight_decay=0.1)", "rmsprop(1e-2)", "rmsprop(1e-2, centered=True)",
               "adagrad(0.1)", "chain(clip_by_global_norm(1.0), ema(0.9), scale(-0.1))",
               "chain(ema(0.9, accumulator_dtype=jnp.float32), scale(-0.1))",
               "add_decayed_weights(0.1)", "MultiSteps(adam(1e-2), 2)",
               "inject_hyperparams(sgd)(learning_rate=1e-2, momentum=0.9)"]
MIXED_DTYPES = [(jnp.float32, jnp.bfloat16), (jnp.bfloat16, jnp.float32),
                (jnp.bfloat16, jnp.bfloat16)]


def _build(lib, call):
    return eval(call, {"jnp": jnp, **{k: getattr(lib, k) for k in dir(lib)
                                      if not k.startswith("_")}})


def _update_dtypes(lib, call, param_dtype, grad_dtype):
    params = {"w": jnp.ones((2, 2), param_dtype), "b": jnp.ones(2, param_dtype)}
    grads = jax.tree_util.tree_map(lambda p: jnp.full(p.shape, 0.5, grad_dtype), params)
    opt = _build(lib, call)

    def step():
        with jax.numpy_dtype_promotion("standard"):
            return opt.update(grads, opt.init(params), params)[0]
    return _dtypes(jax.eval_shape(step))


@pytest.mark.parametrize("param_dtype,grad_dtype", MIXED_DTYPES,
                         ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("call", MIXED_CALLS)
def test_mixed_precision_updates_have_optax_dtype(call, param_dtype, grad_dtype):
    """float32 master weights with bfloat16 gradients, or a float32 accumulator for
    bfloat16 weights: the updates are float32 (no rounding before apply_updates)."""
    ours = _update_dtypes(optim, call, param_dtype, grad_dtype)
    assert ours == _update_dtypes(optax, call, param_dtype, grad_dtype)


def test_wide_accumulator_steps_round_once_as_optax():
    """bfloat16 params, float32 momentum: the float32 step is rounded once, by
    apply_updates, and the parameters follow optax's bit for bit."""
    runs = []
    for lib in (optim, optax):
        opt = lib.sgd(0.1, 0.9, accumulator_dtype=jnp.float32)
        p = {"w": jnp.linspace(-1, 1, 4).astype(jnp.bfloat16)}
        s = opt.init(p)
        with jax.numpy_dtype_promotion("standard"):
            for _ in range(5):
                u, s = opt.update(jax.tree_util.tree_map(lambda x: jnp.sin(x) + 0.3, p), s, p)
                p = lib.apply_updates(p, u)
        runs.append(np.asarray(p["w"], np.float32))
    np.testing.assert_array_equal(*runs)


def test_apply_if_finite_skips_with_the_updates_dtype():
    """The skip branch's zeros have the (promoted) dtype of the applied updates."""
    params = {"w": jnp.ones(2, jnp.float32)}
    opt = optim.apply_if_finite(optim.sgd(0.1, 0.9), 2)
    step = jax.jit(opt.update)
    state = opt.init(params)
    for g in (0.5, jnp.nan):
        u, state = step({"w": jnp.full(2, g, jnp.bfloat16)}, state, params)
        assert u["w"].dtype == jnp.float32
    np.testing.assert_array_equal(u["w"], [0.0, 0.0])
    assert int(state.total_notfinite) == 1


@pytest.mark.parametrize("new_dtype,old_dtype", [(jnp.bfloat16, jnp.float32),
                                                 (jnp.float32, jnp.bfloat16),
                                                 (jnp.float32, jnp.float64)])
def test_incremental_update_has_optax_dtype_and_values(new_dtype, old_dtype):
    """A float32 target (old) of bfloat16 online weights (new) stays float32."""
    new = {"w": jnp.array([1.0, -0.5], new_dtype)}
    old = {"w": jnp.array([0.25, 0.75], old_dtype)}
    ours = optim.incremental_update(new, old, 0.001)
    with jax.numpy_dtype_promotion("standard"):
        theirs = optax.incremental_update(new, old, 0.001)
    assert ours["w"].dtype == theirs["w"].dtype
    np.testing.assert_allclose(np.asarray(ours["w"], np.float64),
                               np.asarray(theirs["w"], np.float64), rtol=1e-7)


@pytest.mark.parametrize("b2", [0.999, 0.99999])
def test_float32_moments_equal_optax_bit_for_bit(b2):
    """A Python beta's ``1 - beta`` is formed as optax forms it (in float64, rounded once):
    ``1 - float32(0.99999)`` would weigh the second moment 1.4e-3 too much. float32 Adam
    and EMA trajectories then equal optax's exactly (x64 off: with it on, the float64
    scalars hide the difference)."""
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):   # optax's needs
        grads = jax.random.normal(jax.random.PRNGKey(0), (20, 4), jnp.float32)
        params = {"w": jnp.zeros(4, jnp.float32)}
        runs = []
        for lib in (optim, optax):
            for opt in (lib.adam(1e-3, b2=b2), lib.ema(b2, debias=True)):
                state, updates = opt.init(params), []
                for g in grads:
                    u, state = opt.update({"w": g}, state, params)
                    updates.append(np.asarray(u["w"]))
                runs.append(np.stack(updates))
        adam = optim.adam(0.1, b2=b2)
        nu = adam.update({"w": jnp.ones(4)}, adam.init(params), params)[1][0].nu["w"]
    np.testing.assert_array_equal(runs[0], runs[2])
    np.testing.assert_array_equal(runs[1], runs[3])
    assert runs[0].dtype == np.float32
    assert float(nu[0]) == float(np.float32(1 - b2))


@pytest.mark.parametrize("name", ["MultiSteps", "apply_if_finite", "conditionally_mask"])
def test_a_state_moves_into_optax_cond_wrappers_with_optax_classes(name):
    """optax's lax.cond wrappers compare state classes: a funcnet state, unflattened into
    optax's structure as the package docstring says, continues there as funcnet's own
    update does; funcnet's wrapper takes optax's state as it is."""
    make = {"MultiSteps": lambda lib: lib.MultiSteps(lib.adam(0.1), 2),
            "apply_if_finite": lambda lib: lib.apply_if_finite(lib.adam(0.1), 2),
            "conditionally_mask": lambda lib: lib.conditionally_mask(
                lib.adam(0.1), lambda step: step % 2 == 0)}[name]
    ours, theirs = make(optim), make(optax)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.3, 0.1])}
    with jax.numpy_dtype_promotion("standard"):                  # optax is not strict-clean
        state = ours.update(grads, ours.init(params), params)[1]
        want, _ = ours.update(grads, state, params)
        moved = jax.tree_util.tree_structure(theirs.init(params)).unflatten(
            jax.tree_util.tree_leaves(state))
        got, _ = theirs.update(grads, moved, params)
        back = ours.update(grads, theirs.update(grads, theirs.init(params), params)[1],
                           params)[0]
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-12)
    np.testing.assert_allclose(back["w"], want["w"], rtol=1e-12)
