"""Padded sequences: flip_sequences and nn.Bidirectional, checked against each sequence of
a padded batch run alone (values and gradients, float64), and their errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import randn

KEY = jax.random.PRNGKey(0)
T, D = 6, 4
LENGTHS = (6, 3, 1, 0)


def test_flip_sequences_reverses_the_real_steps_in_place():
    xs = jnp.arange(12.0).reshape(4, 3)            # (T=4, N=3): column n is sequence n
    got = nn.flip_sequences(xs, jnp.array([4, 2, 0]))
    np.testing.assert_array_equal(got, [[9, 4, 2], [6, 1, 5], [3, 7, 8], [0, 10, 11]])
    x = randn((5, 3, 2), 1)
    lengths = jnp.array([5, 2, 4])
    np.testing.assert_array_equal(nn.flip_sequences(nn.flip_sequences(x, lengths), lengths),
                                  x)                                  # its own inverse
    np.testing.assert_array_equal(nn.flip_sequences(x), x[::-1])      # no lengths
    w = randn((5, 3, 2), 2)                     # the gradient is the same permutation
    g = jax.grad(lambda x: jnp.sum(w * nn.flip_sequences(x, lengths)))(x)
    np.testing.assert_array_equal(g, nn.flip_sequences(w, lengths))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16, np.uint32, np.int64])
def test_flip_sequences_takes_any_integer_lengths(dtype):
    """Under float64 and strict dtype promotion (the test session's), int32 lengths
    failed to compare with the int64 step index."""
    xs = randn((5, 3, 2), 3)
    want = nn.flip_sequences(xs, np.array([5, 2, 0]))
    for f in (nn.flip_sequences, jax.jit(nn.flip_sequences)):
        np.testing.assert_array_equal(f(xs, np.array([5, 2, 0], dtype)), want)


@pytest.mark.parametrize("xs, lengths, exc, match", [
    (np.zeros((4, 3)), np.array([5, 1, 1]), ValueError,
     r"flip_sequences: lengths hold 5 \(at index \(0,\)\), expected lengths in \[0, T = 4\]"),
    (np.zeros((4, 3)), np.array([1, -1, 1]), ValueError, r"lengths hold -1 \(at index \(1,\)\)"),
    (np.zeros((4, 3)), np.array([1.0, 2.0, 3.0]), TypeError,
     r"flip_sequences: lengths must have an integer dtype \(steps per sequence\), got float64"),
    (np.zeros((4, 3)), np.array([1, 2]), ValueError,
     r"flip_sequences: lengths has shape \(2,\), expected \(3,\) \(one length per sequence"),
    (np.zeros((4,)), np.array([1]), ValueError, r"flip_sequences: xs has shape \(4,\)"),
    ([[1.0]], np.array([1]), TypeError, r"flip_sequences: xs must be an array, got list"),
], ids=["too_long", "negative", "float", "count", "rank1", "list"])
def test_flip_sequences_refuses_bad_lengths(xs, lengths, exc, match):
    with pytest.raises(exc, match=match):
        nn.flip_sequences(xs, lengths)
    if isinstance(xs, np.ndarray) and "hold" not in match:   # values are unknown under jit
        with pytest.raises(exc, match=match):
            jax.jit(nn.flip_sequences)(xs, lengths)


def test_flip_sequences_under_jit_marks_bad_lengths_with_nan():
    out = jax.jit(nn.flip_sequences)(randn((4, 3), 3), jnp.array([2, 9, -1]))
    assert np.all(np.isfinite(out[:, 0])) and np.all(np.isnan(out[:, 1:]))


def _pairs():
    return [("lstm_gru_concat", nn.Bidirectional(nn.LSTM(5), nn.GRU(3))),
            ("rnn_rnn_sum", nn.Bidirectional(nn.RNN(4), nn.RNN(4), merge="sum"))]


@pytest.mark.parametrize("layer", [p[1] for p in _pairs()], ids=[p[0] for p in _pairs()])
def test_bidirectional_equals_each_sequence_run_alone(layer):
    """Padded batch with lengths 6, 3, 1, 0: every real step equals the run of that
    sequence alone (unpadded), the padded steps are 0, and so are the gradients of a loss
    over the real steps (batch against the sum of the single runs)."""
    shape, params, state = layer.init(KEY, ((T, -1, D), (-1,)))
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * randn(p.shape, 4), params)
    x, lengths = randn((T, len(LENGTHS), D), 5), jnp.array(LENGTHS)
    w = randn((T, len(LENGTHS), shape[-1]), 6)

    def batch_loss(p):
        y, _ = layer.apply(p, state, (x, lengths))
        return jnp.sum(jnp.sin(w * y)), y

    def alone_loss(p):
        total, ys = 0.0, []
        for n, length in enumerate(LENGTHS):
            if length == 0:
                ys.append(None)
                continue
            y, _ = layer.apply(p, state, x[:length, n:n + 1])
            total = total + jnp.sum(jnp.sin(w[:length, n:n + 1] * y))
            ys.append(y[:, 0])
        return total, ys

    (val, y), g = jax.jit(jax.value_and_grad(batch_loss, has_aux=True))(params)
    (val_alone, ys), g_alone = jax.jit(jax.value_and_grad(alone_loss, has_aux=True))(params)
    assert y.shape == (T, len(LENGTHS), shape[-1]) and shape == (T, -1, shape[-1])
    for n, length in enumerate(LENGTHS):
        if length:
            assert_close(y[:length, n], ys[n], 1e-12, f"sequence {n}")
        np.testing.assert_array_equal(y[length:, n], 0.0)
    assert_close(val, val_alone, 1e-12, "loss")
    assert_close(g, g_alone, 1e-10, "grads")


def test_bidirectional_without_lengths_and_one_sequence():
    fwd, bwd = nn.LSTM(3), nn.LSTM(2)
    layer = nn.Bidirectional(fwd, bwd)
    shape, params, state = layer.init(KEY, (T, -1, D))
    assert shape == (T, -1, 5) and isinstance(params, tuple) and len(params) == 2
    x = randn((T, 2, D), 7)

    @jax.jit
    def run(params, x):                # one program (eagerly: one compile per primitive)
        return (layer.apply(params, state, x), fwd.apply(params[0], state[0], x)[0],
                bwd.apply(params[1], state[1], x[::-1])[0],
                layer.apply(params, state, x[:, 0])[0])          # (T, D): one sequence

    (y, new_state), f, b, one = run(params, x)
    assert_close(y, jnp.concatenate([f, b[::-1]], -1), 1e-14, "no lengths")
    assert new_state == state
    assert_close(one, y[:, 0], 1e-14, "unbatched")
    assert layer.name == "Bidirectional(LSTM(3), LSTM(2))" and layer.layers == (fwd, bwd)


def _drop_first_step():
    return nn.Layer(lambda key, shape: ((shape[0] - 1,) + tuple(shape[1:]), (), ()),
                    lambda params, state, x, key=None, train=False: (x[1:], state), "Skip1")


@pytest.mark.parametrize("make, shape, exc, match", [
    (lambda: nn.Bidirectional(nn.LSTM(3, return_carry=True), nn.LSTM(3)), (T, -1, D),
     TypeError, r"Bidirectional\(LSTM\(3\), LSTM\(3\)\): forward must output one \(T, N, H\) "
                r"array"),
    (lambda: nn.Bidirectional(nn.LSTM(3), nn.LSTM(2), merge="sum"), (T, -1, D), ValueError,
     r"merge='sum' needs outputs of one width, got 3 \(forward\) and 2 \(backward\)"),
    (lambda: nn.Bidirectional(nn.LSTM(3), _drop_first_step()), (T, -1, D), ValueError,
     r"forward outputs \(6, -1, 3\) but backward \(5, -1, 4\); both must keep \(T, N\)"),
    (lambda: nn.Bidirectional(nn.LSTM(3), nn.LSTM(3), merge="mean"), None, ValueError,
     r"Bidirectional: merge must be one of 'concat', 'sum', got 'mean'"),
    (lambda: nn.Bidirectional(nn.LSTM(3), print), None, TypeError,
     r"Bidirectional: argument 1 must be a Layer"),
], ids=["return_carry", "sum_widths", "time_axis", "merge", "not_a_layer"])
def test_bidirectional_errors(make, shape, exc, match):
    with pytest.raises(exc, match=match):
        make().init(KEY, shape)


def test_bidirectional_apply_checks_lengths_and_params():
    layer = nn.Bidirectional(nn.GRU(2), nn.GRU(2))
    _, params, state = layer.init(KEY, (T, -1, D))
    x = randn((T, 3, D), 8)
    with pytest.raises(ValueError, match=r"Bidirectional\(GRU\(2\), GRU\(2\)\): flip_sequences: "
                                         r"lengths hold 7"):
        layer.apply(params, state, (x, jnp.array([1, 7, 2])))
    with pytest.raises(ValueError, match=r"params is a tuple with 1 entries, expected a tuple "
                                         r"with one entry per layer"):
        layer.apply(params[:1], state, x)


def test_bidirectional_one_sequence_with_a_length_follows_the_recurrent_rule():
    """``(T, D)`` with a length ``()``, what ``jax.vmap`` over the examples gives, as for
    RNN/LSTM/GRU: per-example outputs and gradients equal the padded batch's."""
    layer = nn.Bidirectional(nn.GRU(3), nn.LSTM(2))
    _, params, state = layer.init(KEY, ((T, -1, D), (-1,)))
    assert layer.init(KEY, ((T, D), ()))[0] == (T, 5)
    xs, lengths = randn((T, 4, D), 11), jnp.array(LENGTHS)

    def loss(p, x, n):
        return jnp.sum(layer.apply(p, state, (x, n))[0] ** 2)

    @jax.jit
    def run(params, xs, lengths):      # one program (eagerly: one compile per primitive)
        one = jax.vmap(lambda x, n: layer.apply(params, state, (x, n))[0], in_axes=(1, 0),
                       out_axes=1)(xs, lengths)
        per_example = jax.vmap(jax.grad(loss), in_axes=(None, 1, 0))(params, xs, lengths)
        return (one, layer.apply(params, state, (xs, lengths))[0], per_example,
                jax.grad(loss)(params, xs, lengths))

    one, batch, per_example, total = run(params, xs, lengths)
    assert_close(one, batch, 1e-14, "vmap")
    assert_close(jax.tree_util.tree_map(lambda g: g.sum(0), per_example), total, 1e-10,
                 "per-example grads")
    for f in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(ValueError, match=r"Bidirectional\(GRU\(3\), LSTM\(2\)\): lengths "
                                             r"has shape \(4,\) \(rank 1\), expected rank 0 "
                                             r"\(\) for one sequence \(T, D\)"):
            f(params, state, (xs[:, 0], lengths))
    with pytest.raises(ValueError, match=r"Bidirectional\(GRU\(3\), LSTM\(2\)\): input_shape "
                                         r"\(-1,\) has rank 1, expected rank 0 \(N,\) lengths, "
                                         r"\(\) for one sequence"):
        layer.init(KEY, ((T, D), (-1,)))


def test_nn_imports_no_private_module_of_ops():
    """TEAM.md: funcnet.nn may import funcnet.ops (public) and funcnet._checks only."""
    import pathlib
    import re
    root = pathlib.Path(nn.__file__).parent
    for path in root.glob("*.py"):
        assert not re.search(r"funcnet\.ops\._|from funcnet\.ops import _", path.read_text()), \
            path.name


def _stack_alone_check(layer, input_shape, wrap, seed):
    """Every sequence of the padded batch (lengths 6, 3, 1, 0) gives through the stack
    ``layer`` what it gives alone (unpadded); padded steps are 0; per-example ``vmap``
    equals the batch. ``wrap(x, lengths)`` builds the input."""
    shape, params, state = layer.init(KEY, input_shape)
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * randn(p.shape, seed), params)
    x, lengths = randn((T, len(LENGTHS), D), seed + 1), jnp.array(LENGTHS)

    @jax.jit
    def run(params, x, lengths):       # one program (eagerly: one compile per primitive)
        y, _ = layer.apply(params, state, wrap(x, lengths))
        alone = [layer.apply(params, state, x[:length, n:n + 1])[0] if length else None
                 for n, length in enumerate(LENGTHS)]
        one = jax.vmap(lambda x, n: layer.apply(params, state, wrap(x, n))[0],
                       in_axes=(1, 0), out_axes=1)(x, lengths)      # one sequence each
        return y, alone, one

    y, alone, one = run(params, x, lengths)
    assert y.shape == (T, len(LENGTHS), shape[-1]) and shape == (T, -1, shape[-1])
    for n, length in enumerate(LENGTHS):
        if length:
            assert_close(y[:length, n], alone[n][:, 0], 1e-12, f"sequence {n}")
        np.testing.assert_array_equal(y[length:, n], 0.0)
    assert_close(one, y, 1e-12, "vmap")
    return params, state, x, lengths


