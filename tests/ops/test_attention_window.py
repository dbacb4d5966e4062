"""dot_product_attention(window=W): sliding-window attention (Mistral, Gemma 2: query i
attends keys i - W < j <= i; not causal: |i - j| < W). Custom VJP vs autodiff of the twin
(float64, 1e-10) and central differences; equal to the unwindowed op with the window in
the boolean mask and to jax.nn's ``local_window_size``; rows whose window is fully masked;
the work is O(T W): no array of a step grows with T; grad of grad, vmap; dropout (the
window's mask by hand, every block size against the twin, unbiased); a bias (LongT5);
errors."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops.test_attention import _mask, _qkv


def _bind(f, mask, causal, window, **kw):
    return lambda q, k, v: f(q, k, v, mask, causal=causal, window=window, **kw)


def _band(t, s, window, causal):
    i, j = np.arange(t)[:, None], np.arange(s)[None, :]
    return jnp.asarray((i - window < j) & ((j <= i) if causal else (j < i + window)))


# (id, (B, T, S, N, K, H), causal, window, mask kind, block sizes (queries per block))
CASES = [
    ("causal_blocks_rows_mask", (2, 9, 9, 2, 2, 3), True, 3, "rows", (None, 2, 4)),
    ("not_causal_padded_block", (1, 10, 10, 2, 2, 3), False, 2, None, (None, 3)),
    ("gqa_key_padding", (2, 8, 8, 4, 2, 2), True, 4, "keys", (None, 3)),
    ("causal_T>S_blind_rows", (1, 7, 5, 2, 1, 3), True, 2, None, (None, 2)),
    ("not_causal_T<S_W>S", (1, 4, 6, 2, 2, 2), False, 9, "rows", (None, 1)),
]


@pytest.mark.parametrize("dims, causal, window, kind, blocks", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(dims, causal, window, kind, blocks):
    b, t, s, n, kh, h = dims
    mask = _mask(kind, b, t, s, n)
    args = _qkv(b, t, s, n, kh, h, seed=5)
    fs = [_bind(attention, mask, causal, window, block_size=bs) for bs in blocks]
    check_vjp(fs, _bind(R.dot_product_attention, mask, causal, window), args, seed=3)


@functools.lru_cache(maxsize=None)
def _vs_masked():
    """The windowed op, the unwindowed op with the band in its mask, jax.nn's
    local_window_size (float32 softmax): values and gradients, one compilation."""
    def run(q, k, v, pad):
        out = []
        for causal, w in ((True, 3), (False, 2)):
            band = _band(q.shape[1], k.shape[1], w, causal)[None, None] & pad

            def loss(f):
                return lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))
            fs = (_bind(attention, pad, causal, w, block_size=2),
                  lambda q, k, v, band=band, causal=causal: attention(q, k, v, band,
                                                                      causal=causal))
            out.append([jax.value_and_grad(loss(f), (0, 1, 2))(q, k, v) for f in fs])
            with jax.numpy_dtype_promotion("standard"):
                out[-1] += [fs[0](q, k, v), jax.nn.dot_product_attention(
                    q, k, v, is_causal=causal, local_window_size=(w - 1, 0 if causal else w - 1))]
        return out
    return jax.jit(run)


def test_equals_the_op_with_the_window_in_the_mask_and_jax_nn():
    q, k, v = (jnp.asarray(a) for a in _qkv(2, 8, 8, 2, 2, 3, seed=1))
    pad = jnp.asarray(np.arange(8) != 6).reshape(1, 1, 1, 8)
    for (windowed, masked, _, _), name in zip(_vs_masked()(q, k, v, pad), ("causal", "not")):
        assert_close(windowed, masked, 1e-12, f"{name}: window vs band mask")
    for (_, _, y, jnn), name in zip(_vs_masked()(q, k, v, jnp.ones((1, 1, 1, 8), bool)),
                                    ("causal", "not")):
        if name == "not" and jax.__version_info__ < (0, 10):
            continue   # jax 0.8's symmetric local_window_size differs from its own band mask
        assert_close(y, jnn, 1e-6, f"{name}: vs jax.nn local_window_size")   # f32 softmax


def test_a_row_whose_window_is_masked_is_the_mean_of_all_values():
    q, k, v = (jnp.asarray(a) for a in _qkv(1, 6, 6, 1, 1, 2, seed=4))
    mask = jnp.asarray(np.arange(6) >= 3).reshape(1, 1, 1, 6)   # row 1 sees keys 0, 1: masked
    f = _bind(attention, mask, True, 2, block_size=2)
    y, (dq, _, dv) = jax.jit(lambda q, k, v: (f(q, k, v), jax.grad(
        lambda q, k, v: jnp.sum(f(q, k, v)), (0, 1, 2))(q, k, v)))(q, k, v)
    assert_close(y[0, 1], jnp.broadcast_to(jnp.mean(v[0], axis=0), (1, 2)), 1e-15, "row 1")
    assert float(jnp.max(jnp.abs(dq[0, :3]))) == 0.0
    # rows 0, 1, 2 see no key; each adds dO / S = 1/6 to every dV_j: key 0 gets only that
    assert np.all(np.asarray(dv[0, 0]) == 0.5)


# (id, (B, T, S, N, K, H), causal, window, bias axes, mask kind, extra keywords, block sizes)
BIAS_CASES = [
    ("longt5_symmetric_per_head", (2, 9, 9, 2, 2, 3), False, 3, "1nts", None, {}, (None, 2, 4)),
    ("causal_per_sequence_rows_mask", (2, 8, 8, 4, 2, 2), True, 3, "b1ts", "rows", {},
     (None, 3)),
    ("keys_only_t<s_mqa", (1, 4, 7, 2, 1, 3), False, 2, "1n1s", None, {}, (None, 1)),
    ("ts_soft_cap_dropout", (1, 7, 7, 2, 2, 3), True, 2, "ts", None,
     {"logit_soft_cap": 1.0, "dropout_rate": 0.3, "dropout_key": jax.random.PRNGKey(3)},
     (None, 3)),
    ("per_sequence_keys_padded_block", (2, 7, 7, 2, 2, 2), True, 3, "b11s", "keys", {},
     (None, 3)),
]


@pytest.mark.parametrize("dims, causal, window, axes, kind, kw, blocks",
                         [c[1:] for c in BIAS_CASES], ids=[c[0] for c in BIAS_CASES])
def test_bias_vjp_matches_reference_and_the_band_in_the_mask(dims, causal, window, axes, kind,
                                                             kw, blocks):
    """A ``bias`` with a window (T5's relative bias: LongT5's local attention) is read per
    query block over its span and its gradient added back block by block: every block
    size against the twin's autodiff and central differences (the bias's gradient in its
    own shape, summed over its axes of size 1), and equal to the unwindowed op with the
    band in the mask (1e-12)."""
    b, t, s, n, kh, h = dims
    mask = _mask(kind, b, t, s, n)
    size = {"1": 1, "b": b, "n": n, "t": t, "s": s}
    bias = jnp.asarray(3 * rand(tuple(size[a] for a in axes), 12))
    args = _qkv(b, t, s, n, kh, h, seed=7) + (bias,)

    def bind(f, **more):
        return lambda q, k, v, bias: f(q, k, v, mask, bias=bias, causal=causal, window=window,
                                       **kw, **more)
    out = check_vjp([bind(attention, block_size=bs) for bs in blocks],
                    bind(R.dot_product_attention), args, seed=3)
    assert out["grads"][3].shape == bias.shape and float(jnp.max(jnp.abs(out["grads"][3]))) > 0
    if "dropout_rate" not in kw:     # the unwindowed op draws other masks
        band = _band(t, s, window, causal)[None, None]
        assert_close(out["value"], attention(*args[:3], band if mask is None else band & mask,
                                             bias=bias, causal=causal, **kw), 1e-12,
                     "the band in the mask")


DROP_KEY = jax.random.PRNGKey(21)


@pytest.mark.parametrize("dims, causal, window, kind, blocks", [c[1:] for c in CASES[:4]],
                         ids=[c[0] for c in CASES[:4]])
def test_dropout_vjp_matches_reference_and_central_differences(dims, causal, window, kind,
                                                                blocks):
    """Every block size draws the same mask (row i's window from its own key), so each
    equals the one-block twin; blind rows (``rows``, ``T > S``) stay the undropped mean."""
    b, t, s, n, kh, h = dims
    mask = _mask(kind, b, t, s, n)
    args = _qkv(b, t, s, n, kh, h, seed=5)
    drop = dict(dropout_rate=0.4, dropout_key=DROP_KEY)
    fs = [_bind(attention, mask, causal, window, block_size=bs, **drop) for bs in blocks]
    check_vjp(fs, _bind(R.dot_product_attention, mask, causal, window, **drop), args, seed=3)


def _window_by_hand(q, k, v, window, rate, key):
    """Causal windowed attention with dropout written out: probabilities of the band, then
    ``Z_ij = bernoulli(fold_in(key, i), 1 - rate, (B, N, W))[:, :, i - j]``."""
    b, t, n, h = q.shape
    s = jnp.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(h)
    band = _band(t, t, window, True)
    p = jax.nn.softmax(jnp.where(band[None, None], s, -jnp.inf), -1)
    rows = [jax.random.bernoulli(jax.random.fold_in(key, i), 1 - rate, (b, n, window))
            for i in range(t)]
    keep = jnp.stack([jnp.stack([rows[i][:, :, i - j] if band[i, j] else jnp.ones((b, n), bool)
                                 for j in range(t)], -1) for i in range(t)], -2)
    return jnp.einsum("bnts,bsnh->btnh", jnp.where(keep, p / (1 - rate), 0.0), v)


def test_dropout_mask_by_hand_unbiased_and_off_at_rate_zero():
    q, k, v = (jnp.asarray(a) for a in _qkv(2, 9, 9, 2, 2, 3, seed=8))
    f = jax.jit(lambda q, k, v, key, rate: attention(
        q, k, v, causal=True, window=3, block_size=4, dropout_rate=rate, dropout_key=key),
        static_argnums=4)
    assert_close(f(q, k, v, DROP_KEY, 0.3), _window_by_hand(q, k, v, 3, 0.3, DROP_KEY), 1e-12,
                 "the window's mask by hand")
    assert_close(f(q, k, v, DROP_KEY, 0.0), attention(q, k, v, causal=True, window=3), 1e-15,
                 "rate 0")
    assert float(jnp.max(jnp.abs(f(q, k, v, DROP_KEY, 0.3) - f(q, k, v, DROP_KEY, 0.0)))) > 0.1
    # uniform probabilities (q = k = 0) over ones: o = kept / (window (1 - r)), mean 1
    z = jnp.zeros((4, 64, 8, 2))
    o = jax.vmap(lambda key: f(z, z, jnp.ones_like(z), key, 0.5))(
        jax.random.split(DROP_KEY, 8))[:, :, 3:]         # rows with a full window of 4
    assert abs(float(jnp.mean(o)) - 1.0) < 0.01
    assert float(jnp.std(o)) > 0.3    # dropped: an element is k / 2 for k kept of 4


def _sizes(jaxpr, in_scan=False):
    """The most elements of a product or ``exp`` in ``jaxpr``: ``(outside scans, in a scan
    step)`` (the carried dk, dv are updated in place, not recomputed)."""
    out, step = [0], [0]
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "exp"):
            (step if in_scan else out).append(math.prod(eqn.outvars[0].aval.shape))
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", p)    # a ClosedJaxpr's Jaxpr, or a Jaxpr
            if hasattr(inner, "eqns"):
                o, st = _sizes(inner, in_scan or eqn.primitive.name == "scan")
                out, step = out + [o], step + [st]
    return max(out), max(step)


def test_work_is_linear_in_t_keys_outside_the_window_are_skipped():
    """grad of the windowed op: a scan step's largest value (a block's scores, B N block
    span) is the same at T = 256 and 1024, over ceil(T / block) steps, and nothing outside
    the scans is as big; the unwindowed op's step grows with T."""
    def grad_jaxpr(t, **kw):
        x = jax.ShapeDtypeStruct((1, t, 2, 8), jnp.float32)
        return jax.make_jaxpr(jax.grad(lambda q, k, v: jnp.sum(attention(
            q, k, v, causal=True, **kw)), (0, 1, 2)))(x, x, x).jaxpr
    small, big = (grad_jaxpr(t, window=16) for t in (256, 1024))
    assert _sizes(small)[1] == _sizes(big)[1] == 2 * 64 * (64 + 15)     # default block 64
    assert _sizes(big)[0] <= 1024 * 2 * 8
    lengths = [e.params["length"] for e in big.eqns if e.primitive.name == "scan"]
    assert lengths == [1024 // 64] * 2
    assert _sizes(grad_jaxpr(1024))[1] >= 4 * _sizes(grad_jaxpr(256))[1]


def test_grad_of_grad_and_vmap_match_the_twin():
    q, k, v = (jnp.asarray(a) for a in _qkv(3, 7, 7, 2, 1, 2, seed=6))
    ours = _bind(attention, None, True, 3, block_size=3)
    ref = _bind(R.dot_product_attention, None, True, 3)

    def loss(f):
        return lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))

    def gg(f, q, k, v):
        return jax.grad(lambda k: jnp.sum(jax.grad(loss(f))(q, k, v) ** 2))(k)
    run = jax.jit(lambda q, k, v: [(jax.vmap(jax.grad(loss(f), (0, 1, 2)))(
        q[:, None], k[:, None], v[:, None]), gg(f, q, k, v)) for f in (ours, ref)])
    got, want = run(q, k, v)
    assert_close(got, want, 1e-9, "vmap(grad), grad(grad)")


@pytest.mark.parametrize("kw, exc, match", [
    ({"window": 0}, ValueError, r"dot_product_attention: window must be >= 1, got 0"),
    ({"window": 2.0}, TypeError, r"dot_product_attention: window must be an int"),
])
def test_window_errors_eagerly_and_under_jit(kw, exc, match):
    q, k, v = (jnp.asarray(a) for a in _qkv(1, 3, 3, 2, 2, 2))
    for f in (attention, R.dot_product_attention):
        with pytest.raises(exc, match=match):
            f(q, k, v, causal=True, **kw)
        with pytest.raises(exc, match=match):
            jax.jit(lambda q: f(q, k, v, causal=True, **kw))(q)
