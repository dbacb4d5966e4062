"""``funcnet.optim.tree`` / ``tree_utils`` against ``optax.tree`` / ``optax.tree_utils``:
every name on a mixed pytree (dict, nested tuple, float32 and float64 leaves, a ``None``
subtree), signatures, state look-ups on real optimizer states, errors, and cases ported
from optax's ``tree_utils/_tree_math_test.py`` and ``_state_utils_test.py``.

optax's reductions (``sum``, ``max``, ``norm``, ``vdot``) add float32 and float64 leaves
implicitly, which strict dtype promotion refuses: optax runs under standard promotion
here, funcnet under the suite's strict one.
"""
import inspect
import pathlib
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet.optim as optim
from funcnet.optim import tree as ft
from funcnet.optim import tree_utils as ftu

_r = np.random.default_rng(0)


def _mixed(shift=0.0):
    return {"a": (jnp.asarray(_r.normal(size=2) + shift, jnp.float32),
                  jnp.asarray(_r.normal(size=2) + shift)),
            "b": jnp.asarray(_r.normal(size=2) + shift),
            "c": {"d": jnp.asarray(_r.normal(size=(2,)) + shift, jnp.float32), "n": None}}


X, Y = _mixed(), _mixed(3.0)           # Y has no zero (a divisor)
XC = {"z": jnp.asarray(_r.normal(size=2) + 1j * _r.normal(size=2)), "r": X["b"]}
XN = {**X, "a": None}                  # a None leaf where tree_x may have one
OTHER = {"a": (jnp.ones(2, jnp.float64), jnp.ones(2, jnp.float32)),
         "b": jnp.ones(2, jnp.int32), "c": {"d": 1.0, "n": None}}   # for cast_like
COUNT = jnp.asarray(3, jnp.int32)

CASES = {  # name -> call on a tree module
    "add": lambda t: t.add(X, Y), "add3": lambda t: t.add(X, Y, X),
    "sub": lambda t: t.sub(X, Y), "mul": lambda t: t.mul(X, Y), "div": lambda t: t.div(X, Y),
    "scale": lambda t: t.scale(0.5, X), "add_scale": lambda t: t.add_scale(X, 0.3, Y),
    "add_scale_none": lambda t: t.add_scale(XN, -0.7, Y),
    "add_scale_ints": lambda t: t.add_scale(3, 0.1, 2),
    "allclose_no": lambda t: t.allclose(X, Y), "allclose_yes": lambda t: t.allclose(X, X),
    "allclose_tol": lambda t: t.allclose(X, t.add(X, t.full_like(X, 1e-3)), atol=1e-2),
    "batch_shape": lambda t: t.batch_shape(X, (2,)),
    "bias_correction": lambda t: t.bias_correction(X, 0.9, COUNT),
    "bias_correction_int": lambda t: t.bias_correction(X, 0.99, 10),
    "cast": lambda t: t.cast(X, jnp.float32), "cast_none": lambda t: t.cast(X, None),
    "cast_like": lambda t: t.cast_like(X, OTHER),
    "clip": lambda t: t.clip(X, -0.5, 0.5), "clip_max": lambda t: t.clip(X, None, 0.2),
    "clip_min": lambda t: t.clip(X, min_value=0.1),
    "conj": lambda t: t.conj(XC), "real": lambda t: t.real(XC),
    "dtype_same": lambda t: t.dtype(X["c"]), "dtype_empty": lambda t: t.dtype({}),
    "dtype_promote": lambda t: t.dtype(X, "promote"),
    "dtype_highest": lambda t: t.dtype(X, "highest"),
    "dtype_lowest": lambda t: t.dtype(X, "lowest"),
    "full_like": lambda t: t.full_like(X, 3.0),
    "full_like_dtype": lambda t: t.full_like(X, 2, dtype=jnp.int32),
    "ones_like": lambda t: t.ones_like(X), "zeros_like": lambda t: t.zeros_like(X),
    "zeros_like_dtype": lambda t: t.zeros_like(X, jnp.float32),
    "max": lambda t: t.max(X), "min": lambda t: t.min(X), "max_empty": lambda t: t.max({}),
    "min_empty_leaf": lambda t: t.min([jnp.ones([2, 3]), jnp.zeros([4, 0, 5])]),
    "max_int_leaf": lambda t: t.max([10000, jnp.zeros(0, jnp.int8)]),
    "size": lambda t: t.size(X), "sum": lambda t: t.sum(X),
    "sum_assoc": lambda t: t.sum(X, associative_reduction=True),
    "sum_empty": lambda t: t.sum({"key": [None, [None]]}),
    "vdot": lambda t: t.vdot(X, Y), "vdot_complex": lambda t: t.vdot(XC, t.real(XC)),
    "vdot_empty": lambda t: t.vdot((), ()),
    "vdot_python_leaf": lambda t: t.vdot({"w": X["b"], "s": 3.0}, {"w": Y["b"], "s": 2.0}),
    "vdot_numbers": lambda t: t.vdot(2.0, 3.0),
    "update_moment": lambda t: t.update_moment(X, Y, 0.9, 2),
    "update_moment_none": lambda t: t.update_moment(None, X, 1, 1),
    "update_moment_per_elem_norm": lambda t: t.update_moment_per_elem_norm(XC, XC, 0.9, 3),
    "update_infinity_moment": lambda t: t.update_infinity_moment(X, Y, 0.9, 1e-8),
    "where_true": lambda t: t.where(True, X, Y),
    "where_traced": lambda t: t.where(jnp.asarray(False), X, Y),
    "where_leafwise": lambda t: t.where(jnp.asarray([True, False]), X, Y),
    **{f"norm_{o}_{s}": (lambda t, o=o, s=s: t.norm(XC if o == "c" else X,
                                                    ord=None if o == "c" else o, squared=s))
       for o in (None, 1, jnp.inf, "c") for s in (False, True)},
    **{f"norm_{o}": (lambda t, o=o: t.norm(X, o)) for o in (2, "inf", "infinity")},
    "norm_empty": lambda t: t.norm({}),
}


