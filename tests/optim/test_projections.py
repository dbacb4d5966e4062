"""funcnet.optim.projections against optax.projections: optax's test cases ported, values
and gradients equal to optax's on random nested trees, feasibility, idempotence, jit, vmap
and errors. optax runs under standard dtype promotion (its code promotes implicitly)."""
import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import projections as P

from funcnet import optim
from funcnet.optim import projections as F
from funcnet.optim import tree as ft

jax.config.update("jax_enable_x64", True)

NAMES = sorted(n for n in dir(P) if not n.startswith("_"))


def _std(fn, *args):
    with jax.numpy_dtype_promotion("standard"):
        return fn(*args)


def _flat(t):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])


def _close(got, want, rtol=1e-12, atol=1e-12):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


def _tree(seed, dtype=jnp.float64):
    """A nested dict / tuple tree of 20 elements (a scalar leaf too)."""
    r = np.random.RandomState(seed)
    return {"w": jnp.asarray(r.randn(4, 3), dtype),
            "layer": ({"b": jnp.asarray(r.randn(3), dtype)}, jnp.asarray(r.randn(2, 2, 1), dtype)),
            "s": jnp.asarray(r.randn(), dtype)}


def _args(name, seed, s, dtype=jnp.float64):
    """(x, *other arguments) of ``name`` on a random tree, scale / radius / offset ``s``."""
    x = _tree(seed, dtype)
    full = lambda v: jax.tree.map(lambda y: jnp.full(y.shape, v, y.dtype), x)  # noqa: E731
    if name == "projection_non_negative":
        return (x,)
    if name == "projection_box":
        return x, full(-s / 2), full(s)
    if name == "projection_hypercube":
        return x, full(s)
    if name in ("projection_vector", "projection_hyperplane", "projection_halfspace"):
        a = _tree(seed + 100, dtype)
        return (x, a) if name == "projection_vector" else (x, a, jnp.asarray(s - 1.0))
    return x, jnp.asarray(s, dtype)


def _optax(name):
    """optax's function; its hypercube takes no tree (``tree.map(clip, tree, 0, scale)``
    fails on the leaf 0), so its box with a zero tree stands in."""
    if name == "projection_hypercube":
        return lambda x, s=1: P.projection_box(x, ft.zeros_like(x), s)
    return getattr(P, name)


def _feasible(name, p, args, tol):
    v, s = _flat(p), args[-1]
    if name == "projection_non_negative":
        return np.all(v >= 0)
    if name in ("projection_box", "projection_hypercube"):
        lo = _flat(args[1]) if name == "projection_box" else 0.0
        return np.all(v >= lo - tol) and np.all(v <= _flat(args[-1]) + tol)
    if name == "projection_vector":                      # x - p orthogonal to a
        return abs((_flat(args[0]) - v) @ _flat(args[1])) < tol * 100
    if name in ("projection_hyperplane", "projection_halfspace"):
        gap = v @ _flat(args[1]) - float(s)
        return abs(gap) < tol * 100 if name == "projection_hyperplane" else gap < tol * 100
    norm = {"l1": np.sum(np.abs(v)), "l2": np.sqrt(v @ v), "li": np.max(np.abs(v)),
            "si": np.sum(v)}[name.split("_")[1][:2]]
    if name == "projection_simplex" and np.any(v < 0):
        return False
    s = float(s)
    if "sphere" in name or "simplex" in name:
        return abs(norm - s) < tol * s
    return norm <= s * (1 + tol)


SCALES = [0.3, 1.0, 3.21, 50.0]       # 50: every random tree is inside the balls


# ---------------------------------------------------------------- optax's namespace
def test_namespace_and_signatures_are_optax():
    assert sorted(F.__all__) == NAMES and len(NAMES) == 12
    for name in NAMES:
        ours, theirs = (inspect.signature(getattr(m, name)).parameters for m in (F, P))
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
               [(p.name, p.kind, p.default) for p in theirs.values()], name
        assert not hasattr(optim, name)                  # only in the submodule, as optax
    assert optim.projections is F and "projections" in optim.__all__
    assert "import optax" not in pathlib.Path(F.__file__).read_text()


