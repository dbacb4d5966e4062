"""train_test_split, standardize and normalize."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.data import normalize, standardize, train_test_split


def data(n=50, classes=5):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = (np.arange(n) % classes).astype(np.int32)
    return x, y


@pytest.mark.parametrize("key", [0, jax.random.PRNGKey(3), jax.random.key(3)])
def test_split_is_a_deterministic_partition(key):
    x, y = data()
    xtr, xte, ytr, yte = train_test_split(x, y, test_fraction=0.2, key=key)
    assert xtr.shape == (40, 3) and xte.shape == (10, 3)
    rows = np.concatenate([xtr[:, 0], xte[:, 0]]) / 3
    np.testing.assert_array_equal(np.sort(rows), np.arange(50))
    np.testing.assert_array_equal(ytr, y[(xtr[:, 0] / 3).astype(int)])
    again = train_test_split(x, y, test_fraction=0.2, key=key)
    for a, b in zip((xtr, xte, ytr, yte), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(xtr[:, 0], np.sort(xtr[:, 0]))  # shuffled


def test_split_depends_on_key():
    x, y = data()
    a = train_test_split(x, y, key=0)[1]
    b = train_test_split(x, y, key=1)[1]
    assert not np.array_equal(a, b)


def test_split_jnp_in_jnp_out():
    x, y = data()
    parts = train_test_split(jnp.asarray(x), jnp.asarray(y), key=0)
    assert all(isinstance(p, jax.Array) for p in parts)
    np.testing.assert_array_equal(parts[1], train_test_split(x, y, key=0)[1])


@pytest.mark.parametrize("seed, fraction", [(0, 0.2), (1, 0.3), (2, 0.5)])
def test_stratified_keeps_class_proportions(seed, fraction):
    n = 50  # one size, so jax.random.permutation compiles once for the whole file
    rng = np.random.default_rng(seed)
    y = rng.choice(4, size=n, p=[0.5, 0.3, 0.15, 0.05]).astype(np.int32)
    x = np.arange(n)
    xtr, xte, ytr, yte = train_test_split(x, y, test_fraction=fraction, key=7, stratify=True)
    assert len(xte) == round(fraction * n)
    np.testing.assert_array_equal(np.sort(np.concatenate([xtr, xte])), x)
    expected = fraction * np.bincount(y, minlength=4)
    assert np.all(np.abs(np.bincount(yte, minlength=4) - expected) < 1.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(test_fraction=0.0), ValueError, r"test_fraction must be in \(0, 1\), got 0$"),
    (dict(test_fraction=1.0), ValueError, "test_fraction must be in"),
    (dict(test_fraction=float("nan")), ValueError, "test_fraction must be finite, got nan"),
    (dict(test_fraction="0.5"), TypeError,
     r"train_test_split: test_fraction must be a Python float, got str '0.5'"),
    (dict(test_fraction=np.array([0.2, 0.3])), TypeError,
     "train_test_split: test_fraction must be a Python float, got ndarray"),
    (dict(stratify="no"), TypeError, "train_test_split: stratify must be a bool, got str 'no'"),
    (dict(stratify=1), TypeError, "train_test_split: stratify must be a bool, got int 1"),
    (dict(test_fraction=0.01), ValueError, "gives 0 test and 50 train"),
    (dict(key="seed"), TypeError, r"train_test_split: key must be a PRNG key \(jax.random.PRNGKey\(0\) or jax.random.key\(0\)\) or an int seed, got str"),
])
def test_split_rejects_bad_arguments(kwargs, error, match):
    x, y = data()
    with pytest.raises(error, match=match):
        train_test_split(x, y, **{"key": 0, **kwargs})


def test_split_length_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"train_test_split: x has shape \(50, 3\) but y has "
                                         r"shape \(49,\), expected the same leading"):
        train_test_split(np.zeros((50, 3)), np.zeros(49), key=0)


def test_stratify_needs_int_labels():
    with pytest.raises(TypeError, match="integer labels"):
        train_test_split(np.zeros((10, 2)), np.zeros(10), key=0, stratify=True)
    with pytest.raises(ValueError, match=r"labels of shape \(N,\)"):
        train_test_split(np.zeros((10, 2)), np.zeros((10, 2), int), key=0, stratify=True)


@pytest.mark.parametrize("use_jit", [False, True])
def test_standardize_fit_then_apply(use_jit):
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, (200, 4))
    train[:, 2] = 5.0  # constant feature
    test = rng.normal(3.0, 2.0, (20, 4))
    fn = jax.jit(standardize) if use_jit else standardize
    arg = jnp.asarray(train) if use_jit else train
    z, mean, std = fn(arg)
    assert mean.shape == std.shape == (1, 4)
    np.testing.assert_allclose(np.mean(z, 0), 0, atol=1e-12)
    np.testing.assert_allclose(np.std(z, 0), [1, 1, 0, 1], atol=1e-12)
    assert float(std[0, 2]) == 1.0
    zt, m2, s2 = standardize(test, mean=mean, std=std)
    np.testing.assert_allclose(zt, (test - np.asarray(mean)) / np.asarray(std))
    assert np.all(np.isfinite(zt))
    np.testing.assert_array_equal(m2, mean)


def test_standardize_integer_input_and_partial_stats():
    z, mean, _ = standardize(np.array([[0], [2]], np.uint8))
    assert z.dtype == np.float32 and mean.tolist() == [[1.0]]
    with pytest.raises(ValueError, match="pass both mean and std"):
        standardize(np.zeros((2, 2)), mean=np.zeros((1, 2)))


def test_normalize_global_and_per_feature():
    x = np.array([[0.0, 10.0], [5.0, 10.0], [10.0, 10.0]])
    y, low, high = normalize(x)
    assert low.shape == (1, 1) and float(low[0, 0]) == 0.0 and float(high[0, 0]) == 10.0
    np.testing.assert_allclose(y, x / 10)
    y, low, high = normalize(x, axis=0)
    np.testing.assert_allclose(y, [[0, 0], [0.5, 0], [1, 0]])  # constant column -> 0
    yt, _, _ = normalize(np.array([[20.0, 11.0]]), low=low, high=high)
    np.testing.assert_allclose(yt, [[2.0, 1.0]])
    with pytest.raises(ValueError, match="pass both low and high"):
        normalize(x, high=high)


@pytest.mark.parametrize("scale, names", [(standardize, ("mean", "std")),
                                          (normalize, ("low", "high"))])
def test_fitted_statistics_are_cast_to_x_and_come_in_pairs(scale, names):
    """The one fit-or-apply path of both scalers: given statistics are cast to x's dtype
    (also under jit), and one without the other is refused, eagerly and while tracing."""
    x = np.array([[0.0, 1.0], [2.0, 5.0], [4.0, 3.0]], np.float32)
    fitted, a, b = scale(x)
    applied, a2, b2 = jax.jit(lambda x, a, b: scale(x, **{names[0]: a, names[1]: b}))(
        jnp.asarray(x), a.astype(np.float64), b.astype(np.float64))
    assert applied.dtype == a2.dtype == b2.dtype == jnp.float32
    np.testing.assert_allclose(applied, fitted, rtol=1e-6)
    for name in names:
        match = rf"^{scale.__name__}: pass both {names[0]} and {names[1]}"
        with pytest.raises(ValueError, match=match):
            scale(x, **{name: a})
        with pytest.raises(ValueError, match=match):
            jax.jit(lambda x: scale(x, **{name: a}))(jnp.asarray(x))


@pytest.mark.parametrize("kind", [np.asarray, jnp.asarray])
@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_half_precision_is_scaled_in_float32_and_returned_in_its_dtype(kind, dtype):
    """float16's variance of values ~1000 (and its max - min of +-60000) overflow float16:
    the statistics are computed in float32 and the result is cast back."""
    rng = np.random.default_rng(0)
    x = kind(rng.uniform(0, 1000, (100, 2)).astype(dtype))
    ref = np.asarray(x).astype(np.float32)
    z, mean, std = standardize(x)
    assert z.dtype == dtype and mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(np.asarray(std), np.std(ref, 0, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(z, np.float32), (ref - ref.mean(0)) / ref.std(0),
                               atol=2e-2)
    np.testing.assert_array_equal(standardize(x, mean=mean, std=std)[0], z)  # apply == fit
    wide = kind(np.array([[-60000.0], [0.0], [60000.0]], dtype))
    scaled, low, high = normalize(wide)
    assert scaled.dtype == dtype and low.dtype == high.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(scaled, np.float32), [[0.0], [0.5], [1.0]])


def test_float64_statistics_stay_float64():
    x = 1e8 + np.array([[0.0], [1.0], [2.0]])              # all 1e8 in float32
    z, mean, std = standardize(x)
    assert z.dtype == mean.dtype == std.dtype == np.float64
    np.testing.assert_allclose(z[:, 0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-3)
    scaled, low, high = normalize(x)
    assert scaled.dtype == low.dtype == np.float64
    np.testing.assert_array_equal(scaled[:, 0], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("kind", [np.asarray, jnp.asarray])
@pytest.mark.parametrize("stratify", [False, True])
def test_split_of_pytree_x_splits_every_leaf_alike(kind, stratify):
    x, y = data()
    x, y = kind(x), kind(y)
    split = train_test_split(x, y, key=3, stratify=stratify)
    tree = {"image": x, "length": kind(np.arange(50) * 10)}
    for xs in (tree, (tree["image"], tree["length"])):
        xtr, xte, ytr, yte = train_test_split(xs, y, key=3, stratify=stratify)
        assert type(xtr) is type(xs) and type(xte) is type(xs)
        for part, ref, ys, yref in ((xtr, split[0], ytr, split[2]),
                                    (xte, split[1], yte, split[3])):
            image, length = part.values() if isinstance(part, dict) else part
            np.testing.assert_array_equal(image, ref)          # the rows of the array split
            np.testing.assert_array_equal(length, np.asarray(ref)[:, 0] / 3 * 10)
            np.testing.assert_array_equal(ys, yref)
            assert isinstance(image, type(x)) and isinstance(length, type(x))


def test_split_of_pytrees_checks_the_leaves():
    x, y = data()
    with pytest.raises(ValueError, match=r"^train_test_split: x\['image'\] has shape \(50, 3\) "
                                         r"but x\['length'\] has shape \(49,\), expected the "
                                         r"same leading"):
        train_test_split({"image": x, "length": np.arange(49)}, y, key=0)
    ytr, yte = train_test_split(x, {"label": y}, key=0)[2:]      # a pytree y, no stratify
    assert set(ytr) == set(yte) == {"label"} and len(ytr["label"]) == 40
    with pytest.raises(TypeError, match=r"^train_test_split: stratify needs y to be one array "
                                        r"of integer labels \(N,\), got dict"):
        train_test_split(x, {"label": y}, key=0, stratify=True)
