"""optax 0.2.8's own tests of round 5's names, ported (inputs and expected values from
``contrib/_reduce_on_plateau_test.py``, ``_src/lookahead_test.py``,
``_src/transform_test.py``, ``transforms/_freezing_test.py``,
``transforms/_constraining_test.py``, ``_src/utils_test.py``, ``contrib/_sam_test.py``,
the docstring examples, and the optimization tests of ``_src/alias_test.py`` and
``contrib/_common_test.py``). No optax needed: the comparisons with optax are in
``test_optim_round5_optax.py``.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

from tests.optim._ported import INIT, PER_STEP


def _close(a, b, rtol=1e-6, atol=1e-6):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ----------------------------------------------------------------- reduce_on_plateau

PLATEAU = optim.reduce_on_plateau(factor=0.1, patience=5, rtol=1e-4, atol=0.0, cooldown=5,
                                  accumulation_size=1, min_scale=0.01)
DTYPES = [jnp.float32, jnp.float64]      # optax runs these tests with x64 off and on


def _plateau_state(scale, plateau_count, cooldown_count, dtype):
    return optim.ReduceLROnPlateauState(
        best_value=jnp.array(1.0, dtype), plateau_count=jnp.array(plateau_count, jnp.int32),
        scale=jnp.array(scale, dtype), cooldown_count=jnp.array(cooldown_count, jnp.int32),
        count=jnp.array(0, jnp.int32), avg_value=jnp.array(0.0, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_learning_rate_reduced_after_cooldown_period_is_over(dtype):
    params = {"params": jnp.array(1.0, dtype)}
    state = PLATEAU.init(params)
    assert (state.scale.dtype, state.best_value.dtype) == (dtype, dtype)
    for _ in range(6):                         # patience + 1
        updates, state = PLATEAU.update(params, state, value=jnp.asarray(1.0, dtype))
    _close((state.scale, state.best_value, state.plateau_count, state.cooldown_count),
           (0.1, 1.0, 0, 5))
    _close(updates, {"params": 0.1})
    _, state = PLATEAU.update(updates, state, value=jnp.asarray(1.0, dtype))
    _close((state.scale, state.best_value, state.plateau_count, state.cooldown_count),
           (0.1, 1.0, 0, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_learning_rate_is_not_reduced(dtype):
    """A better value resets the plateau count."""
    state = _plateau_state(0.1, 3, 0, dtype)
    _, state = PLATEAU.update({"params": jnp.array(1.0, dtype)}, state,
                              value=jnp.asarray(0.1, dtype))
    _close((state.plateau_count, state.scale, state.best_value), (0, 0.1, 0.1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_learning_rate_not_reduced_during_cooldown(dtype):
    state = _plateau_state(0.1, 0, 3, dtype)
    _, state = PLATEAU.update({"params": jnp.array(1.0, dtype)}, state,
                              value=jnp.asarray(2.0, dtype))
    _close((state.scale, state.best_value, state.plateau_count, state.cooldown_count),
           (0.1, 1.0, 0, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_learning_rate_not_reduced_after_end_scale_is_reached(dtype):
    state = _plateau_state(0.01, 0, 0, dtype)
    params = {"params": jnp.array(1.0, dtype)}
    update = jax.jit(PLATEAU.update)
    for _ in range(6):
        updates, state = update(params, state, value=0.1)
    _close((state.scale, state.best_value, state.plateau_count, state.cooldown_count),
           (0.01, 0.1, 0, 5))
    _close(updates, {"params": 0.01})


def test_plateau_averages_accumulation_size_values_and_reports_its_scale():
    """Only every 3rd update compares (the mean of the last 3 values); in a chain,
    current_learning_rate is the rate times the scale."""
    opt = optim.chain(optim.sgd(0.5), optim.reduce_on_plateau(
        factor=0.5, patience=1, accumulation_size=3))
    p = jnp.ones(2)
    state = opt.init(p)
    values = [3.0, 1.0, 2.0,    # mean 2: improved (best inf)
              9.0, 0.0, 0.0,    # mean 3: a plateau of 1 = patience: halve
              1.0, 1.0, 1.0]    # mean 1: improved
    scales, rates = [], []
    for v in values:
        _, state = opt.update(p, state, p, value=v)
        scales.append(float(state[1].scale))
        rates.append(float(optim.current_learning_rate(opt, state)))
    assert scales == [1.0] * 5 + [0.5] * 4
    assert rates == [0.5 * s for s in scales]
    np.testing.assert_allclose(state[1].best_value, 1.0)
    assert int(state[1].count) == 0 and float(state[1].avg_value) == 0.0
    with pytest.raises(TypeError, match=r"reduce_on_plateau: update needs value="):
        opt.update(p, state, p)
    with pytest.raises(ValueError, match=r"reduce_on_plateau: value must be a scalar, got "
                                         r"shape \(2,\)"):
        opt.update(p, state, p, value=jnp.ones(2))


# ---------------------------------------------------------------------- lookahead


class _TestState(NamedTuple):
    aggregate_grads: dict
    is_reset: bool = True   # a non-zero initial value, to see the reset


def _test_optimizer(step_size):
    """optax's fast optimizer of lookahead_test: SGD plus a state to reset."""
    def init(params):
        return _TestState(jax.tree_util.tree_map(jnp.zeros_like, params), is_reset=True)

    def update(updates, state, params):
        assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(params)
        grads = optim.apply_updates(state.aggregate_grads, updates)
        return jax.tree_util.tree_map(lambda u: step_size * u, updates), _TestState(grads, False)

    return optim.Optimizer(init, update)


