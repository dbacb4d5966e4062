"""Positions of sequences packed in a row: nn.segment_positions against a loop over the
ids; PositionEmbedding and SinusoidalPositions with ``packed=True`` add to each packed
sequence what the layer adds to it alone (values, and the table's gradient, float64);
a packed stack with causal packed attention equals its sequences run alone; jit, vmap
over examples; init shapes; errors eagerly and under jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import numpy_init, randn
from tests.nn.test_attention_layer import raise_eagerly_and_under_jit

jax.config.update("jax_enable_x64", True)

KEY = jax.random.PRNGKey(0)
T, F = 12, 4
# two rows of sequences: lengths 5, 4, 3 and 7, 5 (ids are arbitrary labels; 0 is padding)
IDS = np.asarray([[3] * 5 + [1] * 4 + [0] * 3, [2] * 7 + [0] * 5], np.int32)
# ids that come back after another run: new sequences (lengths 5, 4, 3 and 4, 3, 5)
REPEATED = np.asarray([[3] * 5 + [1] * 4 + [3] * 3, [2] * 4 + [0] * 3 + [2] * 5], np.int32)
LAYERS = {"learned": lambda **kw: nn.PositionEmbedding(16, **kw),
          "sinusoidal": lambda **kw: nn.SinusoidalPositions(100.0, **kw)}


def loop_positions(ids):
    """T5X's segment positions by a loop: the step count since the id last changed."""
    ids = np.asarray(ids)
    out = np.zeros(ids.shape, np.int64)
    for index in np.ndindex(ids.shape[:-1]):
        row, pos = ids[index], 0
        for t in range(ids.shape[-1]):
            pos = 0 if t == 0 or row[t] != row[t - 1] else pos + 1
            out[index + (t,)] = pos
    return out


def runs(ids_row):
    """``(start, stop)`` of each run of equal ids in a row."""
    edges = [0] + [t for t in range(1, len(ids_row)) if ids_row[t] != ids_row[t - 1]]
    return list(zip(edges, edges[1:] + [len(ids_row)]))


# -------------------------------------------------------------- segment_positions
def test_segment_positions_by_hand_and_against_a_loop():
    np.testing.assert_array_equal(nn.segment_positions(jnp.asarray([7, 7, 7, 2, 2, 0, 0, 0])),
                                  [0, 1, 2, 0, 1, 0, 1, 2])
    # an id that comes back after another run starts a new sequence
    np.testing.assert_array_equal(nn.segment_positions(jnp.asarray([1, 1, 2, 1, 1])),
                                  [0, 1, 0, 0, 1])
    rng = np.random.default_rng(0)
    for shape in [(1,), (17,), (3, 17), (2, 3, 9)]:
        ids = rng.integers(0, 3, shape).astype(np.int32)
        got = jax.jit(nn.segment_positions)(ids)
        assert got.dtype == jnp.int32 and got.shape == shape
        np.testing.assert_array_equal(got, loop_positions(ids))
    np.testing.assert_array_equal(nn.segment_positions(jnp.asarray(IDS, jnp.uint8)),
                                  loop_positions(IDS))


def test_segment_positions_errors():
    with pytest.raises(TypeError, match=r"segment_positions: segment_ids must .*integer"):
        nn.segment_positions(jnp.zeros((4,)))
    with pytest.raises(ValueError, match=r"segment_positions: segment_ids has shape \(\)"):
        nn.segment_positions(jnp.int32(3))


