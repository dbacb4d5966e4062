"""Initializer variances against their formulas (statistical, with bounds that can fail)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.nn import initializers as I

# 200_000 samples each. The relative standard error of a sample variance is sqrt(2/n)
# = 0.32% for a normal and sqrt(0.8/n) = 0.2% for a uniform, so a 2% bound is > 6 sigma
# and still catches any wrong constant (the closest wrong formula is off by > 10%).
DENSE = (400, 500)              # fan_in 400, fan_out 500
CONV = (5, 5, 80, 100)          # fan_in 5*5*80 = 2000, fan_out 5*5*100 = 2500
KEY = jax.random.PRNGKey(0)

CASES = [
    (I.he_normal(), lambda fi, fo: 2 / fi),
    (I.he_uniform(), lambda fi, fo: 2 / fi),
    (I.xavier_normal(), lambda fi, fo: 2 / (fi + fo)),
    (I.xavier_uniform(), lambda fi, fo: 2 / (fi + fo)),
    (I.lecun_normal(), lambda fi, fo: 1 / fi),
    (I.lecun_uniform(), lambda fi, fo: 1 / fi),
    (I.normal(0.01), lambda fi, fo: 1e-4),
    (I.normal(0.5), lambda fi, fo: 0.25),
    (I.variance_scaling(2.0, "fan_in", "truncated_normal"), lambda fi, fo: 2 / fi),
]


_SHAPES = {"dense": (DENSE, (400, 500)), "conv": (CONV, (2000, 2500))}


@pytest.fixture(scope="module")
def samples():
    """All initializers sampled in one jitted program per shape (one compile, not 18)."""
    return {name: jax.jit(lambda k, shape=shape: [init(k, shape, jnp.float64)
                                                  for init, _ in CASES])(jax.random.PRNGKey(42))
            for name, (shape, _) in _SHAPES.items()}


@pytest.mark.parametrize("which", ["dense", "conv"])
@pytest.mark.parametrize("i", range(len(CASES)), ids=[str(i) for i in range(len(CASES))])
def test_variance_matches_formula(samples, i, which):
    shape, fans = _SHAPES[which]
    var = CASES[i][1]
    w = np.asarray(samples[which][i])
    assert w.shape == shape and w.dtype == np.float64
    expected = var(*fans)
    assert abs(w.var() / expected - 1) < 0.02, (w.var(), expected)
    assert abs(w.mean()) < 5 * np.sqrt(expected / w.size)


def test_uniform_bounds_and_normal_tails():
    fan_in = 400
    w = np.asarray(I.he_uniform()(jax.random.PRNGKey(0), DENSE, jnp.float64))
    a = np.sqrt(6 / fan_in)
    assert w.max() <= a and w.min() >= -a and w.max() > 0.99 * a
    # Plain (not truncated) normal: about 4.55% of the samples lie beyond 2 sigma.
    w = np.asarray(I.he_normal()(jax.random.PRNGKey(0), DENSE, jnp.float64))
    frac = np.mean(np.abs(w) > 2 * np.sqrt(2 / fan_in))
    assert abs(frac - 0.0455) < 0.003


def test_book_xavier_is_lecun():
    # The book's "Xavier" std 1/sqrt(n) is LeCun's variance, not Glorot's 2/(in+out).
    w = np.asarray(I.lecun_normal()(jax.random.PRNGKey(1), (100, 2000), jnp.float64))
    assert abs(w.std() * np.sqrt(100) - 1) < 0.01


def test_compute_fans():
    assert I.compute_fans((784, 100)) == (784, 100)
    assert I.compute_fans((5, 5, 1, 30)) == (25, 750)
    with pytest.raises(ValueError, match=r"compute_fans: shape \(10,\) has rank 1"):
        I.compute_fans((10,))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])   # float64: see above
def test_dtype_and_determinism(dtype):
    k = jax.random.PRNGKey(3)
    for init in (I.he_normal(), I.xavier_uniform(), I.zeros, I.normal()):
        a, b = init(k, (3, 4), dtype), init(k, (3, 4), dtype)
        assert a.dtype == dtype and a.shape == (3, 4)
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert not np.array_equal(I.he_normal(k, (3, 4)), I.he_normal()(jax.random.PRNGKey(4), (3, 4)))
    np.testing.assert_array_equal(I.zeros(k, (2,)), np.zeros(2))
    np.testing.assert_array_equal(I.ones(k, (2,)), np.ones(2))
    np.testing.assert_array_equal(I.constant(0.5)(k, (2,), jnp.float64), [0.5, 0.5])


def test_integer_dtype_rejected():
    with pytest.raises(TypeError, match="variance_scaling: dtype must be a floating dtype, got int32"):
        I.he_normal()(jax.random.PRNGKey(0), (3, 4), jnp.int32)


def test_uniform_is_jax_convention():
    w = np.asarray(I.uniform(0.3)(jax.random.PRNGKey(0), (1000,), jnp.float64))
    ref = np.asarray(jax.nn.initializers.uniform(0.3)(jax.random.PRNGKey(0), (1000,), jnp.float64))
    np.testing.assert_array_equal(w, ref)
    assert w.min() >= 0 and w.max() <= 0.3


def test_default_dtype_follows_x64():
    # conftest enables x64: dtype=None means float64, as in jax.nn.initializers
    # (traced with eval_shape: the dtype is known without drawing any number)
    for init in (I.he_normal(), I.zeros, I.normal(), I.constant(2.0), I.orthogonal()):
        assert jax.eval_shape(lambda k: init(k, (3, 3)), KEY).dtype == jnp.float64
    assert jax.eval_shape(lambda k: I.he_normal(dtype=jnp.float32)(k, (3, 3)),
                          KEY).dtype == jnp.float32


@pytest.mark.parametrize("name", ["he_normal", "glorot_uniform", "lecun_normal", "normal",
                                  "orthogonal", "zeros", "ones"])
def test_jax_initializers_work_as_w_init(name):
    from funcnet import nn
    init = getattr(jax.nn.initializers, name)
    init = init if name in ("zeros", "ones") else init()
    _, p, _ = nn.Dense(4, w_init=init).init(jax.random.PRNGKey(0), (-1, 3))
    assert p["w"].shape == (3, 4) and p["w"].dtype == jnp.float64


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_orthogonal_in_half_precision_draws_in_float32_and_casts(dtype):
    """QR has no half-precision kernel on CPU (``jax.nn.initializers.orthogonal`` raises
    NotImplementedError there); the LSTM/GRU default ``wh_init`` must still work."""
    from funcnet import nn
    k = jax.random.PRNGKey(5)
    w = I.orthogonal(2.0)(k, (4, 6), dtype)
    want = I.orthogonal(2.0)(k, (4, 6), jnp.float32).astype(dtype)
    assert w.dtype == dtype
    np.testing.assert_array_equal(np.asarray(w, np.float32), np.asarray(want, np.float32))
    for layer in (nn.LSTM(5, dtype=dtype), nn.GRU(5, dtype=dtype)):
        _, p, _ = layer.init(k, (6, -1, 3))
        assert {a.dtype for a in jax.tree_util.tree_leaves(p)} == {np.dtype(dtype)}
        y, _ = layer.apply(p, (), jnp.ones((6, 2, 3), dtype))
        assert y.dtype == dtype and bool(jnp.all(jnp.isfinite(y)))
