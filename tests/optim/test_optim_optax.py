"""funcnet.optim as a drop-in for optax: the same call strings give the same trajectories,
states move between the two libraries in both directions, complex parameters follow optax.

The call strings (``_optax_calls.CALLS``) are evaluated verbatim in both namespaces, so a
test fails if funcnet lacks a name, an argument, a keyword, a default, or computes
something else. All runs of one dtype compile as ONE program (cheap on a busy CPU).
"""
import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import funcnet.optim as optim
from tests.optim._optax_calls import CALLS, PARAMS, loss, run

optax = pytest.importorskip("optax")

# float64 runs with an optax schedule at 1e-6 only: optax's schedules return float32 for
# an int32 step even under x64 (exponential_decay(0.05, 10, 0.5)(3) is 1e-8 off); funcnet's
# match the closed forms to 1e-12 (test_optim_schedules.py). The other runs: 1e-12.
DTYPES = {"float64": (jnp.float64, 1e-6), "float32": (jnp.float32, 1e-6)}


def _build(lib, call):
    return eval(call, {"jnp": jnp, **{k: getattr(lib, k) for k in dir(lib)
                                      if not k.startswith("_")}})


# funcnet's own spellings (the notes' names, accumulate) against their optax equivalents
PAIRS = [
    ("sgd", lambda: optim.sgd(0.3), lambda: optax.sgd(0.3)),
    ("momentum", lambda: optim.momentum(0.05), lambda: optax.sgd(0.05, momentum=0.9)),
    ("nesterov", lambda: optim.nesterov(0.05),
     lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
    ("adagrad", lambda: optim.adagrad(0.3), lambda: optax.adagrad(0.3)),
    ("rmsprop", lambda: optim.rmsprop(0.003), lambda: optax.rmsprop(0.003)),
    ("adam", lambda: optim.adam(0.01), lambda: optax.adam(0.01)),
    ("adamw", lambda: optim.adamw(0.01), lambda: optax.adamw(0.01)),
    ("adamw_wd", lambda: optim.adamw(0.01, weight_decay=0.1),
     lambda: optax.adamw(0.01, weight_decay=0.1)),
    ("clip_adam_schedule",
     lambda: optim.chain(optim.clip_by_global_norm(0.5),
                         optim.adam(optim.warmup_cosine_decay(0.0, 0.02, 10, 100))),
     lambda: optax.chain(optax.clip_by_global_norm(0.5),
                         optax.adam(optax.warmup_cosine_decay_schedule(0.0, 0.02, 10, 100)))),
    ("accumulate", lambda: optim.accumulate(optim.adam(0.01), 3),
     lambda: optax.MultiSteps(optax.adam(0.01), 3, accumulator_dtype=jnp.float64)),
]


@functools.lru_cache(maxsize=None)
def _trajectories(dtype_name):
    dtype = DTYPES[dtype_name][0]
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), PARAMS)
    pairs = [(n, a, b) for n, a, b in PAIRS] if dtype_name == "float64" else []

    def both():
        out = {}
        for call, ours, theirs in [(c, _build(optim, c), lambda c=c: _build(optax, c))
                                   for c in CALLS] + [(n, a(), b) for n, a, b in pairs]:
            mine = run(ours, params)  # under the suite's strict promotion
            with jax.numpy_dtype_promotion("standard"):  # optax is not strict-clean
                out[call] = (mine, run(theirs(), params))
        return out

    out = jax.jit(both)()
    return {k: (np.asarray(ravel_pytree(a)[0]), np.asarray(ravel_pytree(b)[0]), a)
            for k, (a, b) in out.items()}


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("call", CALLS)
def test_drop_in_call_gives_optax_trajectory(call, dtype_name):
    ours, theirs, tree = _trajectories(dtype_name)[call]
    assert not np.allclose(theirs, np.asarray(ravel_pytree(PARAMS)[0]))  # it moved
    assert all(x.dtype == DTYPES[dtype_name][0] for x in jax.tree_util.tree_leaves(tree))
    rtol = DTYPES[dtype_name][1]
    if dtype_name == "float64" and not any(k in call for k in ("schedule(", "decay(")):
        rtol = 1e-12  # no optax schedule in the run: agreement to rounding
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-9 * rtol / 1e-6)


