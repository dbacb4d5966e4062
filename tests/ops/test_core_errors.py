"""Bad input to the core ops raises ValueError/TypeError at trace time, naming arguments and shapes."""
import jax
import jax.numpy as jnp
import pytest

import funcnet.ops as ops
from funcnet.ops import reference as ref

F = jnp.float32
z = lambda *s: jnp.zeros(s, F)  # noqa: E731
i32 = lambda *s: jnp.zeros(s, jnp.int32)  # noqa: E731

BAD = [
    ("affine", (z(4, 3), z(4, 5), z(5)), ValueError, r"affine: x has shape \(4, 3\) and w has shape \(4, 5\)"),
    ("affine", (z(4, 3), z(3, 5), z(4)), ValueError, r"affine: b has shape \(4,\), expected \(5,\)"),
    ("affine", (z(4, 3), z(3, 5), z(1, 5)), ValueError, r"b has shape \(1, 5\), expected \(5,\)"),
    ("affine", (z(4, 3), z(3, 5, 1), z(5)), ValueError, r"w must have rank 2"),
    ("matmul", (z(4, 3), jnp.zeros((3, 2), jnp.float64)), TypeError, r"x has dtype float32 but w has dtype float64"),
    ("matmul", (i32(4, 3), i32(3, 2)), TypeError, r"matmul: x must have a floating dtype"),
    ("relu", (i32(3),), TypeError, r"relu: x must have a floating dtype"),
    ("softmax", (z(3, 4), 2), ValueError, r"softmax: axis 2 is out of range"),
    ("softmax_cross_entropy", (z(4, 3), i32(5)), ValueError, r"integer labels have shape \(5,\), expected \(4,\)"),
    ("softmax_cross_entropy", (z(4, 3), z(4)), TypeError, r"look like class indices but have dtype float32"),
    ("softmax_cross_entropy", (z(4, 3), z(4, 2)), ValueError, r"labels have shape \(4, 2\), expected \(4,\) .* or \(4, 3\)"),
    ("softmax_cross_entropy", (z(4, 3), i32(4, 3)), ValueError, r"integer labels have shape \(4, 3\), expected \(4,\)"),
    ("cross_entropy", (z(4, 3), i32(4), -1.0), ValueError, r"cross_entropy: eps must be in \[0.0, 1.0\)"),
    ("multiclass_hinge", (z(4, 3), z(4, 3)), TypeError, r"labels must be integer class indices of shape \(4,\)"),
    ("mean_squared_error", (z(4, 3), z(3)), ValueError, r"pred has shape \(4, 3\) but target has shape \(3,\)"),
    ("binary_cross_entropy", (z(4), z(4, 1)), ValueError, r"probs has shape \(4,\) but targets has shape \(4, 1\)"),
    ("sigmoid_binary_cross_entropy", (z(4), i32(4)), TypeError, r"targets must have a floating dtype"),
    ("batch_norm", (z(4, 3), z(4), z(3)), ValueError, r"gamma has shape \(4,\), expected \(3,\)"),
    ("batch_norm", (z(4,), z(4), z(4)), ValueError, r"batch_norm: x must have rank >= 2, got shape \(4,\)"),
    ("batch_norm", (z(4, 3), z(3), z(3), -1e-5), ValueError, r"eps must be in \[0.0, None\)"),
    ("l2_penalty", ({"w": i32(3)}, 0.1), TypeError, r"params leaf 0 has dtype int32"),
]


@pytest.mark.parametrize("module", [ops, ref], ids=["op", "reference"])
@pytest.mark.parametrize("name,args,exc,match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_at_trace_time(module, name, args, exc, match):
    with pytest.raises(exc, match=match):
        getattr(module, name)(*args)
    arrays = [i for i, a in enumerate(args) if hasattr(a, "shape") or isinstance(a, dict)]

    def traced(*arr):  # arrays traced, Python hyperparameters (axis, eps) static
        full = list(args)
        for i, a in zip(arrays, arr):
            full[i] = a
        return getattr(module, name)(*full)

    with pytest.raises(exc, match=match):  # also when traced: the check is on static shapes
        jax.jit(traced).lower(*[args[i] for i in arrays])