GRADS = {"x": np.array(2.0), "y": np.array(-2.0)}
START = {"x": np.array(3.0), "y": np.array(-3.0)}


def _loop(opt, steps, params):
    step = jax.jit(opt.update)
    state = jax.jit(opt.init)(params)
    for _ in range(steps):
        updates, state = step(GRADS, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


def test_lookahead():
    """x: 3 -> 2 -> 1 -> 2 (sync) -> 1 -> 0 -> 1 (sync); y likewise, negated."""
    opt = optim.lookahead(_test_optimizer(-0.5), sync_period=3, slow_step_size=1 / 3)
    params, _ = _loop(opt, 6, optim.LookaheadParams.init_synced(START))
    _close(params.slow, {"x": 1.0, "y": -1.0})


@pytest.mark.parametrize("reset_state", [False, True])
def test_lookahead_state_reset(reset_state):
    fast = _test_optimizer(-0.5)
    opt = optim.lookahead(fast, sync_period=3, slow_step_size=0.5, reset_state=reset_state)
    _, state = _loop(opt, 3, optim.LookaheadParams.init_synced(START))
    expected = fast.init(START) if reset_state else _loop(fast, 3, START)[1]
    _close(state.fast_state, expected)
    assert bool(state.fast_state.is_reset) is reset_state


@pytest.mark.parametrize("sync_period, slow_step_size, expected", [
    (1, 0.5, {"x": 1.0, "y": -1.0}), (1, 0.0, {"x": 3.0, "y": -3.0}),
    (1, 1.0, {"x": -1.0, "y": 1.0}), (2, 1.0, {"x": -1.0, "y": 1.0})])
def test_lookahead_edge_cases(sync_period, slow_step_size, expected):
    opt = optim.lookahead(_test_optimizer(-1), sync_period, slow_step_size)
    params, _ = _loop(opt, 2, optim.LookaheadParams.init_synced(START))
    _close(params.slow, expected)


def test_lookahead_needs_a_pair_of_params():
    opt = optim.lookahead(optim.sgd(0.1), 2, 0.5)
    with pytest.warns(UserWarning, match="lookahead: params has no attribute fast"):
        state = opt.init(START)
    with pytest.raises(ValueError, match=r"lookahead: update needs "
                                         r"params=LookaheadParams\(fast, slow\).*hand-written"):
        opt.update(GRADS, state, START)


# -------------------------------------------------------- apply_every, constraints


def test_apply_every():
    """optax's test: apply_every(4) then SGD equals SGD every 4th step, zeros between."""
    k, lr = 4, 1e-2
    sgd = optim.sgd(lr, 0.0)
    every = optim.chain(optim.apply_every(k=k), optim.trace(decay=0, nesterov=False),
                        optim.scale(-lr))
    p_sgd, s_sgd = INIT, sgd.init(INIT)
    p_every, s_every = INIT, every.init(INIT)
    step = jax.jit(every.update)
    for i in range(50):
        u, s_sgd = sgd.update(PER_STEP, s_sgd)
        p_sgd = optim.apply_updates(p_sgd, u)
        u, s_every = step(PER_STEP, s_every)
        p_every = optim.apply_updates(p_every, u)
        if i % k == k - 1:
            _close(p_every, p_sgd, rtol=1e-5)
        else:
            _close(u, jax.tree_util.tree_map(jnp.zeros_like, u), rtol=0, atol=0)


def test_keep_params_nonnegative():
    grads = (jnp.array([500.0, -500.0, 0.0]),) * 3
    params = (jnp.array([-1.0, -1.0, -1.0]), jnp.array([1.0, 1.0, 1.0]), jnp.zeros(3))
    sgd = [optim.trace(decay=0, nesterov=False), optim.scale(-1e-2)]
    for blocks, expected in (
            (sgd, ([-6.0, 4.0, -1.0], [-4.0, 6.0, 1.0], [-5.0, 5.0, 0.0])),
            (sgd + [optim.keep_params_nonnegative()],
             ([0.0, 4.0, 0.0], [0.0, 6.0, 1.0], [0.0, 5.0, 0.0]))):
        opt = optim.chain(*blocks)
        updates, _ = opt.update(grads, opt.init(params), params)
        _close(optim.apply_updates(params, updates), tuple(map(np.array, expected)))
    with pytest.raises(ValueError, match="keep_params_nonnegative: update needs params"):
        optim.keep_params_nonnegative().update(params, optim.EmptyState(), None)


# ------------------------------------------------------------------------ freezing

PARAMS_FLAT = {"a": np.zeros(1), "b": np.ones(2)}
GRAD_FLAT = {"a": np.array([1.0]), "b": np.array([2.0, 3.0])}
PARAMS_NESTED = {"layer1": [np.zeros((2, 3)), {"bias": np.ones(3)}],
                 "layer2": {"w": np.full((4, 2), 2.0), "b": np.full(4, -1.0)},
                 "misc": (np.array(5.0),)}
GRAD_NESTED = {"layer1": [np.full((2, 3), 1.0), {"bias": np.full(3, 2.0)}],
               "layer2": {"w": np.full((4, 2), 3.0), "b": np.full(4, 4.0)},
               "misc": (np.array(1.0),)}
NESTED_MASK = {"layer1": [True, {"bias": False}], "layer2": {"w": False, "b": True},
               "misc": (False,)}
MASKS = [("flat_a", PARAMS_FLAT, GRAD_FLAT, {"a": True, "b": False}),
         ("flat_b", PARAMS_FLAT, GRAD_FLAT, {"a": False, "b": True}),
         ("flat_all", PARAMS_FLAT, GRAD_FLAT, True),
         ("flat_none", PARAMS_FLAT, GRAD_FLAT, False),
         ("flat_jax_bool", PARAMS_FLAT, GRAD_FLAT, np.array(True)),
         ("nested", PARAMS_NESTED, GRAD_NESTED, NESTED_MASK),
         ("prefix", {"a": 1.0, "b": {"c": 2.0, "d": 3.0}},
          {"a": jnp.asarray(10.0), "b": {"c": jnp.asarray(20.0), "d": jnp.asarray(30.0)}},
          {"a": False, "b": True})]


def _frozen(mask, tree):
    """The leaves of ``tree`` under a True of the (prefix) ``mask``."""
    full = jax.tree_util.tree_map(lambda m, t: jax.tree_util.tree_map(lambda _: bool(m), t),
                                  mask, tree)
    return jax.tree_util.tree_leaves(full)


@pytest.mark.parametrize("name, params, grads, mask", MASKS, ids=[m[0] for m in MASKS])
def test_freeze_and_selective_transform(name, params, grads, mask):
    """freeze zeros the frozen gradients (its state stays empty); selective_transform
    steps SGD(1) on the others only."""
    frozen = _frozen(mask, grads)
    opt = optim.freeze(mask)
    state = opt.init(params)
    updates, new_state = opt.update(grads, state, params)
    for u, g, f in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(grads),
                       frozen):
        np.testing.assert_array_equal(u, np.zeros_like(g) if f else g)
    assert new_state == state and state.inner_state == optim.EmptyState()
    opt = optim.selective_transform(optim.sgd(1.0), freeze_mask=mask)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optim.apply_updates(jax.tree_util.tree_map(jnp.asarray, params), updates)
    for n, p, g, f in zip(*map(jax.tree_util.tree_leaves, (new, params, grads)), frozen):
        np.testing.assert_allclose(n, p if f else np.asarray(p) - np.asarray(g), atol=1e-6)


