"""``dot_product_attention``'s ``logit_soft_cap`` and ``scale`` as traced scalars (a
``jax.vmap`` sweep, a jitted function's argument, a learnable cap or temperature): a sweep
equals the static calls one by one (values and the gradients in ``q, k, v``) over one key
block, several and a sliding window; ``dL/dc = sum dS (tanh u - u (1 - tanh^2 u))``, ``u =
x / c``, and ``dL/dscale`` (autodiff of ``scale q``) equal the twin's autodiff and central
differences, with a mask, a bias, ALiBi, dropout and GQA, on the blockwise and the
sliding-window passes (every block size)."""
import jax
import jax.numpy as jnp
import pytest

from funcnet.gradcheck import check_vjp
from funcnet.nn.position_bias import alibi_slopes as paper_slopes
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops._sweeps import assert_sweep_equals_static
from tests.ops.test_attention import DROP_KEY, _mask, _qkv

jax.config.update("jax_enable_x64", True)

SWEEPS = {"logit_soft_cap": jnp.asarray([0.3, 1.0, 4.0]),   # rand() logits are O(1)
          "scale": jnp.asarray([0.1, 0.6, 2.0])}
Q, K, V = (jnp.asarray(a) for a in _qkv(2, 9, 9, 4, 2, 3, seed=7))   # JAX 0.8.0
W = jnp.asarray(rand((2, 9, 4, 3), 5))


@pytest.mark.parametrize("name", list(SWEEPS))
@pytest.mark.parametrize("kw", [{}, dict(causal=True, block_size=4),
                                dict(causal=True, window=3, block_size=4)],
                         ids=["one_block", "causal_three_blocks", "window_three_blocks"])
def test_sweep_equals_the_static_calls(kw, name):
    def loss(qkv, h):
        return jnp.sum(W * attention(*qkv, **{name: h}, **kw))
    assert_sweep_equals_static(loss, (Q, K, V), SWEEPS[name], f"{name} {kw}", rtol=1e-12)


def test_the_twins_sweeps_equal_its_static_calls():
    def loss(qkv, h):
        c, s = h
        return jnp.sum(W * R.dot_product_attention(*qkv, causal=True, logit_soft_cap=c,
                                                   scale=s))
    for name in SWEEPS:     # one traced at a time, the other a float
        def one(qkv, h, name=name):
            return loss(qkv, (h, 0.5) if name == "logit_soft_cap" else (1.5, h))
        assert_sweep_equals_static(one, (Q, K, V), SWEEPS[name], f"twin {name}", rtol=1e-12)


# (id, (B, T, S, N, K, H), causal, mask kind, window, extra argument, dropout, block sizes)
CASES = [
    ("causal_gqa_padded_block", (2, 7, 7, 4, 2, 3), True, None, None, "bias", False, (None, 3)),
    ("bias_fully_masked_row", (2, 4, 5, 4, 2, 3), False, "rows", None, "bias", False, (None, 2)),
    ("alibi_dropout_t<s", (2, 3, 6, 2, 1, 3), False, "keys", None, "alibi", True, (None, 4)),
    ("window_causal_bias", (2, 8, 8, 2, 2, 3), True, "rows", 3, "bias", False, (None, 2)),
    ("window_symmetric_alibi_dropout", (1, 7, 7, 2, 1, 3), False, None, 2, "alibi", True,
     (None, 3)),
]


@pytest.mark.parametrize("dims, causal, mask_kind, window, kind, dropout, blocks",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cap_and_scale_gradients_equal_the_twin_and_central_differences(dims, causal, mask_kind,
                                                              window, kind, dropout, blocks):
    """Every input's gradient, the cap's and the scale's included (both traced; the bias's
    or the slopes' too), against the twin (1e-10) and central differences; neither the
    cap's nor the scale's gradient is 0."""
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n)
    if kind == "bias":
        extra = {"bias": jnp.asarray(rand((1, n, t, s), 9))}
    else:
        extra = {"alibi_slopes": jnp.asarray(paper_slopes(n))}
    drop = {"dropout_rate": 0.3, "dropout_key": DROP_KEY} if dropout else {}

    def bind(f, **kw):
        return lambda q, k, v, e, c, sc: f(q, k, v, mask, causal=causal, window=window,
                                           logit_soft_cap=c, scale=sc, **e, **drop, **kw)
    args = _qkv(b, t, s, n, kh, h, seed=4) + (extra, jnp.asarray(0.7), jnp.asarray(0.9))
    out = check_vjp([bind(attention, block_size=bs) for bs in blocks],
                    bind(R.dot_product_attention), args, seed=3)
    assert min(abs(float(out["grads"][4])), abs(float(out["grads"][5]))) > 1e-3
