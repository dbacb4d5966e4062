"""optax's ``alias_test.py``, ported to funcnet for every shared optimizer name.

Same optimizers and hyperparameters (optax's ``_OPTIMIZERS_UNDER_TEST`` restricted to
the names funcnet shares), same targets, dtypes, iteration counts and tolerances; the
cases of one test compile as one program. The schedule-as-learning-rate test of optax's
``schedule_test.py`` is here too (it sweeps the same table).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

UNDER_TEST = [
    ("adagrad", {"learning_rate": 1.0}),
    ("adam", {"learning_rate": 1e-1}),
    ("adamw", {"learning_rate": 1e-1}),
    ("nadam", {"learning_rate": 1e-2}),
    ("nadamw", {"learning_rate": 1e-2}),
    ("rmsprop", {"learning_rate": 5e-3}),
    ("rmsprop", {"learning_rate": 5e-3, "momentum": 0.9}),
    ("sgd", {"learning_rate": 1e-3, "momentum": 0.9}),
    ("adabelief", {"learning_rate": 1e-2}),
    ("adamax", {"learning_rate": 1e-1}),
    ("adamaxw", {"learning_rate": 1e-1}),
    ("amsgrad", {"learning_rate": 1e-1}),
    ("lamb", {"learning_rate": 1e-3}),
    ("lars", {"learning_rate": 1.0}),
    ("lion", {"learning_rate": 1e-2, "weight_decay": 1e-4}),
    ("radam", {"learning_rate": 5e-3}),
    ("adafactor", {"learning_rate": 5e-3}),
    ("adadelta", {"learning_rate": 0.1}),
    ("adan", {"learning_rate": 1e-1}),
    ("novograd", {"learning_rate": 1e-3}),
    ("yogi", {"learning_rate": 1e-1}),
]
# optax skips these for complex parameters (lion: the sign of a complex number)
REAL_ONLY = {"lion", "adadelta", "adan"}
IDS = [f"{n}{'_' + str(k['momentum']) if 'momentum' in k else ''}" for n, k in UNDER_TEST]


def _real_only(i, dtype):
    return UNDER_TEST[i][0] in REAL_ONLY and jnp.issubdtype(dtype, jnp.complexfloating)


def _make(i, **override):
    name, kwargs = UNDER_TEST[i]
    return getattr(optim, name)(**{**kwargs, **override})


def _abs_sq(x):
    return jnp.real(jnp.conj(x) * x)


def _parabola(dtype):
    init = jnp.array([-1.0, 10.0, 1.0], dtype)
    final = jnp.array([1.0, -1.0, 1.0], dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        final = final * (1 + 1j)
    return init, final, lambda p: jnp.sum(_abs_sq(p - final))


def _rosenbrock(dtype):
    a, b = 1.0, 100.0
    if jnp.issubdtype(dtype, jnp.complexfloating):
        a = a * (1 + 1j)
    init = jnp.array([0.0, 0.0], dtype)
    final = jnp.array([a, a ** 2], dtype)
    return init, final, lambda p: _abs_sq(a - p[0]) + b * _abs_sq(p[1] - p[0] ** 2)


TARGETS = {"parabola": _parabola, "rosenbrock": _rosenbrock}
DTYPES = {"float32": jnp.float32, "complex64": jnp.complex64}


def _step(opt, objective, params, state, **extra):
    updates = jnp.conj(jax.grad(objective)(params))  # complex gradients are conjugated
    updates, state = opt.update(updates, state, params, **extra)
    return optim.apply_updates(params, updates), state


@functools.lru_cache(maxsize=None)
def _optimized():
    """Every (optimizer, target, dtype) run for 10000 steps, as optax's test does."""
    def all_runs():
        out = {}
        for i in range(len(UNDER_TEST)):
            for tname, target in TARGETS.items():
                for dname, dtype in DTYPES.items():
                    if _real_only(i, dtype):
                        continue
                    opt = _make(i)
                    init, _, objective = target(dtype)
                    out[i, tname, dname] = jax.lax.fori_loop(
                        0, 10000, lambda _, c, opt=opt, f=objective: _step(opt, f, *c),
                        (init, opt.init(init)))[0]
        return out
    return jax.jit(all_runs)()


