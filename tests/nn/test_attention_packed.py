"""nn.MultiHeadAttention(packed=True): input ``(x, segment_ids)``, sequences packed in a row
attend within their segment (the op's ``mask_fn=ops.same_segment``). A packed row equals
its sequences run one by one through the same layer (values and gradients of params and
``x``, float64, 1e-10), with rope, T5's bias, GQA and a window too; vmap over examples; the
residuals (the ids, no ``T x T`` mask); init, description; errors. An id that comes back
after another run starts a new sequence. CrossAttention(packed=True): a packed decoder row
reading a packed encoder row equals the pairs run alone."""
import math

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
BOUNDS = [(0, 5), (5, 9), (9, 12)]          # three sequences packed in a row of 12
SEG = jnp.asarray([[i for i, (a, z) in enumerate(BOUNDS) for _ in range(z - a)]] * 2,
                  jnp.int32)
KINDS = {"causal_rope_t5_gqa": dict(causal=True, num_kv_heads=2, rope=True,
                                    position_bias="t5", position_bias_buckets=(8, 6)),
         "bidirectional_alibi": dict(position_bias="alibi"),
         "causal_window_qk_norm": dict(causal=True, window=3, qk_norm=True)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_packed_row_equals_its_sequences_one_by_one(kind):
    """Relative positions (rope, ALiBi, T5's buckets) are the same inside a segment as in
    the sequence alone, so the packed row is exactly the sequences run separately."""
    packed = nn.MultiHeadAttention(4, packed=True, **KINDS[kind])
    alone = nn.MultiHeadAttention(4, **KINDS[kind])
    _, params, _ = numpy_init(packed, ((-1, 12, 8), (-1, 12)))
    if "rel_bias" in params:
        params["rel_bias"] = randn(params["rel_bias"].shape, seed=7)
    x = randn((2, 12, 8), seed=3)

    def both(p, x):
        def f_packed(p, x):
            return packed.apply(p, (), (x, SEG))[0]

        def f_alone(p, x):
            return jnp.concatenate([alone.apply(p, (), x[:, a:z])[0] for a, z in BOUNDS],
                                   axis=1)
        return [jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(f(p, x))), (0, 1))(p, x)
                for f in (f_packed, f_alone)]
    (y, g), (y_ref, g_ref) = jax.jit(both)(params, x)
    assert_close(y, y_ref, 1e-10, "values")
    if np.max(np.abs(g_ref[0]["bk"])) < 1e-12:   # q.bk the same in a row: round-off only
        for grads in (g, g_ref):
            assert np.max(np.abs(grads[0].pop("bk"))) < 1e-12
    assert_close(g, g_ref, 1e-10, "gradients (params, x)")
    mixed = jnp.sum(jnp.sin(alone.apply(params, (), x)[0]))
    assert abs(float(mixed - y)) > 1e-3          # without the ids the sequences mix


# an id that comes back after another run is a new sequence (nn.segment_positions): row 0
# holds runs 0:4, 4:7, 7:12 with ids 1, 2, 1; row 1 runs 0:3, 3:5, 5:9, 9:12 with 0, 5, 0, 5
REPEATED = jnp.asarray([[1] * 4 + [2] * 3 + [1] * 5, [0] * 3 + [5] * 2 + [0] * 4 + [5] * 3],
                       jnp.int32)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_a_repeated_id_starts_a_new_sequence(causal):
    """Rows whose ids come back after another run: each run is its own sequence, so the
    packed row equals its runs run one by one (values and the gradient in ``x``, eagerly
    and under jit), not the runs of an id attending each other."""
    packed = nn.MultiHeadAttention(4, causal=causal, packed=True, rope=True)
    alone = nn.MultiHeadAttention(4, causal=causal, rope=True)
    _, params, _ = numpy_init(packed, ((-1, 12, 8), (-1, 12)))
    x = randn((2, 12, 8), seed=5)

    def f_packed(x):
        return packed.apply(params, (), (x, REPEATED))[0]
    y, gx = f_packed(x), jax.grad(lambda x: jnp.sum(jnp.sin(f_packed(x))))(x)
    assert_close(jax.jit(f_packed)(x), y, 1e-12, "jit")
    each = jax.vmap(lambda xi, si: packed.apply(params, (), (xi, si))[0])(x, REPEATED)
    assert_close(each, y, 1e-12, "vmap over examples, (T,) ids")
    for n in range(2):
        row = np.asarray(REPEATED[n])
        edges = [0] + [t for t in range(1, 12) if row[t] != row[t - 1]] + [12]
        for a, z in zip(edges, edges[1:]):
            seq = x[n, a:z]
            assert_close(y[n, a:z], alone.apply(params, (), seq)[0], 1e-10, f"{n}, {a}:{z}")
            want = jax.grad(lambda s: jnp.sum(jnp.sin(alone.apply(params, (), s)[0])))(seq)
            assert_close(gx[n, a:z], want, 1e-10, f"dx of {n}, {a}:{z}")


