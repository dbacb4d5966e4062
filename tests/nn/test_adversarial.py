"""Bad input against funcnet.nn, as a table: each row runs eagerly and under ``jax.jit``
and must raise the given type with the given message (layer name, argument, what was got).

Rows: bad constructor arguments (refused at construction, before any data), bad ``init``
arguments (non-int or non-positive sizes, wrong ranks, windows that do not fit, bad
keys), and bad ``apply`` arguments (lists, wrong dtypes, params or state of another
layer or model, inputs of the wrong shape, degenerate batch-norm batches). Op errors
reach the user through the layer, prefixed with the layer's name.
"""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from tests.nn._models import abstract_init, cnn, mlp

KEY = jax.random.PRNGKey(0)
NAN = float("nan")


def z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype)


def concrete(tree):
    """ShapeDtypeStructs (from ``abstract_init``) -> NumPy zeros of the same shapes."""
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), tree)


def dense(d, h):
    return {"w": z(d, h), "b": z(h)}


def bn(c):
    return {"gamma": z(c), "beta": z(c)}, {"mean": z(c), "var": z(c)}


CNN = cnn(jnp.float32)
CNN_P, CNN_S = concrete(abstract_init(CNN, (-1, 28, 28, 1))[1:])
MLP_P = concrete(abstract_init(mlp(jnp.float32), (-1, 784))[1])
LSTM_P = concrete(abstract_init(nn.LSTM(4), (5, -1, 3))[1])
GRU_P = concrete(abstract_init(nn.GRU(3), (5, -1, 3))[1])


def apply(layer, params, state, x, **kw):
    return layer.apply(params, state, x, **kw)[0]