@pytest.mark.parametrize("name", [p[0] for p in PAIRS])
def test_same_trajectory_as_optax(name):
    ours, theirs, _ = _trajectories("float64")[name]
    assert not np.allclose(ours, np.asarray(ravel_pytree(PARAMS)[0]))  # it moved
    # 1e-8: optax evaluates its schedules' int32 step arithmetic in float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-12)


# --------------------------------------------------------------- state interchange

SWAPS = [
    ("sgd_momentum", lambda lib: lib.sgd(0.05, momentum=0.9, nesterov=True)),
    ("adam", lambda lib: lib.adam(1e-2)),
    ("adamw_schedule", lambda lib: lib.adamw(lib.cosine_decay_schedule(1e-2, 20),
                                             weight_decay=0.1)),
    ("rmsprop_centered", lambda lib: lib.rmsprop(1e-2, centered=True, momentum=0.5)),
    ("adagrad", lambda lib: lib.adagrad(0.3)),
    ("ema_chain", lambda lib: lib.chain(lib.clip_by_global_norm(1.0), lib.ema(0.9),
                                        lib.scale(-0.1))),
    # one schedule for both: optax's own evaluates an int32 count in float32
    ("inject_adam", lambda lib: lib.inject_hyperparams(lib.adam)(
        learning_rate=optim.linear_schedule(1e-2, 1e-3, 10), b1=0.8)),
    ("multisteps", lambda lib: lib.MultiSteps(lib.adam(1e-2), 3)),
    ("apply_if_finite", lambda lib: lib.apply_if_finite(lib.sgd(0.1, 0.9), 2)),
    # masked states hold MaskedNode-s: each library's class under the other's update
    ("masked_sgd", lambda lib: lib.masked(lib.sgd(0.1, 0.9), {"a": True, "b": False})),
    ("masked_adam", lambda lib: lib.masked(lib.adam(1e-2), lambda p: {"a": False, "b": True})),
    ("adamw_mask", lambda lib: lib.adamw(1e-2, weight_decay=0.1, mask={"a": True, "b": False})),
    ("multi_transform", lambda lib: lib.multi_transform(
        {"x": lib.adam(1e-2), "y": lib.sgd(0.1, 0.9)}, {"a": "x", "b": "y"})),
    ("lion_mask", lambda lib: lib.lion(1e-2, weight_decay=0.1, mask={"a": True, "b": False})),
    ("adamaxw", lambda lib: lib.adamaxw(1e-2, weight_decay=0.1)),
    ("amsgrad", lambda lib: lib.amsgrad(1e-2, b1=0.8)),
    ("adabelief_nesterov", lambda lib: lib.adabelief(1e-2, nesterov=True)),
    ("radam", lambda lib: lib.radam(1e-2, threshold=4.0)),  # rectified from step 5
    ("lamb_mask", lambda lib: lib.lamb(1e-2, weight_decay=0.1, mask=lambda p: {"a": True,
                                                                            "b": False})),
    ("lars_masks", lambda lib: lib.lars(0.5, 0.1, trust_ratio_mask={"a": True, "b": False})),
    ("adafactor_momentum", lambda lib: lib.adafactor(0.05, momentum=0.9,
                                                     weight_decay_rate=1e-3)),
    ("partition", lambda lib: lib.partition(
        {"x": lib.rmsprop(1e-2, centered=True),
         "y": lib.masked(lib.sgd(0.1, 0.9), {"a": False, "b": True})},
        lambda p: {"a": "x", "b": "y"})),
]
K = 4  # not a multiple of MultiSteps' k: the swap happens mid-accumulation


def _continue(first, second, params, relabel=False):
    """K steps of ``first``, then K steps of ``second`` from ``first``'s state.

    ``relabel``: give the state ``second``'s classes first (same leaves). optax's
    ``MultiSteps`` and ``apply_if_finite`` select between the inner state given and the
    one their inner optimizer returns (``tree_map`` / ``lax.cond``), so they need the inner
    state in optax's own classes; funcnet's wrappers keep the classes they are given.
    """
    p = params
    s = first.init(p)
    for _ in range(K):
        u, s = first.update(jax.grad(loss)(p), s, p)
        p = jax.tree_util.tree_map(lambda a, b: a + b, p, u)
    if relabel:
        s = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(second.init(p)),
                                         jax.tree_util.tree_leaves(s))
    for _ in range(K):
        u, s = second.update(jax.grad(loss)(p), s, p)
        p = jax.tree_util.tree_map(lambda a, b: a + b, p, u)
    return p