def test_freeze_bad_structure_raises():
    for opt in (optim.freeze({"layer1": [True]}),
                optim.selective_transform(optim.sgd(1.0), freeze_mask={"layer1": [True]})):
        with pytest.raises(ValueError, match="mask tree structure is not a prefix"):
            opt.update(GRAD_NESTED, opt.init(PARAMS_NESTED), PARAMS_NESTED)


# ------------------------------------------------------------------ small scalers


@pytest.mark.parametrize("scale", [-0.5, 0.0, 0.5, 1.0, 2.0])
def test_scale_gradient_pytree(scale):
    def fn(inputs):
        outputs = optim.scale_gradient(inputs, scale)
        return sum(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: x ** 2, outputs)))

    inputs = {"a": -1.0, "b": {"c": (2.0,), "d": 0.0}}
    grads = jax.grad(fn)(inputs)
    for i, g in zip(jax.tree_util.tree_leaves(inputs), jax.tree_util.tree_leaves(grads)):
        assert float(g) == 2 * i * scale
    assert fn(inputs) == 5.0
    jitted = jax.jit(jax.grad(lambda x, s: jnp.sum(optim.scale_gradient(x, s) ** 2)))
    np.testing.assert_allclose(jitted(jnp.array([1.0, -3.0]), scale), [2 * scale, -6 * scale])


