"""MultiHeadAttention (rope, a key-padding mask, causal or not) and a rope GPT under
``jax.export`` with a symbolic batch and sequence length ``"b, t"``: the exported loss
and gradient (or logits), called at two lengths, equal the jitted model on concrete
shapes (float64). Before: ``InconclusiveDimensionOperation`` in the attention op's block
plan (tests/ops/test_attention_export.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import numpy_init, randint, randn
from tests.nn.test_attention_rope import gpt


def _specs(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


@pytest.mark.parametrize("causal", [True, False])
def test_multi_head_attention_exports_with_a_symbolic_length(causal):
    layer = nn.MultiHeadAttention(4, num_kv_heads=2, causal=causal, rope=True)
    _, params, _ = numpy_init(layer, ((-1, 5, 8), (-1, 1, 1, 5)))

    def loss(p, x, m):
        return jnp.sum(jnp.sin(layer.apply(p, (), (x, m))[0]))
    fn = jax.jit(jax.value_and_grad(loss, (0, 1)))
    b, t = export.symbolic_shape("b, t")
    exported = export.export(fn)(_specs(params), jax.ShapeDtypeStruct((b, t, 8), jnp.float64),
                                 jax.ShapeDtypeStruct((b, 1, 1, t), bool))
    for n, length in ((2, 3), (1, 6)):
        x = randn((n, length, 8), seed=length)
        m = jnp.asarray(np.arange(length) < length - 1).reshape(1, 1, 1, length).repeat(n, 0)
        assert_close(exported.call(params, x, m), fn(params, x, m), 1e-12, f"T={length}")


def test_rope_gpt_exports_with_a_symbolic_length():
    model = gpt()
    _, params, state = numpy_init(model, (-1, 7))
    fn = jax.jit(lambda p, ids: model.apply(p, state, ids)[0])
    b, t = export.symbolic_shape("b, t")
    exported = export.export(fn)(_specs(params), jax.ShapeDtypeStruct((b, t), jnp.int32))
    for n, length in ((2, 3), (1, 9)):
        ids = randint((n, length), 11, seed=length)
        assert_close(exported.call(params, ids), fn(params, ids), 1e-12, f"T={length}")