def _assert_same(got, want):
    """Same structure, dtypes and values (to 1e-12, float32 leaves to one rounding)."""
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        if isinstance(w, np.dtype):
            assert g == w
            continue
        assert jnp.result_type(g) == jnp.result_type(w), (g, w)
        tol = 1e-12 if jnp.result_type(w) not in (jnp.float32, jnp.complex64) else 2e-7
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax(case):
    got = CASES[case](ft)
    with jax.numpy_dtype_promotion("standard"):
        want = CASES[case](optax.tree)
    _assert_same(got, want)


def test_signatures_and_namespaces():
    public = sorted(n for n in dir(optax.tree) if not n.startswith("_"))
    assert sorted(ft.__all__) == public
    for name in public:
        ours, theirs = (inspect.signature(getattr(m, name)).parameters for m in (ft, optax.tree))
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
               [(p.name, p.kind, p.default) for p in theirs.values()], name
        assert getattr(ftu, f"tree_{name}") is getattr(ft, name)
        assert getattr(ft, name).__doc__ and "optax" in getattr(ft, name).__doc__, name
    tu_names = {n for n in dir(optax.tree_utils) if n.startswith("tree_") or n[0].isupper()}
    assert tu_names <= set(dir(ftu)) and set(ftu.__all__) == tu_names
    assert optim.tree is ft and optim.tree_utils is ftu
    here = pathlib.Path(ft.__file__).parent
    for f in ("tree.py", "tree_state.py", "tree_utils.py"):
        assert "import optax" not in (here / f).read_text()


def test_deprecated_tree_utils_names():
    calls = {"tree_scalar_mul": (0.5, X), "tree_add_scalar_mul": (X, 0.5, Y),
             "tree_l1_norm": (X,), "tree_l2_norm": (X,), "tree_linf_norm": (X,)}
    for name, args in calls.items():
        with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
            warnings.simplefilter("ignore", DeprecationWarning)
            want = getattr(optax.tree_utils, name)(*args)
        _assert_same(getattr(ftu, name)(*args), want)


def test_random():
    for key in (jax.random.PRNGKey(3), jax.random.key(3)):
        _assert_same(ft.random_like(key, X), optax.tree.random_like(key, X))
        _assert_same(ft.unwrap_random_key_data(ft.split_key_like(key, X)),
                     optax.tree.unwrap_random_key_data(optax.tree.split_key_like(key, X)))
    _assert_same(ft.random_like(key, X, jax.random.uniform, jnp.float32),
                 optax.tree.random_like(key, X, jax.random.uniform, jnp.float32))
    tree = {"k": jax.random.key(1), "x": X["b"]}
    _assert_same(ft.unwrap_random_key_data(tree), optax.tree.unwrap_random_key_data(tree))
    # under jit, as in a training step
    key = jax.random.PRNGKey(3)
    _assert_same(jax.jit(lambda k: ft.random_like(k, X))(key), optax.tree.random_like(key, X))


def _paths(found):
    return [(jax.tree_util.keystr(p), np.asarray(v).tolist()) for p, v in found]