@functools.lru_cache(maxsize=None)
def _swapped():
    errors = {}

    def all_runs():
        out = {}
        with jax.numpy_dtype_promotion("standard"):
            for name, make in SWAPS:
                f, o = make(optim), make(optax)
                relabel = name in ("multisteps", "apply_if_finite")
                for direction, (a, b, r) in {"funcnet": (f, f, False),
                                             "funcnet->optax": (f, o, relabel),
                                             "optax->funcnet": (o, f, False)}.items():
                    try:  # one failing case must not hide the others
                        out[name, direction] = _continue(a, b, PARAMS, r)
                    except Exception as err:  # noqa: BLE001 - re-raised by its test
                        errors[name, direction] = err
        return out
    return jax.jit(all_runs)(), errors


@pytest.mark.parametrize("direction", ["funcnet->optax", "optax->funcnet"])
@pytest.mark.parametrize("name", [s[0] for s in SWAPS])
def test_state_moves_between_libraries(name, direction):
    runs, errors = _swapped()
    if (name, direction) in errors:
        raise errors[name, direction]
    np.testing.assert_allclose(ravel_pytree(runs[name, direction])[0],
                               ravel_pytree(runs[name, "funcnet"])[0], rtol=1e-12, atol=1e-14)


def test_funcnet_blocks_keep_an_optax_state_class():
    """A block rebuilds the state it was given (``_replace``): an optax state stays an
    optax state, so a lax.scan carry initialised by optax is stable under funcnet."""
    params = {"w": jnp.ones(3)}
    state = optax.adam(0.1).init(params)
    _, new = optim.adam(0.1).update(params, state, params)
    assert type(new[0]) is type(state[0]) and type(new[0]).__module__.startswith("optax")
    out, _ = jax.lax.scan(lambda s, _: (optim.adam(0.1).update(params, s, params)[1], None),
                          state, None, length=3)
    assert int(out[0].count) == 3


def test_masked_node_is_optax_masked_node_in_structures():
    """funcnet's MaskedNode equals optax's as a tree node (both directions of ``==``), so
    a masked state continues under the other library's update and in a lax.scan carry."""
    params = {"a": jnp.ones(2), "b": jnp.ones(1)}
    ours = jax.tree_util.tree_structure({"a": 0, "b": optim.MaskedNode()})
    theirs = jax.tree_util.tree_structure({"a": 0, "b": optax.MaskedNode()})
    assert ours == theirs and theirs == ours and hash(ours) == hash(theirs)
    assert isinstance(optax.MaskedNode(), optim.MaskedNode)
    assert not isinstance((), optim.MaskedNode) and optim.MaskedNode != optax.EmptyState
    opt = optim.masked(optim.sgd(0.1, 0.9), {"a": True, "b": False})
    state = optax.masked(optax.sgd(0.1, 0.9), {"a": True, "b": False}).init(params)
    out, _ = jax.lax.scan(lambda s, _: (opt.update(params, s, params)[1], None),
                          state, None, length=2)
    assert type(out) is type(state)
    np.testing.assert_allclose(out.inner_state[0].trace["a"], [1.9, 1.9])


def test_look_alike_structures_name_their_classes():
    """Two classes of one name print alike: the error names both with their modules."""
    pair_a = collections.namedtuple("Pair", ["x"], module="lib_a")
    pair_b = collections.namedtuple("Pair", ["x"], module="lib_b")
    opt = optim.sgd(0.1, 0.9)
    state = opt.init({"w": pair_a(jnp.ones(2))})
    for update in (opt.update, jax.jit(opt.update)):
        with pytest.raises(ValueError, match=r"print alike but hold different classes of the "
                                             r"same name: lib_b\.Pair and lib_a\.Pair"):
            update({"w": pair_b(jnp.ones(2))}, state)


# ------------------------------------------------------------------ complex params

