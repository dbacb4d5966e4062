"""dot_product_attention(..., query_seq_lengths=, key_value_seq_lengths=): jax.nn's padding
by lengths. Padded keys are masked, padded queries' outputs are 0 (no gradient from them);
equal to jax.nn (values and the VJP over q, k, v) and to the twin, with the custom rule's
VJP against the twin's autodiff and central differences (float64); combined with a mask,
causal, a window, grouped heads and several key blocks; under jit and vmap; errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops.test_attention import _mask, _qkv

jax.config.update("jax_enable_x64", True)

B, T, S, N, K, H = 3, 5, 7, 4, 2, 3
Q_LEN = jnp.asarray([5, 2, 0], jnp.int32)     # full, padded, none (outputs all 0)
KV_LEN = jnp.asarray([7, 3, 1], jnp.int32)


def _bind(f, mask, causal, q_len, kv_len, **kw):
    return lambda q, k, v: f(q, k, v, mask, causal=causal, query_seq_lengths=q_len,
                             key_value_seq_lengths=kv_len, **kw)


CASES = [   # (id, causal, mask kind, q lengths, kv lengths, window)
    ("kv", False, None, None, KV_LEN, None),
    ("q", False, None, Q_LEN, None, None),
    ("both_causal", True, None, Q_LEN, KV_LEN, None),
    ("both_with_mask", False, "rows", Q_LEN, KV_LEN, None),
    ("kv_with_key_mask_causal", True, "keys", None, KV_LEN, None),
    ("both_window", True, None, Q_LEN, KV_LEN, 2),
]


@pytest.mark.parametrize("causal, mask_kind, q_len, kv_len, window",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(causal, mask_kind, q_len, kv_len,
                                                       window):
    """Several key blocks (and query blocks with a window), grouped heads: the custom rule
    equals the twin's autodiff (1e-10) and central differences; padded queries give 0 and
    the lengths change the result."""
    args = _qkv(B, T, S, N, K, H, seed=1)
    mask = _mask(mask_kind, B, T, S, N)
    kw = {"window": window} if window else {}
    fs = [_bind(attention, mask, causal, q_len, kv_len, block_size=bs, **kw)
          for bs in (None, 3)]
    out = check_vjp(fs, _bind(R.dot_product_attention, mask, causal, q_len, kv_len, **kw),
                    args, seed=3)
    y = np.asarray(out["value"])
    if q_len is not None:
        for b, n in enumerate(np.asarray(q_len)):
            assert not np.any(y[b, n:]) and not np.any(np.asarray(out["grads"][0])[b, n:])
    plain = _bind(attention, mask, causal, None, None, **kw)(*args)
    assert not np.allclose(y, plain)


def test_equals_a_mask_built_from_the_lengths():
    """Keys: the (B, 1, 1, S) mask of the real keys; queries: the outputs kept where real."""
    q, k, v = (jnp.asarray(a) for a in _qkv(B, T, S, N, K, H, seed=4))
    got = attention(q, k, v, query_seq_lengths=Q_LEN, key_value_seq_lengths=KV_LEN)
    keys = (np.arange(S)[None] < np.asarray(KV_LEN)[:, None])[:, None, None, :]
    rows = (np.arange(T)[None] < np.asarray(Q_LEN)[:, None])[:, :, None, None]
    want = jnp.where(rows, attention(q, k, v, jnp.asarray(keys)), 0.0)
    assert_close(got, want, 1e-14, "lengths vs mask")


@functools.lru_cache(maxsize=None)
def _vs_jax_nn(causal):
    def run(q, k, v, ct):
        def vjp(f):
            y, back = jax.vjp(f, q, k, v)
            return y, back(ct)
        lengths = dict(query_seq_lengths=Q_LEN, key_value_seq_lengths=KV_LEN)
        ours = vjp(lambda q, k, v: attention(q, k, v, causal=causal, block_size=3, **lengths))
        with jax.numpy_dtype_promotion("standard"):    # jax.nn mixes int32 and int64
            theirs = vjp(lambda q, k, v: jax.nn.dot_product_attention(
                q, k, v, is_causal=causal, **lengths))
        return ours, theirs
    return jax.jit(run)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_equals_jax_nn(causal):
    """float32 (jax.nn's softmax runs in float32): value and VJP over q, k, v."""
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _qkv(B, T, S, N, K, H, seed=5))
    ct = jnp.asarray(rand((B, T, N, H), 6), jnp.float32)
    (y, g), (y_nn, g_nn) = _vs_jax_nn(causal)(q, k, v, ct)
    assert_close(y, y_nn, 2e-5, "value vs jax.nn")
    assert_close(g, g_nn, 1e-4, "vjp vs jax.nn")


def test_traced_lengths_under_jit_and_vmap():
    """Lengths as jit arguments, and per-example lengths under vmap (batches of one)."""
    q, k, v = (jnp.asarray(a) for a in _qkv(B, T, S, N, K, H, seed=7))
    f = jax.jit(lambda q, k, v, ql, kl: attention(q, k, v, query_seq_lengths=ql,
                                                  key_value_seq_lengths=kl))
    want = attention(q, k, v, query_seq_lengths=Q_LEN, key_value_seq_lengths=KV_LEN)
    assert_close(f(q, k, v, Q_LEN, KV_LEN), want, 1e-14, "jit")
    one = jax.vmap(lambda q, k, v, ql, kl: f(q[None], k[None], v[None], ql[None],
                                             kl[None])[0])
    assert_close(one(q, k, v, Q_LEN, KV_LEN), want, 1e-14, "vmap")


@pytest.mark.parametrize("kw, exc, match", [
    ({"query_seq_lengths": jnp.asarray([1.0, 2.0, 3.0])}, TypeError,
     r"query_seq_lengths must have an integer dtype"),
    ({"key_value_seq_lengths": jnp.asarray([1, 2], jnp.int32)}, ValueError,
     r"key_value_seq_lengths has shape \(2,\), expected \(3,\)"),
    ({"query_seq_lengths": jnp.asarray([1, 6, 2], jnp.int32)}, ValueError,
     r"query_seq_lengths must be in \[0, 5\] .*max 6"),
    ({"key_value_seq_lengths": jnp.asarray([-1, 6, 2], jnp.int32)}, ValueError,
     r"key_value_seq_lengths must be in \[0, 7\] .*min -1"),
], ids=["float", "shape", "too_long", "negative"])
def test_bad_lengths_raise(kw, exc, match):
    q, k, v = (jnp.asarray(a) for a in _qkv(B, T, S, N, K, H))
    for f in (attention, R.dot_product_attention):
        with pytest.raises(exc, match="dot_product_attention: " + match):
            f(q, k, v, **kw)


def test_an_unbatched_q_refuses_lengths():
    q, k, v = (jnp.asarray(a) for a in _qkv(0, T, S, N, K, H))
    with pytest.raises(ValueError, match=r"query_seq_lengths needs a batched q \(B, T, N, H\)"):
        attention(q, k, v, query_seq_lengths=jnp.asarray([2], jnp.int32))
