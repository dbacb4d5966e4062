"""dropout: mask determinism and statistics, gradient = mask / (1 - rate) from a
regenerated mask (residual: the key only), typed and raw keys, transforms, errors."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from funcnet.ops.dropout import dropout
from funcnet.gradcheck import check_vjp
from tests.ops._cases import rand

RAW = jax.random.PRNGKey(42)
dropout_mod = importlib.import_module("funcnet.ops.dropout")  # the function shadows it


@pytest.mark.parametrize("rate, key, fd", [(0.0, RAW, False), (0.3, RAW, True),
                                          (0.9, jax.random.key(42), False)],
                         ids=["rate0-raw", "rate0.3-raw", "rate0.9-typed"])
def test_dropout_vjp_matches_reference_and_finite_differences(rate, key, fd):
    # dropout is linear in x for a fixed key: one central-difference run is enough
    check_vjp([lambda x, k: dropout(x, rate, k)], lambda x, k: R.dropout(x, rate, k),
               (rand((2, 3, 4)), key), fd_rtol=1e-6 if fd else None)


def test_same_key_same_mask_different_keys_differ():
    x = jnp.ones((64, 64))
    f = jax.jit(lambda k: dropout(x, 0.5, k))
    k1, k2 = jax.random.split(RAW)
    assert jnp.array_equal(f(k1), f(k1))
    assert not jnp.array_equal(f(k1) == 0, f(k2) == 0)


def test_keep_rate_and_scale():
    n, rates = 200_000, (0.1, 0.5, 0.8)
    ys = jax.jit(lambda k: [dropout(jnp.ones((n,), jnp.float32), r, k) for r in rates])(RAW)
    for rate, y in zip(rates, ys):
        kept = np.asarray(y != 0)
        # 6 standard deviations of a Binomial(n, 1 - rate) fraction: ~0.007 at rate 0.5
        tol = 6 * np.sqrt(rate * (1 - rate) / n)
        assert abs(kept.mean() - (1 - rate)) < tol, (rate, kept.mean())
        np.testing.assert_allclose(np.asarray(y)[kept], 1 / (1 - rate), rtol=1e-6)
        assert y.dtype == jnp.float32


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_gradient_is_mask_over_keep_prob(rate):
    x = rand((6, 7))
    y, dx = jax.jit(lambda x: jax.vjp(lambda x: dropout(x, rate, RAW), x)[1](
        jnp.ones_like(x)) + (dropout(x, rate, RAW),))(x)[::-1]
    mask = np.asarray(y != 0)
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(np.asarray(dx), mask / (1 - rate))


def test_residual_is_the_key_only():
    x = rand((50, 40))
    _, res = jax.eval_shape(lambda x, k: dropout_mod._dropout_fwd(x, 0.5, k, x.shape), x, RAW)
    assert res.shape == (2,) and res.dtype == jnp.uint32


def test_rate_zero_is_identity():
    x = rand((3, 4))
    assert dropout(x, 0.0, RAW) is x
    dx = jax.grad(lambda x: jnp.sum(dropout(x, 0, RAW)))(x)
    np.testing.assert_array_equal(dx, np.ones((3, 4)))


def test_op_is_custom_vjp():
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda x: dropout(x, 0.5, RAW))(rand((3,))))


def test_vmap_per_example_keys_and_pmap():
    x = jnp.asarray(rand((4, 6)))
    keys = jax.random.split(RAW, 4)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(jnp.sin(f(x, 0.5, k))))
             for f in (dropout, R.dropout)]
    per_example, ref, one, y0 = jax.jit(lambda x, keys: [
        jax.vmap(grads[0])(x, keys), jax.vmap(grads[1])(x, keys), grads[1](x[1], keys[1]),
        R.dropout(x[0], 0.5, keys[0])])(x, keys)
    assert_close(per_example, ref, 1e-12, "vmap(grad) vs reference")
    assert_close(per_example[1], one, 1e-12, "vmap(grad) vs one grad of the reference")
    p = jax.pmap(lambda x, k: dropout(x, 0.5, k))(x[:1], keys[:1])
    assert_close(p[0], y0, 1e-12, "pmap")


def test_vmap_with_one_unbatched_key_shares_the_mask_as_documented():
    """The docstring's warning: vmap over x alone gives every example the same mask; the
    recipe there (vmap over split keys too) gives different masks."""
    x = jnp.ones((3, 64))
    shared, split = jax.jit(lambda x: [
        jax.vmap(lambda r: dropout(r, 0.5, RAW))(x),
        jax.vmap(dropout, in_axes=(0, None, 0))(x, 0.5, jax.random.split(RAW, 3))])(x)
    shared, split = np.asarray(shared), np.asarray(split)
    assert np.all(shared == shared[0]) and not np.all(split == split[0])
    assert "SAME mask" in dropout.__doc__ and "jax.random.split" in dropout.__doc__


@pytest.mark.parametrize("rate, key, exc, match", [
    (1.0, RAW, ValueError, r"dropout: rate must be in \[0, 1\), got 1"),
    (-0.1, RAW, ValueError, r"dropout: rate must be in \[0, 1\), got -0.1"),
    ("0.5", RAW, TypeError, r"dropout: rate must be a number or a scalar array, got str"),
    (np.ones(2), RAW, ValueError, r"dropout: rate must be a scalar, got shape \(2,\)"),
    (0.5, np.zeros((3,), np.uint32), ValueError, r"dropout: key must be a single PRNG key of shape \(2,\), got shape \(3,\)"),
    (0.5, np.zeros((2,), np.float32), TypeError, r"dropout: key must be a PRNG key"),
])
def test_dropout_bad_input_raises(rate, key, exc, match):
    for fn in (dropout, R.dropout):
        with pytest.raises(exc, match=match):
            fn(np.ones((3,)), rate, key)
