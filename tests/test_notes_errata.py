"""The errors in the notes, judged by jax.grad (listed in docs/formulas.md, "Errors in the notes").

Each test transcribes a note's formula as written, shows that it disagrees with the true
derivative (or value), and that funcnet's op agrees with the truth instead.
"""
import jax
import jax.numpy as jnp
import numpy as np

import funcnet.ops as ops
from tests.ops._cases import labels, normal, uniform


def _close(a, b, tol=1e-10):
    return np.allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_004_sigmoid_derivative_is_not_f_times_one_minus_f_squared():
    x = normal(0, (6,), 2.0)
    truth = jax.vmap(jax.grad(lambda v: 1 / (1 + jnp.exp(-v))))(x)
    f = 1 / (1 + jnp.exp(-x))
    note_004 = f * (1 - f) ** 2
    assert not _close(note_004, truth, 1e-3)
    assert _close(f * (1 - f), truth)
    assert _close(jax.vmap(jax.grad(ops.sigmoid))(x), truth)


def test_002_sigmoid_code_precedence_bug():
    x = normal(1, (6,))
    note_002_code = 1 / 1 + np.exp(-np.asarray(x))  # as written: (1/1) + exp(-x)
    assert not _close(note_002_code, 1 / (1 + np.exp(-np.asarray(x))), 1e-3)
    assert np.all(note_002_code > 1)  # not even a probability
    assert _close(ops.sigmoid(x), 1 / (1 + np.exp(-np.asarray(x))))


def test_004_softmax_derivative_is_only_the_jacobian_diagonal():
    x, g = normal(2, (5,)), normal(3, (5,))
    y = jax.nn.softmax(x)
    truth = jax.vjp(jax.nn.softmax, x)[1](g)[0]
    note_004 = g * y * (1 - y)  # elementwise f'(x) = f(x)(1 - f(x))
    assert not _close(note_004, truth, 1e-3)
    assert _close(jax.vjp(ops.softmax, x)[1](g)[0], truth)
    assert _close(y * (g - jnp.sum(g * y)), truth)


def test_002_softmax_code_overflows_without_the_max_shift():
    x = np.array([[1000.0, 0.0, -5.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        note_002_code = e / e.sum(axis=1, keepdims=True)
    assert np.isnan(note_002_code).any()
    np.testing.assert_allclose(ops.softmax(jnp.asarray(x)), [[1.0, 0.0, 0.0]], atol=1e-300)


def test_002_cross_entropy_code_divides_by_ndim_not_batch_size():
    n = 5
    y, t = jax.nn.softmax(normal(4, (n, 3))), jax.nn.one_hot(labels(5, (n,), 3), 3, dtype=jnp.float64)
    r = t * jnp.log(y)
    note_002_code = -r.sum() / r.ndim  # divides by 2, whatever the batch size
    mean_over_batch = -r.sum() / n
    assert not _close(note_002_code, mean_over_batch, 1e-3)
    assert _close(ops.cross_entropy(y, t, eps=0.0), mean_over_batch)


def test_002_matmul_code_is_elementwise():
    x, w = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
    try:
        x * w  # note 002's forward `return x*W`
        raise AssertionError("x * W should not broadcast for (2,3) and (3,4)")
    except ValueError:
        pass
    assert _close(ops.matmul(jnp.asarray(x), jnp.asarray(w)), x @ w)


def test_004_binary_cross_entropy_derivative_misses_one_over_n():
    p, t = uniform(6, (8,), 0.1, 0.9), uniform(7, (8,), 0.0, 1.0)
    loss = lambda q: -jnp.mean(t * jnp.log(q) + (1 - t) * jnp.log(1 - q))  # noqa: E731
    truth = jax.grad(loss)(p)
    note_004 = -t / p + (1 - t) / (1 - p)
    assert not _close(note_004, truth, 1e-3)
    assert _close(note_004 / p.size, truth)
    assert _close(jax.grad(ops.binary_cross_entropy)(p, t), truth)


def test_004_mse_derivative_is_with_respect_to_the_prediction():
    pred, target = normal(8, (6,)), normal(9, (6,))
    n = pred.size
    # L = 1/n sum (y_i - y*_i)^2 with y* the prediction (as in note 004's BCE).
    d_pred = jax.grad(lambda p: jnp.mean((target - p) ** 2))(pred)
    d_target = jax.grad(lambda t: jnp.mean((t - pred) ** 2))(target)
    note_004 = 2 / n * (pred - target)  # "dL/dY = 2/n (Y* - Y)"
    assert _close(note_004, d_pred) and not _close(note_004, d_target, 1e-3)
    gp, gt = jax.grad(ops.mean_squared_error, argnums=(0, 1))(pred, target)
    assert _close(gp, d_pred) and _close(gt, d_target)


def test_004_relu_derivative_at_zero_is_a_convention():
    x = jnp.array([-1.0, 0.0, 1.0])
    note_004 = jnp.where(x >= 0, 1.0, 0.0)
    funcnet = jax.vmap(jax.grad(ops.relu))(x)
    np.testing.assert_array_equal(funcnet, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(funcnet, jax.vmap(jax.grad(jax.nn.relu))(x))
    assert note_004[1] == 1.0  # a valid subgradient too, but not what jax.grad gives


def test_003_variance_derivative_shortcut_is_exact():
    # Note 003 hedges that d sigma^2 / d x_i = 2/m (x_i - mu) ignores mu's dependence on x_i;
    # the mu-path contributes -2/m^2 sum_j (x_j - mu) = 0, so the shortcut is the total derivative.
    x = normal(10, (7,))
    truth = jax.grad(lambda v: jnp.var(v))(x)
    assert _close(2 / x.size * (x - x.mean()), truth)


def test_004_dense_bias_gradient_sums_over_the_batch():
    x, w, b, g = normal(11, (4, 3)), normal(12, (3, 2)), normal(13, (2,)), normal(14, (4, 2))
    db = jax.vjp(lambda bb: ops.affine(x, w, bb), b)[1](g)[0]
    assert db.shape == (2,) and _close(db, g.sum(0))  # note 004's dE/dB = dE/dY is per row


def test_000_softmax_cross_entropy_is_y_minus_t_for_the_summed_loss():
    x, t = normal(15, (4, 3)), labels(16, (4,), 3)
    onehot = jax.nn.one_hot(t, 3, dtype=jnp.float64)
    summed = jax.grad(lambda v: ops.softmax_cross_entropy(v, t) * 4)(x)
    assert _close(summed, jax.nn.softmax(x) - onehot)  # note 000: L summed over the batch
    assert _close(jax.grad(ops.softmax_cross_entropy)(x, t), (jax.nn.softmax(x) - onehot) / 4)