def test_scale_by_optimistic_gradient():
    opt = optim.scale_by_optimistic_gradient()
    state = opt.init(jnp.asarray(10.0))
    out = []
    for g in (2.0, 3.0, 4.0):
        u, state = opt.update(jnp.asarray(g), state)
        out.append(float(u))
    assert out == [2.0, 2 * 3.0 - 2.0, 2 * 4.0 - 3.0]   # the first step: g_0 itself


def test_scale_by_polyak_l1_norm():
    """On |x|_1 Polyak's step reaches the minimum in one step."""
    objective = lambda x: jnp.abs(x).sum()  # noqa: E731
    params = jnp.array([1.0, -1.0])
    polyak = optim.scale_by_polyak()
    state = polyak.init(params)
    with pytest.raises(TypeError, match="scale_by_polyak: update needs value="):
        polyak.update(PER_STEP, state, params)
    value, grad = jax.value_and_grad(objective)(params)
    updates, _ = polyak.update(grad, state, params, value=value)
    assert objective(params - updates) < 1e-10


@pytest.mark.parametrize("name", ["polyak", "sm3", "rprop", "optimistic", "adopt",
                                  "ademamix", "simplified_ademamix"])
def test_scalers(name):
    """optax's test_scalers: init and one update under jit, finite, the params' shapes."""
    scaler = {"polyak": optim.scale_by_polyak, "sm3": optim.scale_by_sm3,
              "rprop": lambda: optim.scale_by_rprop(0.1),
              "optimistic": optim.scale_by_optimistic_gradient,
              "adopt": optim.scale_by_adopt, "ademamix": optim.scale_by_ademamix,
              "simplified_ademamix": optim.scale_by_simplified_ademamix}[name]()
    state = jax.jit(scaler.init)(INIT)
    extra = {"value": jnp.array(0.0)} if name == "polyak" else {}
    updates, state = jax.jit(scaler.update)(PER_STEP, state, INIT, **extra)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves((updates, state)))
    assert [u.shape for u in updates] == [p.shape for p in INIT]