def test_stacked_bidirectional_passes_the_lengths_on():
    """``return_lengths=True`` outputs ``(y, None, lengths)``, so a stacked encoder in one
    ``serial`` gives every sequence of a padded batch what it gives alone; without it
    the second layer would run without lengths (its backward direction starting on the
    padding: the check fails once the biases are non-zero)."""
    layer = nn.serial(nn.Bidirectional(nn.LSTM(3), nn.GRU(2), return_lengths=True),
                      nn.Bidirectional(nn.GRU(2), nn.LSTM(3)))
    params, state, x, lengths = _stack_alone_check(
        layer, ((T, -1, D), (-1,)), lambda x, n: (x, n), 12)
    first = layer.layers[0]
    assert first.init(KEY, ((T, -1, D), (-1,)))[0] == ((T, -1, 5), None, (-1,))

    @jax.jit
    def run(p, x, lengths):            # one program (eagerly: one compile per primitive)
        out, _ = first.apply(p, state[0], (x, lengths))
        assert isinstance(out, tuple) and out[1] is None and out[2] is lengths
        return (out, first.apply(p, state[0], (x, None, lengths))[0],   # the recurrent form
                first.apply(p, state[0], x)[0],                    # no lengths: y alone
                first.apply(p, state[0], (x, jnp.full((4,), T)))[0][0])

    out, triple, plain, full = run(params[0], x, lengths)
    np.testing.assert_array_equal(out[2], lengths)
    assert_close(triple[0], out[0], 0.0, "triple input")
    assert_close(plain, full, 1e-14, "no lengths")
    with pytest.raises(TypeError, match=r"Bidirectional: return_lengths must be a "):
        nn.Bidirectional(nn.GRU(2), nn.GRU(2), return_lengths=1)
    for f in (first.apply, jax.jit(first.apply)):
        with pytest.raises(ValueError, match=r"Bidirectional\(LSTM\(3\), GRU\(2\)\): x is a "
                                             r"triple \(xs, carry, lengths\) whose carry is "
                                             r"tuple, expected None"):
            f(params[0], state[0], (x, (x[0], x[0]), lengths))
    with pytest.raises(ValueError, match=r"input_shape is a triple \(xs, carry, lengths\) "
                                         r"whose carry is tuple"):
        first.init(KEY, ((T, -1, D), (-1, 3), (-1,)))