# ----------------------------------------------------------- values equal optax's
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("s", SCALES)
@pytest.mark.parametrize("name", NAMES)
def test_equals_optax_on_random_trees(name, s, dtype):
    """Values equal optax's (optax on the float64 copy: its simplex returns float64 and its
    l1 ball raises for float32 input), each leaf keeps its dtype, the point is feasible
    and projecting it again leaves it."""
    args = _args(name, 0, s, dtype)
    got = getattr(F, name)(*args)
    want = _std(_optax(name), *jax.tree.map(lambda y: y.astype(jnp.float64), args))
    tol = 1e-12 if dtype == jnp.float64 else 2e-5
    _close(got, want, rtol=tol, atol=tol)
    assert jax.tree.map(lambda y: y.dtype, got) == jax.tree.map(lambda y: y.dtype, args[0])
    assert _feasible(name, got, args, tol)
    _close(getattr(F, name)(got, *args[1:]), got, rtol=tol * 10, atol=tol * 10)


def test_mixed_and_integer_dtypes():
    tree = {"a": jnp.array([0.5, -2.0, 1.5], jnp.float32), "b": (jnp.array([[3.0], [0.25]]),)}
    as64 = jax.tree.map(lambda y: y.astype(jnp.float64), tree)
    for name in ("projection_simplex", "projection_l1_ball", "projection_l2_ball"):
        got = getattr(F, name)(tree, 1.0)
        _close(got, _std(getattr(P, name), as64, 1.0), rtol=1e-6, atol=1e-6)
        assert got["a"].dtype == jnp.float32 and got["b"][0].dtype == jnp.float64
    ints = jnp.array([3, -1, 2])
    _close(F.projection_simplex(ints), _std(P.projection_simplex, ints))
    assert F.projection_simplex(ints).dtype == jnp.float64
    assert F.projection_box(ints, 0, 2).dtype == ints.dtype                 # as optax
    np.testing.assert_array_equal(F.projection_non_negative(ints), [3, 0, 2])
    z = {"c": jnp.array([3 + 4j, 1j]), "r": jnp.array([2.0])}             # complex leaves
    _close(F.projection_l2_ball(z, 2.0), _std(P.projection_l2_ball, z, 2.0))
    _close(F.projection_l1_ball(z, 2.0), _std(P.projection_l1_ball, z, 2.0))


# ------------------------------------------------------- optax's test cases, ported
def test_non_negative_box_and_hypercube_as_optax_tests():
    x = jnp.array([-1.0, 2.0, 3.0])
    np.testing.assert_array_equal(F.projection_non_negative(x), [0, 2.0, 3.0])
    _close(F.projection_non_negative((x, x)), (jnp.array([0, 2.0, 3.0]),) * 2)
    _close(F.projection_non_negative((-1.0, {"k1": 1.0, "k2": (1.0, 1.0)}, 1.0)),
           (0.0, {"k1": 1.0, "k2": (1.0, 1.0)}, 1.0))
    expected = jnp.array([0, 2.0, 2.0])
    np.testing.assert_array_equal(F.projection_box(x, 0.0, 2.0), expected)
    np.testing.assert_array_equal(F.projection_box(x, jnp.zeros(3), jnp.full(3, 2.0)), expected)
    _close(F.projection_box((x, x), (0.0, 0.0), (2.0, 2.0)), (expected, expected))
    tree = (-1.0, {"k1": 2.0, "k2": (2.0, 3.0)}, 3.0)
    _close(F.projection_box(tree, (0.0, {"k1": 0.0, "k2": (0.0, 0.0)}, 0.0),
                            (2.0, {"k1": 2.0, "k2": (2.0, 2.0)}, 2.0)),
           (0.0, {"k1": 2.0, "k2": (2.0, 2.0)}, 2.0))
    _close(F.projection_box(tree, 0.0, 2.0), (0.0, {"k1": 2.0, "k2": (2.0, 2.0)}, 2.0))
    x = jnp.array([-1.0, 2.0, 0.5])
    np.testing.assert_array_equal(F.projection_hypercube(x), [0, 1.0, 0.5])
    np.testing.assert_array_equal(F.projection_hypercube(x, 0.8), [0, 0.8, 0.5])
    np.testing.assert_array_equal(F.projection_hypercube(x, jnp.full(3, 0.8)), [0, 0.8, 0.5])
    _close(F.projection_hypercube({"a": x, "b": (x,)}), {"a": jnp.array([0, 1.0, 0.5]),
                                                       "b": (jnp.array([0, 1.0, 0.5]),)})