# ------------------------------------------------------------- docstring examples

# (the five-step examples of the new aliases: test_optim_ported_more.py's table)


def test_polyak_sgd_docstring_example():
    f = lambda x: jnp.sum(x ** 2)  # noqa: E731
    solver = optim.polyak_sgd()
    params = jnp.array([1.0, 2.0, 3.0], jnp.float32)
    state = solver.init(params)
    seen = []
    for _ in range(5):
        value, grad = jax.value_and_grad(f)(params)
        updates, state = solver.update(grad, state, params, value=value)
        params = optim.apply_updates(params, updates)
        seen.append(float(f(params)))
    assert seen == [3.5, 0.875, 0.21875, 0.0546875, 0.013671875]


@pytest.mark.parametrize("name", ["optimistic_adam", "optimistic_adam_v2"])
def test_optimistic_adam_docstring_example(name):
    """The bilinear game min_x max_y x y: the distance to (0, 0) printed at 4^i."""
    opt = (optim.optimistic_adam(1e-2, 1.0) if name == "optimistic_adam"
           else optim.optimistic_adam_v2(1.0, alpha=1e-2, beta=1.0))

    def step(carry, _):
        params, state = carry
        x, y = params
        updates, state = opt.update((y, -x), state, params)   # (df/dx, -df/dy)
        return (optim.apply_updates(params, updates), state), jnp.hypot(x, y)

    params = (jnp.float32(1.0), jnp.float32(2.0))
    _, distances = jax.lax.scan(step, (params, opt.init(params)), length=1025)
    # printed to 3 decimals by optax with x64 off; 0.79550 here (optax too, with x64
    # on) prints as 0.795, hence a half-unit tolerance
    np.testing.assert_allclose([float(distances[4 ** i]) for i in range(6)],
                               [2.243, 2.195, 2.161, 2.055, 0.796, 0.001], rtol=0, atol=6e-4)


# --------------------------------------------------------------- optimization tests

def _abs_sq(x):
    return jnp.real(jnp.conj(x) * x)