PARAMS = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}


def test_get_set_on_optimizer_states():
    ours, theirs = optim.adam(1e-3).init(PARAMS), optax.adam(1e-3).init(PARAMS)
    for t, state in ((ft, ours), (optax.tree, theirs)):
        assert int(t.get(state, "count")) == 0
        assert t.get(state, "missing", default=7) == 7
        assert type(t.get(state, "ScaleByAdamState")).__name__ == "ScaleByAdamState"
    assert _paths(ft.get_all_with_path(ours, "count")) == \
        _paths(optax.tree.get_all_with_path(theirs, "count"))
    new = ft.set(ours, count=jnp.asarray(5, jnp.int32))
    assert type(new) is type(ours) and int(ft.get(new, "count")) == 5
    _assert_same(ft.get(new, "mu"), ft.get(ours, "mu"))
    # the state still drives the optimizer (funcnet's type checks accept it)
    optim.adam(1e-3).update(PARAMS, new, PARAMS)
    # two counts in a chain: get raises, a filtering on the path chooses one
    two = optim.chain(optim.scale_by_adam(), optim.scale_by_adam()).init(PARAMS)
    with pytest.raises(KeyError, match="get: found multiple values for 'count'"):
        ft.get(two, "count")
    with pytest.raises(KeyError):
        optax.tree.get(two, "count")
    first = lambda path, _: jax.tree_util.keystr(path).startswith("[0]")  # noqa: E731
    assert int(ft.get(two, "count", filtering=first)) == 0
    both = ft.set(two, count=2.0)
    assert [v for _, v in ft.get_all_with_path(both, "count")] == [2.0, 2.0]
    with pytest.raises(KeyError, match="set: found no values matching 'ema'"):
        ft.set(ours, ema=2.0)
    with pytest.raises(KeyError):
        optax.tree.set(theirs, ema=2.0)


def test_get_set_injected_hyperparams():
    sched = lambda c: 1 / (c + 1)  # noqa: E731
    ours = optim.inject_hyperparams(optim.sgd)(learning_rate=sched)
    theirs = optax.inject_hyperparams(optax.sgd)(learning_rate=sched)
    s_ours, s_theirs = ours.init(PARAMS), theirs.init(PARAMS)
    assert _paths(ft.get_all_with_path(s_ours, "learning_rate")) == \
        _paths(optax.tree.get_all_with_path(s_theirs, "learning_rate"))
    is_array = lambda _, v: isinstance(v, jax.Array)  # noqa: E731
    get_lr = jax.jit(lambda s: ft.get(s, "learning_rate", filtering=is_array))
    for i in range(3):
        _, s_ours = ours.update(PARAMS, s_ours)
        assert float(get_lr(s_ours)) == pytest.approx(1 / (i + 1))
    s = jax.jit(lambda s, lr: ft.set(s, is_array, learning_rate=lr))(s_ours, 0.25)
    assert float(ft.get(s, "learning_rate", filtering=is_array)) == 0.25


class _Pair(NamedTuple):
    a: dict
    b: float


def test_ported_state_utils_cases():
    # _state_utils_test.py: flat trees, filtering, nested trees, setting a subtree
    for tree in ((), jnp.ones(3)):
        assert ft.get_all_with_path(tree, "foo") == []
        with pytest.raises(KeyError):
            ft.set(tree, foo=1.0)
    state = {"hparams": {"learning_rate": 1.0}, "learning_rate": "foo"}
    with pytest.raises(KeyError):
        ft.get(state, "learning_rate")
    assert ft.get(state, "learning_rate", filtering=lambda _, v: isinstance(v, float)) == 1.0
    new = ft.set(state, lambda _, v: isinstance(v, float), learning_rate=0.5)
    assert new == {"hparams": {"learning_rate": 0.5}, "learning_rate": "foo"}
    tree = {"a": {"a": 1.0}, "b": {"a": 1}}
    assert ft.set(tree, lambda _, v: isinstance(v, float), a=2.0) == \
        {"a": {"a": 2.0}, "b": {"a": 1}}
    assert ft.set(tree, lambda _, v: isinstance(v, dict), a={"c": 0.0}) == \
        {"a": {"c": 0.0}, "b": {"a": 1}}
    pair = [_Pair({"x": 1.0}, 2.0)]
    for t in (ft, optax.tree):
        assert t.set(pair, b=3.0) == [_Pair({"x": 1.0}, 3.0)]
        assert t.set(pair, _Pair=5) == [5]
        assert t.set(pair, x=4.0) == [_Pair({"x": 4.0}, 2.0)]
    assert [str(p[-1]) for p, _ in ft.get_all_with_path(pair, "b")] == ["_Pair.b"]
    assert ftu.NamedTupleKey("S", "f") == ftu.NamedTupleKey("S", "f")


