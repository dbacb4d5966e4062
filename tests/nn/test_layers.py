"""Per-layer tests: shape agreement, values, dropout, errors, serial, summary."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.ops import reference as R
from tests.nn._models import (abstract_init, cnn, jit_init, mlp, randn, struct,
                             trace_apply)
from tests.ops._sweeps import assert_sweep_equals_static

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)


def _normal(shape, seed=1, dtype=F64):
    return randn(shape, seed).astype(dtype)


# The activation layers of the second stage, each with its jax.nn peer.
SMOOTH = [nn.GELU, lambda: nn.GELU(approximate=False), nn.SiLU, lambda: nn.LeakyReLU(0.2),
          nn.Softplus]
SMOOTH_PEERS = [jax.nn.gelu, lambda x: jax.nn.gelu(x, approximate=False), jax.nn.silu,
                lambda x: jax.nn.leaky_relu(x, 0.2), jax.nn.softplus]
# and the rest of jax.nn's activations: (id, layer factory, jax.nn peer)
MORE = [("ReLU6", nn.ReLU6, jax.nn.relu6), ("HardTanh", nn.HardTanh, jax.nn.hard_tanh),
        ("HardSigmoid", nn.HardSigmoid, jax.nn.hard_sigmoid),
        ("HardSwish", nn.HardSwish, jax.nn.hard_swish),
        ("ELU(0.5)", lambda: nn.ELU(0.5), lambda x: jax.nn.elu(x, 0.5)),
        ("CELU(2.0)", lambda: nn.CELU(2.0), lambda x: jax.nn.celu(x, 2.0)),
        ("SELU", nn.SELU, jax.nn.selu), ("Mish", nn.Mish, jax.nn.mish),
        ("LogSigmoid", nn.LogSigmoid, jax.nn.log_sigmoid),
        ("SoftSign", nn.SoftSign, jax.nn.soft_sign),
        ("Squareplus(1.0)", lambda: nn.Squareplus(1.0), lambda x: jax.nn.squareplus(x, 1.0)),
        ("SparsePlus", nn.SparsePlus, jax.nn.sparse_plus),
        ("SparseSigmoid", nn.SparseSigmoid, jax.nn.sparse_sigmoid),
        ("GLU(axis=0)", lambda: nn.GLU(axis=0), lambda x: jax.nn.glu(x, axis=0)),
        # Gemma 2's final-logit cap, against the formula (no jax.nn peer)
        ("SoftCap(1.5)", lambda: nn.SoftCap(1.5), lambda x: 1.5 * jnp.tanh(x / 1.5))]


# (layer, input_shape with -1 batch). Every layer, with odd sizes, strides and paddings.
SHAPE_CASES = [
    (nn.Dense(7, dtype=F64), (-1, 5)),
    (nn.Dense(3, dtype=F64), (5,)),
    (nn.Dense(3, use_bias=False, dtype=F64), (-1, 4, 5)),
    (nn.Conv2D(4, 3, dtype=F64), (-1, 9, 8, 2)),
    (nn.Conv2D(4, (3, 2), stride=2, padding=1, dtype=F64), (-1, 9, 8, 2)),
    (nn.Conv2D(4, 3, stride=2, padding="SAME", use_bias=False, dtype=F64), (-1, 9, 7, 2)),
    (nn.Conv2D(2, 3, padding=((1, 0), (2, 1)), dtype=F64), (-1, 6, 5, 3)),
    (nn.Conv2D(2, 3, dtype=F64), (6, 5, 3)),
    (nn.Conv1D(4, 3, stride=2, padding=(2, 1), dtype=F64), (-1, 9, 2)),
    (nn.Conv1D(2, 4, padding="SAME", use_bias=False, dtype=F64), (7, 3)),
    (nn.MaxPool2D(2), (-1, 9, 8, 3)),
    (nn.MaxPool2D(3, stride=1, padding=1), (-1, 5, 6, 2)),
    (nn.MaxPool2D((2, 3), stride=(1, 2), padding="SAME"), (-1, 5, 7, 2)),
    (nn.AvgPool2D(2), (-1, 8, 6, 3)),
    (nn.AvgPool2D(3, stride=2, padding="VALID"), (7, 7, 1)),
    (nn.GlobalAvgPool2D(), (-1, 5, 3, 4)),
    (nn.GlobalAvgPool2D(), (5, 3, 4)),
    (nn.Flatten(), (-1, 4, 3, 2)),
    (nn.ReLU(), (-1, 3, 4)),
    (nn.Sigmoid(), (-1, 5)),
    (nn.Tanh(), (-1, 2, 2, 2)),
    (nn.Softmax(), (-1, 6)),
    (nn.BatchNorm(dtype=F64), (-1, 6)),
    (nn.BatchNorm(dtype=F64), (-1, 4, 4, 3)),
    (nn.Dropout(0.3), (-1, 10)),
    (nn.RNN(6, dtype=F64), (4, -1, 3)),
    (nn.RNN(6, learn_h0=True, dtype=F64), (4, 3)),
    (nn.serial(nn.Dense(4, dtype=F64), nn.ReLU(), nn.Dense(2, dtype=F64)), (-1, 3)),
    (nn.Residual(nn.serial(nn.Conv2D(3, 3, padding="SAME", dtype=F64), nn.BatchNorm(dtype=F64))),
     (-1, 5, 5, 3)),
    (nn.serial(nn.FanOut(2), nn.parallel(nn.Dense(3, dtype=F64), nn.Identity),
               nn.FanInConcat()), (-1, 4)),
] + [(make(), (-1, 5)) for make in SMOOTH]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layer,in_shape", SHAPE_CASES, ids=[c[0].name + str(c[1])
                                                            for c in SHAPE_CASES])
def test_shape_agreement(layer, in_shape, batch, train):
    """The shape ``init`` promised equals the one ``apply`` returns (stax_test habit).

    ``apply`` is traced with ``jax.eval_shape`` (every op and check runs at trace time;
    values are tested elsewhere), which keeps the 140 cases fast.
    """
    out_shape, params, state = abstract_init(layer, in_shape)
    concrete = tuple(batch if d == -1 else d for d in in_shape)
    if train and layer.name == "BatchNorm" and batch == 1 and len(in_shape) == 2:
        with pytest.raises(ValueError, match=r"BatchNorm: batch_norm: .* expected at least 2"):
            trace_apply(layer, params, state, struct(concrete, F64), key=KEY, train=train)
        return
    y, new_state = trace_apply(layer, params, state, struct(concrete, F64), key=KEY,
                               train=train)
    assert y.shape == tuple(batch if d == -1 else d for d in out_shape)
    assert y.dtype == F64
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), new_state) == \
        jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), state)


def test_dense_values_row_convention():
    _, p, s = abstract_init(nn.Dense(3, dtype=F64), (-1, 4))
    assert p["w"].shape == (4, 3) and p["b"].shape == (3,)
    p = {"w": _normal((4, 3), 2), "b": _normal((3,), 3)}
    x = _normal((5, 4))
    apply = jax.jit(nn.Dense(3).apply)
    y, _ = apply(p, s, x)
    # note 004: y_j = b_j + sum_i x_i w_ij
    expected = np.einsum("ni,ij->nj", x, p["w"]) + np.asarray(p["b"])[None, :]
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_allclose(apply(p, s, x[0])[0], expected[0], rtol=1e-12)


@pytest.mark.parametrize("layer,fn", [(nn.ReLU(), R.relu), (nn.Sigmoid(), R.sigmoid),
                                      (nn.Tanh(), R.tanh), (nn.Softmax(), R.softmax)] +
                         [(make(), peer) for make, peer in zip(SMOOTH, SMOOTH_PEERS)] +
                         [(make(), peer) for _, make, peer in MORE],
                         ids=["ReLU", "Sigmoid", "Tanh", "Softmax", "GELU", "GELU(erf)", "SiLU",
                              "LeakyReLU", "Softplus"] + [m[0] for m in MORE])
def test_activation_values(layer, fn):
    """Each activation layer equals its reference twin / its ``jax.nn`` peer (eager: the
    ops are compiled once per shape and shared between tests)."""
    x = _normal((4, 5)) * 3
    y, state = layer.apply((), (), x)
    assert state == () and y.dtype == F64
    np.testing.assert_allclose(y, fn(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("axis", [-1, 0, (0, 1), None], ids=["last", "first", "both", "all"])
def test_softmax_and_log_softmax_layers_take_jax_nn_axes(axis):
    """nn.Softmax / nn.LogSoftmax with an int, a tuple or None equal jax.nn's (any rank)."""
    x = _normal((4, 5)) * 3
    for layer, peer in ((nn.Softmax(axis), jax.nn.softmax), (nn.LogSoftmax(axis),
                                                               jax.nn.log_softmax)):
        shape, _, _ = layer.init(KEY, x.shape)
        y, _ = layer.apply((), (), x)
        assert shape == x.shape and y.dtype == F64
        np.testing.assert_allclose(y, peer(x, axis=axis), rtol=1e-12, atol=1e-14)


