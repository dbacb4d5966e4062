"""nn.MultiHeadAttention(position_bias=...): ALiBi (Press et al. 2022) and T5's bucketed
relative position biases (Raffel et al. 2020) against plain attention with the bias built
here from the papers' formulas (values and gradients, ``rel_bias``'s included, float64,
1e-10); ALiBi's slopes; T5's buckets by hand; decoding with the key/value cache, token by
token and in chunks, equals the full causal pass; jit, vmap over examples, training
steps; params checks, init, description; errors."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, train
from funcnet.gradcheck import assert_close
from funcnet.nn import position_bias
from funcnet.ops import reference as R
from tests.nn._models import numpy_init, randint, randn
from tests.nn.test_attention_decode import decode_in_chunks
from tests.nn.test_attention_gqa import NEG
from tests.nn.test_attention_layer import raise_eagerly_and_under_jit
from tests.ops.test_attention_window import _band

jax.config.update("jax_enable_x64", True)

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)


# ------------------------------------------------------------ the papers' formulas
def paper_slopes(n):
    """ALiBi's slopes as the authors' ``get_slopes`` (Press et al. 2022; BLOOM): a
    geometric sequence from ``2^(-8/n)`` with that ratio for ``n`` a power of 2; else the
    closest power of 2 ``c`` below, then every other slope of ``2c`` heads."""
    def power_of_2(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return np.asarray([start * start ** i for i in range(n)])
    if math.log2(n).is_integer():
        return power_of_2(n)
    c = 2 ** math.floor(math.log2(n))
    return np.concatenate([power_of_2(c), paper_slopes(2 * c)[0::2][:n - c]])


def hf_bucket(rel, bidirectional, num_buckets, max_distance):
    """T5's ``_relative_position_bucket`` (Mesh TensorFlow, HF) of ``rel = key - query``
    positions, in float64. The ``1e-10`` inside the log is flaxformer's epsilon: XLA's
    float64 ``log(8) / log(16)`` falls just below ``3/4``, which would put a distance of
    64 (``8 + 8 * 3/4 = 14`` exactly) into bucket 13."""
    rel = jnp.asarray(rel, jnp.int32)
    ret = jnp.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        ret = ret + (rel > 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(rel)
    else:
        n = -jnp.minimum(rel, 0)
    max_exact = num_buckets // 2
    large = max_exact + (jnp.log(n.astype(F64) / max_exact + 1e-10)
                         / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return ret + jnp.where(n < max_exact, n, large)


def reference_bias(kind, table, t, s, causal, heads, buckets=(32, 128), start=0):
    """``(1, heads, t, s)`` for queries at ``start + i`` and keys at ``j``: ALiBi's
    ``-m (i - j)`` (causal, the paper's) or ``-m |i - j|``; T5's ``table[bucket(j - i)]``."""
    i, j = start + np.arange(t)[:, None], np.arange(s)[None, :]
    if kind == "alibi":
        d = (i - j) if causal else np.abs(i - j)
        return jnp.asarray(-np.asarray(paper_slopes(heads))[:, None, None] * d[None])[None]
    b = hf_bucket(j - i, not causal, *buckets)
    return table[b].transpose(2, 0, 1)[None]


def plain_biased(params, x, bias, mask, *, heads, kv, causal, rope=None):
    """Grouped-query self-attention in plain JAX with ``bias`` added to the scaled logits
    (``q``, ``k`` rotated by the twin of ops.rotary_embedding with ``rope``)."""
    b = {p: params.get(f"b{p}", jnp.zeros((params[f"w{p}"].shape[1],), F64)) for p in "qkvo"}
    q, k, v = (x @ params[f"w{p}"] + b[p][None, None, :] for p in "qkv")
    (n, t, d), dh = q.shape, q.shape[-1] // heads
    q = q.reshape(n, t, heads, dh)
    k, v = (a.reshape(n, t, kv, dh) for a in (k, v))
    if rope is not None:
        q, k = (R.rotary_embedding(a, None, **rope) for a in (q, k))
    k, v = (jnp.repeat(a, heads // kv, axis=2) for a in (k, v))
    logits = jnp.einsum("nthd,nshd->nhts", q, k) / np.sqrt(dh) + bias
    allowed = jnp.ones((1, 1, t, t), bool) if mask is None else mask
    if causal:
        allowed = allowed & jnp.tril(jnp.ones((t, t), bool))[None, None]
    p = jax.nn.softmax(jnp.where(allowed, logits, NEG), axis=-1)
    o = jnp.einsum("nhts,nshd->nthd", p, v).reshape(n, t, d)
    return o @ params["wo"] + b["o"][None, None, :]


# -------------------------------------------------------------- slopes and buckets
def test_alibi_slopes_follow_the_paper():
    np.testing.assert_array_equal(position_bias.alibi_slopes(8), 2.0 ** -np.arange(1, 9))
    twelve = np.concatenate([2.0 ** -np.arange(1, 9), 2.0 ** -(np.arange(1, 9, 2) / 2)])
    assert_close(position_bias.alibi_slopes(12), twelve, 1e-15, "N = 12")
    assert_close(paper_slopes(12), twelve, 1e-15, "the authors' get_slopes")
    for n in (1, 2, 3, 5, 6, 16, 20, 24, 32):
        assert_close(position_bias.alibi_slopes(n), paper_slopes(n), 1e-15, f"N = {n}")


# relative position (key - query) -> bucket, 32 buckets, max distance 128, by hand:
# bidirectional: 16 per sign (16 more for keys after the query), exact below 8, then
# 8 + floor(log(n/8) / log(16) * 8): n = 20 -> 8 + 2 = 10, n = 64 -> 8 + 6 = 14, n >= 128 -> 15;
# unidirectional: n = max(-r, 0), exact below 16, then 16 + floor(log(n/16) / log(8) * 16):
# n = 20 -> 17, n = 64 -> 16 + 10 = 26, n >= 128 -> 31.
BY_HAND = {0: (0, 0), 1: (17, 0), -1: (1, 1), 7: (23, 0), -7: (7, 7), 8: (24, 0),
           -8: (8, 8), 20: (26, 0), -20: (10, 17), 64: (30, 0), -64: (14, 26),
           200: (31, 0), -200: (15, 31)}


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bidirectional", "causal"])
def test_t5_buckets_by_hand(bidirectional):
    rel = jnp.asarray(list(BY_HAND), jnp.int32)
    want = np.asarray([v[0 if bidirectional else 1] for v in BY_HAND.values()])
    np.testing.assert_array_equal(hf_bucket(rel, bidirectional, 32, 128), want)
    got = position_bias.relative_position_bucket(rel, bidirectional=bidirectional,
                                                 num_buckets=32, max_distance=128)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("spec", [(32, 128), (8, 16), (10, 50), (64, 512), (5, 7)])
@pytest.mark.parametrize("bidirectional", [True, False], ids=["bidirectional", "causal"])
def test_t5_buckets_equal_the_formula_at_every_distance(spec, bidirectional):
    rel = jnp.arange(-2 * spec[1] - 3, 2 * spec[1] + 4, dtype=jnp.int32)
    got = position_bias.relative_position_bucket(rel, bidirectional=bidirectional,
                                                 num_buckets=spec[0], max_distance=spec[1])
    np.testing.assert_array_equal(got, hf_bucket(rel, bidirectional, *spec))


# ------------------------------------------------------ the layer against plain JAX
CASES = {  # kind, heads, kv, causal, rope, buckets
    "alibi_causal": ("alibi", 8, 8, True, None, (32, 128)),
    "alibi_bidirectional_12_heads_gqa": ("alibi", 12, 4, False, None, (32, 128)),
    "t5_causal_gqa_rope": ("t5", 4, 2, True, {"base": 100.0}, (32, 128)),
    "t5_bidirectional": ("t5", 4, 4, False, None, (32, 128)),
    "t5_bidirectional_8_buckets": ("t5", 2, 1, False, None, (8, 16)),
}
T = 24   # distances up to 23: T5's logarithmic buckets, and past max_distance with (8, 16)


@functools.lru_cache(maxsize=None)
def _vs_plain(case):
    kind, heads, kv, causal, rope, buckets = CASES[case]
    layer = nn.MultiHeadAttention(heads, num_kv_heads=kv, qkv_features=2 * heads,
                                  out_features=5, causal=causal, rope=rope or False,
                                  position_bias=kind, position_bias_buckets=buckets)
    plain = nn.MultiHeadAttention(heads, num_kv_heads=kv, qkv_features=2 * heads,
                                  out_features=5, causal=causal, rope=rope or False)

    def theirs(p, x, m):
        bias = reference_bias(kind, p.get("rel_bias"), T, T, causal, heads, buckets)
        return plain_biased(p, x, bias, m, heads=heads, kv=kv, causal=causal, rope=rope)

    def both(p, x, m):
        return [jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(f(p, x, m))), (0, 1))(p, x)
                for f in (lambda p, x, m: layer.apply(p, (), (x, m))[0], theirs)]
    return layer, jax.jit(both), jax.jit(lambda p, x, m: plain.apply(p, (), (x, m))[0])


@pytest.mark.parametrize("case", list(CASES))
def test_equals_plain_attention_with_the_papers_bias(case):
    layer, run, run_plain = _vs_plain(case)
    _, params, _ = numpy_init(layer, ((-1, T, 6), (-1, 1, 1, T)))
    if "rel_bias" in params:     # a table with every bucket different
        params["rel_bias"] = randn(params["rel_bias"].shape, seed=7)
    x = randn((2, T, 6), seed=2)
    mask = jnp.asarray(np.arange(T) != 5).reshape(1, 1, 1, T).repeat(2, 0)
    (y, g), (y_ref, g_ref) = run(params, x, mask)
    assert_close(y, y_ref, 1e-10, "values")
    if CASES[case][4] is None:    # q.bk is the same in every logit of a row (no rope)
        for grads in (g, g_ref):
            assert np.max(np.abs(grads[0].pop("bk"))) < 1e-13
    assert_close(g, g_ref, 1e-10, "gradients (params incl. rel_bias, x)")
    if "rel_bias" in params:
        assert float(jnp.max(jnp.abs(g[0]["rel_bias"]))) > 1e-3
    # the bias matters: the layer without it computes something else
    same = {k: v for k, v in params.items() if k != "rel_bias"}
    assert float(jnp.max(jnp.abs(jnp.sum(jnp.sin(run_plain(same, x, mask))) - y))) > 1e-3


# ------------------------------------------------------------------------- decoding
V, D, L, N = 11, 16, 9, 2
DECODE = {"alibi_rope": dict(position_bias="alibi", rope={"base": 100.0}),
          # 8 causal buckets: exact below 4, logarithmic to 6, one bucket beyond: L = 9
          "t5": dict(position_bias="t5", position_bias_buckets=(8, 6)),
          # W < L: a ring buffer of the last W positions (chunks of 4 are longer than it);
          # the full pass is the op's window with the slopes / the bias per block
          "alibi_window": dict(position_bias="alibi", window=3),
          "t5_window_rope": dict(position_bias="t5", position_bias_buckets=(8, 6), window=3,
                                 rope={"base": 100.0})}


def gpt(kind, decode=False):
    attn = nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(
        4, num_kv_heads=2, causal=True, decode=decode, **DECODE[kind]))
    mlp = nn.serial(nn.LayerNorm(), nn.Dense(32), nn.GELU(), nn.Dense(D))
    block = nn.serial(nn.Residual(attn), nn.Residual(mlp))
    return nn.TiedEmbedding(V, D, nn.serial(nn.Repeat(block, 2), nn.LayerNorm()))


@functools.lru_cache(maxsize=None)
def _models(kind):
    model, dec = gpt(kind), gpt(kind, decode=True)
    _, params, state = numpy_init(model, (-1, L))
    _, _, cache = dec.init(KEY, (N, L))
    ids = randint((N, L), V, seed=1)
    want, _ = jax.jit(model.apply)(params, state, ids)
    return params, cache, ids, want, jax.jit(dec.apply), state


@pytest.mark.parametrize("chunks", [[1] * L, [4, 1, 3, 1]], ids=["token_by_token", "chunks"])
@pytest.mark.parametrize("kind", list(DECODE))
def test_decoding_with_the_cache_equals_the_full_causal_pass(kind, chunks):
    params, cache, ids, want, step, _ = _models(kind)
    got, last = decode_in_chunks(step, params, cache, ids, chunks)
    assert_close(got, want, 1e-10, "decoded logits")
    assert np.all(last[0][0][1]["index"] == L)   # Repeat's attention states


@pytest.mark.parametrize("kind", list(DECODE))
def test_gradients_through_the_cache_equal_the_full_causal_pass(kind):
    """A prompt decoded from the empty cache is differentiable like the training pass: the
    op's bias_fn/mask_fn of the positions give ``rel_bias`` (and every param) the full
    causal pass's gradient; the int positions get none."""
    params, cache, ids, _, _, state = _models(kind)
    model, dec = gpt(kind), gpt(kind, decode=True)

    def loss(apply, p, *state):
        return jnp.sum(jnp.sin(apply(p, *state, ids)[0]))
    g = jax.jit(jax.grad(functools.partial(loss, dec.apply)))(params, cache)
    want = jax.jit(jax.grad(functools.partial(loss, model.apply)))(params, state)
    def no_bk(grads):   # q.bk is the same in every logit of a row: round-off only
        return jax.tree_util.tree_map_with_path(
            lambda path, a: jnp.where("bk" in jax.tree_util.keystr(path), 0.0, a), grads)
    assert_close(no_bk(g), no_bk(want), 1e-10, "gradients through decode")
    tables = [a for path, a in jax.tree_util.tree_leaves_with_path(g)
              if "rel_bias" in jax.tree_util.keystr(path)]
    assert len(tables) == ("t5" in kind)
    assert all(float(jnp.min(jnp.max(jnp.abs(a), axis=(1, 2)))) > 1e-3 for a in tables)


@pytest.mark.parametrize("window", [None, 256], ids=["causal", "ring"])
@pytest.mark.parametrize("kind", ["alibi", "t5"])
def test_a_long_prompt_builds_no_t_by_l_bias_or_mask(kind, window):
    """Prefill of ``t = L = 1024`` positions: the compiled program's temporaries stay
    under half the ``(1, heads, t, L)`` float32 bias that a dense bias needs (measured:
    2.2-3.8 MiB here, 17.9-22.4 MiB with the bias and the mask built densely)."""
    t, heads = 1024, 2
    layer = nn.MultiHeadAttention(heads, causal=True, position_bias=kind, window=window,
                                  decode=True, dtype=jnp.float32)
    _, params, cache = layer.init(KEY, (1, t, 8))
    x = jax.ShapeDtypeStruct((1, t, 8), jnp.float32)
    stats = jax.jit(layer.apply).lower(params, cache, x).compile().memory_analysis()
    assert stats.temp_size_in_bytes < heads * t * t * 4 // 2, stats.temp_size_in_bytes


# ---------------------------------------------------------- jit, vmap and training
@pytest.mark.parametrize("kind", ["alibi", "t5"])
def test_vmap_over_examples_and_per_example_grads_equal_the_batch(kind):
    layer = nn.MultiHeadAttention(2, position_bias=kind, position_bias_buckets=(32, 128))
    _, params, _ = numpy_init(layer, (-1, 6, 4))
    x = randn((3, 6, 4), seed=4)
    batch = jax.jit(layer.apply)(params, (), x)[0]
    assert_close(layer.apply(params, (), x)[0], batch, 1e-12, "eager vs jit")
    each = jax.jit(jax.vmap(lambda xi: layer.apply(params, (), xi)[0]))(x)
    assert_close(each, batch, 1e-12, "vmap over examples")

    def loss(p, x):
        return jnp.sum(layer.apply(p, (), x)[0] ** 2)
    per = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, x)
    summed, whole = jax.tree_util.tree_map(lambda a: jnp.sum(a, axis=0), per), jax.grad(loss)(
        params, x)
    for grads in (summed, whole):   # bk's gradient is 0 (rounding)
        assert np.max(np.abs(grads.pop("bk"))) < 1e-12
    assert_close(summed, whole, 1e-10, "per-example grads")