def test_map_params():
    ours, theirs = optim.adagrad(1e-4), optax.adagrad(1e-4)
    p = {"a": jnp.zeros((1, 2))}
    got = ft.map_params(ours, lambda _: None, ours.init(p))
    want = optax.tree.map_params(theirs, lambda _: None, theirs.init(p))
    assert got[0].sum_of_squares == want[0].sum_of_squares == {"a": None}
    ours = optim.adam(optim.linear_schedule(1e-2, 1e-4, 10))
    theirs = optax.adam(optax.linear_schedule(1e-2, 1e-4, 10))
    got = ft.map_params(ours, lambda v: 1, ours.init(p), transform_non_params=lambda _: None)
    want = optax.tree.map_params(theirs, lambda v: 1, theirs.init(p),
                                 transform_non_params=lambda _: None)
    assert [tuple(s) for s in got] == [tuple(s) for s in want]


def test_ported_tree_math_cases():
    # _tree_math_test.py: clip to [0, 0.5] of a positive tree, infinity moment
    pos = {"a": jnp.asarray([1.0, 2.0]), "b": jnp.asarray(3.0)}
    _assert_same(ft.clip(pos, 0, 0.5), ft.scale(0.5, ft.ones_like(pos)))
    _assert_same(ft.clip(pos, 2.0, None), {"a": jnp.asarray([2.0, 2.0]), "b": pos["b"]})
    v = jnp.asarray([5.0, 7.0])
    np.testing.assert_allclose(ft.update_infinity_moment(v, v, 0.9, 0.0), v)
    np.testing.assert_allclose(ft.update_infinity_moment(-v, 0 * v, 0.9, 0.0), v)
    np.testing.assert_allclose(ft.update_infinity_moment(0 * v, 0 * v, 0.9, 1e-2), 0 * v + 1e-2)
    m = jnp.logspace(-10, 10, num=21, dtype=jnp.bfloat16)
    assert bool(jnp.all(jnp.isfinite(ft.bias_correction(m, 0.9995, 1000))))
    for tree in ({}, (), [], None, {"key": [None, [None]]}):
        assert ft.sum(tree) == 0 and ft.vdot(tree, tree) == 0
    # optax's test: max/min over a number and an empty leaf (optax needs standard promotion)
    for val in (0, 10000, -10000, float("inf"), -float("inf")):
        for dt in ("int8", "uint8", "float32"):
            assert ft.min([val, jnp.zeros(0, dt)]) == val == ft.max([val, jnp.zeros(0, dt)])
    # jitted: a global norm for logging under jit matches eagerly (XLA may fuse the
    # float32 leaves' sums differently: float32 rounding)
    np.testing.assert_allclose(jax.jit(ft.norm)(X), ft.norm(X), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(ft.norm)(Y["a"][1]), ft.norm(Y["a"][1]), rtol=1e-12)


@pytest.mark.parametrize("call, error, match", [
    (lambda t: t.add(X, {"b": 1.0}), ValueError, "add: the trees do not have the same"),
    (lambda t: t.sub(X, Y["c"]), ValueError, "sub: the trees"),
    (lambda t: t.where(True, X, Y["c"]), ValueError, "where: the trees"),
    (lambda t: t.where(True, {"a": 1.0, "b": 2.0}, {"c": 1.0, "d": 2.0}), ValueError,
     "where: the trees"),
    (lambda t: t.vdot(X, Y["c"]), ValueError, "vdot: the trees"),
    (lambda t: t.norm(X, ord=3), ValueError, "norm: unsupported ord 3"),
    (lambda t: t.dtype(X), ValueError, "dtype: expected dtype=float32 for every leaf"),
    (lambda t: t.dtype(X, "largest"), ValueError, "dtype: invalid value for mixed_dtype"),
    (lambda t: t.dtype([jnp.ones(1, jnp.int32), jnp.ones(1, jnp.uint32)], "highest"),
     ValueError, "dtype: .* no highest one"),
    (lambda t: t.update_moment(X, Y["c"], 0.9, 2), ValueError, "update_moment: moments"),
])
def test_errors_where_optax_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(ft)
    with pytest.raises(error, match=match):
        jax.jit(lambda: call(ft))()
    with jax.numpy_dtype_promotion("standard"), pytest.raises((ValueError, TypeError)):
        call(optax.tree)