def test_default_inits():
    _, p, _ = jit_init(nn.Dense(50, dtype=F64), (-1, 2000), KEY)
    assert abs(float(jnp.var(p["w"])) * 2000 / 2 - 1) < 0.02   # He: 2/fan_in
    assert not np.any(p["b"])
    _, p, _ = jit_init(nn.RNN(40, dtype=F64), (3, -1, 2000), KEY)
    assert abs(float(jnp.var(p["wx"])) * 2040 / 2 - 1) < 0.03  # Xavier: 2/(in+out)


# ------------------------------------------------------------------------------ Dropout

def test_dropout_deterministic_per_key_and_keep_rate():
    layer = nn.Dropout(0.3)
    x = jnp.ones((200_000,), F64)
    y1, _ = layer.apply((), (), x, key=jax.random.PRNGKey(1), train=True)
    y2, _ = layer.apply((), (), x, key=jax.random.PRNGKey(1), train=True)
    y3, _ = layer.apply((), (), x, key=jax.random.PRNGKey(2), train=True)
    np.testing.assert_array_equal(y1, y2)
    assert np.mean(np.asarray(y1) != np.asarray(y3)) > 0.3
    y1 = np.asarray(y1)
    # kept units are scaled by 1/(1 - rate); dropped ones are exactly 0
    np.testing.assert_allclose(np.unique(y1), [0.0, 1 / 0.7], rtol=1e-12)
    # keep fraction 0.7 +- 0.005 (std of the estimate: sqrt(0.21/2e5) = 0.001)
    assert abs(np.mean(y1 != 0) - 0.7) < 0.005
    assert abs(y1.mean() - 1.0) < 0.01          # E[y] = x