# (id, function, arguments, exception, message regex). Constructor and init rows take no
# arguments; apply rows take (params, state, x) so that jit traces them.
CONSTRUCT = [
    ("dense-zero", lambda: nn.Dense(0), ValueError, r"Dense: out_features must be >= 1, got 0"),
    ("dense-float", lambda: nn.Dense(2.5), TypeError,
     r"Dense: out_features must be an int, got float 2.5"),
    ("dense-w_init", lambda: nn.Dense(3, w_init="he"), TypeError,
     r"Dense\(3\): w_init must be callable \(key, shape, dtype\), got str"),
    ("dense-int-dtype", lambda: nn.Dense(3, dtype=jnp.int32), TypeError,
     r"Dense\(3\): dtype must be a floating dtype, got int32"),
    ("dense-use_bias", lambda: nn.Dense(3, use_bias=1), TypeError,
     r"Dense\(3\): use_bias must be a bool, got int 1"),
    ("conv-kernel-0", lambda: nn.Conv2D(4, 0), ValueError,
     r"Conv2D\(4\): kernel_size must be >= 1, got 0"),
    ("conv-kernel-3d", lambda: nn.Conv2D(4, (3, 3, 3)), TypeError,
     r"Conv2D\(4\): kernel_size must be an int or a pair of ints, got \(3, 3, 3\)"),
    ("conv-stride-0", lambda: nn.Conv2D(4, 3, stride=0), ValueError,
     r"Conv2D\(4\): stride must be >= 1, got 0"),
    ("conv-padding-neg", lambda: nn.Conv2D(4, 3, padding=-1), ValueError,
     r"Conv2D\(4\): padding must be non-negative, got -1"),
    ("conv-padding-str", lambda: nn.Conv2D(4, 3, padding="FULL"), ValueError,
     r"Conv2D\(4\): padding must be 'SAME', 'VALID' or ints, got 'FULL'"),
    ("conv-padding-float", lambda: nn.Conv2D(4, 3, padding=1.5), TypeError,
     r"Conv2D\(4\): padding must be an int, a pair of ints, .* got 1.5"),
    ("conv-use_bias", lambda: nn.Conv2D(4, 3, use_bias="no"), TypeError,
     r"Conv2D\(4\): use_bias must be a bool"),
    ("conv1d-kernel-0", lambda: nn.Conv1D(4, 0), ValueError,
     r"Conv1D\(4\): kernel_size must be >= 1, got 0"),
    ("conv1d-padding", lambda: nn.Conv1D(4, 3, padding=(1, 2, 3)), TypeError,
     r"Conv1D\(4\): padding must be an int, a pair \(lo, hi\), 'SAME' or 'VALID'"),
    ("pool-padding-ge-window", lambda: nn.MaxPool2D(2, padding=2), ValueError,
     r"MaxPool2D\(2\): max_pool2d: padding .* must be smaller than the window"),
    ("avgpool-padding-ge-window", lambda: nn.AvgPool2D(3, padding=(0, 3)), ValueError,
     r"AvgPool2D\(3\): avg_pool2d: padding .* must be smaller than the window"),
    ("pool-window-0", lambda: nn.MaxPool2D(0), ValueError, r"MaxPool2D: window must be >= 1"),
    ("pool-stride-1tuple", lambda: nn.AvgPool2D(2, stride=(1,)), TypeError,
     r"AvgPool2D: stride must be an int or a pair of ints, got \(1,\)"),
    ("dropout-1", lambda: nn.Dropout(1.0), ValueError, r"Dropout: rate must be in \[0, 1\), got 1"),
    ("dropout-nan", lambda: nn.Dropout(NAN), ValueError, r"Dropout: rate must be finite, got nan"),
    ("dropout-str", lambda: nn.Dropout("0.5"), TypeError,
     r"Dropout: rate must be a number or a scalar array"),
    ("bn-momentum", lambda: nn.BatchNorm(momentum=1.0), ValueError,
     r"BatchNorm: momentum must be in \[0, 1\), got 1"),
    ("bn-eps-0", lambda: nn.BatchNorm(eps=0), ValueError, r"BatchNorm: eps must be in \(0, inf\)"),
    ("bn-eps-nan", lambda: nn.BatchNorm(eps=NAN), ValueError, r"BatchNorm: eps must be finite"),
    ("bn-axis_name", lambda: nn.BatchNorm(axis_name=3), TypeError,
     r"BatchNorm: axis_name must be a str \(a mapped axis name\) or None, got int 3"),
    ("rnn-zero", lambda: nn.RNN(0), ValueError, r"RNN: hidden_size must be >= 1, got 0"),
    ("rnn-learn_h0", lambda: nn.RNN(3, learn_h0="yes"), TypeError,
     r"RNN\(3\): learn_h0 must be a bool"),
    ("softmax-axis", lambda: nn.Softmax(axis=1.0), TypeError,
     r"Softmax: axis must be an int, a tuple of ints or None, got float 1.0"),
    ("softmax-axis-tuple", lambda: nn.Softmax(axis=(0, "a")), TypeError,
     r"Softmax: axis must be an int, a tuple of ints or None, got tuple \(0, 'a'\)"),
    ("log-softmax-axis", lambda: nn.LogSoftmax(axis=[0]), TypeError,
     r"LogSoftmax: axis must be an int, a tuple of ints or None, got list \[0\]"),
    ("gelu-approximate", lambda: nn.GELU(approximate="no"), TypeError,
     r"GELU\(approximate=no\): gelu: approximate must be a bool"),
    ("leaky-relu-nan", lambda: nn.LeakyReLU(NAN), ValueError,
     r"LeakyReLU\(nan\): leaky_relu: negative_slope must be finite, got nan"),
    ("elu-alpha", lambda: nn.ELU("1"), TypeError,
     r"ELU\('1'\): elu: alpha must be a Python float, got str"),
    ("celu-zero", lambda: nn.CELU(0.0), ValueError, r"CELU\(0.0\): celu: alpha must be nonzero"),
    ("squareplus-b", lambda: nn.Squareplus(0), ValueError,
     r"Squareplus\(0\): squareplus: b must be in \(0, inf\), got 0"),
    ("glu-axis", lambda: nn.GLU(axis="last"), TypeError, r"GLU: axis must be an int"),
    ("softcap-zero", lambda: nn.SoftCap(0.0), ValueError,
     r"SoftCap: cap must be in \(0, inf\), got 0"),
    ("softcap-str", lambda: nn.SoftCap("30"), TypeError, r"SoftCap: cap must be a number or a "
     r"scalar array, got str"),
    ("fanout-0", lambda: nn.FanOut(0), ValueError, r"FanOut: n must be >= 1, got 0"),
    ("fanin-concat-axis", lambda: nn.FanInConcat(axis=0.5), TypeError,
     r"FanInConcat: axis must be an int"),
    ("serial-not-layer", lambda: nn.serial(nn.ReLU(), lambda x: x), TypeError,
     r"serial: argument 1 must be a Layer \(init, apply\), got function"),
    ("parallel-not-layer", lambda: nn.parallel(object()), TypeError,
     r"parallel: argument 0 must be a Layer"),
    ("residual-not-layer", lambda: nn.Residual(3), TypeError,
     r"Residual: argument 0 must be a Layer"),
]

