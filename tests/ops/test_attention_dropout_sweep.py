"""``dot_product_attention``'s ``dropout_rate`` as a traced scalar (a ``jax.vmap`` sweep of
rates, a jitted function's argument) and ``MultiHeadAttention`` built inside such a sweep:
the sweep equals the static calls one by one (the same masks for the same key: values and
the gradients in ``q, k, v``), for the op and its twin, over one key block, several and a
sliding window; ``dL/drate = sum(dO . O) / (1 - rate)`` (the mask held fixed) equals the
twin's autodiff and central differences; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops
from funcnet.gradcheck import check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import rand
from tests.ops._sweeps import assert_sweep_equals_static

jax.config.update("jax_enable_x64", True)

KEY = jax.random.PRNGKey(11)
RATES = jnp.asarray([0.0, 0.3, 0.7])
SHAPES = ((2, 5, 4, 3), (2, 9, 2, 3), (2, 9, 2, 3))           # GQA, T != S
Q, K, V = (jnp.asarray(rand(s, i)) for i, s in enumerate(SHAPES))   # jax arrays (JAX 0.8.0)
W = rand((2, 5, 4, 3), 3)


def _loss(f, **kw):
    return lambda qkv, r: jnp.sum(W * f(*qkv, dropout_rate=r, dropout_key=KEY, **kw))


@pytest.mark.parametrize("f", [ops.dot_product_attention, R.dot_product_attention],
                         ids=["op", "twin"])
@pytest.mark.parametrize("kw", [{}, dict(causal=True, block_size=4),
                                dict(causal=True, window=3, block_size=4)],
                         ids=["one_block", "causal_three_blocks", "window_three_blocks"])
def test_rate_sweep_equals_the_static_calls(f, kw):
    assert_sweep_equals_static(_loss(f, **kw), (Q, K, V), RATES, str(kw), rtol=1e-12)


@pytest.mark.parametrize("kw", [{}, dict(causal=True, block_size=4),
                                dict(causal=True, window=3, block_size=4)],
                         ids=["one_block", "causal_three_blocks", "window_three_blocks"])
def test_rate_gradient_equals_the_twin_and_central_differences(kw):
    """Every input's gradient, the rate's included, against the twin and central
    differences; and the rate's against the hand formula."""
    def op(q, k, v, r):
        return ops.dot_product_attention(q, k, v, dropout_rate=r, dropout_key=KEY, **kw)

    def twin(q, k, v, r):
        return R.dot_product_attention(q, k, v, dropout_rate=r, dropout_key=KEY, **kw)

    rate = jnp.asarray(0.4)
    check_vjp(op, twin, (Q, K, V, rate))
    o, vjp = jax.vjp(lambda r: op(Q, K, V, r), rate)
    np.testing.assert_allclose(vjp(W)[0], jnp.sum(W * o) / (1 - rate), rtol=1e-12)


def test_a_traced_rate_is_checked():
    with pytest.raises(ValueError, match=r"dropout_rate=traced needs dropout_key"):
        jax.jit(lambda r: ops.dot_product_attention(Q, K, V, dropout_rate=r))(0.5)
    with pytest.raises(ValueError, match=r"dropout_rate must be a scalar, got shape \(2,\)"):
        jax.jit(lambda r: ops.dot_product_attention(Q, K, V, dropout_rate=r,
                                                    dropout_key=KEY))(jnp.ones(2))


def test_multi_head_attention_built_inside_a_rate_sweep():
    """The layer built inside ``vmap`` over rates equals the layers built with each float:
    losses and parameter gradients."""
    x = rand((2, 6, 8), 4)

    def loss(rate, params):
        layer = nn.MultiHeadAttention(2, causal=True, dropout_rate=rate, use_bias=False,
                                      dtype=jnp.float64)
        y, _ = layer.apply(params, (), x, key=KEY, train=True)
        return jnp.sum(jnp.sin(y))

    _, params, _ = nn.MultiHeadAttention(2, use_bias=False, dtype=jnp.float64).init(KEY, x.shape)
    assert_sweep_equals_static(lambda p, r: loss(r, p), params, RATES, "layer", rtol=1e-11)
