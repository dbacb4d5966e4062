"""nn.PositionEmbedding: x + table[:T] (the plain formulation), init (N(0, 0.02^2),
Flax's name), (N, T, F) and (T, F) inputs, gradients, dtype, errors eager and under jit;
nn.SinusoidalPositions' check of max_period."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from tests.nn._models import randn

KEY = jax.random.PRNGKey(0)
TOL = dict(rtol=1e-12, atol=1e-14)
LAYER = nn.PositionEmbedding(8)


def test_init_draws_normal_002_under_flax_name():
    out, p, s = nn.PositionEmbedding(64).init(KEY, (-1, 10, 32))
    assert out == (-1, 10, 32) and s == ()
    assert set(p) == {"pos_embedding"} and p["pos_embedding"].shape == (64, 32)
    table = np.asarray(p["pos_embedding"])
    assert table.dtype == np.float64                       # dtype=None: JAX's default
    assert abs(table.std() - 0.02) < 0.002 and abs(table.mean()) < 0.002
    np.testing.assert_array_equal(
        table, jax.random.normal(KEY, (64, 32), jnp.float64) * 0.02)
    p32 = nn.PositionEmbedding(4, dtype=jnp.float32).init(KEY, (3, 5))[1]
    assert p32["pos_embedding"].dtype == jnp.float32
    ones = nn.PositionEmbedding(4, embedding_init=jax.nn.initializers.ones)
    np.testing.assert_array_equal(ones.init(KEY, (3, 5))[1]["pos_embedding"], np.ones((4, 5)))


@pytest.mark.parametrize("shape", [(3, 8, 4), (3, 5, 4), (5, 4), (1, 1, 4), (2, 3, 6, 4)])
def test_equals_plain_jax_values_and_gradients(shape):
    """y = x + table[:T] (broadcast over the leading axes); d table = the cotangent summed
    over the leading axes on the first T rows, 0 after; d x = the cotangent."""
    table = randn((8, 4), seed=1)
    p = {"pos_embedding": table}
    x = randn(shape, seed=2)
    T = shape[-2]
    ct = randn(shape, seed=3)

    def ours(p, x):
        return jnp.sum(LAYER.apply(p, (), x)[0] * ct)

    def plain(p, x):
        with jax.numpy_rank_promotion("allow"):
            return jnp.sum((x + p["pos_embedding"][:T]) * ct)

    f = jax.jit(lambda p, x: (LAYER.apply(p, (), x)[0], jax.grad(ours, argnums=(0, 1))(p, x)))
    y, (gp, gx) = f(p, x)
    with jax.numpy_rank_promotion("allow"):
        np.testing.assert_allclose(y, x + table[:T], **TOL)
    rp, rx = jax.grad(plain, argnums=(0, 1))(p, x)
    np.testing.assert_allclose(gp["pos_embedding"], rp["pos_embedding"], **TOL)
    np.testing.assert_allclose(gx, rx, **TOL)
    assert not np.any(gp["pos_embedding"][T:])
    np.testing.assert_allclose(gp["pos_embedding"][:T],
                               ct.reshape(-1, T, 4).sum(0), **TOL)
    assert LAYER.init(KEY, tuple(-1 if i == 0 and len(shape) > 2 else d
                                 for i, d in enumerate(shape)))[0][-2:] == shape[-2:]


def test_vmap_dtype_and_in_a_model():
    _, p, _ = LAYER.init(KEY, (-1, 6, 4))
    x = randn((3, 6, 4), seed=4)
    batch, _ = LAYER.apply(p, (), x)
    per, _ = jax.vmap(lambda e: LAYER.apply(p, (), e))(x)            # (T, F) examples
    np.testing.assert_allclose(per, batch, **TOL)
    y32, _ = LAYER.apply(p, (), x.astype(jnp.float32))
    assert y32.dtype == jnp.float64                                  # promoted like Flax
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p)
    assert LAYER.apply(p32, (), x.astype(jnp.float32))[0].dtype == jnp.float32
    model = nn.serial(nn.Embedding(11, 4), nn.PositionEmbedding(8), nn.Dense(2))
    out, mp, ms = model.init(KEY, (-1, 5), )
    assert out == (-1, 5, 2)
    ids = jnp.asarray([[1, 2, 3, 4, 5], [0, 0, 0, 0, 10]], jnp.int32)
    y, _ = model.apply(mp, ms, ids)
    emb = mp[0]["embedding"][ids] + mp[1]["pos_embedding"][None, :5]
    np.testing.assert_allclose(y, emb @ mp[2]["w"] + mp[2]["b"][None, None], **TOL)
    assert "PositionEmbedding(8)" in nn.summary(model, (-1, 5), jnp.int32)


def test_bad_construction():
    with pytest.raises(ValueError, match=r"PositionEmbedding: max_length must be >= 1, got 0"):
        nn.PositionEmbedding(0)
    with pytest.raises(TypeError, match=r"PositionEmbedding: max_length must be an int, got "
                                        r"float"):
        nn.PositionEmbedding(8.0)
    with pytest.raises(TypeError, match=r"PositionEmbedding\(8\): embedding_init must be "
                                        r"callable"):
        nn.PositionEmbedding(8, embedding_init=0.02)
    with pytest.raises(TypeError, match=r"PositionEmbedding\(8\)"):
        nn.PositionEmbedding(8, dtype=jnp.int32)


@pytest.mark.parametrize("max_period, exc, match", [
    (0.0, ValueError, r"must be in \(0, inf\), got 0"),
    (-1.0, ValueError, r"must be in \(0, inf\), got -1"),
    (float("nan"), ValueError, r"must be finite, got nan"),
    (float("inf"), ValueError, r"must be finite, got inf"),
    (True, TypeError, r"must be a Python float, got bool"),
    ("100", TypeError, r"must be a Python float, got str"),
    (None, TypeError, r"must be a Python float, got NoneType"),
    (np.array([1.0, 2.0]), TypeError, r"must be a Python float, got ndarray"),
    (jnp.ones(2), TypeError, r"must be a Python float, got ArrayImpl"),
], ids=["zero", "negative", "nan", "inf", "bool", "str", "none", "numpy", "jax"])
def test_sinusoidal_max_period_is_checked_before_anything(max_period, exc, match):
    """A bad ``max_period`` raises the documented error naming it (not NumPy's or JAX's
    error from building the layer's name with it)."""
    with pytest.raises(exc, match=r"^SinusoidalPositions: max_period " + match):
        nn.SinusoidalPositions(max_period)


def test_sinusoidal_max_period_traced_or_a_concrete_scalar():
    """Traced (the layer built under jit or vmap): a TypeError naming max_period; a
    concrete NumPy or JAX scalar is its float, in the name too."""
    x = randn((2, 3, 4))
    for transform in (jax.jit, jax.vmap):
        with pytest.raises(TypeError, match=r"^SinusoidalPositions: max_period must be a "
                                            r"Python float, got .*Tracer"):
            transform(lambda p: nn.SinusoidalPositions(p).apply((), (), x)[0])(
                jnp.asarray([100.0]) if transform is jax.vmap else 100.0)
    want = nn.SinusoidalPositions(100.0).apply((), (), x)[0]
    for period in (100, np.float64(100.0), jnp.float32(100.0)):
        layer = nn.SinusoidalPositions(period)
        assert layer.name == "SinusoidalPositions(100.0)", layer.name
        np.testing.assert_allclose(layer.apply((), (), x)[0], want, **TOL)
    assert nn.SinusoidalPositions(np.float32(10000.0)).name == "SinusoidalPositions"


@pytest.mark.parametrize("jit", [False, True])
def test_errors_init_and_apply(jit):
    init = (lambda s: jax.jit(lambda k: LAYER.init(k, s)[1])(KEY)) if jit else \
        (lambda s: LAYER.init(KEY, s))
    apply = jax.jit(lambda p, x: LAYER.apply(p, (), x)) if jit else \
        (lambda p, x: LAYER.apply(p, (), x))
    p = {"pos_embedding": jnp.zeros((8, 4))}
    with pytest.raises(ValueError, match=r"PositionEmbedding\(8\): input_shape has shape "
                                         r"\(-1, 9, 4\): T = 9 steps but max_length is 8"):
        init((-1, 9, 4))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(8\): x has shape \(2, 9, 4\): "
                                         r"T = 9 steps but max_length is 8"):
        apply(p, jnp.ones((2, 9, 4)))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(8\): input_shape \(4,\) has rank "
                                         r"1, expected rank >= 2"):
        init((4,))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(8\): x has shape \(4,\), "
                                         r"expected rank >= 2"):
        apply(p, jnp.ones(4))
    with pytest.raises(ValueError, match=r"input_shape \(2, -1, 4\) has -1 at axis 1, a size "
                                         r"the layer needs"):
        init((2, -1, 4))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(8\): x has shape \(2, 3, 5\), "
                                         r"expected F = 4 features"):
        apply(p, jnp.ones((2, 3, 5)))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(8\): params\['pos_embedding'\] "
                                         r"has shape \(6, 4\), expected \(8, \*\)"):
        apply({"pos_embedding": jnp.zeros((6, 4))}, jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(8\): params must be a dict with "
                                         r"keys \['pos_embedding'\]"):
        apply({"embedding": jnp.zeros((8, 4))}, jnp.ones((2, 3, 4)))
    with pytest.raises(TypeError, match=r"PositionEmbedding\(8\): x must have a floating"):
        apply(p, jnp.ones((2, 3, 4), jnp.int32))


def test_decode_adds_the_rows_of_the_next_positions_chunk_by_chunk():
    """decode=True: state {"index"}; chunks fed in turn get the rows a whole-sequence call
    adds (eagerly and under jit, batched and one sequence); the params are the same."""
    dec = nn.PositionEmbedding(8, decode=True)
    out, p, s = dec.init(KEY, (-1, 5, 4))
    assert out == (-1, 5, 4) and set(s) == {"index"} and s["index"].dtype == jnp.int32
    assert int(s["index"]) == 0
    np.testing.assert_array_equal(p["pos_embedding"], LAYER.init(KEY, (-1, 5, 4))[1]
                                  ["pos_embedding"])
    step = jax.jit(dec.apply)
    for x in (randn((2, 6, 4), seed=5), randn((6, 4), seed=6)):
        want, _ = LAYER.apply(p, (), x)
        ys, state = [], s
        for a, b, f in ((0, 2, dec.apply), (2, 3, step), (3, 6, step)):
            y, state = f(p, state, x[..., a:b, :])
            ys.append(y)
        np.testing.assert_allclose(jnp.concatenate(ys, axis=-2), want, **TOL)
        assert int(state["index"]) == 6