INIT = [
    ("float-size", lambda: nn.Dense(3).init(KEY, (-1, 4.5)), TypeError,
     r"Dense\(3\): input_shape\[1\] must be an int, got float 4.5"),
    ("zero-size", lambda: nn.Dense(3).init(KEY, (-1, 0)), ValueError,
     r"Dense\(3\): input_shape \(-1, 0\) must have positive sizes, except one -1"),
    ("two-unknown", lambda: nn.Dense(3).init(KEY, (-1, -1, 4)), ValueError,
     r"Dense\(3\): input_shape \(-1, -1, 4\) must have positive sizes, except one -1"),
    ("unknown-features", lambda: nn.Dense(3).init(KEY, (-1,)), ValueError,
     r"Dense\(3\): input_shape \(-1,\) has -1 at axis 0, a size the layer needs "
     r"\(\.\.\., D\); no axis may be -1"),
    ("unknown-features-2d", lambda: nn.LayerNorm().init(KEY, (4, -1)), ValueError,
     r"LayerNorm: input_shape \(4, -1\) has -1 at axis 1, a size the layer needs "
     r"\(\.\.\., F\); only axis 0 may be -1"),
    ("flatten-unknown-inner", lambda: nn.serial(nn.LSTM(3), nn.Flatten()).init(
        KEY, (4, -1, 2)), ValueError, r"serial\[1\] \(Flatten\): input_shape \(4, -1, 3\) has "
     r"-1 at axis 1, a size the layer needs \(N, \.\.\.\); only axis 0 \(the batch\)"),
    ("conv1d-unknown-length", lambda: nn.serial(nn.LSTM(3), nn.Conv1D(2, 2)).init(
        KEY, (4, -1, 2)), ValueError, r"serial\[1\] \(Conv1D\(2\)\): input_shape \(4, -1, 3\) "
     r"has -1 at axis 1, a size the layer needs"),
    ("not-a-tuple", lambda: nn.Dense(3).init(KEY, 4), TypeError,
     r"Dense\(3\): input_shape must be a tuple of ints, got int 4"),
    ("tuple-of-shapes", lambda: nn.serial(nn.LSTM(2, return_lengths=True), nn.Dense(3)).init(
        KEY, ((4, -1, 2), None, (-1,))), TypeError,
     r"serial\[1\] \(Dense\(3\)\): input_shape must be one shape \(a tuple of ints\), got "
     r"the tuple of shapes \(\(4, -1, 2\), None, \(-1,\)\): Dense\(3\) takes one array, and "
     r"the layer before outputs several \(FanOut, return_carry=True, return_lengths=True"),
    ("no-key", lambda: nn.Dense(3).init(None, (-1, 4)), TypeError,
     r"Dense\(3\)\.init: key must be a PRNG key"),
    ("serial-bad-key", lambda: nn.serial(nn.Dense(3)).init("0", (-1, 4)), TypeError,
     r"serial\.init: key must be a PRNG key"),
    ("conv-rank", lambda: nn.Conv2D(4, 3).init(KEY, (-1, 8)), ValueError,
     r"Conv2D\(4\): input_shape \(-1, 8\) has rank 2, expected rank 3 or 4 \(N, H, W, Cin\)"),
    ("conv-kernel-too-big", lambda: nn.Conv2D(4, 5).init(KEY, (-1, 4, 4, 1)), ValueError,
     r"Conv2D\(4\): conv2d: kernel \(5, 5\) is larger than the padded input"),
    ("pool-window-too-big", lambda: nn.MaxPool2D(3).init(KEY, (-1, 2, 2, 1)), ValueError,
     r"MaxPool2D\(3\): max_pool2d: window \(3, 3\) is larger than the padded input"),
    ("pool-rank", lambda: nn.MaxPool2D(2).init(KEY, (-1, 3)), ValueError,
     r"MaxPool2D\(2\): input_shape \(-1, 3\) has rank 2"),
    ("softmax-axis-range", lambda: nn.Softmax(axis=3).init(KEY, (-1, 4)), ValueError,
     r"Softmax\(axis=3\): softmax: axis 3 is out of range for an input of rank 2"),
    ("rnn-batch-axis", lambda: nn.RNN(3).init(KEY, (-1, 4, 2)), ValueError,
     r"RNN\(3\): input_shape \(-1, 4, 2\) has -1 at axis 0, a size the layer needs "
     r"\(T, D\) or \(T, N, D\); only axis 1 \(the batch\) may be -1"),
    ("bn-rank-0", lambda: nn.BatchNorm().init(KEY, ()), ValueError,
     r"BatchNorm: input_shape \(\) has rank 0, expected rank >= 1"),
    ("serial-path", lambda: nn.serial(nn.Dense(3), nn.Conv2D(2, 3)).init(KEY, (-1, 4)),
     ValueError, r"serial\[1\] \(Conv2D\(2\)\): input_shape \(-1, 3\) has rank 2"),
    ("residual-shape", lambda: nn.Residual(nn.Dense(3)).init(KEY, (-1, 4)), ValueError,
     r"Residual\(Dense\(3\)\): layer maps shape \(-1, 4\) to \(-1, 3\); x \+ layer\(x\)"),
    ("parallel-one-shape", lambda: nn.parallel(nn.Dense(3), nn.Dense(3)).init(KEY, (-1, 4)),
     TypeError, r"parallel: input_shape must be a tuple of shapes .* put FanOut\(2\) before"),
    ("fan-in-sum-shapes", lambda: nn.FanInSum.init(KEY, ((-1, 4), (-1, 3))), ValueError,
     r"FanInSum: input_shape\[1\] has shape \(-1, 3\) but input_shape\[0\] has shape \(-1, 4\)"),
    ("fan-in-concat-ranks", lambda: nn.FanInConcat().init(KEY, ((-1, 4), (-1, 2, 3))),
     ValueError, r"FanInConcat\(-1\): input_shape\[1\] has shape \(-1, 2, 3\) but "
                 r"input_shape\[0\] has shape \(-1, 4\); inputs must have equal ranks"),
    ("init-fails-on-shape", lambda: nn.LayerNorm(scale_init=nn.initializers.he_normal()).init(
        KEY, (-1, 4)), ValueError, r"LayerNorm: compute_fans: shape \(4,\) has rank 1"),
    ("jax-init-fails-on-shape", lambda: nn.Dense(3, w_init=jax.nn.initializers.delta_orthogonal(
        )).init(KEY, (-1, 4)), ValueError, r"Dense\(3\): Delta orthogonal initializer requires"),
    ("lstm-bias-init", lambda: nn.LSTM(3, b_init=nn.initializers.lecun_normal()).init(
        KEY, (2, -1, 4)), ValueError, r"LSTM\(3\): compute_fans: shape \(12,\) has rank 1"),
]