@pytest.mark.parametrize("dname", list(DTYPES))
@pytest.mark.parametrize("tname", list(TARGETS))
@pytest.mark.parametrize("i", range(len(UNDER_TEST)), ids=IDS)
def test_optimization(i, tname, dname):
    if _real_only(i, DTYPES[dname]):
        pytest.skip(f"{UNDER_TEST[i][0]} does not support complex parameters (as in optax)")
    params = _optimized()[i, tname, dname]
    final = TARGETS[tname](DTYPES[dname])[1]
    assert params.dtype == DTYPES[dname]
    np.testing.assert_allclose(params, final, rtol=3e-2, atol=3e-2)


def test_optimization_does_not_recompile_on_second_call():
    init, _, objective = _parabola(jnp.float32)
    opts = [_make(i) for i in range(len(UNDER_TEST))]
    traces = []

    def run(ps, ss):
        traces.append(1)        # once per compilation (a Python trace)
        return tuple(zip(*[_step(o, objective, p, s) for o, p, s in zip(opts, ps, ss)]))

    step = jax.jit(run)
    ps, ss = step((init,) * len(opts), tuple(o.init(init) for o in opts))
    step(ps, ss)
    assert len(traces) == 1


def test_optimizers_accept_extra_args():
    init, _, objective = _rosenbrock(jnp.float32)

    @jax.jit
    def two_steps():
        out = []
        for i in range(len(UNDER_TEST)):
            opt, p = _make(i), init
            s = opt.init(p)
            for _ in range(2):
                p, s = _step(opt, objective, p, s,
                             unexpected_extra_args_your_optimizer_doesnt_expect=1)
            out.append(p)
        return out

    assert all(np.all(np.isfinite(p)) for p in two_steps())


@functools.lru_cache(maxsize=None)
def _injected():
    params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
    grads = [jnp.ones((2, 3)), -jnp.ones((2, 5, 2))]

    @jax.jit
    def both():
        out = []
        for name, kwargs in UNDER_TEST:
            opt = getattr(optim, name)(**kwargs)
            # as optax's test: adafactor's min_dim_size_to_factor fixes the state's shapes
            static = ("min_dim_size_to_factor",) if name == "adafactor" else ()
            injected = optim.inject_hyperparams(getattr(optim, name), static)(**kwargs)
            out.append((opt.update(grads, opt.init(params), params),
                        injected.update(grads, injected.init(params), params)))
        return out
    return both()


@pytest.mark.parametrize("i", range(len(UNDER_TEST)), ids=IDS)
def test_optimizers_can_be_wrapped_in_inject_hyperparams(i):
    (u, s), (ui, si) = _injected()[i]
    for a, b in zip(jax.tree_util.tree_leaves(ui), jax.tree_util.tree_leaves(u)):
        np.testing.assert_allclose(a, b, rtol=1e-3)
    for a, b in zip(jax.tree_util.tree_leaves(si.inner_state), jax.tree_util.tree_leaves(s)):
        np.testing.assert_allclose(a, b, rtol=1e-4)


def _find(tree, name):
    """The first field ``name`` anywhere in a state (optax.tree.get)."""
    if hasattr(tree, "_fields") and name in tree._fields:
        return getattr(tree, name)
    for child in (tree if isinstance(tree, tuple) else ()):
        found = _find(child, name)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("opt_name", ["sgd_mom", "adam", "adamw", "lion", "amsgrad"])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "float32", "complex64", None])
@pytest.mark.parametrize("params_dtype", ["bfloat16", "float32", "complex64", None])
def test_explicit_dtype(params_dtype, state_dtype, opt_name):
    if opt_name == "sgd_mom":
        opt, attribute = optim.sgd(0.1, momentum=0.9, accumulator_dtype=state_dtype), "trace"
    else:
        opt, attribute = getattr(optim, opt_name)(0.1, mu_dtype=state_dtype), "mu"
    params_dtype = jnp.dtype(params_dtype or jnp.result_type(float))
    state = opt.init(jnp.array([0.0, 0.0], dtype=params_dtype))
    expected = params_dtype if state_dtype is None else jnp.dtype(state_dtype)
    assert _find(state, attribute).dtype == expected


