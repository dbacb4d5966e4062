"""dot_product_attention(..., logit_soft_cap=c): the scaled logits ``x = scale q.k`` become
``c tanh(x / c)`` (Gemma 2) before the bias, ALiBi and the mask. Custom VJP vs autodiff of
the twin (float64, 1e-10) and central differences on the blockwise and the sliding-window
passes, with a mask, a bias and ALiBi slopes (differentiated: they take ``dS`` before the
cap's derivative), dropout, grouped heads, padded blocks and an unbatched ``q``; equal to a
softmax written out by hand; a huge cap is no cap; the logits stay inside ``(-c, c)``;
jit, vmap and grad of grad; errors (a traced cap: ``test_attention_logit_sweeps.py``)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.position_bias import alibi_slopes as paper_slopes
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops.test_attention import DROP_KEY, _loss, _mask, _qkv
from tests.ops.test_attention_window import _band

jax.config.update("jax_enable_x64", True)

CAP = 0.8   # the logits of rand() inputs are O(1): a cap below them bends most of them

# (id, (B, T, S, N, K, H), causal, mask kind, window, extra argument, block sizes)
CASES = [
    ("causal_gqa_padded_block", (2, 7, 7, 4, 2, 3), True, None, None, None, (None, 3)),
    ("bias_fully_masked_row", (2, 4, 5, 4, 2, 3), False, "rows", None, "bias", (None, 2)),
    ("alibi_keys_mask_t<s", (2, 3, 6, 2, 1, 3), False, "keys", None, "alibi", (None, 4)),
    ("dropout_causal", (1, 6, 6, 2, 2, 3), True, None, None, "dropout", (None, 2)),
    ("window_causal_alibi", (2, 8, 8, 2, 2, 3), True, "rows", 3, "alibi", (None, 2)),
    ("window_symmetric_dropout", (1, 7, 7, 2, 1, 3), False, None, 2, "dropout", (None, 3)),
    ("unbatched", (0, 5, 5, 2, 2, 3), True, None, None, None, (None, 2)),
]


def _extra(kind, b, t, s, n):
    """The differentiated extra argument and the keywords that pass it."""
    if kind == "bias":
        return (jnp.asarray(rand((1, n, t, s), 9)),), lambda a: {"bias": a}
    if kind == "alibi":
        return (jnp.asarray(paper_slopes(n)),), lambda a: {"alibi_slopes": a}
    if kind == "dropout":
        return (), lambda: {"dropout_rate": 0.3, "dropout_key": DROP_KEY}
    return (), lambda: {}


@pytest.mark.parametrize("dims, causal, mask_kind, window, kind, blocks",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(dims, causal, mask_kind, window,
                                                       kind, blocks):
    """Every block size against the twin's autodiff (1e-10) and central differences; the
    bias's and the slopes' gradients too; the cap changes the output."""
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n)
    extra, keywords = _extra(kind, b, t, s, n)
    args = _qkv(b, t, s, n, kh, h, seed=4) + extra

    def bind(f, **kw):
        return lambda q, k, v, *e: f(q, k, v, mask, causal=causal, window=window,
                                     logit_soft_cap=CAP, **keywords(*e), **kw)
    out = check_vjp([bind(attention, block_size=bs) for bs in blocks],
                    bind(R.dot_product_attention), args, seed=3)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in out["grads"])
    uncapped = attention(*args[:3], mask, causal=causal, window=window, **keywords(*extra))
    assert float(jnp.max(jnp.abs(out["value"] - uncapped))) > 1e-2


def _by_hand(q, k, v, mask, cap, bias):
    """``softmax(c tanh(q k^T / (sqrt(H) c)) + bias, masked) v`` in NumPy, per head."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    x = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    z = cap * np.tanh(x / cap) + bias
    z = np.where(mask, z, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


@functools.lru_cache(maxsize=None)
def _capped_op():
    return jax.jit(lambda q, k, v, m, bias, c: attention(q, k, v, m, bias=bias, causal=True,
                                                         logit_soft_cap=c, block_size=2),
                   static_argnums=5)


def test_equals_the_softmax_by_hand_and_a_huge_cap_is_no_cap():
    """Logits of size ~100 (q scaled up): capped at 2 they equal the NumPy softmax by
    hand (1e-12), not the uncapped op; a cap of 1e7 gives the uncapped op (1e-9)."""
    q, k, v = _qkv(2, 5, 5, 2, 2, 4, seed=6)
    q = 30 * q
    mask = _band(5, 5, 5, True)[None, None]
    bias = jnp.asarray(rand((1, 2, 5, 5), 8))
    got = _capped_op()(q, k, v, None, bias, 2.0)
    assert_close(got, _by_hand(q, k, v, np.asarray(mask), 2.0, np.asarray(bias)), 1e-12,
                 "capped at 2")
    plain = attention(q, k, v, bias=bias, causal=True, block_size=2)
    assert float(jnp.max(jnp.abs(got - plain))) > 1e-2
    assert_close(_capped_op()(q, k, v, None, bias, 1e7), plain, 1e-9, "cap 1e7")


def test_jit_vmap_per_example_grads_and_grad_of_grad():
    """vmap over examples and reverse-over-reverse (the rule is plain jnp/lax) against the
    twin, with the cap, in one compilation."""
    q, k, v = (jnp.asarray(a)[:, None] for a in _qkv(3, 5, 6, 2, 1, 3, seed=2))
    ours = functools.partial(attention, causal=True, block_size=4, logit_soft_cap=CAP)
    ref = functools.partial(R.dot_product_attention, causal=True, logit_soft_cap=CAP)

    def gg(f, q, k, v):
        return jax.grad(lambda k: jnp.sum(jax.grad(_loss(f))(q, k, v) ** 2))(k)

    run = jax.jit(lambda q, k, v: [
        [jax.vmap(jax.grad(_loss(f), (0, 1, 2)))(q, k, v), gg(f, q[0], k[0], v[0])]
        for f in (ours, ref)])
    got, want = run(q, k, v)
    assert_close(got, want, 1e-9, "vmap(grad) and grad(grad) vs reference")


@pytest.mark.parametrize("cap, exc, match", [
    (0.0, ValueError, r"dot_product_attention: logit_soft_cap must be in \(0, inf\), got 0"),
    (-1.0, ValueError, r"logit_soft_cap must be in \(0, inf\), got -1"),
    (float("nan"), ValueError, r"logit_soft_cap must be finite, got nan"),
    (float("inf"), ValueError, r"logit_soft_cap must be finite, got inf"),
    ("50", TypeError, r"dot_product_attention: logit_soft_cap must be a number or a scalar "
                      r"array, got str"),
    (True, TypeError, r"logit_soft_cap must be a number or a scalar array, got bool"),
    (np.ones(2), ValueError, r"logit_soft_cap must be a scalar, got shape \(2,\)"),
])
def test_bad_caps_are_refused_by_the_op_and_the_twin(cap, exc, match):
    """Eagerly and under jit (the cap static, the arrays traced)."""
    q, k, v = (jnp.asarray(a) for a in _qkv(1, 2, 2, 1, 1, 2))
    for f in (attention, R.dot_product_attention):
        with pytest.raises(exc, match=match):
            f(q, k, v, logit_soft_cap=cap)
        with pytest.raises(exc, match=match):
            jax.jit(lambda q, k, v, f=f: f(q, k, v, logit_soft_cap=cap))(q, k, v)


def test_a_traced_cap_is_checked_for_a_scalar_of_real_dtype():
    q, k, v = (jnp.asarray(a) for a in _qkv(1, 2, 2, 1, 1, 2))
    with pytest.raises(ValueError, match=r"logit_soft_cap must be a scalar, got shape \(2,\)"):
        jax.jit(lambda c: attention(q, k, v, logit_soft_cap=c))(jnp.ones(2))
    with pytest.raises(TypeError, match=r"logit_soft_cap must have a real numeric dtype, got "
                                        r"complex"):
        jax.jit(lambda c: attention(q, k, v, logit_soft_cap=c))(jnp.ones((), jnp.complex64))