def test_training_steps_change_rel_bias():
    model = nn.serial(nn.MultiHeadAttention(2, causal=True, position_bias="t5",
                                            position_bias_buckets=(8, 6)), nn.Dense(3))
    _, params, state = model.init(KEY, (-1, 7, 4))
    x, y = randn((4, 7, 4), seed=5), randn((4, 7, 3), seed=6)
    step = jax.jit(train.train_step(model, optim.adam(1e-2),
                                    lambda out, y: jnp.mean((out - y) ** 2)))
    opt_state, losses = optim.adam(1e-2).init(params), []
    new = params
    for _ in range(5):
        new, state, opt_state, metrics = step(new, state, opt_state, x, y)
        losses.append(float(metrics["loss"]))
    assert float(jnp.max(jnp.abs(new[0]["rel_bias"] - params[0]["rel_bias"]))) > 1e-3
    assert losses[-1] < losses[0], losses


# ------------------------------------------------- params, init, description, errors
def test_init_params_and_description():
    kw = dict(num_kv_heads=2, causal=True, dtype=jnp.float32)
    _, plain, _ = nn.MultiHeadAttention(4, **kw).init(KEY, (-1, 5, 8))
    _, alibi, _ = nn.MultiHeadAttention(4, position_bias="alibi", **kw).init(KEY, (-1, 5, 8))
    _, t5, _ = nn.MultiHeadAttention(4, position_bias="t5", **kw).init(KEY, (-1, 5, 8))
    assert set(alibi) == set(plain) and set(t5) == set(plain) | {"rel_bias"}
    for p in (alibi, t5):      # the projections are drawn as without a position bias
        assert all(np.array_equal(p[k], plain[k]) for k in plain)
    table = t5["rel_bias"]     # Glorot uniform (Mesh TF, T5X): U(+-sqrt(6 / (32 + 4)))
    assert table.shape == (32, 4) and table.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(table))) <= math.sqrt(6 / 36) and float(jnp.std(table)) > 0.1
    text = nn.describe(nn.MultiHeadAttention(2, position_bias="t5",
                                             position_bias_buckets=(16, 64)))
    assert "position_bias='t5'" in text and "position_bias_buckets=(16, 64)" in text
    assert "position_bias" not in nn.describe(nn.MultiHeadAttention(2))


