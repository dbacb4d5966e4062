"""MaxPool1D / AvgPool1D (the 2-D ops on (N, 1, L, C)) and GlobalMaxPool2D: values
against sliding windows in NumPy, gradients against autodiff of plain-JAX twins and
central differences (float64), one example without the batch axis, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import check_vjp
from tests.nn._models import randn

KEY = jax.random.PRNGKey(0)


def windows(x, k, s, lo, hi, fill):
    """``(N, OL, C, k)`` windows of ``(N, L, C)`` padded with ``fill``."""
    xp = np.pad(np.asarray(x), ((0, 0), (lo, hi), (0, 0)), constant_values=fill)
    w = np.lib.stride_tricks.sliding_window_view(xp, k, axis=1)
    return w[:, ::s]


def twin_max(x, k, s, lo, hi):
    xp = jnp.pad(x, ((0, 0), (lo, hi), (0, 0)), constant_values=-jnp.inf)
    idx = np.arange(0, xp.shape[1] - k + 1, s)[:, None] + np.arange(k)
    return xp[:, idx].max(axis=2)


def twin_avg(x, k, s, lo, hi):
    xp = jnp.pad(x, ((0, 0), (lo, hi), (0, 0)))
    idx = np.arange(0, xp.shape[1] - k + 1, s)[:, None] + np.arange(k)
    return xp[:, idx].mean(axis=2)


CASES = [  # layer, (k, s, lo, hi)
    (nn.MaxPool1D(2), (2, 2, 0, 0), twin_max, np.max, -np.inf),
    (nn.MaxPool1D(3, 2, padding=1), (3, 2, 1, 1), twin_max, np.max, -np.inf),
    (nn.AvgPool1D(3, 1, padding=(1, 2)), (3, 1, 1, 2), twin_avg, np.mean, 0.0),
    (nn.AvgPool1D(2), (2, 2, 0, 0), twin_avg, np.mean, 0.0),
]


@pytest.mark.parametrize("layer, geometry, twin, reduce, fill", CASES,
                         ids=[c[0].name + str(c[1]) for c in CASES])
def test_values_and_gradients_of_one_dimensional_pooling(layer, geometry, twin, reduce,
                                                         fill):
    x = randn((3, 9, 4), seed=2)
    f = lambda x: layer.apply((), (), x)[0]          # noqa: E731
    want = reduce(windows(x, *geometry, fill), axis=-1)
    out_shape = layer.init(KEY, (-1, 9, 4))[0]
    assert out_shape == (-1,) + want.shape[1:]
    check_vjp(f, lambda x: twin(x, *geometry), (x,))
    np.testing.assert_allclose(f(x), want, rtol=1e-12)
    np.testing.assert_allclose(f(x[1]), want[1], rtol=1e-12)          # one sequence (L, C)


def test_same_padding_keeps_the_length_at_stride_one():
    x = randn((2, 7, 3), seed=1)
    y = nn.AvgPool1D(3, 1, "SAME").apply((), (), x)[0]
    np.testing.assert_allclose(y, twin_avg(x, 3, 1, 1, 1), rtol=1e-12)


def test_global_max_pool_is_the_max_with_its_gradient_at_the_argmax():
    layer = nn.GlobalMaxPool2D()
    x = randn((3, 5, 4, 2), seed=4)
    assert layer.init(KEY, (-1, 5, 4, 2))[0] == (-1, 2)
    f = lambda x: layer.apply((), (), x)[0]           # noqa: E731
    check_vjp(f, lambda x: jnp.max(x, axis=(1, 2)), (x,))
    np.testing.assert_array_equal(f(x[0]), np.asarray(x[0]).max(axis=(0, 1)))


@pytest.mark.parametrize("make, shape, exc, match", [
    (lambda: nn.MaxPool1D(0), None, ValueError, r"MaxPool1D: window must be >= 1, got 0"),
    (lambda: nn.AvgPool1D(2, 1.5), None, TypeError, r"AvgPool1D: stride must be an int"),
    (lambda: nn.MaxPool1D(2, padding=2), None, ValueError,
     r"MaxPool1D\(2\) \(as max_pool2d on \(N, 1, L, C\)\): max_pool2d: padding .* must be "
     r"smaller than the window"),
    (lambda: nn.MaxPool1D(3), (2, 2, 3), ValueError,
     r"MaxPool1D\(3\) \(as max_pool2d on \(N, 1, L, C\)\): max_pool2d: window \(1, 3\) is "
     r"larger than the padded input"),
    (lambda: nn.AvgPool1D(2), (2, 3, 4, 5), ValueError,
     r"AvgPool1D\(2\): input_shape .*expected rank 2 or 3 \(N, L, C\) or one sequence"),
    (lambda: nn.GlobalMaxPool2D(), (4, 4), ValueError,
     r"GlobalMaxPool2D: input_shape .*expected rank 3 or 4"),
])
def test_errors_name_the_layer(make, shape, exc, match):
    with pytest.raises(exc, match=match):
        layer = make()
        layer.init(KEY, shape)
