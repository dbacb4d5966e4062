"""sinusoidal_embedding and nn.SinusoidalPositions: the custom VJP against its twin and
central differences (float64 timesteps), the values of Flax's ``sinusoidal_init`` table
and of Vaswani et al.'s formula, integer positions, the layer (chunked decoding equals one
call), errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet import nn
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere

T = np.random.default_rng(0).random((3, 4)) * 50.0      # diffusion-like timesteps


@pytest.mark.parametrize("features, period", [(8, 10000.0), (6, 100.0), (2, 10.0)])
def test_vjp_matches_reference_and_central_differences(features, period):
    check_vjp(lambda t: ops.sinusoidal_embedding(t, features, max_period=period),
              lambda t: R.sinusoidal_embedding(t, features, max_period=period), (T,),
              seed=2)


def test_values_are_flax_sinusoidal_init_and_vaswani():
    """Flax's lm1b ``sinusoidal_init``: the sines of ``pos * exp(-2i log(10000) / d)``
    in the first half, the cosines in the second; Vaswani's PE(pos, 2i) = sin(pos /
    10000^(2i/d)), PE(pos, 2i+1) = cos(...): the same values, interleaved."""
    length, d = 50, 16
    pos = np.arange(length)[:, None]
    div = np.exp(np.arange(0, d, 2) * -(np.log(10000.0) / d))
    flax = np.concatenate([np.sin(pos * div), np.cos(pos * div)], axis=1)
    got = ops.sinusoidal_embedding(jnp.arange(length), d, dtype=jnp.float64)
    np.testing.assert_allclose(got, flax, atol=1e-12)
    vaswani = np.empty((length, d))
    vaswani[:, 0::2] = np.sin(pos / 10000.0 ** (np.arange(0, d, 2) / d))
    vaswani[:, 1::2] = np.cos(pos / 10000.0 ** (np.arange(0, d, 2) / d))
    np.testing.assert_allclose(np.asarray(got)[:, : d // 2], vaswani[:, 0::2], atol=1e-12)
    np.testing.assert_allclose(np.asarray(got)[:, d // 2:], vaswani[:, 1::2], atol=1e-12)


def test_integer_positions_float_dtypes_and_residuals():
    ids = jnp.arange(6, dtype=jnp.int32)
    assert ops.sinusoidal_embedding(ids, 4).dtype == jnp.float64      # the suite's x64
    assert ops.sinusoidal_embedding(ids, 4, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    t32 = jnp.asarray(T, jnp.float32)
    assert ops.sinusoidal_embedding(t32, 4).dtype == jnp.float32
    np.testing.assert_allclose(ops.sinusoidal_embedding(ids.astype(jnp.float64), 4),
                               ops.sinusoidal_embedding(ids, 4), atol=1e-15)
    kept = saved_residuals(lambda t: ops.sinusoidal_embedding(t, 8), jnp.asarray(T))
    assert len(kept) == 1 and kept[0].is_argument, kept


def test_layer_adds_the_encoding_and_decodes_chunk_by_chunk():
    layer = nn.SinusoidalPositions()
    shape, params, state = layer.init(jax.random.PRNGKey(0), (-1, 7, 6))
    assert (shape, params, state) == ((-1, 7, 6), (), ())
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 7, 6)))
    y, _ = layer.apply(params, state, x)
    table = ops.sinusoidal_embedding(jnp.arange(7), 6)
    assert_close(y - x, jnp.broadcast_to(table[None], x.shape), 1e-14, "added")
    dec = nn.SinusoidalPositions(decode=True)
    _, _, cache = dec.init(jax.random.PRNGKey(0), (2, 7, 6))
    parts = []
    for lo, hi in ((0, 3), (3, 4), (4, 7)):
        out, cache = jax.jit(dec.apply)((), cache, x[:, lo:hi])
        parts.append(out)
    assert int(cache["index"]) == 7
    assert_close(jnp.concatenate(parts, axis=1), y, 1e-14, "chunked decoding")
    assert nn.describe(nn.SinusoidalPositions(100.0)).startswith("SinusoidalPositions(")


@pytest.mark.parametrize("call, exc, match", [
    (lambda t: ops.sinusoidal_embedding(t, 5), ValueError,
     r"sinusoidal_embedding: features must be even .* got 5"),
    (lambda t: ops.sinusoidal_embedding(t, 0), ValueError, r"sinusoidal_embedding: features"),
    (lambda t: ops.sinusoidal_embedding(t, 4, max_period=0.0), ValueError,
     r"sinusoidal_embedding: max_period must be in \(0, inf\)"),
    (lambda t: ops.sinusoidal_embedding(t > 1, 4), TypeError,
     r"sinusoidal_embedding: positions must be integers or floats"),
    (lambda t: ops.sinusoidal_embedding(t, 4, dtype=jnp.float32), TypeError,
     r"sinusoidal_embedding: dtype float32 differs from the floating positions' float64"),
])
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, (jnp.asarray(T),), exc, match)


def test_layer_errors():
    with pytest.raises(ValueError, match=r"SinusoidalPositions: sinusoidal_embedding: "
                                         r"features must be even"):
        nn.SinusoidalPositions().init(jax.random.PRNGKey(0), (-1, 4, 5))
    with pytest.raises(TypeError, match=r"SinusoidalPositions: x must have a floating"):
        nn.SinusoidalPositions().apply((), (), jnp.zeros((2, 3, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"max_period must be in \(0, inf\)"):
        nn.SinusoidalPositions(-1.0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_output_is_the_float32_encoding_rounded(dtype):
    """Integer positions above 256 stay apart in a bfloat16 (float16: 2048) output, op,
    twin and layer alike: the angles are computed in float32, then cast."""
    t = jnp.arange(4096)
    want = ops.sinusoidal_embedding(t, 64, dtype=jnp.float32).astype(dtype)
    for f in (ops.sinusoidal_embedding, R.sinusoidal_embedding):
        got = f(t, 64, dtype=dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    assert not np.array_equal(want[2049], want[2050])
    x = jnp.zeros((1, 4096, 64), dtype)
    y = nn.SinusoidalPositions().apply((), (), x)[0]
    assert y.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y[0], np.float32), np.asarray(want, np.float32))
    # floating positions: forward and backward in float32, cast
    tf = jnp.linspace(0.0, 300.0, 7).astype(dtype)
    g = jax.grad(lambda s: jnp.sum(ops.sinusoidal_embedding(s, 8).astype(jnp.float32)))(tf)
    g32 = jax.grad(lambda s: jnp.sum(ops.sinusoidal_embedding(s, 8)))(tf.astype(jnp.float32))
    assert g.dtype == dtype
    np.testing.assert_array_equal(np.asarray(g, np.float32),
                                  np.asarray(g32.astype(dtype), np.float32))
