"""nn.TiedEmbedding: equal to a model written with ONE shared table (values, the table's
summed gradient, the body's state), shapes in init, summary rows, errors eager and under
jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.ops import reference as R
from tests.nn._models import randint

KEY = jax.random.PRNGKey(0)
V, F = 11, 6
BODY = nn.serial(nn.Dense(F, dtype=jnp.float64), nn.BatchNorm(0.9, dtype=jnp.float64),
                 nn.Tanh(), nn.LayerNorm(dtype=jnp.float64))
MODEL = nn.TiedEmbedding(V, F, BODY, dtype=jnp.float64)
IDS = randint((3, 5), V)


def _shared_table(params, state, ids, train):
    """The same model written by hand: one array E used twice (the twin ops)."""
    E = params["embedding"]
    h = R.embedding(ids, E)
    h, state = BODY.apply(params["body"], state, h, train=train)
    return R.matmul(h, E.T), state


@pytest.fixture(scope="module")
def model():
    return MODEL.init(KEY, (-1, 5))


def test_init_shapes_params_and_summary(model):
    out, params, state = model
    assert out == (-1, 5, V)
    assert params["embedding"].shape == (V, F) and params["embedding"].dtype == jnp.float64
    assert set(params) == {"embedding", "body"}
    assert nn.count_params(params) == V * F + nn.count_params(params["body"])
    text = nn.summary(MODEL, (-1, 5), input_dtype=jnp.int32)
    assert "Embedding(11, 6)" in text and "Dense(6)" in text and str(V * F) in text


@pytest.mark.parametrize("train", [False, True])
def test_values_state_and_gradients_equal_one_shared_table(model, train):
    _, params, state = model

    def loss(f, p):
        logits, s = f(p, state, IDS, train)
        return jnp.sum(jnp.sin(logits)), (logits, s)

    ours = lambda p, s, x, t: MODEL.apply(p, s, x, train=t)  # noqa: E731

    # the table's gradient is the sum of its two uses, each of which is non-zero
    def split_uses(E_in, E_out):
        h = R.embedding(IDS, E_in)
        h, _ = BODY.apply(params["body"], state, h, train=train)
        return jnp.sum(jnp.sin(R.matmul(h, E_out.T)))

    @jax.jit
    def run(p):                        # one program (eagerly: one compile per primitive)
        return (jax.value_and_grad(lambda p: loss(ours, p), has_aux=True)(p),
                jax.value_and_grad(lambda p: loss(_shared_table, p), has_aux=True)(p),
                jax.grad(split_uses, argnums=(0, 1))(p["embedding"], p["embedding"]))

    ((l1, (y1, s1)), g1), ((l2, (y2, s2)), g2), (g_in, g_out) = run(params)
    assert y1.shape == (3, 5, V)
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves((s1, g1)), jax.tree_util.tree_leaves((s2, g2))):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert np.abs(g_in).max() > 1e-3 and np.abs(g_out).max() > 1e-3
    np.testing.assert_allclose(g1["embedding"], g_in + g_out, rtol=1e-10, atol=1e-12)


def test_default_body_is_a_bigram_model():
    layer = nn.TiedEmbedding(V, F, dtype=jnp.float64)
    _, params, state = layer.init(KEY, (-1,))
    ids = jnp.arange(V, dtype=jnp.int32)
    logits, _ = layer.apply(params, state, ids)
    E = params["embedding"]
    np.testing.assert_allclose(logits, E @ E.T, rtol=1e-12)


def test_errors():
    with pytest.raises(TypeError, match="TiedEmbedding: body must be a Layer"):
        nn.TiedEmbedding(V, F, lambda x: x)
    with pytest.raises(ValueError, match="TiedEmbedding: num_embeddings"):
        nn.TiedEmbedding(0, F)
    wide = nn.TiedEmbedding(V, F, nn.Dense(F + 1))
    with pytest.raises(ValueError, match=r"body maps the embeddings \(\.\.\., 6\) to "
                                         r"\(-1, 5, 7\), expected a last axis of 6"):
        wide.init(KEY, (-1, 5))
    _, params, state = MODEL.init(KEY, (-1, 5))
    with pytest.raises(ValueError, match=r"params has entries \['embedding'\]"):
        MODEL.apply({"embedding": params["embedding"]}, state, IDS)
    for f in (MODEL.apply, jax.jit(MODEL.apply)):
        with pytest.raises(TypeError, match=r"TiedEmbedding\[embedding\] \(Embedding\(11, "
                                            r"6\)\): embedding: ids"):
            f(params, state, IDS.astype(jnp.float32))
