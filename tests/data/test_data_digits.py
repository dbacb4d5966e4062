"""The embedded digits data set."""
import numpy as np
import pytest

from funcnet.data import load_digits


def test_shapes_dtypes_and_range():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))
    # every class is well represented (the UCI test set has 174..183 per class)
    assert np.bincount(labels).min() >= 170


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flatten_and_raw_counts(dtype):
    images, _ = load_digits()
    flat, _ = load_digits(flatten=True, normalize=False, dtype=dtype)
    assert flat.shape == (1797, 64) and flat.dtype == dtype
    np.testing.assert_array_equal(flat, np.round(flat))  # pixel counts 0..16
    assert flat.max() == 16
    np.testing.assert_allclose(flat.reshape(images.shape) / 16, images, rtol=1e-7)


def test_known_first_label_and_deterministic():
    a, la = load_digits()
    b, lb = load_digits()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert la[:10].tolist() == list(range(10))  # sklearn's digits start 0, 1, ..., 9


def test_integer_dtype_rejected():
    with pytest.raises(TypeError, match="floating dtype, got int32"):
        load_digits(dtype=np.int32)


@pytest.mark.parametrize("flag", ["flatten", "normalize"])
def test_flags_must_be_bools(flag):
    with pytest.raises(TypeError, match=rf"^load_digits: {flag} must be a bool, got str 'no'"):
        load_digits(**{flag: "no"})