@functools.lru_cache(maxsize=None)
def _dtype_runs():
    fun = lambda x: jnp.sum(x ** 2)  # noqa: E731

    @jax.jit
    def all_runs():
        out = {}
        for dtype in ("bfloat16", "float32"):
            params = jnp.array([1.0, 2.0], dtype=dtype)
            grads = jax.grad(fun)(params)
            for i in range(len(UNDER_TEST)):
                opt = _make(i)
                multi = optim.MultiSteps(opt, every_k_schedule=4)
                out[i, dtype] = (grads, opt.update(grads, opt.init(params), params)[0],
                                 multi.update(grads, multi.init(params), params)[0])
        return out
    return all_runs()


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("i", range(len(UNDER_TEST)), ids=IDS)
def test_preserve_dtype(i, dtype):
    grads, updates, _ = _dtype_runs()[i, dtype]
    assert updates.dtype == grads.dtype


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("i", range(len(UNDER_TEST)), ids=IDS)
def test_gradient_accumulation(i, dtype):
    grads, _, multi_updates = _dtype_runs()[i, dtype]
    np.testing.assert_array_equal(multi_updates, jnp.zeros_like(grads))


STABILITY_DTYPES = ["float16", "bfloat16", "float32", "float64", "complex64", "complex128"]


@functools.lru_cache(maxsize=None)
def _stability():
    """Two steps under a lax.cond that must see identical state types in both branches.
    Lowered, not compiled: the cond's type check and every dtype's lowering happen while
    tracing/lowering, and the result types are all the test reads (compiling the one
    program of all dtypes took ~9 CPU-s)."""
    def all_runs():
        out = {}
        cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
        for dname in STABILITY_DTYPES:
            init, _, objective = _parabola(jnp.dtype(dname))
            for i in range(len(UNDER_TEST)):
                if _real_only(i, jnp.dtype(dname)):
                    continue
                opt, params = _make(i), init
                state = opt.init(params)
                for _ in range(2):
                    updates = jnp.conj(jax.grad(objective)(params))
                    updates, new_state = jax.lax.cond(
                        cond, lambda u=updates, s=state, p=params, o=opt: o.update(u, s, p),
                        lambda p=params, s=state: (p, s))
                    params = optim.apply_updates(params, updates)
                    state = jax.lax.cond(cond, lambda s=state: s, lambda n=new_state: n)
                out[dname, i] = params
        return out
    return jax.jit(all_runs).lower().out_info


@pytest.mark.parametrize("dname", STABILITY_DTYPES)
@pytest.mark.parametrize("i", range(len(UNDER_TEST)), ids=IDS)
def test_state_shape_dtype_shard_stability(i, dname):
    if _real_only(i, jnp.dtype(dname)):
        pytest.skip(f"{UNDER_TEST[i][0]} does not support complex parameters (as in optax)")
    assert _stability()[dname, i].dtype == jnp.dtype(dname)


@functools.lru_cache(maxsize=None)
def _schedule_vs_constant():
    init, _, objective = _parabola(jnp.float32)

    @jax.jit
    def all_runs():
        out = []
        for i in range(len(UNDER_TEST)):
            runs = []
            for lr in (optim.constant_schedule(1e-3), 1e-3):
                opt, p = _make(i, learning_rate=lr), init
                s = opt.init(p)
                for _ in range(10):
                    p, s = _step(opt, objective, p, s)
                runs.append(p)
            out.append(runs)
        return out
    return all_runs()


@pytest.mark.parametrize("i", range(len(UNDER_TEST)), ids=IDS)
def test_schedule_as_learning_rate(i):
    with_schedule, with_lr = _schedule_vs_constant()[i]
    np.testing.assert_allclose(with_schedule, with_lr, rtol=1e-6)
