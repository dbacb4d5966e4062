"""Unknown sizes and the input forms of init: one ``-1`` on any axis a layer does not read
(so every layer follows a time-major recurrent layer initialised on ``(T, -1, D)``), the
``None`` carry placeholder through ``parallel``, and ``summary`` on every input form that
``init`` accepts (carry placeholder, integer lengths, boolean masks)."""
import re

import jax
import jax.numpy as jnp
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, randint, randn

KEY = jax.random.PRNGKey(0)
F64 = jnp.float64
T, N, D, H = 4, 3, 3, 5

AFTER_RNN = [nn.Dense(2), nn.Dense(2, use_bias=False), nn.Dropout(0.1), nn.ReLU(), nn.GELU(),
             nn.Softmax(), nn.LayerNorm(), nn.RMSNorm(), nn.BatchNorm(),
             nn.serial(nn.Dense(4), nn.Tanh())]


@pytest.mark.parametrize("head", AFTER_RNN, ids=[f"{i}-{layer.name}"
                                                 for i, layer in enumerate(AFTER_RNN)])
@pytest.mark.parametrize("rnn", [nn.LSTM, nn.GRU, nn.RNN])
def test_a_layer_after_a_time_major_recurrent_layer_takes_the_unknown_batch(rnn, head):
    """``(T, -1, D)`` as the recurrent docstrings say: the layer after it gets ``(T, -1,
    H)`` and returns what it returns for a known ``N``, with ``-1`` at the same axis."""
    model = nn.serial(rnn(H), head)
    known = abstract_init(model, (T, N, D))[0]      # init traced: shapes, no compiles
    out, params, state = abstract_init(model, (T, -1, D))
    assert out == known[:1] + (-1,) + known[2:]
    y, _ = jax.eval_shape(model.apply, params, state, randn((T, N, D), 1))   # no compiles
    assert y.shape == known


def test_embedding_lstm_dense_on_time_major_tokens():
    model = nn.serial(nn.Embedding(10, D), nn.LSTM(H), nn.Dropout(0.2), nn.Dense(2))
    out, params, state = model.init(KEY, (T, -1))
    assert out == (T, -1, 2)
    y, _ = model.apply(params, state, randint((T, N), 10, seed=2), key=KEY, train=True)
    assert y.shape == (T, N, 2)


def test_unknown_size_on_other_axes_and_through_carry_and_lengths():
    assert nn.Dense(2).init(KEY, (3, 4, -1, 6))[0] == (3, 4, -1, 2)
    assert nn.MultiHeadAttention(2).init(KEY, (-1, 5, 4))[0] == (-1, 5, 4)
    assert nn.MultiHeadAttention(2).init(KEY, (2, -1, 4))[0] == (2, -1, 4)   # unknown T
    assert nn.MultiHeadAttention(2).init(KEY, ((-1, 5, 4), (-1, 1, 1, 5)))[0] == (-1, 5, 4)
    assert nn.ReLU().init(KEY, (3, -1))[0] == (3, -1)          # reads no size at all
    assert nn.LSTM(H, return_carry=True).init(KEY, ((T, -1, D), None, (-1,)))[0] == \
        ((T, -1, H), ((-1, H), (-1, H)))
    assert nn.GRU(H, return_carry=True).init(KEY, ((T, -1, D), (-1, H)))[0] == \
        ((T, -1, H), (-1, H))
    assert nn.RNN(H, return_carry=True).init(KEY, ((T, D), None, ()))[0] == ((T, H), (H,))


def test_an_output_that_depends_on_the_unknown_size_is_refused():
    """A custom layer that lets ``-1`` through its init but flattens the unknown axis in
    apply: ``summary``'s check of apply names the dependence instead of printing a
    wrong shape."""
    def apply(params, state, x, **kw):
        return x.reshape(x.shape[0], -1), state
    flat = nn.Layer(lambda k, s: ((s[0], -1), (), ()), apply, "MyFlatten")
    with pytest.raises(ValueError, match=re.escape(
            "summary: the output shape depends on the unknown (-1) size of input_shape "
            "(4, -1, 3) (it is (4, 3) for a size of 1 and (4, 6) for 2): give that size")):
        nn.summary(flat, (T, -1, 3))


