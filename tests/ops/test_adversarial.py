"""Adversarial inputs against every core op, as one table (issue 13); the one place for the
core ops' error paths (the former ``test_core_errors.py`` rows are here).

Each row: an op, its arguments, the exception type and the message it must raise. Array
arguments are written ``A(shape, dtype)``; each row runs

* eagerly, with zero-filled NumPy arrays, on the op and on its reference twin (they share
  one check function), and
* under tracing (``jax.eval_shape``: what ``jax.jit`` does first) with the same arrays as
  abstract ``jax.ShapeDtypeStruct`` arguments, unless the row is marked ``EAGER`` (checks
  of concrete values, e.g. labels out of range, cannot run on tracers).

Non-array arguments (hyperparameters, lists, ``None``) are passed as they are in both
modes. Tracing only, no compilation: the whole table runs in seconds.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.ops import reference as ref

F32, F64, I32 = np.float32, np.float64, np.int32


class A:
    """An array argument: zeros eagerly, a ``ShapeDtypeStruct`` when traced."""

    def __init__(self, *shape, dtype=F64):
        self.shape, self.dtype = shape, dtype

    def concrete(self):
        return np.zeros(self.shape, self.dtype)

    def abstract(self):
        return jax.ShapeDtypeStruct(self.shape, self.dtype)


class Labels(A):
    """Concrete integer labels with given values (out of range: only checkable eagerly)."""

    def __init__(self, *values):
        super().__init__(len(values), dtype=I32)
        self.values = values

    def concrete(self):
        return np.asarray(self.values, I32)


EAGER = "eager"   # marker: the check needs concrete values
KEY = A(2, dtype=np.uint32)
NAN, INF = float("nan"), float("inf")
LIST = [[0.0, 1.0], [2.0, 3.0]]

# (op, args, kwargs, exception, message regex[, EAGER])
TABLE = [
    # ---- affine / matmul
    ("affine", (LIST, A(2, 3), A(3)), {}, TypeError,
     r"affine: x must be an array, got list \(convert it with jnp.asarray first\)"),
    ("affine", (A(4, 2), None, A(3)), {}, TypeError, r"affine: w must be an array, got NoneType"),
    ("affine", (A(4, 2, dtype=I32), A(2, 3), A(3)), {}, TypeError,
     r"affine: x must have a floating dtype, got int32 with shape \(4, 2\)"),
    ("affine", (A(4, 2), A(2, 3), A(3, dtype=F32)), {}, TypeError,
     r"affine: x has dtype float64 but b has dtype float32"),
    ("affine", (A(4, 2), A(2, 3, 1), A(3)), {}, ValueError,
     r"affine: w has shape \(2, 3, 1\) \(rank 3\), expected rank 2 \(D, H\)"),
    ("affine", (A(4, 2), A(5, 3), A(3)), {}, ValueError,
     r"affine: x has shape \(4, 2\) and w has shape \(5, 3\); the last axis of x \(2\)"),
    ("affine", (A(4, 2), A(2, 3), A(4)), {}, ValueError,
     r"affine: b has shape \(4,\), expected \(3,\) \(one bias per output column"),
    ("affine", (A(4, 2), A(2, 3), 1.0), {}, ValueError, r"affine: b has shape \(\), expected \(3,\)"),
    ("affine", (A(4, 2), A(2, 3), A(1, 3)), {}, ValueError, r"affine: b has shape \(1, 3\), expected \(3,\)"),
    ("matmul", (A(4, 3, dtype=F32), A(3, 2)), {}, TypeError,
     r"matmul: x has dtype float32 but w has dtype float64; cast one of them explicitly"),
    ("matmul", (A(), A(1, 3)), {}, ValueError, r"matmul: x has shape \(\), expected rank >= 1"),
    ("matmul", (A(4, 2), "w"), {}, TypeError, r"matmul: w must be an array, got str"),
    # ---- activations
    ("relu", (LIST,), {}, TypeError, r"relu: x must be an array, got list"),
    ("relu", (None,), {}, TypeError, r"relu: x must be an array, got NoneType"),
    ("relu", (A(2, dtype=np.uint8),), {}, TypeError, r"relu: x must have a floating dtype, got uint8"),
    ("sigmoid", (A(3, dtype=I32),), {}, TypeError, r"sigmoid: x must have a floating dtype"),
    ("sigmoid", ((1.0, 2.0),), {}, TypeError, r"sigmoid: x must be an array, got tuple"),
    ("tanh", (None,), {}, TypeError, r"tanh: x must be an array, got NoneType"),
    ("tanh", (A(3, dtype=np.bool_),), {}, TypeError, r"tanh: x must have a floating dtype, got bool"),
    ("softmax", (LIST,), {}, TypeError, r"softmax: x must be an array, got list"),
    ("softmax", (A(3, 4),), {"axis": 2}, ValueError, r"softmax: axis 2 is out of range for an input of rank 2"),
    ("softmax", (A(3, 4),), {"axis": 1.0}, TypeError,
     r"softmax: axis must be an int or a tuple of ints, got 1.0"),
    # jax.nn's axis (an int, distinct ints or None) and where (tests/ops/test_softmax_where.py)
    ("softmax", (A(3, 4),), {"axis": (1, -1)}, ValueError,
     r"softmax: axis must name distinct axes, got \(1, -1\)"),
    ("log_softmax", (A(3, 4),), {"axis": "all"}, TypeError,
     r"log_softmax: axis must be an int or a tuple of ints, got 'all'"),
    ("log_softmax", (A(3, 4),), {"where": A(3, 4)}, TypeError,
     r"log_softmax: where must be a bool array, got float64"),
    ("softmax", (A(3, 4),), {"where": A(4, dtype=np.bool_)}, ValueError,
     r"softmax: where has shape \(4,\) \(rank 1\), expected rank 2 \(x has shape \(3, 4\)"),
    ("softmax", (A(3, 0),), {}, ValueError,
     r"softmax: x has shape \(3, 0\), expected at least one class along axis 1"),
    ("log_softmax", (None,), {}, TypeError, r"log_softmax: x must be an array, got NoneType"),
    ("log_softmax", (A(),), {}, ValueError, r"log_softmax: x has shape \(\), expected rank >= 1"),
    ("log_softmax", (A(0, 2),), {"axis": 0}, ValueError, r"log_softmax: x has shape \(0, 2\), expected at least one class along axis 0"),
    # ---- classification losses
    ("softmax_cross_entropy", (LIST, A(2, dtype=I32)), {}, TypeError,
     r"softmax_cross_entropy: logits must be an array, got list"),
    ("softmax_cross_entropy", (A(2, 3), None), {}, TypeError,
     r"softmax_cross_entropy: labels must be an array, got NoneType"),
    ("softmax_cross_entropy", (A(2, 3), [0, 1]), {}, TypeError,
     r"softmax_cross_entropy: labels must be an array, got list"),
    ("softmax_cross_entropy", (A(2, 3, dtype=I32), A(2, dtype=I32)), {}, TypeError,
     r"softmax_cross_entropy: logits must have a floating dtype"),
    ("softmax_cross_entropy", (A(2, 3), A(3, dtype=I32)), {}, ValueError,
     r"integer labels have shape \(3,\), expected \(2,\)"),
    ("softmax_cross_entropy", (A(2, 3), A(2, 3, dtype=I32)), {}, ValueError,
     r"softmax_cross_entropy: integer labels have shape \(2, 3\), expected \(2,\) \(one class "
     r"index per row of logits \(2, 3\)\)"),
    ("softmax_cross_entropy", (A(2, 3), A(2, dtype=F32)), {}, TypeError,
     r"labels with shape \(2,\) look like class indices but have dtype float32"),
    ("softmax_cross_entropy", (A(2, 3), A(2, 3, dtype=np.bool_)), {}, TypeError,
     r"labels must be integer indices or floating probabilities, got dtype bool"),
    ("softmax_cross_entropy", (A(0, 3), A(0, dtype=I32)), {}, ValueError,
     r"logits has shape \(0, 3\), expected at least one row and one class"),
    ("softmax_cross_entropy", (A(2, 0), A(2, dtype=I32)), {}, ValueError,
     r"logits has shape \(2, 0\), expected at least one row and one class"),
    ("softmax_cross_entropy", (A(2, 3), Labels(0, 3)), {}, ValueError,
     r"softmax_cross_entropy: labels hold 3 \(at index \(1,\)\), expected class indices in \[0, 3\)",
     EAGER),
    ("cross_entropy", (A(2, 3), LIST), {}, TypeError, r"cross_entropy: labels must be an array, got list"),
    ("cross_entropy", (A(2, 3), A(2, 4)), {}, ValueError,
     r"cross_entropy: labels have shape \(2, 4\), expected \(2,\) \(integer indices\) or \(2, 3\)"),
    ("cross_entropy", (A(2, 3), Labels(-1, 0)), {}, ValueError,
     r"cross_entropy: labels hold -1 \(at index \(0,\)\), expected class indices in \[0, 3\)", EAGER),
    ("cross_entropy", (A(2, 3), A(2, dtype=I32)), {"eps": NAN}, ValueError,
     r"cross_entropy: eps must be finite, got nan"),
    ("cross_entropy", (A(2, 3), A(2, dtype=I32)), {"eps": 1.0}, ValueError,
     r"cross_entropy: eps must be in \[0, 1\), got 1"),
    ("cross_entropy", (A(2, 3), A(2, dtype=I32)), {"eps": -1.0}, ValueError,
     r"cross_entropy: eps must be in \[0, 1\), got -1"),
    ("cross_entropy", (A(2, 3), A(2, dtype=I32)), {"eps": "1e-7"}, TypeError,
     r"cross_entropy: eps must be a Python float, got str"),
    ("multiclass_hinge", (None, A(2, dtype=I32)), {}, TypeError,
     r"multiclass_hinge: scores must be an array, got NoneType"),
    ("multiclass_hinge", (A(2, 3), A(2, 3)), {}, TypeError,
     r"multiclass_hinge: labels must be integer class indices of shape \(2,\)"),
    ("multiclass_hinge", (A(2, 3), A(2, dtype=I32)), {"margin": NAN}, ValueError,
     r"multiclass_hinge: margin must be finite, got nan"),
    ("multiclass_hinge", (A(2, 3), A(2, dtype=I32)), {"margin": A(2)}, ValueError,
     r"multiclass_hinge: margin must be a scalar, got shape \(2,\)"),
    ("multiclass_hinge", (A(2, 3), A(2, dtype=I32)), {"margin": None}, TypeError,
     r"multiclass_hinge: margin must be a number or a scalar array, got NoneType"),
    ("multiclass_hinge", (A(2, 3), Labels(2, 7)), {}, ValueError,
     r"multiclass_hinge: labels hold 7 \(at index \(1,\)\), expected class indices in \[0, 3\)",
     EAGER),
    # ---- elementwise losses
    ("mean_squared_error", (LIST, A(2, 2)), {}, TypeError,
     r"mean_squared_error: pred must be an array, got list"),
    ("mean_squared_error", (A(4, 3), A(3)), {}, ValueError,
     r"mean_squared_error: pred has shape \(4, 3\) but target has shape \(3,\); they must match"),
    ("mean_squared_error", (A(3), A(3, dtype=I32)), {}, TypeError,
     r"mean_squared_error: target must have a floating dtype, got int32"),
    ("mean_squared_error", (A(0), A(0)), {}, ValueError,
     r"mean_squared_error: pred has shape \(0,\), expected at least one element"),
    ("binary_cross_entropy", (A(3), None), {}, TypeError,
     r"binary_cross_entropy: targets must be an array, got NoneType"),
    ("binary_cross_entropy", (A(3, dtype=I32), A(3)), {}, TypeError,
     r"binary_cross_entropy: probs must have a floating dtype, got int32"),
    ("binary_cross_entropy", (A(3), A(3)), {"eps": INF}, ValueError,
     r"binary_cross_entropy: eps must be finite, got inf"),
    ("binary_cross_entropy", (A(3), A(3)), {"eps": 0.5}, ValueError,
     r"binary_cross_entropy: eps must be in \[0, 0.5\), got 0.5"),
    ("sigmoid_binary_cross_entropy", (A(4), LIST), {}, TypeError,
     r"sigmoid_binary_cross_entropy: targets must be an array, got list"),
    ("sigmoid_binary_cross_entropy", (A(4), A(4, 1)), {}, ValueError,
     r"logits has shape \(4,\) but targets has shape \(4, 1\)"),
    ("sigmoid_binary_cross_entropy", (A(4), A(4, dtype=np.bool_)), {}, TypeError,
     r"targets must have a floating dtype, got bool"),
    # ---- regularization
    ("l2_penalty", ({"w": A(3, dtype=I32)}, 0.1), {}, TypeError,
     r"l2_penalty: params\['w'\] has dtype int32 with shape \(3,\)"),
    ("l2_penalty", ({"w": [1.0, 2.0]}, 0.1), {}, TypeError,
     r"l2_penalty: params\['w'\]\[0\] must be an array, got float"),
    ("l2_penalty", ({"w": "A(3)"}, 0.1), {}, TypeError,
     r"l2_penalty: params\['w'\] must be an array, got str"),
    ("l2_penalty", ({"w": A(3)}, NAN), {}, ValueError, r"l2_penalty: weight_decay must be finite, got nan"),
    ("l2_penalty", ({"w": A(3)}, A(2)), {}, ValueError,
     r"l2_penalty: weight_decay must be a scalar, got shape \(2,\)"),
    ("l2_penalty", ({"w": A(3)}, None), {}, TypeError,
     r"l2_penalty: weight_decay must be a number or a scalar array, got NoneType"),
    # ---- batch_norm
    ("batch_norm", (LIST, A(2), A(2)), {}, TypeError, r"batch_norm: x must be an array, got list"),
    ("batch_norm", (A(4, 3), A(4), A(3)), {}, ValueError,
     r"batch_norm: gamma has shape \(4,\), expected \(3,\) \(one scale per feature"),
    ("batch_norm", (A(4, 3), A(3), A(3, dtype=F32)), {}, TypeError,
     r"batch_norm: gamma has dtype float64 but beta has dtype float32"),
    ("batch_norm", (A(4, 3), A(3), A(3)), {"eps": NAN}, ValueError, r"batch_norm: eps must be finite, got nan"),
    ("batch_norm", (A(4, 3), A(3), A(3)), {"eps": -1.0}, ValueError,
     r"batch_norm: eps must be in \[0, inf\), got -1"),
    ("batch_norm", (A(0, 3), A(3), A(3)), {}, ValueError,
     r"batch_norm: x has shape \(0, 3\): 0 value\(s\) per feature, expected at least 2"),
    ("batch_norm", (A(1, 3), A(3), A(3)), {}, ValueError,
     r"batch_norm: x has shape \(1, 3\): 1 value\(s\) per feature, expected at least 2"),
    ("batch_norm", (A(3), A(3), A(3)), {}, ValueError, r"batch_norm: x has shape \(3,\), expected rank >= 2"),
    # ---- conv2d
    ("conv2d", (LIST, A(3, 3, 1, 2)), {}, TypeError, r"conv2d: x must be an array, got list"),
    ("conv2d", (A(1, 5, 5, 1), None), {}, TypeError, r"conv2d: w must be an array, got NoneType"),
    ("conv2d", (A(1, 5, 5, 1), A(0, 0, 1, 2)), {}, ValueError,
     r"conv2d: w has shape \(0, 0, 1, 2\), expected a kernel of at least 1x1 \(KH, KW >= 1\)"),
    ("conv2d", (A(1, 5, 5, 1), A(3, 0, 1, 2)), {}, ValueError, r"expected a kernel of at least 1x1"),
    ("conv2d", (A(1, 2, 2, 1), A(3, 3, 1, 2)), {}, ValueError,
     r"conv2d: kernel \(3, 3\) is larger than the padded input \(2, 2\) of x \(1, 2, 2, 1\)"),
    ("conv2d", (A(1, 5, 5, 1), A(3, 3, 2, 2)), {}, ValueError,
     r"conv2d: w has shape \(3, 3, 2, 2\), expected in_channels 1 to match x"),
    ("conv2d", (A(5, 5, 1), A(3, 3, 1, 2)), {}, ValueError,
     r"conv2d: x has shape \(5, 5, 1\) \(rank 3\), expected rank 4 \(N, H, W, Cin\)"),
    ("conv2d", (A(1, 5, 5, 1), A(3, 3, 1, 2)), {"stride": 0}, ValueError, r"conv2d: stride must be >= 1, got 0"),
    ("conv2d", (A(1, 5, 5, 1), A(3, 3, 1, 2)), {"stride": 1.5}, TypeError,
     r"conv2d: stride must be an int or a pair of ints, got 1.5"),
    ("conv2d", (A(1, 5, 5, 1), A(3, 3, 1, 2)), {"padding": "FULL"}, ValueError,
     r"conv2d: padding must be 'SAME', 'VALID' or ints, got 'FULL'"),
    ("conv2d", (A(1, 5, 5, 1), A(3, 3, 1, 2)), {"impl": "cudnn"}, ValueError,
     r"conv2d: impl must be one of 'auto', 'xla', 'im2col', got 'cudnn'"),
    # ---- pooling
    ("max_pool2d", (LIST,), {}, TypeError, r"max_pool2d: x must be an array, got list"),
    ("max_pool2d", (A(2, 4, 4),), {}, ValueError,
     r"max_pool2d: x has shape \(2, 4, 4\) \(rank 3\), expected rank 4 \(N, H, W, C\)"),
    ("max_pool2d", (A(1, 4, 4, 1),), {"window": 0}, ValueError, r"max_pool2d: window must be >= 1, got 0"),
    ("max_pool2d", (A(1, 4, 4, 1),), {"window": 5}, ValueError,
     r"max_pool2d: window \(5, 5\) is larger than the padded input \(4, 4\)"),
    ("avg_pool2d", (None,), {}, TypeError, r"avg_pool2d: x must be an array, got NoneType"),
    ("avg_pool2d", (A(1, 4, 4, 1, dtype=I32),), {}, TypeError, r"avg_pool2d: x must have a floating dtype"),
    ("avg_pool2d", (A(1, 4, 4, 1),), {"padding": 2}, ValueError,
     r"avg_pool2d: padding \(\(2, 2\), \(2, 2\)\) must be smaller than the window \(2, 2\)"),
    ("avg_pool2d", (A(4, 4, 1),), {}, ValueError, r"avg_pool2d: x has shape \(4, 4, 1\) \(rank 3\)"),
    # ---- rnn
    ("rnn", (LIST, A(1, 2), A(2, 2), A(2, 2), A(2)), {}, TypeError, r"rnn: xs must be an array, got list"),
    ("rnn", (A(3, 1, 2), A(1, 2), A(2, 2), None, A(2)), {}, TypeError, r"rnn: wh must be an array, got NoneType"),
    ("rnn", (A(0, 1, 2), A(1, 2), A(2, 2), A(2, 2), A(2)), {}, ValueError,
     r"rnn: xs has shape \(0, 1, 2\), expected T >= 1 steps"),
    ("rnn", (A(3, 1, 2), A(2, 2), A(2, 2), A(2, 2), A(2)), {}, ValueError,
     r"rnn: h0 has shape \(2, 2\), expected \(1, 2\) \(batch N=1"),
    ("rnn", (A(3, 1, 2), A(1, 2), A(2, 2), A(2, 2), A(2, dtype=F32)), {}, TypeError,
     r"rnn: xs has dtype float64 but b has dtype float32"),
    # ---- dropout
    ("dropout", (LIST, 0.5, KEY), {}, TypeError, r"dropout: x must be an array, got list"),
    ("dropout", (A(3), NAN, KEY), {}, ValueError, r"dropout: rate must be finite, got nan"),
    ("dropout", (A(3), INF, KEY), {}, ValueError, r"dropout: rate must be finite, got inf"),
    ("dropout", (A(3), 1.0, KEY), {}, ValueError, r"dropout: rate must be in \[0, 1\), got 1"),
    ("dropout", (A(3), None, KEY), {}, TypeError,
     r"dropout: rate must be a number or a scalar array, got NoneType"),
    ("dropout", (A(3), 0.5, None), {}, TypeError, r"dropout: key must be a PRNG key"),
    ("dropout", (A(3), 0.5, A(2)), {}, TypeError, r"dropout: key must be a PRNG key .* with dtype float64"),
    ("dropout", (A(3), 0.5, A(4, dtype=np.uint32)), {}, ValueError,
     r"dropout: key must be a single PRNG key of shape \(2,\), got shape \(4,\)"),
]
IDS = [f"{row[0]}-{i}" for i, row in enumerate(TABLE)]
CORE = ["affine", "matmul", "relu", "sigmoid", "tanh", "softmax", "log_softmax",
        "softmax_cross_entropy", "cross_entropy", "multiclass_hinge", "mean_squared_error",
        "binary_cross_entropy", "sigmoid_binary_cross_entropy", "l2_penalty", "batch_norm",
        "conv2d", "max_pool2d", "avg_pool2d", "rnn", "dropout"]


def _materialize(tree, how):
    return jax.tree_util.tree_map(lambda a: getattr(a, how)() if isinstance(a, A) else a, tree,
                                  is_leaf=lambda a: isinstance(a, A))


def _arrays(tree):
    return [a for a in jax.tree_util.tree_leaves(tree, is_leaf=lambda a: isinstance(a, A))
            if isinstance(a, A)]


@pytest.mark.parametrize("module", [ops, ref], ids=["op", "twin"])
@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_bad_input_is_refused_eagerly_and_when_traced(module, row):
    name, args, kwargs, exc, match, *mode = row
    fn = getattr(module, name)
    with pytest.raises(exc, match=match):
        fn(*_materialize(args, "concrete"), **_materialize(kwargs, "concrete"))
    if mode == [EAGER]:
        return
    specs = _arrays((args, kwargs))

    def traced(*arrays):   # the A(...) arguments traced, everything else static
        it = iter(arrays)
        swap = lambda a: next(it) if isinstance(a, A) else a  # noqa: E731
        a, k = jax.tree_util.tree_map(swap, (args, kwargs), is_leaf=lambda a: isinstance(a, A))
        return fn(*a, **k)

    with pytest.raises(exc, match=match):
        jax.eval_shape(traced, *[s.abstract() for s in specs])


def test_table_covers_every_core_op_with_the_usual_attacks():
    """Every op: a list or None (TypeError naming the argument) and a wrong dtype or
    shape; ops with hyperparameters: NaN/inf; ops with a reduction: an empty axis."""
    by_op = {n: [r for r in TABLE if r[0] == n] for n in CORE}
    for name, rows in by_op.items():
        assert rows, f"{name} has no adversarial row"
        assert any(re.search(r"must be an array, got (list|tuple|NoneType|str)", r[4])
                   for r in rows), name
        assert any(re.search(r"dtype|rank|shape", r[4]) for r in rows), name
    for name in ("cross_entropy", "multiclass_hinge", "binary_cross_entropy", "l2_penalty",
                 "batch_norm", "dropout"):
        assert any("finite" in r[4] for r in by_op[name]), name
    for name in ("softmax", "softmax_cross_entropy", "mean_squared_error", "batch_norm",
                 "conv2d", "rnn"):
        assert any(re.search(r"\\\(0|, 0|at least", r[4]) for r in by_op[name]), name
    assert set(CORE) <= set(ops.__all__)


def test_jit_cannot_check_label_values():
    """Rows marked EAGER: under jit the same call runs (documented: NaN loss)."""
    logits = jnp.zeros((2, 3))
    out = jax.jit(ops.softmax_cross_entropy)(logits, jnp.array([0, 3], jnp.int32))
    assert np.isnan(float(out))
