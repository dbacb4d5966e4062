"""nn.MultiHeadAttention(rope=...): rotary position embedding of q and k, against a
plain-einsum formulation with the op's twin (values and gradients, float64, 1e-10); a GPT
without position embeddings decodes with the key/value cache (positions index + t) to
the logits of one causal pass; errors."""
import functools

import jax
import jax.numpy as jnp
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import numpy_init, randint, randn
from tests.nn.test_attention_decode import decode_in_chunks
from tests.nn.test_attention_gqa import plain_gqa

ROPES = {"default": True, "llama3_interleaved": {"base": 500000.0, "interleaved": True},
         "partial": {"rotary_dim": 2}}


@functools.lru_cache(maxsize=None)
def _run(rope):
    layer = nn.MultiHeadAttention(4, num_kv_heads=2, qkv_features=16, causal=True,
                                  rope=ROPES[rope])
    kwargs = {} if ROPES[rope] is True else ROPES[rope]

    @jax.jit
    def run(p, x):
        ours = lambda p, x: layer.apply(p, (), x)[0]                     # noqa: E731
        theirs = lambda p, x: plain_gqa(p, x, x, None, heads=4, kv=2,    # noqa: E731
                                        causal=True, rope=kwargs)
        return [(f(p, x), jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x))), (0, 1))(p, x))
                for f in (ours, theirs)]
    return layer, run


@pytest.mark.parametrize("rope", list(ROPES))
def test_equals_plain_attention_with_rotated_queries_and_keys(rope):
    layer, run = _run(rope)
    _, params, _ = numpy_init(layer, (-1, 6, 8))
    (y, g), (y_ref, g_ref) = run(params, randn((2, 6, 8), seed=3))
    assert_close(y, y_ref, 1e-10, "values")
    assert_close(g, g_ref, 1e-10, "gradients")
    # the rotation matters: without it the values differ
    (y_plain, _), _ = _run_plain()(params, randn((2, 6, 8), seed=3))
    assert float(jnp.max(jnp.abs(y - y_plain))) > 1e-3


@functools.lru_cache(maxsize=None)
def _run_plain():
    layer = nn.MultiHeadAttention(4, num_kv_heads=2, qkv_features=16, causal=True)
    return jax.jit(lambda p, x: [(layer.apply(p, (), x)[0], None), None])


V, D, L, N = 11, 16, 7, 2


def gpt(decode=False):
    attn = nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(
        4, num_kv_heads=2, causal=True, decode=decode, rope={"base": 100.0}))
    mlp = nn.serial(nn.LayerNorm(), nn.Dense(32), nn.GELU(), nn.Dense(D))
    block = nn.serial(nn.Residual(attn), nn.Residual(mlp))
    return nn.TiedEmbedding(V, D, nn.serial(nn.Repeat(block, 2), nn.LayerNorm()))


@pytest.mark.parametrize("chunks", [[1] * L, [4, 1, 2]], ids=["token_by_token", "chunks"])
def test_rope_gpt_decodes_to_the_full_causal_pass(chunks):
    model, dec = gpt(), gpt(decode=True)
    _, params, state = numpy_init(model, (-1, L))
    _, _, cache = dec.init(jax.random.PRNGKey(0), (N, L))
    ids = randint((N, L), V, seed=1)
    want, _ = jax.jit(model.apply)(params, state, ids)
    got, _ = decode_in_chunks(jax.jit(dec.apply), params, cache, ids, chunks)
    assert_close(got, want, 1e-10, "decoded logits")


def test_errors():
    with pytest.raises(TypeError, match=r"MultiHeadAttention\(2\): rope must be a bool or a "
                                        r"dict"):
        nn.MultiHeadAttention(2, rope="yes")
    with pytest.raises(ValueError, match=r"rope has the keys \['theta'\]"):
        nn.MultiHeadAttention(2, rope={"theta": 10.0})
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): rotary_embedding: base"):
        nn.MultiHeadAttention(2, rope={"base": 0.5}).init(jax.random.PRNGKey(0), (-1, 3, 4))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): rotary_embedding: "
                                         r"rotary_dim defaults to the head size Dh = 3"):
        nn.MultiHeadAttention(2, rope=True).init(jax.random.PRNGKey(0), (-1, 3, 6))
