"""lstm and gru: BPTT custom VJPs vs autodiff of the lax.scan twins and central
differences, the gate layout (NumPy transcription), the final-carry cotangent and chunked
(stateful) use, one reverse scan, transforms, residuals, errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import rand


def lstm_args(t, n, d, h, seed=0, scale=0.5):
    return (rand((t, n, d), seed), rand((n, h), seed + 1), rand((n, h), seed + 2),
            scale * rand((d, 4 * h), seed + 3), scale * rand((h, 4 * h), seed + 4),
            rand((4 * h,), seed + 5))


def gru_args(t, n, d, h, seed=0, scale=0.5):
    return (rand((t, n, d), seed), rand((n, h), seed + 1), scale * rand((d, 3 * h), seed + 2),
            scale * rand((h, 3 * h), seed + 3), rand((3 * h,), seed + 4),
            rand((3 * h,), seed + 5))


def rnn_args(t, n, d, h, seed=0, scale=0.5):
    return (rand((t, n, d), seed), rand((n, h), seed + 1), scale * rand((d, h), seed + 2),
            scale * rand((h, h), seed + 3), rand((h,), seed + 4))


# the three recurrences as (hs, final carry); the vanilla RNN with return_carry=True
OPS = {"lstm": (ops.lstm, R.lstm, lstm_args), "gru": (ops.gru, R.gru, gru_args),
       "rnn": (functools.partial(ops.rnn, return_carry=True),
               functools.partial(R.rnn, return_carry=True), rnn_args)}
SIZES = [(1, 2, 3, 4), (12, 3, 2, 5), (5, 1, 1, 3)]


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("t, n, d, h", SIZES, ids=["T1", "T12", "N1"])
def test_vjp_matches_reference_and_central_differences(name, t, n, d, h):
    """The random cotangent covers every output: all hidden states and the final carry."""
    op, twin, make = OPS[name]
    hs, carry = check_vjp(op, twin, make(t, n, d, h), seed=7)["value"]
    assert hs.shape == (t, n, h)
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(carry)[0], hs[-1])


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_saturated_gates(name):
    """Large weights saturate sigmoid/tanh (derivatives ~ 0): still exact."""
    op, twin, make = OPS[name]
    check_vjp(op, twin, make(6, 2, 3, 4, seed=3, scale=4.0), fd_rtol=None)


def _sig(z):
    return 1 / (1 + np.exp(-z))


def test_values_follow_the_documented_gate_layout():
    """NumPy transcription: LSTM gates [i, f, g, o]; GRU [r, z, n] with the reset gate
    applied after the recurrent matmul (PyTorch/cuDNN/Flax variant)."""
    xs, h0, c0, wx, wh, b = lstm_args(4, 2, 3, 5, seed=20)
    hs, (h_t, c_t) = ops.lstm(xs, h0, c0, wx, wh, b)
    h, c, k = h0, c0, 5
    for t in range(4):
        z = xs[t] @ wx + h @ wh + b
        i, f, g, o = (z[:, j * k:(j + 1) * k] for j in range(4))
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = _sig(o) * np.tanh(c)
        np.testing.assert_allclose(hs[t], h, rtol=1e-12)
    np.testing.assert_allclose(c_t, c, rtol=1e-12)
    np.testing.assert_allclose(h_t, h, rtol=1e-12)

    xs, h0, wx, wh, bx, bh = gru_args(4, 2, 3, 5, seed=30)
    hs, h_t = ops.gru(xs, h0, wx, wh, bx, bh)
    h = h0
    for t in range(4):
        ax, ah = xs[t] @ wx + bx, h @ wh + bh
        r = _sig(ax[:, :k] + ah[:, :k])
        z = _sig(ax[:, k:2 * k] + ah[:, k:2 * k])
        n = np.tanh(ax[:, 2 * k:] + r * ah[:, 2 * k:])
        h = (1 - z) * n + z * h
        np.testing.assert_allclose(hs[t], h, rtol=1e-12)
    np.testing.assert_allclose(h_t, h, rtol=1e-12)


def _final_carry_loss(op, name):
    def loss(args):
        hs, carry = op(*args)
        if name == "lstm":
            h_t, c_t = carry
            return jnp.sum(jnp.sin(h_t)) + jnp.sum(c_t ** 2)
        return jnp.sum(jnp.sin(carry))
    return loss


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_final_carry_cotangent_alone_and_chunked_sequences(name):
    """A loss on the final carry only (zero cotangent for hs) has the reference gradient;
    running two chunks, the second started from the first's final carry, gives the same
    states and the same gradients as one run over the whole sequence (stateful use)."""
    op, twin, make = OPS[name]
    args = make(7, 2, 3, 4, seed=40)
    k = 2 if name == "lstm" else 1         # number of carry arrays

    def chunked(f):
        def run(*args):
            xs, carry, rest = args[0], args[1:1 + k], args[1 + k:]
            hs1, c1 = f(xs[:3], *carry, *rest)
            hs2, c2 = f(xs[3:], *(c1 if k == 2 else (c1,)), *rest)
            return jnp.concatenate([hs1, hs2]), c2
        return run

    def whole_loss(f):
        return lambda a: jnp.sum(jnp.cos(f(*a)[0])) + _final_carry_loss(f, name)(a)

    @jax.jit
    def run(args):
        return [(jax.grad(_final_carry_loss(f, name))(args),
                 jax.grad(lambda a: jnp.sum(jnp.cos(chunked(f)(*a)[0]))
                          + _final_carry_loss(chunked(f), name)(a))(args),
                 jax.grad(whole_loss(f))(args), chunked(f)(*args), f(*args))
                for f in (op, twin)]

    (carry_g, chunk_g, whole_g, chunk_out, out), (carry_w, chunk_w, _, _, _) = run(args)
    assert_close(carry_g, carry_w, 1e-10, "final-carry cotangent")
    assert_close(chunk_g, chunk_w, 1e-10, "chunked vs reference")
    assert_close(chunk_out, out, 1e-12, "chunked states")
    assert_close(chunk_g, whole_g, 1e-10, "chunked vs whole-sequence gradients")
    assert float(jnp.abs(carry_g[1]).max()) > 0       # dh0 is not trivially zero


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_op_is_custom_vjp_with_one_reverse_scan(name):
    op, _, make = OPS[name]
    args = tuple(jnp.asarray(a) for a in make(4, 2, 3, 5))
    assert "custom_vjp_call" in str(jax.make_jaxpr(op)(*args))
    loss = lambda *a: jnp.sum(op(*a)[0])  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)
    scans = _scans(jaxpr.jaxpr)
    # the forward scan sits in each branch of lax.platform_dependent (the CPU one projects
    # the inputs inside the loop); the backward pass is ONE reverse scan (BPTT)
    assert sorted(e.params["reverse"] for e in scans) == [False, False, True]


def _scans(jaxpr):
    """Every ``scan`` equation of ``jaxpr``, also inside conds and other sub-jaxprs."""
    found = []
    for e in jaxpr.eqns:
        if e.primitive.name == "scan":
            found.append(e)
            continue
        for value in e.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)          # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    found += _scans(sub)
    return found


@pytest.mark.parametrize("name, per_step", [("lstm", 5), ("gru", 4)])
def test_residuals_are_the_gate_activations(name, per_step):
    """Besides the inputs: LSTM keeps [i, f, g, o] and c_t (5H per step and row), GRU
    [r, z, n] and h_t (4H); autodiff of the twin keeps more."""
    op, twin, make = OPS[name]
    t, n, h = 10, 4, 8
    args = tuple(jnp.asarray(a) for a in make(t, n, 3, h))

    def act_bytes(f):
        return sum(r.nbytes for r in saved_residuals(lambda *a: f(*a)[0], *args)
                   if not r.is_argument)

    assert act_bytes(op) == t * n * per_step * h * 8
    assert act_bytes(twin) > act_bytes(op)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_vmap_per_example_grads_and_grad_of_grad(name):
    op, twin, make = OPS[name]
    xs, *rest = (jnp.asarray(a) for a in make(5, 3, 2, 4, seed=60))
    carry0 = [a[:1] for a in rest[:(2 if name == "lstm" else 1)]]
    weights = rest[len(carry0):]
    per = xs.transpose(1, 0, 2)[:, :, None, :]             # 3 sequences, N = 1

    def loss(f):
        def fn(w, x):
            hs, carry = f(x, *carry0, *w)
            return jnp.sum(jnp.sin(hs)) + jnp.sum(jax.tree_util.tree_leaves(carry)[-1] ** 2)
        return fn

    @jax.jit
    def run(w, per):
        out = []
        for f in (op, twin):
            g = jax.grad(loss(f))
            out.append((jax.vmap(g, in_axes=(None, 0))(w, per), g(w, per[1]),
                        jax.grad(lambda w: jnp.sum(g(w, per[0])[0] ** 2))(w)))
        return out

    (got, one, got2), (want, _, want2) = run(weights, per)
    assert_close(jax.tree_util.tree_map(lambda a: a[1], got), one, 1e-12, "vmap vs single")
    assert_close(got, want, 1e-10, "vmap(grad)")
    assert_close(got2, want2, 1e-10, "grad(grad)")


LSTM_ERRORS = [
    (0, np.zeros((4, 3)), ValueError, r"lstm: xs has shape \(4, 3\) \(rank 2\), expected rank "
                                      r"3 \(T, N, D\)"),
    (0, np.zeros((0, 2, 3)), ValueError, r"lstm: xs has shape \(0, 2, 3\), expected T >= 1"),
    (1, np.zeros((3, 5)), ValueError, r"lstm: h0 has shape \(3, 5\), expected \(2, 5\)"),
    (2, np.zeros((2, 4)), ValueError, r"lstm: c0 has shape \(2, 4\), expected \(2, 5\)"),
    (3, np.zeros((3, 5)), ValueError, r"lstm: wx has shape \(3, 5\), expected \(3, 20\) "
                                      r"\(\(D, 4H\): D=3, 4 gates of H=5 from h0\)"),
    (4, np.zeros((5, 15)), ValueError, r"lstm: wh has shape \(5, 15\), expected \(5, 20\)"),
    (5, np.zeros((5,)), ValueError, r"lstm: b has shape \(5,\), expected \(20,\)"),
    (5, np.zeros((20,), np.float32), TypeError,
     r"lstm: xs has dtype float64 but b has dtype float32"),
    (0, np.zeros((4, 2, 3), np.int32), TypeError, r"lstm: xs must have a floating dtype"),
]
GRU_ERRORS = [
    (1, np.zeros((2,)), ValueError, r"gru: h0 has shape \(2,\) \(rank 1\), expected rank 2"),
    (2, np.zeros((3, 20)), ValueError, r"gru: wx has shape \(3, 20\), expected \(3, 15\)"),
    (4, np.zeros((20,)), ValueError, r"gru: bx has shape \(20,\), expected \(15,\)"),
    (5, None, TypeError, r"gru: bh must be an array, got NoneType"),
    (3, np.zeros((5, 15), np.float32), TypeError, r"gru: xs has dtype float64 but wh has "),
]


@pytest.mark.parametrize("name, i, value, exc, match",
                         [("lstm",) + e for e in LSTM_ERRORS] + [("gru",) + e for e in GRU_ERRORS])
def test_bad_input_raises_eagerly_and_under_jit(name, i, value, exc, match):
    op, twin, make = OPS[name]
    args = list(make(4, 2, 3, 5))
    args[i] = value

    def call(f):
        return lambda *a: f(*(a[:i] + (value,) + a[i + 1:]))   # bad value static under jit

    for fn in (op, twin, jax.jit(call(op))):
        with pytest.raises(exc, match=match):
            fn(*args)


def test_reference_mode_gives_forward_mode():
    """Inside ops.reference_mode the ops run their twins, so jax.jvp works (a custom_vjp
    has no forward mode) and agrees with the VJP outside."""
    args = [tuple(jnp.asarray(a) for a in OPS[n][2](3, 2, 2, 3, seed=80)) for n in OPS]
    tangents = [tuple(jnp.ones_like(a) for a in a_) for a_ in args]

    @jax.jit
    def run(args, tangents):
        with ops.reference_mode():
            fwd = [jax.jvp(f, a, t)[1] for f, a, t in zip((ops.lstm, ops.gru), args, tangents)]
        cts = [jax.tree_util.tree_map(jnp.ones_like, y) for y in fwd]
        rev = [jax.vjp(f, *a)[1](c) for f, a, c in zip((ops.lstm, ops.gru), args, cts)]
        return fwd, rev

    fwd, rev = run(args, tangents)
    for y_dot, grads in zip(fwd, rev):       # <1, J t> == <J^T 1, t> with t = 1
        lhs = sum(jnp.sum(a) for a in jax.tree_util.tree_leaves(y_dot))
        np.testing.assert_allclose(lhs, sum(jnp.sum(g) for g in grads), rtol=1e-12)
