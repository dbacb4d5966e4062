"""Embedding layer: shape agreement over ids of any rank, default initialisation, values
and gradients in a model against the reference twins, errors with the layer's name."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from tests.nn._models import abstract_init, jit_init, randint, struct, trace_apply

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)
V, F = 11, 4


@pytest.mark.parametrize("in_shape", [(-1, 5), (5, -1), (-1,), (), (2, 3, 4)])
@pytest.mark.parametrize("batch", [1, 3])
def test_shape_agreement(in_shape, batch):
    layer = nn.Embedding(V, F, dtype=F64)
    out_shape, params, state = abstract_init(layer, in_shape)
    assert out_shape == in_shape + (F,) and state == ()
    concrete = tuple(batch if d == -1 else d for d in in_shape)
    y, _ = trace_apply(layer, params, state, struct(concrete, jnp.int32))
    assert y.shape == concrete + (F,) and y.dtype == F64


def test_default_init_is_flax_scale_and_values_are_rows():
    _, p, _ = jit_init(nn.Embedding(4000, 16), (-1, 3), KEY)
    table = np.asarray(p["embedding"])
    assert table.shape == (4000, 16) and table.dtype == np.float64       # dtype=None, x64
    assert abs(table.var() * 16 - 1.0) < 0.05 and abs(table.mean()) < 0.01   # N(0, 1/F)
    ids = np.array([[3, 0, 3], [3999, 7, 0]])
    y, _ = nn.Embedding(4000, 16).apply(p, (), ids)
    np.testing.assert_array_equal(y, table[ids])
    _, p, _ = jit_init(nn.Embedding(V, F, embedding_init=nn.initializers.ones,
                                    dtype=jnp.float32), (2,), KEY)
    np.testing.assert_array_equal(p["embedding"], np.ones((V, F), np.float32))


def test_model_gradients_equal_the_reference():
    """Embedding -> Dense on token features (N, T, F): grads == autodiff of the twins;
    repeated tokens accumulate in the table's gradient."""
    model = nn.serial(nn.Embedding(V, F, dtype=F64), nn.Dense(3, dtype=F64))
    _, params, state = jit_init(model, (-1, 6), KEY)
    ids = randint((5, 6), V, seed=1)

    def ref(p, ids):
        return R.affine(R.embedding(ids, p[0]["embedding"]), p[1]["w"], p[1]["b"])

    def loss(f):
        return lambda p: jnp.sum(jnp.sin(f(p, ids)))

    got, want = jax.jit(lambda p: [jax.grad(loss(f))(p) for f in
                                   (lambda p, i: model.apply(p, state, i)[0], ref)])(params)
    assert_close(got, want, 1e-10, "model grads")
    unused = np.setdiff1d(np.arange(V), np.asarray(ids))
    assert not np.any(np.asarray(got[0]["embedding"])[unused])


@pytest.mark.parametrize("params, ids, exc, match, eager_only", [
    ({"embedding": np.ones((V, F))}, np.zeros((2, 3)), TypeError,
     rf"^Embedding\({V}, {F}\): embedding: ids must have an integer dtype", False),
    ({"embedding": np.ones((V, F))}, np.array([0, V]), ValueError,
     rf"^Embedding\({V}, {F}\): embedding: ids hold {V} \(at index \(1,\)\), expected ids "
     rf"in \[0, {V}\)", True),
    ({"embedding": np.ones((V + 1, F))}, np.array([0]), ValueError,
     rf"^Embedding\({V}, {F}\): params\['embedding'\] has shape \({V + 1}, {F}\), expected "
     rf"\({V}, {F}\)", False),
    ({"table": np.ones((V, F))}, np.array([0]), ValueError,
     rf"^Embedding\({V}, {F}\): params must be a dict with keys \['embedding'\]", False),
])
def test_apply_errors(params, ids, exc, match, eager_only):
    layer = nn.Embedding(V, F)
    with pytest.raises(exc, match=match):
        layer.apply(params, (), ids)
    if not eager_only:
        with pytest.raises(exc, match=match):
            jax.jit(layer.apply)(params, (), ids)


def test_construction_errors():
    with pytest.raises(ValueError, match=r"Embedding: num_embeddings must be >= 1, got 0"):
        nn.Embedding(0, 3)
    with pytest.raises(TypeError, match=r"Embedding: features must be an int, got float 3.0"):
        nn.Embedding(5, 3.0)
    with pytest.raises(TypeError, match=r"Embedding\(5, 3\): embedding_init must be callable"):
        nn.Embedding(5, 3, embedding_init="normal")
    with pytest.raises(TypeError, match=r"Embedding\(5, 3\): dtype must be a floating dtype"):
        nn.Embedding(5, 3, dtype=jnp.int32)