def test_stacked_recurrent_layers_pass_the_lengths_on():
    """``return_lengths=True`` on RNN/LSTM/GRU: ``(hs, None, lengths)`` feeds the next
    layer, so the top layer's final carry is each sequence's own (without it the second
    layer's carry ran on over the padding); it mixes with Bidirectional's."""
    layer = nn.serial(nn.RNN(4, return_lengths=True),
                      nn.Bidirectional(nn.GRU(2), nn.LSTM(2), return_lengths=True),
                      nn.GRU(3, return_lengths=True), nn.LSTM(3, return_carry=True))
    assert layer.layers[0].init(KEY, ((T, -1, D), None, (-1,)))[0] == (
        (T, -1, 4), None, (-1,))
    shape, params, state = layer.init(KEY, ((T, -1, D), None, (-1,)))
    assert shape == ((T, -1, 3), ((-1, 3), (-1, 3)))
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * randn(p.shape, 14), params)
    x, lengths = randn((T, len(LENGTHS), D), 15), jnp.array(LENGTHS)
    @jax.jit
    def run(params, x, lengths):       # one program (eagerly: one compile per primitive)
        return layer.apply(params, state, (x, None, lengths))[0], [
            layer.apply(params, state, (x[:max(length, 1), n:n + 1], None,
                                        lengths[n:n + 1]))[0]
            for n, length in enumerate(LENGTHS)]

    (hs, (h, c)), alone = run(params, x, lengths)
    for n, length in enumerate(LENGTHS):
        hs1, (h1, c1) = alone[n]
        assert_close((h[n], c[n]), (h1[0], c1[0]), 1e-12, f"carry {n}")
        assert_close(hs[:length, n], hs1[:length, 0], 1e-12, f"hs {n}")
        np.testing.assert_array_equal(hs[length:, n], 0.0)
    plain, _ = layer.layers[0].apply(params[0], (), x)             # no lengths: hs alone
    assert plain.shape == (T, 4, 4)
    for make in (nn.RNN, nn.LSTM, nn.GRU):
        with pytest.raises(ValueError, match=r"\(3\): return_carry=True and return_lengths=True "
                                             r"exclude each other"):
            make(3, return_carry=True, return_lengths=True)
