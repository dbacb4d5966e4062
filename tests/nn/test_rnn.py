"""RNN layer: note 004's recurrence (column form) and gradients against the reference."""
import jax
import jax.numpy as jnp
import numpy as np

from funcnet import nn, ops
from funcnet.ops import reference as R
from tests.nn._models import numpy_init, randn

F64 = jnp.float64
T, N, D, H, C = 5, 3, 4, 6, 2


def _setup(learn_h0=False):
    rnn = nn.RNN(H, learn_h0=learn_h0, dtype=F64)
    head = nn.Dense(C, w_init=nn.initializers.xavier_normal(), dtype=F64)
    _, p_rnn, _ = numpy_init(rnn, (T, -1, D), seed=0)
    _, p_head, _ = numpy_init(head, (-1, H), seed=10)
    p_rnn["b"] = 0.1 * jnp.arange(H, dtype=F64)
    if learn_h0:
        p_rnn["h0"] = 0.2 * jnp.ones((H,), F64)
    xs = randn((T, N, D), seed=2)
    return rnn, head, p_rnn, p_head, xs


def test_rnn_matches_note_004_column_form():
    """Note 004: a_t = W h_{t-1} + U x_t, h_t = tanh(a_t), o_t = V h_t, with
    W = wh^T, U = wx^T, V = w_head^T (funcnet also adds the bias b to a_t)."""
    rnn, head, p, ph, xs = _setup()
    hs, state = jax.jit(rnn.apply)(p, (), xs)
    assert hs.shape == (T, N, H) and state == ()
    out, _ = jax.jit(head.apply)(ph, (), hs.reshape(T * N, H))
    W, U, V = np.asarray(p["wh"]).T, np.asarray(p["wx"]).T, np.asarray(ph["w"]).T
    b, c = np.asarray(p["b"]), np.asarray(ph["b"])
    for n in range(N):                        # one column-vector sequence at a time
        h = np.zeros(H)
        for t in range(T):
            h = np.tanh(W @ h + U @ np.asarray(xs[t, n]) + b)
            np.testing.assert_allclose(hs[t, n], h, rtol=1e-12)
            np.testing.assert_allclose(out.reshape(T, N, C)[t, n], V @ h + c, rtol=1e-12)


def test_rnn_grads_equal_reference():
    rnn, head, p, ph, xs = _setup(learn_h0=True)
    labels = jnp.array([0, 1, 1])

    def loss(params, use_ref):
        pr, pd = params
        if use_ref:
            h0 = jnp.broadcast_to(pr["h0"][None, :], (N, H))
            hs = R.rnn(xs, h0, pr["wx"], pr["wh"], pr["b"])
            return R.softmax_cross_entropy(R.affine(hs[-1], pd["w"], pd["b"]), labels)
        hs, _ = rnn.apply(pr, (), xs)
        return ops.softmax_cross_entropy(head.apply(pd, (), hs[-1])[0], labels)

    g1 = jax.jit(jax.grad(lambda q: loss(q, False)))((p, ph))
    g2 = jax.jit(jax.grad(lambda q: loss(q, True)))((p, ph))
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert float(jnp.abs(g1[0]["h0"]).max()) > 0 and float(jnp.abs(g1[0]["wh"]).max()) > 0


def test_rnn_single_sequence_and_vmap():
    rnn, _, p, _, xs = _setup()
    hs, _ = jax.jit(rnn.apply)(p, (), xs)
    one, _ = jax.jit(rnn.apply)(p, (), xs[:, 1])                # (T, D) -> (T, H)
    np.testing.assert_allclose(one, hs[:, 1], rtol=1e-12)
    vm = jax.jit(jax.vmap(lambda x: rnn.apply(p, (), x)[0], in_axes=1, out_axes=1))(xs)
    np.testing.assert_allclose(vm, hs, rtol=1e-12)


def test_learned_h0_with_a_given_carry_and_lengths():
    """learn_h0: the learned state starts a sequence unless ``(xs, h0)`` brings one; with
    lengths, an empty sequence's final state is that initial state (and the learned h0
    gets its gradient through it), a longer one's is its last real step."""
    rnn, _, p, _, xs = _setup(learn_h0=True)
    layer = nn.RNN(H, learn_h0=True, return_carry=True, dtype=F64)
    lengths = jnp.array([T, 0, 2])
    given = randn((N, H), seed=3)
    h0 = jnp.broadcast_to(p["h0"][None, :], (N, H))

    @jax.jit
    def run(p):
        learned = layer.apply(p, (), (xs, None, lengths))[0]
        carried = layer.apply(p, (), (xs, given))[0]
        g = jax.grad(lambda p: jnp.sum(layer.apply(p, (), (xs, None, lengths))[0][1] ** 2))(p)
        want_g = jax.grad(lambda h: jnp.sum(R.rnn(
            xs, jnp.broadcast_to(h[None], (N, H)), p["wx"], p["wh"], p["b"], lengths=lengths,
            return_carry=True)[1] ** 2))(p["h0"])
        return (learned, carried, g, want_g,
                R.rnn(xs, h0, p["wx"], p["wh"], p["b"], lengths=lengths, return_carry=True),
                R.rnn(xs, given, p["wx"], p["wh"], p["b"]))

    (hs, h_last), carried, g, want_g, (want_hs, want_last), want_carried = run(p)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-12)
    np.testing.assert_allclose(h_last, want_last, rtol=1e-12)
    np.testing.assert_array_equal(h_last[1], p["h0"])
    np.testing.assert_array_equal(h_last[2], hs[1, 2])
    np.testing.assert_allclose(carried[0], want_carried, rtol=1e-12)
    np.testing.assert_allclose(carried[1], carried[0][-1], rtol=0)
    np.testing.assert_allclose(g["h0"], want_g, rtol=1e-10)
    assert float(jnp.abs(g["h0"]).max()) > 0