# -------------------------------------------------------------------- the layers
@pytest.mark.parametrize("kind", list(LAYERS))
def test_packed_rows_add_what_each_sequence_gets_alone(kind):
    """Values, and the gradient of ``sum(sin(y))`` in the table and in ``x``: each run of
    a packed row equals the layer on that run alone (the table's gradient is the sum of
    the runs' gradients)."""
    packed, alone = LAYERS[kind](packed=True), LAYERS[kind]()
    _, params, _ = numpy_init(packed, (-1, T, F))
    x = randn((2, T, F), seed=1)

    def loss(p, x):
        return jnp.sum(jnp.sin(packed.apply(p, (), (x, IDS))[0]))
    y, _ = jax.jit(packed.apply)(params, (), (x, IDS))
    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    want_gp = jax.tree_util.tree_map(jnp.zeros_like, params)
    for n in range(2):
        for a, b in runs(IDS[n]):
            seq = x[n, a:b]
            assert_close(y[n, a:b], alone.apply(params, (), seq)[0], 1e-12, f"run {a}:{b}")
            sp, sx = jax.grad(lambda p, s: jnp.sum(jnp.sin(alone.apply(p, (), s)[0])),
                              argnums=(0, 1))(params, seq)
            assert_close(gx[n, a:b], sx, 1e-12, f"dx of run {a}:{b}")
            want_gp = jax.tree_util.tree_map(jnp.add, want_gp, sp)
    assert_close(gp, want_gp, 1e-12, "d params")
    # the positions matter: unpacked, the second run of a row gets other rows/encodings
    assert float(jnp.max(jnp.abs(alone.apply(params, (), x)[0] - y))) > 1e-3


@pytest.mark.parametrize("kind", list(LAYERS))
def test_vmap_over_examples_init_shapes_and_description(kind):
    layer = LAYERS[kind](packed=True)
    out, params, state = layer.init(KEY, (-1, T, F))
    assert out == (-1, T, F) and state == ()
    assert layer.init(KEY, ((-1, T, F), (-1, T)))[0] == (-1, T, F)
    assert layer.init(KEY, ((T, F), (T,)))[0] == (T, F)
    x = randn((2, T, F), seed=2)
    batch = layer.apply(params, state, (x, IDS))[0]
    each = jax.jit(jax.vmap(lambda xi, ii: layer.apply(params, state, (xi, ii))[0]))(x, IDS)
    assert_close(each, batch, 1e-12, "vmap over examples")
    assert "packed=True" in nn.describe(layer)


@pytest.mark.parametrize("ids", [IDS, REPEATED], ids=["distinct", "repeated"])
def test_a_packed_stack_equals_its_sequences_alone(ids):
    """Learned positions, then causal packed attention with a residual, over ``(x, ids)``
    (side inputs kept by KeepRest): each packed sequence's outputs are those of the same
    layers on it alone, also where an id comes back after another run (the positions
    and the attention agree that it starts a new sequence)."""
    packed = nn.serial(nn.KeepRest(nn.PositionEmbedding(16, packed=True)),
                       nn.KeepRest(nn.MultiHeadAttention(2, causal=True, packed=True),
                                   residual=True), nn.DropRest())
    alone = nn.serial(nn.PositionEmbedding(16),
                      nn.Residual(nn.MultiHeadAttention(2, causal=True)))
    _, params, state = numpy_init(packed, ((-1, T, F), (-1, T)))
    x = randn((2, T, F), seed=3)
    y = jax.jit(packed.apply)(params, state, (x, ids))[0]
    for n in range(2):
        for a, b in runs(ids[n]):
            want = alone.apply(params[:2], state[:2], x[n, a:b])[0]
            assert_close(y[n, a:b], want, 1e-10, f"row {n} run {a}:{b}")


@pytest.mark.parametrize("kind", list(LAYERS))
def test_errors_eagerly_and_under_jit(kind):
    layer = LAYERS[kind](packed=True)
    _, params, _ = layer.init(KEY, (-1, T, F))
    name = nn.describe(layer).split("(")[0]
    x = jnp.zeros((2, T, F))
    raise_eagerly_and_under_jit(layer, (), [
        (params, x, ValueError,
         rf"{name}.*packed=True takes \(x, segment_ids\) with integer segment ids"),
        (params, (x, jnp.zeros((2, T))), TypeError, rf"{name}.*segment_ids must .*integer"),
        (params, (x, jnp.zeros((2, T - 1), jnp.int32)), ValueError,
         rf"{name}.*segment_ids has shape \(2, {T - 1}\)"),
        # x itself is checked as without packed=True, before the ids are read against it
        (params, (np.zeros((2, T, F)).tolist(), IDS), TypeError,
         rf"{name}.*: x must be an array, got list"),
        *([(params, (jnp.zeros((2, T, F), jnp.int32), IDS), TypeError,
            rf"{name}.*: x must have a floating dtype")] if kind == "sinusoidal" else [])])
    with pytest.raises(ValueError, match=rf"{name}.*packed=True .* decode=True"):
        LAYERS[kind](packed=True, decode=True)
