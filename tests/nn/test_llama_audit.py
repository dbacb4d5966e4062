"""The README's Llama-style decoder (RMSNorm, grouped-query attention with rotary
embeddings, TiedEmbedding, Repeat) used end to end: trained with ``train.fit`` and
decoded with the ``decode=True`` model from the trained params (greedy tokens equal
greedy full passes); per-example caches under ``jax.vmap`` with a different position per
example; a left-padded batch of prompts through ``TiedEmbedding``'s side inputs ``(ids,
mask)`` (rotary positions are relative, so the real positions equal the unpadded
prompt's, training forward and decode); the error for a cache of another batch size."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import nn, optim, train
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, numpy_init, randint

KEY = jax.random.PRNGKey(0)
V, D, L, N = 13, 8, 6, 2


def _attention(decode):
    return nn.MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=True, use_bias=False,
                                 decode=decode)


def _mlp():
    return nn.serial(nn.RMSNorm(), nn.Dense(16), nn.GELU(), nn.Dense(D))


def llama(decode=False):
    """The README's model, small: ids (N, T) -> logits (N, T, V)."""
    block = nn.serial(nn.Residual(nn.serial(nn.RMSNorm(), _attention(decode))),
                      nn.Residual(_mlp()))
    return nn.TiedEmbedding(V, D, nn.serial(nn.Repeat(block, 2), nn.RMSNorm()))


def padded_llama(decode=False):
    """The same with a key-padding mask as a side input: (ids, mask (N, 1, 1, T))."""
    attn = nn.KeepRest(nn.serial(nn.OnFirst(nn.RMSNorm()), _attention(decode)),
                       residual=True)
    block = nn.serial(attn, nn.OnFirst(nn.Residual(_mlp())))
    return nn.TiedEmbedding(V, D, nn.serial(nn.Repeat(block, 2), nn.DropRest, nn.RMSNorm()))


@functools.lru_cache(maxsize=None)
def generator(dec):
    """A jitted greedy generation loop of the README: the prompt in one call, then one
    token per call in a lax.scan; (N, P) ids -> (N, L - P) tokens."""
    @jax.jit
    def generate(params, cache, prompt):
        logits, cache = dec.apply(params, cache, prompt)

        def step(carry, _):
            tok, cache = carry
            logits, cache = dec.apply(params, cache, tok[:, None])
            return (jnp.argmax(logits[:, -1], -1), cache), tok
        first = jnp.argmax(logits[:, -1], -1)
        _, toks = lax.scan(step, (first, cache), None, length=L - prompt.shape[1])
        return toks.T
    return generate


def greedy_by_full_passes(apply, params, state, prompt):
    """Greedy decoding by causal passes over the whole window (one compiled shape: the
    logits at position t do not depend on the positions after it)."""
    n, p = prompt.shape
    seq = np.zeros((n, L), np.int32)
    seq[:, :p] = prompt
    for t in range(p, L):
        logits, _ = apply(params, state, seq)
        seq[:, t] = np.argmax(logits[:, t - 1], -1)
    return seq[:, p:]


def empty_state(model, input_shape):
    """The decode model's empty state (zeros, index 0) without running its init."""
    return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                  abstract_init(model, input_shape)[2])


@functools.lru_cache(maxsize=None)
def models():
    model, dec = llama(), llama(decode=True)
    _, params, state = numpy_init(model, (-1, L))
    return model, dec, params, state, jax.jit(model.apply)


def test_fit_then_generate_with_the_decode_model():
    """fit (scan path) trains the README's model; the decode model
    takes the trained params and its greedy tokens (prompt in one call, then a lax.scan
    of one-token calls) equal greedy decoding by full causal passes."""
    model, dec, params, state, apply = models()
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (16, L)).astype(np.int32)
    y = (x + 1) % V                                     # next token = this one + 1
    params, state, _, history = train.fit(model, params, state, optim.adam(3e-2), (x, y),
                                          1, batch_size=8, key=KEY, scan=True,
                                          progress=False)
    assert np.isfinite(history["loss"][0])
    prompt = x[:N, :2]
    toks = generator(dec)(params, empty_state(dec, (N, L)), prompt)
    np.testing.assert_array_equal(toks, greedy_by_full_passes(apply, params, state, prompt))


@functools.lru_cache(maxsize=None)
def padded_models():
    model, dec = padded_llama(), padded_llama(decode=True)
    _, params, state = numpy_init(model, ((-1, L), (-1, 1, 1, L)))
    return model, dec, params, state, jax.jit(model.apply), jax.jit(dec.apply)