def test_params_of_another_shape_are_refused_eagerly_and_under_jit():
    layer = nn.MultiHeadAttention(2, position_bias="t5")
    _, p, s = numpy_init(layer, (-1, 5, 4))
    x = randn((2, 5, 4))
    raise_eagerly_and_under_jit(layer, s, [
        ({k: v for k, v in p.items() if k != "rel_bias"}, x, ValueError,
         r"MultiHeadAttention\(2\): params must be a dict with keys \['bk', 'bo', 'bq', "
         r"'bv', 'rel_bias', "),
        (dict(p, rel_bias=p["rel_bias"][:31]), x, ValueError,
         r"MultiHeadAttention\(2\): params\['rel_bias'\] has shape \(31, 2\), expected "
         r"\(32, 2\)"),
    ])
    alibi = nn.MultiHeadAttention(2, position_bias="alibi")
    raise_eagerly_and_under_jit(alibi, s, [
        (p, x, ValueError, r"params must be a dict with keys \['bk', 'bo', 'bq', 'bv', 'wk'")])


@pytest.mark.parametrize("kind, causal", [("alibi", True), ("t5", False)],
                         ids=["alibi_causal", "longt5_local"])
def test_with_a_window_equals_the_papers_bias_in_the_band(kind, causal):
    """``position_bias=kind, window=W``: the op's slopes (ALiBi) or the T5 bias read per
    block of the window (LongT5's local attention, bidirectional) equal plain attention
    with the paper's bias and the band in the mask (values and gradients, ``rel_bias``'s
    too)."""
    w = 5
    layer = nn.MultiHeadAttention(4, num_kv_heads=2, qkv_features=8, out_features=5,
                                  causal=causal, position_bias=kind, window=w)
    _, params, _ = numpy_init(layer, ((-1, T, 6), (-1, 1, 1, T)))
    x = randn((2, T, 6), seed=4)
    mask = jnp.asarray(np.arange(T) != 5).reshape(1, 1, 1, T).repeat(2, 0)
    band = _band(T, T, w, causal)[None, None] & mask

    def plain(p, x):
        bias = reference_bias(kind, p.get("rel_bias"), T, T, causal, 4, (32, 128))
        return plain_biased(p, x, bias, band, heads=4, kv=2, causal=causal, rope=None)

    def both(p, x):
        return [jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(f(p, x))), (0, 1))(p, x)
                for f in (lambda p, x: layer.apply(p, (), (x, mask))[0], plain)]
    (y, g), (y_ref, g_ref) = jax.jit(both)(params, x)
    assert_close(y, y_ref, 1e-10, "values")
    for grads in (g, g_ref):   # q.bk is the same in every logit of a row: round-off only
        assert np.max(np.abs(grads[0].pop("bk"))) < 1e-13
    assert_close(g, g_ref, 1e-10, "gradients (params, x)")