def test_vmap_over_examples_equals_the_batch_and_init_takes_the_ids_shape():
    layer = nn.MultiHeadAttention(2, causal=True, packed=True)
    _, params, _ = layer.init(KEY, ((-1, 12, 4), (-1, 12)))
    x = randn((2, 12, 4), seed=4)
    batch = jax.jit(layer.apply)(params, (), (x, SEG))[0]
    each = jax.jit(jax.vmap(lambda xi, si: layer.apply(params, (), (xi, si))[0]))(x, SEG)
    assert_close(each, batch, 1e-12, "vmap over examples")
    assert "packed=True" in nn.describe(layer)
    assert "packed" not in nn.describe(nn.MultiHeadAttention(2))


def test_a_step_keeps_the_ids_not_a_t_by_t_mask():
    t = 512
    layer = nn.MultiHeadAttention(2, causal=True, packed=True, dtype=jnp.float32)
    _, params, _ = layer.init(KEY, ((1, t, 8), (1, t)))
    x = jax.ShapeDtypeStruct((1, t, 8), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, t), jnp.int32)
    res = nn.saved_residuals(lambda p, x, s: jnp.sum(layer.apply(p, (), (x, s))[0]),
                             params, x, ids)
    assert max(math.prod(r.shape) for r in res) < t * t, [str(r) for r in res]
    assert any(r.shape == (1, t) and r.dtype == jnp.int32 for r in res)


def test_packed_cross_attention_equals_each_pair_alone():
    """Decoder segment ``k`` (lengths 5, 4, 3) reads encoder segment ``k`` (lengths 3, 6, 2)
    only: the packed rows equal the three pairs run alone, values and gradients (params,
    ``x``, context)."""
    ctx_bounds = [(0, 3), (3, 9), (9, 11)]
    ctx_seg = jnp.asarray([[i for i, (a, z) in enumerate(ctx_bounds) for _ in range(z - a)]]
                          * 2, jnp.int32)
    packed = nn.CrossAttention(4, num_kv_heads=2, packed=True)
    alone = nn.CrossAttention(4, num_kv_heads=2)
    _, params, _ = numpy_init(packed, ((-1, 12, 8), (-1, 11, 6)))
    x, ctx = randn((2, 12, 8), seed=3), randn((2, 11, 6), seed=4)

    def both(p, x, c):
        def f_packed(p, x, c):
            return packed.apply(p, (), (x, c, (SEG, ctx_seg)))[0]

        def f_alone(p, x, c):
            return jnp.concatenate([alone.apply(p, (), (x[:, a:z], c[:, e:f]))[0]
                                    for (a, z), (e, f) in zip(BOUNDS, ctx_bounds)], axis=1)
        return [jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(f(*a))), (0, 1, 2))(p, x, c)
                for f in (f_packed, f_alone)]
    (y, g), (y_ref, g_ref) = jax.jit(both)(params, x, ctx)
    assert_close(y, y_ref, 1e-10, "values")
    for grads in (g, g_ref):   # q.bk is the same in every logit of a row: round-off only
        assert np.max(np.abs(grads[0].pop("bk"))) < 1e-12
    assert_close(g, g_ref, 1e-10, "gradients (params, x, context)")
    with pytest.raises(TypeError, match=r"CrossAttention\(4\): packed=True takes \(x, "
                                        r"context, \(x_ids, context_ids\)\): a pair"):
        packed.apply(params, (), (x, ctx, SEG))
    with pytest.raises(ValueError, match=r"CrossAttention\(4\): context_ids has shape "
                                         r"\(2, 12\), expected \(2, 11\)"):
        packed.apply(params, (), (x, ctx, (SEG, SEG)))
    with pytest.raises(ValueError, match=r"CrossAttention\(2\): packed=True .* decode=True"):
        nn.CrossAttention(2, decode=True, packed=True)


def test_errors():
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): packed=True .* decode=True"):
        nn.MultiHeadAttention(2, causal=True, decode=True, packed=True)
    with pytest.raises(TypeError, match=r"MultiHeadAttention\(2\): packed must be a bool"):
        nn.MultiHeadAttention(2, packed=1)
    layer = nn.MultiHeadAttention(2, packed=True)
    _, p, s = layer.init(KEY, (-1, 12, 4))
    x = randn((2, 12, 4))
    raise_eagerly_and_under_jit(layer, s, [
        (p, x, ValueError, r"MultiHeadAttention\(2\): packed=True takes \(x, segment_ids\) "
                           r"with integer segment ids \(N, T\) .* got no ids"),
        (p, (x, SEG.astype(jnp.float64)), TypeError,
         r"MultiHeadAttention\(2\): segment_ids must have an integer dtype"),
        (p, (x, SEG[:, :11]), ValueError,
         r"MultiHeadAttention\(2\): segment_ids has shape \(2, 11\), expected \(2, 12\)"),
    ])