APPLY = [
    ("list-input", nn.Dense(3), (dense(4, 3), (), [[1.0] * 4]), TypeError,
     r"Dense\(3\): x must be an array, got list \(convert it with jnp.asarray first\)"),
    ("int-input", nn.Dense(3), (dense(4, 3), (), z(2, 4, dtype=np.int32)), TypeError,
     r"Dense\(3\): x must have a floating dtype, got int32"),
    ("features", nn.Dense(100), (dense(784, 100), (), z(8, 785)), ValueError,
     r"Dense\(100\): affine: x has shape \(8, 785\).*784"),
    ("params-of-dense20", nn.Dense(10), (dense(5, 20), (), z(2, 5)), ValueError,
     r"Dense\(10\): params\['w'\] has shape \(5, 20\), expected \(\*, 10\) \(made by another"),
    ("params-of-batchnorm", nn.Dense(100), (MLP_P[1], (), z(2, 100)), ValueError,
     r"Dense\(100\): params must be a dict with keys \['b', 'w'\], got a dict with keys "
     r"\['beta', 'gamma'\]"),
    ("list-param", nn.Dense(3), ({"w": [[0.0] * 3] * 4, "b": z(3)}, (), z(2, 4)), TypeError,
     r"Dense\(3\): params\['w'\] must be an array, got list"),
    ("int-params", nn.Dense(3), ({"w": z(4, 3, dtype=np.int32), "b": z(3, dtype=np.int32)},
                                 (), z(2, 4)), TypeError,
     r"Dense\(3\): affine: w must have a floating dtype, got int32"),
    ("relu-params", nn.ReLU(), (dense(4, 3), (), z(2, 3)), ValueError,
     r"ReLU: params must be empty"),
    ("relu-list", nn.ReLU(), ((), (), [1.0, -1.0]), TypeError,
     r"ReLU: relu: x must be an array, got list"),
    ("conv-channels", CNN, (CNN_P, CNN_S, z(2, 28, 28, 3, dtype=np.float32)), ValueError,
     r"serial\[0\] \(Conv2D\(30\)\): conv2d: .*\(5, 5, 1, 30\)"),
    ("conv-rank", CNN.layers[0], (CNN_P[0], (), z(28, 28, dtype=np.float32)), ValueError,
     r"Conv2D\(30\): x has shape \(28, 28\) \(rank 2\), expected rank 3 or 4 \(N, H, W, Cin\)"),
    ("conv-int", CNN, (CNN_P, CNN_S, z(2, 28, 28, 1, dtype=np.int32)), TypeError,
     r"serial\[0\] \(Conv2D\(30\)\): x must have a floating dtype, got int32"),
    ("conv1d-channels", nn.Conv1D(4, 3), ({"w": z(3, 2, 4), "b": z(4)}, (), z(2, 9, 3)),
     ValueError, r"Conv1D\(4\) \(as conv2d on \(N, 1, L, C\)\): conv2d: "),
    ("pool-list", nn.MaxPool2D(2), ((), (), [[[[1.0]]]]), TypeError,
     r"MaxPool2D\(2\): x must be an array, got list"),
    ("global-pool-rank", nn.GlobalAvgPool2D(), ((), (), z(4, 4)), ValueError,
     r"GlobalAvgPool2D: x has shape \(4, 4\) \(rank 2\), expected rank 3 or 4"),
    ("flatten-rank", nn.Flatten(), ((), (), z(3)), ValueError,
     r"Flatten: x has shape \(3,\), expected rank >= 2"),
    ("bn-state-width", nn.BatchNorm(), (bn(4)[0], bn(5)[1], z(2, 4)), ValueError,
     r"BatchNorm: state\['mean'\] has shape \(5,\), expected \(4,\)"),
    ("bn-features", nn.BatchNorm(), (*bn(4), z(2, 5)), ValueError,
     r"BatchNorm: x has shape \(2, 5\), expected \(N, \.\.\., 4\)"),
    ("rnn-features", nn.RNN(3), ({"wx": z(2, 3), "wh": z(3, 3), "b": z(3)}, (), z(5, 1, 4)),
     ValueError, r"RNN\(3\): rnn: wx has shape \(2, 3\)"),
    ("rnn-rank", nn.RNN(3), ({"wx": z(2, 3), "wh": z(3, 3), "b": z(3)}, (), z(5, 1, 2, 2)),
     ValueError, r"RNN\(3\): x has shape \(5, 1, 2, 2\) \(rank 4\), expected rank 2 or 3"),
    ("other-model", CNN, (MLP_P, CNN_S, z(2, 28, 28, 1, dtype=np.float32)), ValueError,
     r"serial: params is a tuple with 9 entries, expected a tuple with one entry per layer "
     r"\(7: Conv2D\(30\), ReLU, MaxPool2D\(2\).*structure"),
    ("parallel-not-tuple", nn.parallel(nn.ReLU(), nn.ReLU()), (((), ()), ((), ()), z(2)),
     TypeError, r"parallel: x must be a tuple with one entry per branch, got an array of "
                r"shape \(2,\)"),
    ("parallel-length", nn.parallel(nn.ReLU(), nn.ReLU()), (((), ()), ((), ()), (z(2),) * 3),
     ValueError, r"parallel: x has 3 entries, expected 2 \(one per branch\)"),
    ("fan-in-sum-shapes", nn.FanInSum, ((), (), (z(2, 4), z(2, 3))), ValueError,
     r"FanInSum: x\[1\] has shape \(2, 3\) but x\[0\] has shape \(2, 4\); FanInSum adds"),
    ("fan-in-sum-lists", nn.FanInSum, ((), (), ([1.0], [2.0])), TypeError,
     r"FanInSum: x\[0\] must be an array, got list"),
    ("residual-list", nn.Residual(nn.Identity), ((), (), [1.0, 2.0]), TypeError,
     r"Residual\(Identity\): x must be an array, got list"),
    ("residual-shape", nn.Residual(nn.Dense(3)), (dense(4, 3), (), z(2, 4)), ValueError,
     r"Residual\(Dense\(3\)\): layer maps shape \(2, 4\) to \(2, 3\)"),
    ("lstm-carry-width", nn.LSTM(4), (LSTM_P, (), (z(5, 2, 3), (z(2, 4), z(2, 5)))),
     ValueError, r"LSTM\(4\): carry\[1\] \(c\) has shape \(2, 5\), expected \(\*, 4\) "
                 r"\(\(N, H\), H=4\)"),
    ("gru-one-sequence-carry-width", nn.GRU(3), (GRU_P, (), (z(5, 3), z(4))), ValueError,
     r"GRU\(3\): carry \(h\) has shape \(4,\), expected \(3,\) \(\(H,\) for one "
     r"sequence, H=3\)"),
]

