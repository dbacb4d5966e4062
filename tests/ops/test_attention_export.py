"""dot_product_attention under ``jax.export`` with a symbolic SEQUENCE length (``"b, t"``):
the default block plan used to compare the symbolic ``T`` with a block size
(``InconclusiveDimensionOperation: 't' < '-8*floordiv(...)'``); a symbolic ``S`` now takes
one block. The exported function, called at two lengths, equals the jitted op on concrete
shapes (which runs several blocks), in value and gradient (``jax.grad`` through the
exported call, at T = 7); wrong concrete sizes still raise the op's clear errors at export
time; a ``bias_fn`` exports too. The layers and a GPT are exported in
tests/nn/test_attention_export.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from funcnet import ops
from funcnet.gradcheck import assert_close
from tests.ops._cases import rand
from tests.ops.test_attention_bias_fn import t5_bias

F64 = jnp.float64


def _attend(causal, **kw):
    return lambda q, k, v, mask: ops.dot_product_attention(q, k, v, mask, causal=causal, **kw)


def _spec(*shape, dtype=F64):
    return jax.ShapeDtypeStruct(shape, dtype)


@pytest.mark.parametrize("causal, window", [(True, None), (False, None), (True, 2)],
                         ids=["causal_self", "cross_T_S", "sliding_window"])
def test_exports_with_a_symbolic_sequence_length(causal, window):
    """Causal self-attention with a key-padding mask (``T = S = t``; also with a sliding
    window), and cross-attention without one (``T = t``, ``S = s``). ``block_size=2``
    splits the concrete calls into several blocks (the exported one runs one)."""
    b, t, s = export.symbolic_shape("b, t, s")
    keys = t if causal else s
    mask = _spec(b, 1, 1, t, dtype=bool) if causal else None
    exported = export.export(jax.jit(_attend(causal, window=window)))(
        _spec(b, t, 4, 3), _spec(b, keys, 2, 3), _spec(b, keys, 2, 3), mask)
    direct = _attend(causal, block_size=2, window=window)
    for length, batch in ((3, 2), (7, 1)):
        n_keys = length if causal else length + 2
        q, k, v = (jnp.asarray(rand(shape, seed)) for seed, shape in enumerate(
            [(batch, length, 4, 3), (batch, n_keys, 2, 3), (batch, n_keys, 2, 3)]))
        m = (jnp.asarray(np.arange(length) < length - 1).reshape(1, 1, 1, length)
             .repeat(batch, 0) if causal else None)

        def loss(f):
            return lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v, m)))
        assert_close(exported.call(q, k, v, m), jax.jit(direct)(q, k, v, m), 1e-12,
                     f"values at T={length}")
        if length == 3:
            continue      # gradients at one length: each one compiles the exported vjp
        got = jax.grad(loss(exported.call), (0, 1, 2))(q, k, v)
        want = jax.jit(jax.grad(loss(direct), (0, 1, 2)))(q, k, v)
        assert_close(got, want, 1e-12, f"gradients at T={length}")


@pytest.mark.parametrize("window", [None, 2], ids=["blockwise", "sliding_window"])
def test_exports_a_bias_fn_with_a_symbolic_sequence_length(window):
    """``bias_fn`` (T5's buckets) gets ``(t,)`` positions of a symbolic length: the exported
    call equals the jitted op (several blocks) in value and in the table's gradient."""
    b, t = export.symbolic_shape("b, t")

    def attend(q, k, v, table, **kw):
        return ops.dot_product_attention(q, k, v, causal=True, bias_fn=t5_bias,
                                         bias_params=table, window=window, **kw)
    exported = export.export(jax.jit(attend))(_spec(b, t, 2, 3), _spec(b, t, 2, 3),
                                              _spec(b, t, 2, 3), _spec(8, 2))
    q, k, v = (jnp.asarray(rand((1, 7, 2, 3), seed)) for seed in range(3))
    table = jnp.asarray(rand((8, 2), 5))

    def loss(f):
        return lambda table: jnp.sum(jnp.sin(f(q, k, v, table)))
    direct = jax.jit(lambda q, k, v, table: attend(q, k, v, table, block_size=2))
    assert_close(exported.call(q, k, v, table), direct(q, k, v, table), 1e-12, "values")
    assert_close(jax.grad(loss(exported.call))(table), jax.grad(loss(direct))(table), 1e-12,
                 "the table's gradient")


@pytest.mark.parametrize("shapes, match", [
    (((4, 3), (2, 2), (1, 1, "t")), r"k has shape \(b, t, 2, 2\), expected \(b, \*, \*, 3\)"),
    (((4, 3), (3, 3), (1, 1, "t")), r"q has 4 heads and k has 3"),
    (((4, 3), (2, 3), (1, 1, 5)), r"mask has shape \(b, 1, 1, 5\), expected a shape "
                                  r"broadcastable to \(b, 4, t, t\)"),
], ids=["head_size", "heads", "mask_length"])
def test_wrong_concrete_sizes_raise_clear_errors_with_symbolic_dims(shapes, match):
    b, t = export.symbolic_shape("b, t")
    (n, h), (kh, kd), mask = shapes
    mask = tuple(t if d == "t" else d for d in mask)
    with pytest.raises(ValueError, match="dot_product_attention: " + match):
        export.export(jax.jit(_attend(True)))(_spec(b, t, n, h), _spec(b, t, kh, kd),
                                             _spec(b, t, kh, kd), _spec(b, *mask, dtype=bool))