def test_left_padded_prompts_through_tied_embedding_side_inputs():
    """(ids, mask) into TiedEmbedding reaches the attention; a prompt left-padded by P
    tokens gives at its real positions the logits of the unpadded prompt (rotary
    positions are relative), in one training-model call and decoded in two chunks."""
    model, dec, params, _, apply, dec_apply = padded_models()
    ids = randint((N, L), V)
    P = 2
    padded = np.asarray(ids).copy()
    padded[1] = np.concatenate([np.zeros(P, padded.dtype), padded[1, :L - P]])
    mask = np.ones((N, 1, 1, L), bool)
    mask[1, ..., :P] = False
    state = padded_models()[3]
    full, _ = apply(params, state, (padded, mask))
    alone, _ = apply(params, state, (ids, np.ones((N, 1, 1, L), bool)))   # unpadded
    alone = alone[1, :L - P]                 # causal: positions >= L - P do not matter
    assert_close(full[1, P:], alone, 1e-10, "left-padded training forward")
    cache = empty_state(dec, ((N, L), (N, 1, 1, L)))
    first, cache = dec_apply(params, cache, (padded[:, :4], mask))
    rest, _ = dec_apply(params, cache, (padded[:, 4:], mask))
    decoded = jnp.concatenate([first, rest], 1)
    assert_close(decoded[1, P:], alone, 1e-10, "left-padded decode")
    assert_close(decoded[0], full[0], 1e-10, "unpadded row decode")


def test_tied_embedding_side_inputs_need_one_output():
    bad = nn.TiedEmbedding(V, D, nn.OnFirst(nn.RMSNorm()))      # -> (h, mask): a tuple
    with pytest.raises(ValueError, match=r"TiedEmbedding\(13, 8, OnFirst\(RMSNorm\)\): body "
                                         r"outputs the tuple of shapes .*; end a body that "
                                         r"carries side inputs \(ids, \*rest\) with "
                                         r"nn.DropRest"):
        abstract_init(bad, ((-1, L), (-1, 1, 1, L)))
    p = {"embedding": jnp.ones((V, D)), "body": {"gamma": jnp.ones(D)}}
    for f in (bad.apply, jax.jit(bad.apply)):
        with pytest.raises(ValueError, match=r"body outputs a tuple of 2 entries, expected "
                                             r"one array \(\.\.\., 8\)"):
            f(p, (), (randint((N, L), V), np.ones((N, 1, 1, L), bool)))


def test_vmap_over_per_example_caches_at_different_positions():
    """The documented way to decode examples independently: init the decode model for
    ONE sequence ((L,) ids: caches without N), broadcast the state to (B, ...), and vmap
    the decode step; each example may then sit at its own position."""
    model, dec, params, state, apply = models()
    one = empty_state(dec, (L,))
    caches = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (N,) + a.shape), one)
    step = jax.jit(jax.vmap(lambda c, x: dec.apply(params, c, x)))
    ids = np.asarray(randint((N, L), V))
    lengths = np.array([1, 3])
    for t in range(3):     # example i takes its first lengths[i] tokens, one per call
        _, new = step(caches, ids[:, t:t + 1])
        caches = jax.tree_util.tree_map(
            lambda a, b: jnp.where((t < lengths).reshape((N,) + (1,) * (a.ndim - 1)), b, a),
            caches, new)
    nxt = np.full((N, 1), 5, np.int32)
    logits, _ = step(caches, nxt)
    seq = ids.copy()                                  # causal: later positions are ignored
    seq[np.arange(N), lengths] = nxt[:, 0]
    want, _ = apply(params, state, seq)
    assert_close(logits[:, 0], want[np.arange(N), lengths], 1e-10, "per-example positions")


def test_a_cache_made_for_another_batch_size_is_named():
    """A decode state from init with another N (or one sequence's, or the reverse):
    the error says how many sequences the cache holds and how to make the right one."""
    _, dec, params, *_ = models()
    cases = [(empty_state(dec, (N + 1, L)), (N, 1), rf"\({N + 1}, {L}, 2, 2\), expected "
              rf"\({N}, \*, 2, 2\): the key/value cache holds {N + 1} sequences, the input "
              rf"{N} sequences; init the decode model with the input's batch size"),
             (empty_state(dec, (L,)), (N, 1), rf".*holds one sequence, the input {N} "
                                              rf"sequences"),
             (empty_state(dec, (N, L)), (1,), rf".*holds {N} sequences, the input one "
                                              rf"sequence")]
    for cache, shape, match in cases:
        for f in (dec.apply, jax.jit(dec.apply)):
            with pytest.raises(ValueError, match=r"\(MultiHeadAttention\(4\)\): state\['k'\] "
                                                 r"has shape " + match):
                f(params, cache, randint(shape, V))