TRAIN = [   # apply(..., train=True) rows: (id, layer, (params, state, x), key, exc, regex)
    ("bn-one-value", nn.BatchNorm(), (*bn(4), z(1, 4)), None, ValueError,
     r"BatchNorm: batch_norm: x has shape \(1, 4\): 1 value\(s\) per feature, expected at "
     r"least 2 in training mode"),
    ("bn-one-pixel", nn.BatchNorm(), (*bn(4), z(1, 1, 1, 4)), None, ValueError,
     r"BatchNorm: batch_norm: x has shape \(1, 1, 1, 4\): 1 value\(s\) per feature"),
    ("bn-empty", nn.BatchNorm(), (*bn(4), z(0, 4)), None, ValueError,
     r"BatchNorm: batch_norm: x has shape \(0, 4\): 0 value\(s\) per feature"),
    ("bn-one-example", nn.BatchNorm(axis_name="batch"), (*bn(4), z(4)), None, ValueError,
     r"BatchNorm: x has shape \(4,\), one example: training needs batch statistics"),
    ("dropout-no-key", nn.Dropout(0.5), ((), (), z(2, 3)), None, ValueError,
     r"Dropout\(0.5\): train=True needs a PRNG key"),
    ("dropout-bad-key", nn.Dropout(0.5), ((), (), z(2, 3)), z(3, dtype=np.int32), TypeError,
     r"Dropout\(0.5\): dropout: key"),
]