def _embed_lstm():
    return nn.serial(nn.parallel(nn.Embedding(9, D, dtype=F64), nn.Identity, nn.Identity),
                     nn.LSTM(H, return_carry=True, dtype=F64))


def test_the_none_carry_placeholder_passes_through_parallel():
    model = _embed_lstm()
    out, params, state = model.init(KEY, ((T, -1), None, (-1,)))
    assert out == ((T, -1, H), ((-1, H), (-1, H)))
    ids, lengths = randint((T, N), 9, seed=3), jnp.array([4, 1, 0])
    (hs, (h, c)), _ = model.apply(params, state, (ids, None, lengths))
    emb = params[0][0]["embedding"][ids]
    (want, carry), _ = nn.LSTM(H, return_carry=True).apply(params[1], (), (emb, None, lengths))
    assert_close((hs, h, c), (want, *carry), 0.0, "parallel(Embedding, Identity, Identity)")
    with pytest.raises(TypeError, match=re.escape(
            "serial[0]: parallel[1] (Dense(2)): input_shape must be a tuple of ints, got "
            "NoneType None")):
        nn.serial(nn.parallel(nn.Identity, nn.Dense(2))).init(KEY, ((-1, 3), None))
    with pytest.raises(TypeError, match=r"FanInSum: input_shape must be a tuple of shapes"):
        nn.FanInSum.init(KEY, ((-1, 3), None))


SUMMARY = [   # (model, input_shape, input_dtype, expected output shape text)
    (nn.LSTM(H), ((T, -1, D), None, (-1,)), (None, None, jnp.int32), "(4, N, 5)"),
    (nn.LSTM(H), ((T, -1, D), ((-1, H), (-1, H)), (-1,)), (None, None, jnp.int32),
     "(4, N, 5)"),
    (nn.LSTM(H, return_carry=True), ((T, -1, D), ((-1, H), (-1, H))), None,
     "((4, N, 5), ((N, 5), (N, 5)))"),
    (nn.Bidirectional(nn.GRU(H), nn.GRU(H)), ((T, -1, D), (-1,)), (None, jnp.int32),
     "(4, N, 10)"),
    (nn.MultiHeadAttention(2), ((-1, 4, 6), (-1, 1, 1, 4)), (None, jnp.bool_), "(N, 4, 6)"),
    (_embed_lstm(), ((T, -1), None, (-1,)), jnp.int32, "((4, N, 5), ((N, 5), (N, 5)))"),
    (nn.serial(nn.LSTM(H), nn.Dense(2)), (T, -1, D), None, "(4, N, 2)"),
]


@pytest.mark.parametrize("model, shape, dtype, out", SUMMARY,
                         ids=["lstm-none-lengths", "lstm-carry-lengths", "lstm-carry",
                              "bidirectional", "mha-mask", "parallel-placeholder",
                              "lstm-dense"])
def test_summary_on_every_input_form(model, shape, dtype, out):
    text = nn.summary(model, shape, dtype)
    assert f"Output shape: {out}" in text
    assert f"Total params: {nn.count_params(model.init(KEY, shape)[1]):,}" in text


def test_summary_says_how_to_type_integer_inputs():
    with pytest.raises(TypeError, match=re.escape(
            "summary: LSTM(5): lstm: lengths must have an integer dtype") + ".*" + re.escape(
            "pass input_dtype, a dtype or a tuple of dtypes shaped like input_shape, e.g. "
            "(None, None, jnp.int32)")):
        nn.summary(nn.LSTM(H), ((T, -1, D), None, (-1,)))
    with pytest.raises(ValueError, match=re.escape(
            "summary: input_dtype (None, None) has 2 entries, expected one per entry of "
            "input_shape ((4, -1, 3), None, (-1,)) (3), or one dtype for all")):
        nn.summary(nn.LSTM(H), ((T, -1, D), None, (-1,)), (None, None))