@pytest.mark.parametrize("scale", [1.0, 0.8])
def test_simplex_as_optax_tests(scale):
    x = np.random.RandomState(0).randn(50).astype(np.float32)
    p = F.projection_simplex(x, scale)
    np.testing.assert_almost_equal(float(jnp.sum(p)), scale, decimal=4)
    assert jnp.all(p >= 0) and jnp.all(p <= scale)
    new = F.projection_simplex({"w": jnp.array([2.5, 3.2]), "b": 0.5}, scale)
    np.testing.assert_almost_equal(float(ft.sum(new)), scale, decimal=4)
    p = F.projection_simplex(jnp.array([0.0, 0.0, -jnp.inf]), scale)      # edge case
    np.testing.assert_array_almost_equal(p, [scale / 2, scale / 2, 0.0])
    xs = np.random.RandomState(0).randn(3, 50).astype(np.float32)         # vmap
    p = jax.vmap(F.projection_simplex)(xs, jnp.full(3, scale, jnp.float32))
    np.testing.assert_array_almost_equal(jnp.sum(p, axis=1), np.full(3, scale))
    assert jnp.all(p >= 0) and jnp.all(p <= scale)


def test_simplex_jacobian_as_optax_test():
    rng = np.random.RandomState(0)
    x, v = rng.rand(5), rng.randn(5)
    p = F.projection_simplex(x)
    support = (p > 0).astype(jnp.float64)
    jac_true = jnp.diag(support) - jnp.outer(support, support) / jnp.sum(support)
    np.testing.assert_allclose(jax.jacfwd(F.projection_simplex)(x), jac_true, atol=1e-12)
    np.testing.assert_allclose(jax.jacrev(F.projection_simplex)(x), jac_true, atol=1e-12)
    jvp = jax.jvp(F.projection_simplex, (x,), (v,))[1]
    eps = 1e-6
    fd = (F.projection_simplex(x + eps * v) - F.projection_simplex(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(jvp, fd, atol=1e-6)
    np.testing.assert_allclose(jax.vjp(F.projection_simplex, x)[1](v)[0], v @ jac_true,
                               atol=1e-12)


DATA = {"array_1d": jnp.array([0.5, 2.1, -3.5]),
        "array_2d": jnp.array([[0.5, 2.1, -3.5], [1.0, 2.0, 3.0]]),
        "tree": (jnp.array([0.5, 2.1, -3.5]),) * 2}
NORMS = {"l1": (F.projection_l1_ball, lambda t: ft.norm(t, ord=1)),
         "l2": (F.projection_l2_ball, ft.norm),
         "linf": (F.projection_linf_ball, lambda t: ft.norm(t, ord="inf"))}


@pytest.mark.parametrize("scale", [1.0, 3.21])
@pytest.mark.parametrize("key", sorted(DATA))
def test_spheres_as_optax_tests(key, scale):
    np.testing.assert_allclose(ft.norm(F.projection_l1_sphere(DATA[key], scale), ord=1), scale)
    np.testing.assert_allclose(ft.norm(F.projection_l2_sphere(DATA[key], scale)), scale)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("key", sorted(DATA))
def test_balls_as_optax_tests(key, norm):
    project, norm_fn = NORMS[norm]
    x = DATA[key]
    radius = norm_fn(x)
    _close(project(x, radius * 2), x)                   # inside
    _close(project(x, radius), x)                       # on the boundary
    np.testing.assert_allclose(norm_fn(project(x, radius / 2)), radius / 2)   # outside


def test_balls_grad_at_zero_and_zero_vectors():
    for project in (F.projection_l2_ball, F.projection_l1_ball):
        assert jax.grad(project)(0.0) == 1.0
    zeros = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    for name in ("projection_l1_ball", "projection_l2_ball", "projection_l1_sphere",
                 "projection_l2_sphere", "projection_simplex", "projection_linf_ball"):
        got, want = getattr(F, name)(zeros), _std(getattr(P, name), zeros)
        jax.tree.map(np.testing.assert_array_equal, got, want)   # l2 sphere: NaN, as optax
    _close(F.projection_simplex(zeros), {"a": jnp.full(3, 0.2), "b": jnp.full(2, 0.2)})


def test_simplex_ties():
    np.testing.assert_allclose(F.projection_simplex(jnp.full(4, 7.0)), np.full(4, 0.25))
    np.testing.assert_allclose(F.projection_simplex(jnp.array([2.0, 0.0, 2.0]), 2.0),
                               [1.0, 0.0, 1.0])
    x = jnp.array([0.3, 0.3, 0.3, -0.1, 0.3])
    _close(F.projection_simplex(x), _std(P.projection_simplex, x))
    _close(jax.jacrev(F.projection_simplex)(x), _std(jax.jacrev(P.projection_simplex), x))


def test_vector_hyperplane_halfspace_as_optax_tests():
    x, a = (1.0, 2.0), (3.0, 4.0)
    _close(F.projection_vector(x, a), (33 / 25, 44 / 25))
    _close(F.projection_hyperplane(x, a, 5.0), (7 / 25, 26 / 25))
    _close(F.projection_halfspace(x, a, 5.0), (7 / 25, 26 / 25))
    _close(F.projection_halfspace((1.0, -2.0), a, 5.0), (1.0, -2.0))


# --------------------------------------------------------- transformations, gradients
@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap(name):
    f = getattr(F, name)
    cases = [_args(name, seed, s) for seed, s in ((1, 0.3), (2, 3.21), (3, 50.0))]
    _close(jax.jit(f)(*cases[0]), f(*cases[0]))
    batched = jax.vmap(f)(*jax.tree.map(lambda *ys: jnp.stack(ys), *cases))
    for i, case in enumerate(cases):
        _close(jax.tree.map(lambda y: y[i], batched), f(*case), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_equal_optax(name):
    """``jax.grad`` with respect to every argument (the tree, bounds, scale, a, b)."""
    w = _tree(7)

    def grads(module, *args):
        loss = lambda *a: ft.vdot(module(*a), w)  # noqa: E731
        return jax.grad(loss, argnums=tuple(range(len(args))))(*args)

    for s in (0.3, 50.0):
        args = _args(name, 5, s)
        _close(grads(getattr(F, name), *args), _std(grads, _optax(name), *args), rtol=1e-10,
               atol=1e-12)


# ------------------------------------------------------------------------- errors
X = {"w": jnp.ones(3), "v": jnp.ones((2, 2))}
ERRORS = [
    (lambda: F.projection_simplex(X, -1.0), ValueError,
     r"projection_simplex: scale must be in \(0, inf\), got -1"),
    (lambda: F.projection_simplex(X, 0.0), ValueError, r"projection_simplex: scale"),
    (lambda: F.projection_l2_ball(X, -2.0), ValueError, r"projection_l2_ball: scale"),
    (lambda: F.projection_l1_sphere(X, jnp.ones(2)), ValueError,
     r"projection_l1_sphere: scale must be a scalar, got shape \(2,\)"),
    (lambda: F.projection_l1_ball(X, lambda t: 1.0), TypeError, r"projection_l1_ball: scale"),
    (lambda: F.projection_linf_ball(X, -1.0), ValueError, r"projection_linf_ball: scale"),
    (lambda: F.projection_simplex({"w": jnp.ones(2, jnp.complex64)}), TypeError,
     r"projection_simplex: tree\['w'\] must have a real numeric dtype, got complex64"),
    (lambda: F.projection_simplex({}), ValueError, r"projection_simplex: tree has no element"),
    (lambda: F.projection_non_negative({"s": "a"}), TypeError,
     r"projection_non_negative: tree\['s'\] must be an array"),
    (lambda: F.projection_box(X, (0.0, 0.0), 1.0), ValueError,
     r"projection_box: lower must be a scalar, an array or a tree of tree's structure"),
    (lambda: F.projection_box(X, {"w": jnp.zeros(4), "v": 0.0}, 1.0), ValueError,
     r"projection_box: lower for tree\['w'\] has shape \(4,\), expected a shape "
     r"broadcastable to \(3,\)"),
    (lambda: F.projection_box(X, 1.0, {"w": jnp.array([2.0, 0.5, 2.0]), "v": 2.0}),
     ValueError, r"projection_box: lower > upper for tree\['w'\] at index \(1,\)"),
    (lambda: F.projection_box(X, None, 1.0), TypeError, r"projection_box: lower must be"),
    (lambda: F.projection_hypercube(X, {"w": -1.0, "v": 1.0}), ValueError,
     r"projection_hypercube: scale\['w'\] must be >= 0"),
    (lambda: F.projection_vector(X, {"w": jnp.ones(3)}), ValueError,
     r"projection_vector: a tree structure does not match x"),
    (lambda: F.projection_hyperplane(X, {"w": jnp.ones(2), "v": jnp.ones((2, 2))}, 1.0),
     ValueError, r"projection_hyperplane: a\['w'\] has shape \(2,\), expected \(3,\)"),
    (lambda: F.projection_halfspace(X, X, jnp.ones(2)), ValueError,
     r"projection_halfspace: b must be a scalar"),
    (lambda: F.projection_halfspace({"w": jnp.ones(2, jnp.complex64)}, X, 1.0), TypeError,
     r"projection_halfspace: x\['w'\] must have a real numeric dtype"),
]


@pytest.mark.parametrize("call, error, match", ERRORS, ids=range(len(ERRORS)))
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_traced_scale_is_checked_only_when_concrete():
    np.testing.assert_allclose(jax.jit(F.projection_l2_ball)(jnp.ones(4), 1.0), np.full(4, .5))
    assert optax.__version__ >= "0.2.8"
