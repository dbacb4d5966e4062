"""The recurrent layers (LSTM, GRU and the vanilla RNN): shape agreement (plain, (xs,
carry) and (xs, carry, lengths) inputs, return_carry), initialisation (per-gate blocks,
forget bias), values and gradients against the twins, stateful chunking, a None carry as
the default initial state, padded batches, composition with serial/parallel, single
sequences under vmap, errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from tests.nn._models import abstract_init, jit_init, randint, randn, struct, trace_apply

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)
T, N, D, H = 5, 3, 4, 6


def _carry_struct(kind, shape):
    return (struct(shape, F64), struct(shape, F64)) if kind == "LSTM" else struct(shape, F64)


def _carry_shape(kind, shape):
    return (shape, shape) if kind == "LSTM" else shape


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("return_carry", [False, True])
@pytest.mark.parametrize("in_shape, carry", [((T, -1, D), None), ((T, D), None),
                                             ((T, -1, D), (-1, H)), ((T, D), (H,))],
                         ids=["batched", "single", "batched_carry_in", "single_carry_in"])
@pytest.mark.parametrize("batch", [1, 2])
def test_shape_agreement(kind, return_carry, in_shape, carry, batch):
    layer = getattr(nn, kind)(H, return_carry=return_carry, dtype=F64)
    init_shape = in_shape if carry is None else (in_shape, _carry_shape(kind, carry))
    out_shape, params, state = abstract_init(layer, init_shape)

    def fix(s):
        return tuple(batch if d == -1 else d for d in s)
    x = struct(fix(in_shape), F64)
    if carry is not None:
        x = (x, _carry_struct(kind, fix(carry)))
    y, _ = trace_apply(layer, params, state, x)
    hs_shape = in_shape[:-1] + (H,)
    want = hs_shape if not return_carry else (hs_shape, _carry_shape(kind, hs_shape[1:]))
    assert out_shape == want
    assert _shapes(y) == _map_shapes(fix, want)


def _shapes(tree):
    return tuple(map(_shapes, tree)) if isinstance(tree, tuple) else tuple(tree.shape)


def _map_shapes(f, shapes):
    """``f`` on every shape of a nested tuple of shapes."""
    if all(isinstance(d, int) for d in shapes):
        return f(shapes)
    return tuple(_map_shapes(f, s) for s in shapes)


@functools.lru_cache(maxsize=None)
def _init(kind, **kw):
    """Initial params of ``kind(H, **kw)`` for (T, N, D) inputs, compiled once per module."""
    return jit_init(getattr(nn, kind)(H, **kw), (T, -1, D), KEY)[1]


def test_initialisation_per_gate_and_forget_bias():
    p = _init("LSTM", dtype=F64)
    assert {k: v.shape for k, v in p.items()} == {"wx": (D, 4 * H), "wh": (H, 4 * H),
                                                  "b": (4 * H,)}
    for j in range(4):                          # every recurrent gate block is orthogonal
        q = np.asarray(p["wh"][:, j * H:(j + 1) * H])
        np.testing.assert_allclose(q.T @ q, np.eye(H), atol=1e-12)
    np.testing.assert_array_equal(p["b"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    zeros = nn.initializers.zeros
    assert not np.any(np.asarray(_init("LSTM", forget_bias=0.0, w_init=zeros,
                                       wh_init=zeros)["b"]))
    _, p, _ = abstract_init(nn.GRU(H, dtype=jnp.float32), (T, -1, D))
    assert {k: (v.shape, v.dtype) for k, v in p.items()} == {
        "wx": ((D, 3 * H), jnp.float32), "wh": ((H, 3 * H), jnp.float32),
        "bx": ((3 * H,), jnp.float32), "bh": ((3 * H,), jnp.float32)}


def _setup(kind):
    p = jax.tree_util.tree_map(lambda a: a + 0.1 * randn(a.shape, 7), _init(kind, dtype=F64))
    return getattr(nn, kind)(H, return_carry=True, dtype=F64), p


def _ref(kind, p, xs, carry, lengths=None):
    if kind == "LSTM":
        return R.lstm(xs, *carry, p["wx"], p["wh"], p["b"], lengths=lengths)
    if kind == "RNN":
        return R.rnn(xs, carry, p["wx"], p["wh"], p["b"], lengths=lengths, return_carry=True)
    return R.gru(xs, carry, p["wx"], p["wh"], p["bx"], p["bh"], lengths=lengths)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_values_gradients_and_chunked_stateful_use(kind):
    """Zero initial carry by default; a given carry is used; two chunks chained through
    the returned carry equal one pass; gradients of the chained chunks (the second
    chunk's loss flows back through the carry) equal autodiff of the twin."""
    layer, p = _setup(kind)
    xs = randn((T, N, D), seed=8)
    c0 = _carry_shape(kind, jnp.zeros((N, H), F64))
    c1 = jax.tree_util.tree_map(lambda a: randn(a.shape, 9), c0)

    def chunked(p, xs, carry):
        (hs1, mid), _ = layer.apply(p, (), (xs[:2], carry))
        (hs2, last), _ = layer.apply(p, (), (xs[2:], mid))
        return jnp.concatenate([hs1, hs2]), last

    def loss(f):
        return lambda p: sum(jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(
            f(p, xs, c1)))

    @jax.jit
    def run(p):
        plain = layer.apply(p, (), xs)[0]
        return (plain, _ref(kind, p, xs, c0), chunked(p, xs, c1), _ref(kind, p, xs, c1),
                jax.grad(loss(chunked))(p), jax.grad(loss(lambda p, x, c: _ref(kind, p, x, c)))(p))

    plain, want_plain, got, want, g, g_ref = run(p)
    assert_close(plain, want_plain, 1e-12, "zero carry")
    assert_close(got, want, 1e-12, "chunked with a given carry")
    assert_close(g, g_ref, 1e-10, "grads through the carried chunks")
    hs_only, _ = getattr(nn, kind)(H, dtype=F64).apply(p, (), (xs, c1))
    assert_close(hs_only, want[0], 1e-12, "return_carry=False")


@pytest.mark.parametrize("kind, kw", [("LSTM", {}), ("GRU", {}), ("RNN", {}),
                                      ("RNN", {"learn_h0": True})],
                         ids=["LSTM", "GRU", "RNN", "RNN_learn_h0"])
def test_a_none_carry_is_the_default_initial_state(kind, kw):
    """``(xs, None)`` and ``(xs, None, lengths)`` (every sequence of full length) are
    ``xs`` alone: the default initial state (zeros, or the learned ``h0``), batched and
    for one sequence, eagerly and under jit; ``init`` takes the same inputs."""
    layer = getattr(nn, kind)(H, return_carry=True, dtype=F64, **kw)
    p = jax.tree_util.tree_map(lambda a: a + 0.1 * randn(a.shape, 7),
                               _init(kind, dtype=F64, **kw))
    xs = randn((T, N, D), seed=14)
    for shape in (((T, -1, D), None), ((T, -1, D), None, (-1,))):
        assert abstract_init(layer, shape)[0] == abstract_init(layer, (T, -1, D))[0]

    def run(p):
        return [[layer.apply(p, (), x)[0] for x in (seq, (seq, None), (seq, None, lengths))]
                for seq, lengths in ((xs, jnp.full((N,), T)), (xs[:, 1], jnp.int32(T)))]

    for label, f in (("eagerly", run), ("under jit", jax.jit(run))):
        for (want, *got), what in zip(f(p), ("batched", "one sequence")):
            assert_close(got[0], want, 1e-12, f"(xs, None), {what}, {label}")
            assert_close(got[1], want, 1e-12, f"(xs, None, lengths), {what}, {label}")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_padded_batch_with_lengths(kind):
    """``(xs, carry or None, lengths)``: init's shapes agree with apply's; the values and
    the params' gradients equal the twin with the same lengths; each sequence's carry
    is the layer's own on that sequence alone (a single (T, D) sequence with a scalar
    length gives the same)."""
    layer, p = _setup(kind)
    xs = randn((T, N, D), seed=10)
    lengths = jnp.array([T, 0, 2])
    c1 = jax.tree_util.tree_map(lambda a: randn(a.shape, 11),
                                _carry_shape(kind, jnp.zeros((N, H), F64)))
    for carry_shape in (None, _carry_shape(kind, (-1, H))):
        out_shape, _, _ = abstract_init(layer, ((T, -1, D), carry_shape, (-1,)))
        assert out_shape == ((T, -1, H), _carry_shape(kind, (-1, H)))

    def loss(f):
        return lambda p: sum(jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(f(p)))

    def ours(p):
        return layer.apply(p, (), (xs, c1, lengths))[0]

    def twin(p):
        return _ref(kind, p, xs, c1, lengths)

    @jax.jit
    def run(p):
        return ours(p), twin(p), jax.grad(loss(ours))(p), jax.grad(loss(twin))(p)

    got, want, g, g_ref = run(p)
    assert_close(got, want, 1e-12, "values")
    assert_close(g, g_ref, 1e-10, "params' gradients")
    steps = [int(n) for n in lengths]

    @jax.jit
    def alone(p):                      # one program (eagerly: one compile per primitive)
        return layer.apply(p, (), (xs, None, lengths))[0], {
            n: (layer.apply(p, (), xs[:steps[n], n])[0],
                layer.apply(p, (), (xs[:, n], None, steps[n]))[0][1]) for n in (0, 2)}

    (hs, carry), runs = alone(p)
    for n in (0, 2):
        (hs1, carry1), single = runs[n]
        assert_close(hs[:steps[n], n], hs1, 1e-12, f"hs of sequence {n}")
        assert_close(jax.tree_util.tree_map(lambda c: c[n], carry), carry1, 1e-12,
                     f"carry of sequence {n}")
        assert_close(single, carry1, 1e-12, f"single sequence {n} with a scalar length")
    assert not np.any(np.asarray(hs[:, 1])), "an empty sequence outputs 0"


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_single_sequence_and_vmap(kind):
    layer, p = _setup(kind)
    xs = randn((T, N, D), seed=10)
    carry = jax.tree_util.tree_map(lambda a: randn(a.shape, 11),
                                   _carry_shape(kind, jnp.zeros((N, H), F64)))

    @jax.jit
    def run(p):
        batched = layer.apply(p, (), (xs, carry))[0]
        one = layer.apply(p, (), (xs[:, 1], jax.tree_util.tree_map(lambda a: a[1], carry)))[0]
        vm = jax.vmap(lambda x, c: layer.apply(p, (), (x, c))[0], in_axes=(1, 0),
                      out_axes=(1, 0))(xs, carry)
        return batched, one, vm

    batched, one, vm = run(p)
    assert_close(one, jax.tree_util.tree_map(lambda a: a[:, 1] if a.ndim == 3 else a[1],
                                             batched), 1e-12, "one sequence (T, D)")
    assert_close(vm, batched, 1e-12, "vmap over sequences")


def test_composes_with_serial_and_parallel():
    """A stateful character model: (ids, carry) -> (logits, carry), built from serial and
    parallel only; init's shapes agree with apply's, and two chunks chain."""
    V = 9
    model = nn.serial(nn.parallel(nn.Embedding(V, D, dtype=F64), nn.Identity),
                      nn.LSTM(H, return_carry=True, dtype=F64),
                      nn.parallel(nn.Dense(V, dtype=F64), nn.Identity))
    # an unknown N after a time-major layer: Dense's init takes (T, -1, H)
    out_shape, params, state = abstract_init(model, ((T, -1), ((-1, H), (-1, H))))
    params = jax.tree_util.tree_map(lambda a: 0.5 * randn(a.shape, 14), params)
    assert out_shape == ((T, -1, V), ((-1, H), (-1, H)))
    assert nn.LSTM(H, return_carry=True).init(KEY, ((T, -1, D), ((-1, H), (-1, H))))[0] == \
        ((T, -1, H), ((-1, H), (-1, H)))
    ids = randint((2 * T, N), V, seed=12)
    carry = (jnp.zeros((N, H), F64),) * 2

    @jax.jit
    def run(params, ids, carry):
        (logits, carry1), _ = model.apply(params, state, (ids[:T], carry))
        (_, carry2), _ = model.apply(params, state, (ids[T:], carry1))
        emb = params[0][0]["embedding"][ids]
        one_pass = nn.LSTM(H, return_carry=True).apply(params[1], (), (emb, carry))[0][1]
        return logits, carry2, one_pass

    logits, carry2, want = run(params, ids, carry)
    assert logits.shape == (T, N, V)
    assert_close(carry2, want, 1e-12, "two chunks == one pass")
    assert "LSTM(6)" in nn.summary(nn.serial(nn.Embedding(V, D), nn.LSTM(H), nn.Dense(V)),
                                   (T, N), jnp.int32)


@pytest.mark.parametrize("kind, x, exc, match", [
    ("LSTM", lambda xs, c: xs[None], ValueError,
     r"^LSTM\(6\): x has shape \(1, 5, 3, 4\) \(rank 4\), expected rank 2 or 3"),
    ("LSTM", lambda xs, c: (xs, c[0]), TypeError,
     r"^LSTM\(6\): the carry in \(xs, carry\) must be a pair \(h, c\)"),
    ("LSTM", lambda xs, c: (xs, (c[0][:2], c[1])), ValueError,
     r"^LSTM\(6\): lstm: h0 has shape \(2, 6\), expected \(3, 6\)"),
    ("LSTM", lambda xs, c: xs[..., :3], ValueError,
     r"^LSTM\(6\): lstm: wx has shape \(4, 24\), expected \(3, 24\)"),
    ("GRU", lambda xs, c: (xs, c[0].astype(jnp.int32)), TypeError,
     r"^GRU\(6\): gru: h0 must have a floating dtype, got int32"),
    ("GRU", lambda xs, c: (xs, c[0], c[1], c[1]), ValueError,
     r"^GRU\(6\): input must be xs, a pair \(xs, carry\) or a triple \(xs, carry, "
     r"lengths\), got a tuple of 4 entries"),
    ("GRU", lambda xs, c: (xs, c[0], c[1]), TypeError,
     r"^GRU\(6\): gru: lengths must have an integer dtype \(steps per sequence\)"),
    ("LSTM", lambda xs, c: (xs, None, jnp.array([1, 2])), ValueError,
     r"^LSTM\(6\): lstm: lengths has shape \(2,\), expected \(3,\)"),
    ("LSTM", lambda xs, c: (xs[:, 0], None, jnp.array([1])), ValueError,
     r"^LSTM\(6\): lengths has shape \(1,\) \(rank 1\), expected rank 0 \(\) for one "
     r"sequence"),
])
def test_apply_errors_eagerly_and_under_jit(kind, x, exc, match):
    layer, p = getattr(nn, kind)(H, dtype=F64), _init(kind, dtype=F64)
    xs = randn((T, N, D), seed=13)
    carry = (jnp.ones((N, H), F64), jnp.ones((N, H), F64))
    for fn in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(exc, match=match):
            fn(p, (), x(xs, carry))


def test_construction_and_init_errors():
    with pytest.raises(ValueError, match=r"LSTM: hidden_size must be >= 1, got 0"):
        nn.LSTM(0)
    with pytest.raises(TypeError, match=r"GRU\(4\): return_carry must be a bool"):
        nn.GRU(4, return_carry="yes")
    with pytest.raises(ValueError, match=r"LSTM\(4\): forget_bias must be finite"):
        nn.LSTM(4, forget_bias=float("inf"))
    with pytest.raises(ValueError, match=r"GRU\(4\): input_shape \(5, 2, 3, 1\) has rank 4, "
                                         r"expected rank 2 or 3 \(T, D\) or \(T, N, D\)"):
        nn.GRU(4).init(KEY, (5, 2, 3, 1))
    with pytest.raises(ValueError, match=r"LSTM\(4\): carry\[1\] \(c\) has shape \(2, 5\), "
                                         r"expected \(\*, 4\) \(\(N, H\), H=4\)"):
        nn.LSTM(4).init(KEY, ((5, 2, 3), ((2, 4), (2, 5))))