def _parabola(dtype):
    final = jnp.array([1.0, -1.0, 1.0], dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        final = final * (1 + 1j)
    return jnp.array([-1.0, 10.0, 1.0], dtype), final, lambda p: jnp.sum(_abs_sq(p - final))


def _rosenbrock(dtype):
    a = (1 + 1j) if jnp.issubdtype(dtype, jnp.complexfloating) else 1.0
    return (jnp.zeros(2, dtype), jnp.array([a, a ** 2], dtype),
            lambda p: _abs_sq(a - p[0]) + 100.0 * _abs_sq(p[1] - p[0] ** 2))


def _matrix_parabola(dtype):
    final = jnp.array([[3.0, -2.0], [1.0, 4.0]], dtype)
    return jnp.zeros((2, 2), dtype), final, lambda p: jnp.sum(_abs_sq(p - final))


def _mixed(dtype):
    final = (jnp.array([1.0, -1.0, 2.0], dtype), jnp.array([[1.0, 0.0], [-1.0, 1.0]], dtype))
    return ((jnp.zeros(3, dtype), jnp.zeros((2, 2), dtype)), final,
            lambda p: jnp.sum(_abs_sq(p[0] - final[0])) + jnp.sum(_abs_sq(p[1] - final[1])))


# alias_test.py's rows (10000 steps on two targets; complex64 where optax runs it) and
# contrib/_common_test.py's (30000 steps on four targets, float32)
ALIAS = [("fromage", {"learning_rate": 5e-3}), ("optimistic_adam", {"learning_rate": 2e-3}),
         ("optimistic_adam_v2", {"learning_rate": 2e-3}),
         ("optimistic_gradient_descent", {"learning_rate": 2e-3, "alpha": 0.7, "beta": 0.1}),
         ("polyak_sgd", {"max_learning_rate": 1.0}), ("rprop", {"learning_rate": 1e-1}),
         ("sm3", {"learning_rate": 1.0})]
CONTRIB = [("ademamix", {"learning_rate": 1e-3}), ("simplified_ademamix",
                                                   {"learning_rate": 1e-3}),
           ("adopt", {"learning_rate": 1e-2}), ("prodigy", {"learning_rate": 1e-1}),
           ("reduce_on_plateau", {})]
RUNS = ([(n, kw, t, d, 10000) for n, kw in ALIAS for t in (_parabola, _rosenbrock)
         for d in ((jnp.float32, jnp.complex64) if n == "optimistic_adam_v2"
                   else (jnp.float32,))]
        + [(n, kw, t, jnp.float32, 30000) for n, kw in CONTRIB
           for t in (_parabola, _rosenbrock, _matrix_parabola, _mixed)])
IDS = [f"{n}-{t.__name__[1:]}-{jnp.dtype(d).name}" for n, _, t, d, _ in RUNS]


def _make(name, kwargs):
    if name == "reduce_on_plateau":          # optax's wrapper case: sgd(1e-3) + plateau
        return optim.chain(optim.sgd(1e-3), optim.reduce_on_plateau())
    return getattr(optim, name)(**kwargs)


@functools.lru_cache(maxsize=None)
def _optimized():
    """Every run as one program (a fori_loop each); value= for those that read it."""
    def all_runs():
        out = []
        for name, kwargs, target, dtype, steps in RUNS:
            opt = _make(name, kwargs)
            init, _, objective = target(dtype)

            def step(_, carry, opt=opt, objective=objective):
                params, state = carry
                value, grads = jax.value_and_grad(objective)(params)
                grads = jax.tree_util.tree_map(jnp.conj, grads)
                updates, state = opt.update(grads, state, params, value=value)
                return optim.apply_updates(params, updates), state

            out.append(jax.lax.fori_loop(0, steps, step, (init, opt.init(init)))[0])
        return out
    return jax.jit(all_runs)()


@pytest.mark.parametrize("i", range(len(RUNS)), ids=IDS)
def test_optimization(i):
    name, kwargs, target, dtype, _ = RUNS[i]
    params = _optimized()[i]
    _close(params, target(dtype)[1], rtol=3e-2, atol=3e-2)
    assert all(p.dtype == dtype for p in jax.tree_util.tree_leaves(params))


SAM_RUNS = [(adv, opaque) for adv in ("sgd", "adam") for opaque in (False, True)]


@functools.lru_cache(maxsize=None)
def _sam_runs():
    """contrib/_sam_test.py: SGD(1e-3) outer, normalized SGD(1e-5) / Adam(1e-4) ascent,
    sync_period 2, 50000 steps on the float32 parabola."""
    init, _, objective = _parabola(jnp.float32)
    grad = jax.grad(objective)

    def all_runs():
        out = []
        for adv, opaque in SAM_RUNS:
            adv_opt = optim.chain(optim.normalize(), optim.sgd(1e-5) if adv == "sgd"
                                  else optim.adam(1e-4))
            opt = optim.sam(optim.sgd(1e-3), adv_opt, sync_period=2, opaque_mode=opaque)
            extra = {"grad_fn": lambda p, _: grad(p)} if opaque else {}

            def step(_, carry, opt=opt, extra=extra):
                params, state = carry
                updates, state = opt.update(grad(params), state, params, **extra)
                return optim.apply_updates(params, updates), state

            out.append(jax.lax.fori_loop(0, 50000, step, (init, opt.init(init)))[0])
        return out
    return jax.jit(all_runs)()


@pytest.mark.parametrize("i", range(len(SAM_RUNS)),
                         ids=[f"{a}-{'opaque' if o else 'transparent'}" for a, o in SAM_RUNS])
def test_sam_optimization(i):
    _close(_sam_runs()[i], _parabola(jnp.float32)[1], rtol=3e-2, atol=3e-2)