def _ids(rows):
    return [r[0] for r in rows]


def _both(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)
    with pytest.raises(exc, match=match):
        jax.jit(fn)(*args)


@pytest.mark.parametrize("row", CONSTRUCT, ids=_ids(CONSTRUCT))
def test_bad_constructor_arguments(row):
    _, make, exc, match = row
    _both(make, (), exc, match)


@pytest.mark.parametrize("row", INIT, ids=_ids(INIT))
def test_bad_init_arguments(row):
    _, init, exc, match = row
    _both(lambda: init()[1:], (), exc, match)


@pytest.mark.parametrize("row", APPLY, ids=_ids(APPLY))
def test_bad_apply_arguments(row):
    _, layer, args, exc, match = row
    _both(lambda p, s, x: apply(layer, p, s, x), args, exc, match)


@pytest.mark.parametrize("row", TRAIN, ids=_ids(TRAIN))
def test_bad_training_calls(row):
    _, layer, args, key, exc, match = row
    _both(lambda p, s, x, k: apply(layer, p, s, x, key=k, train=True), args + (key,), exc,
          match)


def test_batchnorm_refusals_leave_no_nan():
    """The refused cases are the ones that used to write NaN (empty batch) or output zeros
    (one value per channel): training on two values still works and is finite."""
    layer = nn.BatchNorm()
    p, s = bn(4)
    s = {"mean": z(4), "var": np.ones(4)}
    y, s2 = layer.apply(p, s, np.arange(8.0).reshape(2, 4), train=True)
    assert all(math.isfinite(v) for v in np.concatenate([np.ravel(y), s2["mean"], s2["var"]]))