def test_dropout_eval_and_rate_zero_are_identity():
    x = _normal((3, 4))
    np.testing.assert_array_equal(nn.Dropout(0.5).apply((), (), x)[0], x)
    np.testing.assert_array_equal(nn.Dropout(0.5).apply((), (), x, train=False)[0], x)
    np.testing.assert_array_equal(nn.Dropout(0.0).apply((), (), x, key=KEY, train=True)[0], x)


def test_dropout_errors():
    with pytest.raises(ValueError, match=r"Dropout\(0.5\): train=True needs a PRNG key.*key="):
        nn.Dropout(0.5).apply((), (), jnp.ones((2, 3)), train=True)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"Dropout: rate must be in \[0, 1\), got"):
            nn.Dropout(bad)
    with pytest.raises(TypeError, match="Dropout: rate must be a number or a scalar array"):
        nn.Dropout("0.5")
    with pytest.raises(ValueError, match=r"Dropout: rate must be a scalar, got shape \(2,\)"):
        nn.Dropout(jnp.ones((2,)))


def test_dropout_rate_sweep_builds_the_model_inside_vmap():
    """A model built inside ``jax.vmap`` over dropout rates (Dropout and DropPath): the
    losses and gradients of the sweep equal the models built with each Python float (the
    traced 0 the static 0, the identity); the layer is named ``Dropout(traced)``."""
    x, key = _normal((4, 6)), jax.random.PRNGKey(5)

    def loss(rate, params):
        model = nn.serial(nn.Dense(5, dtype=F64), nn.Dropout(rate), nn.ReLU(),
                          nn.Dense(5, dtype=F64), nn.DropPath(rate))
        y, _ = model.apply(params, ((), (), (), (), ()), x, key=key, train=True)
        return jnp.sum(y * y)

    model = nn.serial(nn.Dense(5, dtype=F64), nn.Dropout(0.5), nn.ReLU(),
                      nn.Dense(5, dtype=F64), nn.DropPath(0.5))
    _, params, _ = model.init(jax.random.PRNGKey(0), (-1, 6))
    rates = jnp.asarray([0.0, 0.25, 0.5])
    assert_sweep_equals_static(lambda p, r: loss(r, p), params, rates, "Dropout and DropPath",
                               rtol=1e-13)
    names = []
    jax.vmap(lambda r: names.append(nn.Dropout(r).name) or r)(rates)
    assert names == ["Dropout(traced)"]