COMPLEX = [
    ("sgd_momentum", lambda lib: lib.sgd(0.05, momentum=0.9)),
    ("adam", lambda lib: lib.adam(0.05)),
    ("nadamw", lambda lib: lib.nadamw(0.05, weight_decay=0.01)),
    ("rmsprop", lambda lib: lib.rmsprop(0.1)),
    ("rmsprop_centered", lambda lib: lib.rmsprop(0.1, centered=True, momentum=0.5)),
    ("adagrad", lambda lib: lib.adagrad(0.5)),
    ("amsgrad", lambda lib: lib.amsgrad(0.1)),
    ("adabelief", lambda lib: lib.adabelief(0.1)),
    ("radam", lambda lib: lib.radam(0.1)),
    ("lamb", lambda lib: lib.lamb(0.05, weight_decay=0.01)),
    ("clip_ema", lambda lib: lib.chain(lib.clip_by_global_norm(0.5), lib.ema(0.8),
                                       lib.scale(-0.1))),
]


def _complex_run(opt, dtype):
    target = jnp.array([1.0, -1.0, 1.0], dtype) * (1 + 1j)

    def objective(p):  # optax's alias_test parabola
        d = p - target
        return jnp.sum(jnp.real(jnp.conj(d) * d))

    def body(carry, _):
        p, s = carry
        g = jnp.conj(jax.grad(objective)(p))  # conjugate, as optax's test does
        u, s = opt.update(g, s, p)
        return (p + u, s), objective(p)

    p0 = jnp.array([-1.0, 10.0, 1.0], dtype)
    (p, s), losses = jax.lax.scan(body, (p0, opt.init(p0)), None, length=200)
    return p, s, losses


@functools.lru_cache(maxsize=None)
def _complex_runs(dtype_name):
    dtype = jnp.dtype(dtype_name)

    def all_runs():
        with jax.numpy_dtype_promotion("standard"):
            return {name: (_complex_run(make(optim), dtype), _complex_run(make(optax), dtype))
                    for name, make in COMPLEX}
    return jax.jit(all_runs)()


@pytest.mark.parametrize("dtype_name,rtol", [("complex128", 1e-10), ("complex64", 1e-5)])
@pytest.mark.parametrize("name", [c[0] for c in COMPLEX])
def test_complex_params_follow_optax(name, dtype_name, rtol):
    (p, s, losses), (q, t, _) = _complex_runs(dtype_name)[name]
    assert p.dtype == jnp.dtype(dtype_name)
    assert losses[-1] < 0.2 * losses[0]  # it optimizes (|g|^2, not g*g, in the moments)
    np.testing.assert_allclose(p, q, rtol=rtol, atol=rtol)
    for a, b in zip(jax.tree_util.tree_leaves(s), jax.tree_util.tree_leaves(t)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


MIXES = [  # each library's blocks inside the other's combinators
    ("optax.chain(funcnet)", lambda: optax.chain(optim.clip_by_global_norm(1.0), optim.adam(0.1)),
     lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))),
    ("funcnet.chain(optax)", lambda: optim.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)),
     lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))),
    ("optax.masked(funcnet)", lambda: optax.masked(optim.sgd(0.1, 0.9), {"a": True, "b": False}),
     lambda: optax.masked(optax.sgd(0.1, 0.9), {"a": True, "b": False})),
    ("funcnet.multi_transform(optax)",
     lambda: optim.multi_transform({"x": optax.adam(0.1), "y": optax.sgd(0.1)},
                                   {"a": "x", "b": "y"}),
     lambda: optax.multi_transform({"x": optax.adam(0.1), "y": optax.sgd(0.1)},
                                   {"a": "x", "b": "y"})),
    ("optax.inject_hyperparams(funcnet)",
     lambda: optax.inject_hyperparams(optim.adam)(learning_rate=0.1),
     lambda: optax.inject_hyperparams(optax.adam)(learning_rate=0.1)),
    ("funcnet.accumulate(optax)", lambda: optim.accumulate(optax.adam(0.1), 2),
     lambda: optax.MultiSteps(optax.adam(0.1), 2, accumulator_dtype=jnp.float64)),
]


@pytest.mark.parametrize("name,mixed,pure", MIXES, ids=[m[0] for m in MIXES])
def test_blocks_mix_across_libraries(name, mixed, pure):
    with jax.numpy_dtype_promotion("standard"):
        a, b = _continue(mixed(), mixed(), PARAMS), _continue(pure(), pure(), PARAMS)
    np.testing.assert_allclose(ravel_pytree(a)[0], ravel_pytree(b)[0], rtol=1e-12)
