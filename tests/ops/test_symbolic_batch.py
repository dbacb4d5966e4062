"""Ops under ``jax.export`` with a symbolic batch size (shape polymorphism): the shape
checks must not order a symbolic dimension against a constant (``min((b, 3, 2, 4))`` is
"inconclusive"), and the exported function, value and gradient, must equal the op called
on concrete shapes."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from funcnet import ops
from funcnet.gradcheck import assert_close
from tests.ops._cases import rand


def _loss(q, k, v, mask):
    return jnp.sum(jnp.sin(ops.dot_product_attention(q, k, v, mask, causal=True)))


def test_attention_exports_with_a_symbolic_batch():
    """Before: ``InconclusiveDimensionOperation: 'b' > '3'`` at trace time (the check that
    no axis is empty used ``min`` over the shape, and the default block size divided by
    the symbolic ``B N T``). The default block size counts a symbolic batch as 1."""
    (b,) = export.symbolic_shape("b")
    f32 = jnp.float32
    specs = (jax.ShapeDtypeStruct((b, 3, 4, 2), f32), jax.ShapeDtypeStruct((b, 5, 2, 2), f32),
             jax.ShapeDtypeStruct((b, 5, 2, 2), f32), jax.ShapeDtypeStruct((b, 1, 1, 5), bool))
    fn = jax.jit(jax.value_and_grad(_loss, (0, 1, 2)))
    exported = export.export(fn)(*specs)
    for batch in (1, 3):
        q, k, v = (jnp.asarray(rand(s, i), f32) for i, s in enumerate(
            [(batch, 3, 4, 2), (batch, 5, 2, 2), (batch, 5, 2, 2)]))
        mask = jnp.asarray(np.arange(5) < 4).reshape(1, 1, 1, 5).repeat(batch, 0)
        got, want = exported.call(q, k, v, mask), fn(q, k, v, mask)
        assert_close(got, want, 1e-6, f"exported vs direct, batch {batch}")