# ---------------------------------------------------------------------------- Dense

def test_dense_acts_on_the_last_axis():
    """Like Flax's Dense: ``(N, T, D) -> (N, T, H)`` position by position (transformer
    token features). Before the second stage a rank-3 input was refused; the error table
    (test_adversarial.py) now covers the feature-size mismatch instead."""
    layer = nn.Dense(3, dtype=F64)
    out_shape, _, _ = abstract_init(layer, (-1, 4, 5))
    assert out_shape == (-1, 4, 3)
    p = {"w": _normal((5, 3), 2), "b": _normal((3,), 3)}
    x = _normal((2, 4, 5))
    y, _ = layer.apply(p, (), x)
    np.testing.assert_allclose(y, np.einsum("nti,ij->ntj", x, p["w"]) + np.asarray(p["b"]),
                               rtol=1e-12)
    y, _ = nn.Dense(3, use_bias=False).apply({"w": p["w"]}, (), x)
    np.testing.assert_allclose(y, np.einsum("nti,ij->ntj", x, p["w"]), rtol=1e-12)
    assert set(abstract_init(nn.Dense(3, use_bias=False), (-1, 5))[1]) == {"w"}


# ------------------------------------------------------------------------------- serial

def test_serial_threads_keys_and_state():
    model = nn.serial(nn.Dropout(0.5), nn.Dropout(0.5))
    _, p, s = model.init(KEY, (-1, 1000))
    x = jnp.ones((1, 1000), F64)
    y, s2 = model.apply(p, s, x, key=KEY, train=True)
    assert s2 == ((), ())
    k0, k1 = jax.random.split(KEY, 2)
    expected = nn.Dropout(0.5).apply((), (), x, key=k0, train=True)[0]
    expected = nn.Dropout(0.5).apply((), (), expected, key=k1, train=True)[0]
    np.testing.assert_array_equal(y, expected)
    # The two layers got different keys: a unit survives both with probability 1/4, not
    # 1/2 as it would if one mask were applied twice (std of the estimate 0.014).
    assert abs(np.mean(np.asarray(y) != 0) - 0.25) < 0.06
    # No key and no training: every layer receives None and is the identity.
    np.testing.assert_array_equal(model.apply(p, s, x)[0], x)
    with pytest.raises(TypeError, match="serial: argument 1 must be a Layer"):
        nn.serial(nn.ReLU(), lambda x: x)


def test_layer_is_positional_namedtuple():
    layer = nn.Layer(lambda k, s: (s, (), ()), lambda p, s, x, **kw: (x, s))
    assert layer.name == "Layer" and layer.layers == ()
    init, apply, *_ = nn.ReLU()
    assert init(KEY, (-1, 3)) == ((-1, 3), (), ())


def test_summary_and_count_params():
    model = cnn(jnp.float32)
    _, params, _ = abstract_init(model, (-1, 28, 28, 1))
    total = 5 * 5 * 30 + 30 + 4320 * 100 + 100 + 100 * 10 + 10
    assert nn.count_params(params) == total == 433_890
    text = nn.summary(model, (-1, 28, 28, 1))
    assert "0 Conv2D(30)" in text and "(N, 24, 24, 30)" in text and "780" in text
    assert "2 MaxPool2D(2)" in text and "(N, 12, 12, 30)" in text
    assert "3 Flatten" in text and "(N, 4320)" in text and "432,100" in text
    assert "Total params: 433,890" in text
    text = nn.summary(mlp(jnp.float32), (-1, 784))
    assert "Non-trainable state: 400" in text and "Total params: 90,010" in text
    nested = nn.serial(nn.serial(nn.Dense(3), nn.ReLU()), nn.Dense(2))
    assert "0.0 Dense(3)" in nn.summary(nested, (-1, 4))
    for not_a_layer, kind in ((lambda x: x, "function"), (nn.Dense, "function"),
                              (mlp, "function"), ((), "tuple")):
        with pytest.raises(TypeError, match=f"summary: model must be a Layer .init, apply., "
                                            f"got {kind}"):
            nn.summary(not_a_layer, (-1, 4))