@pytest.mark.parametrize("window", [None, 64], ids=["t5", "longt5_local"])
def test_t5_keeps_its_table_and_no_t_by_t_bias(window):
    """A T5 layer's training step keeps ``rel_bias`` and O(T) arrays: the op gathers the
    bias per block (``bias_fn``), never the ``(1, N, T, T)`` array that the same bias
    passed densely as ``bias=`` keeps (so the test can fail)."""
    t, heads = 512, 2
    layer = nn.MultiHeadAttention(heads, causal=window is None, position_bias="t5",
                                  window=window, dtype=jnp.float32)
    _, params, _ = layer.init(KEY, (1, t, 8))
    x = jax.ShapeDtypeStruct((1, t, 8), jnp.float32)
    res = nn.saved_residuals(lambda p, x: jnp.sum(layer.apply(p, (), x)[0]), params, x)
    assert max(math.prod(r.shape) for r in res) < t * t, [str(r) for r in res]
    assert any(r.shape == (32, heads) and r.is_argument for r in res)
    rows = jnp.arange(t, dtype=jnp.int32)
    fn = position_bias.t5_bias_fn(position_bias.check("t5", "t5", (32, 128), True))

    def dense(q, table):
        return jnp.sum(ops.dot_product_attention(q, q, q, bias=fn(table, rows, rows)[None]))
    q = jax.ShapeDtypeStruct((1, t, heads, 4), jnp.float32)
    assert max(math.prod(r.shape) for r in nn.saved_residuals(
        dense, q, jax.ShapeDtypeStruct((32, heads), jnp.float32))) >= heads * t * t


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"position_bias": "rope"}, ValueError,
     r"MultiHeadAttention\(2\): position_bias must be one of None, 'alibi', 't5', got 'rope'"),
    ({"position_bias": True}, ValueError,
     r"MultiHeadAttention\(2\): position_bias must be one of None, 'alibi', 't5', got bool"),
    ({"position_bias": "t5", "position_bias_buckets": 32}, TypeError,
     r"MultiHeadAttention\(2\): position_bias_buckets must be a pair of ints \(num_buckets, "
     r"max_distance\), got int 32"),
    ({"position_bias": "t5", "position_bias_buckets": (32,)}, ValueError,
     r"position_bias_buckets must be a pair \(num_buckets, max_distance\), got 1 entries"),
    ({"position_bias": "t5", "position_bias_buckets": (32, 0)}, ValueError,
     r"MultiHeadAttention\(2\): position_bias_buckets\[1\] must be >= 1, got 0"),
    ({"position_bias": "t5", "position_bias_buckets": (32.0, 128)}, TypeError,
     r"MultiHeadAttention\(2\): position_bias_buckets\[0\] must be an int"),
    ({"position_bias": "t5", "position_bias_buckets": (3, 128)}, ValueError,
     r"position_bias_buckets=\(3, 128\) leaves 1 buckets per sign \(bidirectional"),
    ({"position_bias": "t5", "position_bias_buckets": (32, 8)}, ValueError,
     r"position_bias_buckets=\(32, 8\) leaves 16 buckets per sign .* max_distance > 8"),
    ({"position_bias": "alibi", "position_bias_buckets": (16, 64)}, ValueError,
     r"position_bias_buckets=\(16, 64\) is for position_bias='t5' only, got "
     r"position_bias='alibi'"),
    ({"position_bias_buckets": (16, 64)}, ValueError, r"is for position_bias='t5' only"),
])
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nn.MultiHeadAttention(2, **kwargs)


def test_causal_t5_accepts_fewer_buckets_and_cross_attention_has_no_position_bias():
    nn.MultiHeadAttention(2, causal=True, position_bias="t5", position_bias_buckets=(3, 2))
    with pytest.raises(TypeError, match="position_bias"):
        nn.CrossAttention(2, position_bias="t5")