TRAIN_FLAG = [   # layers that read train or pass it on: (layer, input_shape, x)
    nn.serial(nn.Dense(2), nn.Dropout(0.5)), nn.Dropout(0.5), nn.BatchNorm(),
    nn.MultiHeadAttention(1, dropout_rate=0.1), nn.parallel(nn.Dense(2)),
    nn.Residual(nn.Dense(3)), nn.Bidirectional(nn.GRU(2), nn.GRU(2))]
TRAIN_SHAPES = [(2, 3), (2, 3), (2, 3), (2, 2, 3), ((2, 3),), (2, 3), (2, 2, 3)]


@pytest.mark.parametrize("layer, shape", list(zip(TRAIN_FLAG, TRAIN_SHAPES)),
                         ids=[layer.name for layer in TRAIN_FLAG])
def test_train_must_be_a_python_bool(layer, shape):
    """``train="False"`` used to run in training mode, a traced ``train`` to fail with
    JAX's TracerBoolConversionError naming no layer."""
    p, s = concrete(abstract_init(layer, shape)[1:])
    x = jax.tree_util.tree_map(lambda d: z(*d), shape,
                               is_leaf=lambda d: all(isinstance(i, int) for i in d))
    name = re.escape(layer.name)
    for bad in ("False", 1, np.zeros(())):
        _both(lambda p, s, x: apply(layer, p, s, x, key=KEY, train=bad), (p, s, x), TypeError,
              rf"^{name}: train must be a bool, got ")
    with pytest.raises(TypeError, match=rf"^{name}: train must be a Python bool, got a traced "
                                        r"value .*under jax.jit mark it static"):
        jax.jit(lambda p, s, x, t: apply(layer, p, s, x, key=KEY, train=t))(p, s, x, True)
    for good in (True, np.bool_(False)):
        apply(layer, p, s, x, key=KEY, train=good)
