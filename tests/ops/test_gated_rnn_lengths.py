"""lstm, gru and rnn over padded batches (``lengths``): the masked BPTT rules against autodiff
of the twins and central differences, every sequence equal to itself run alone (values
and gradients, whatever the padding holds), ``lengths = T`` equal to no lengths, vmap,
int dtypes, and bad lengths (errors eagerly, NaN for that sequence under jit)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops.test_gated_rnn import OPS

T, N, D, H = 6, 4, 3, 5
LENGTHS = np.array([6, 0, 2, 5])       # full, empty, short, one short of full


def n_carry(name):
    return 2 if name == "lstm" else 1


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_vjp_matches_reference_and_central_differences(name):
    op, twin, make = OPS[name]
    hs, carry = check_vjp(op, twin, make(T, N, D, H, seed=30) + (LENGTHS,), seed=3)["value"]
    hs = np.asarray(hs)
    for n, length in enumerate(LENGTHS):
        assert np.all(hs[length:, n] == 0), "padded steps output 0"
        if length:
            for c in jax.tree_util.tree_leaves(carry)[:1]:   # h_T is the last real output
                np.testing.assert_array_equal(c[n], hs[length - 1, n])


def _loss(op, lengths):
    """A loss over every output, weighted per step, and over the final carry."""
    def f(args):
        hs, carry = op(*args, lengths=lengths)
        w = jnp.arange(1.0, hs.shape[0] + 1)[:, None, None]
        return jnp.sum(w * jnp.sin(hs)) + sum(jnp.sum(c * c) for c in
                                              jax.tree_util.tree_leaves(carry))
    return f


@functools.lru_cache(maxsize=None)
def _batch_and_alone(name):
    """One program (shared by both paddings): the padded batch's outputs and gradients,
    and each non-empty sequence run alone on its real steps (outputs, gradients)."""
    op, k = OPS[name][0], n_carry(name)

    @jax.jit
    def run(args):
        alone = {}
        for n, length in enumerate(LENGTHS):
            if length:
                one = ((args[0][:length, n:n + 1],) + tuple(a[n:n + 1] for a in args[1:1 + k])
                       + args[1 + k:])
                alone[n] = op(*one), jax.grad(_loss(op, None))(one)
        return op(*args, lengths=LENGTHS), jax.grad(_loss(op, LENGTHS))(args), alone
    return run


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("padding", ["random", "nonfinite"])
def test_each_sequence_as_if_run_alone(name, padding):
    """Outputs, final carry and every gradient of a padded batch equal the sum over its
    sequences run alone on their real steps, also when the padding holds inf and NaN."""
    op, _, make = OPS[name]
    args = list(make(T, N, D, H, seed=40))
    xs = np.array(args[0])
    for n, length in enumerate(LENGTHS):
        if padding == "nonfinite":
            xs[length:, n] = np.where(np.arange(D) % 2, np.inf, np.nan)
    args[0] = xs
    k = n_carry(name)
    (hs, carry), grads, alone = _batch_and_alone(name)(tuple(args))
    want_w = [np.zeros_like(a) for a in args[1 + k:]]
    for n, length in enumerate(LENGTHS):
        carry_n = [c[n] for c in jax.tree_util.tree_leaves(carry)]
        if length == 0:       # nothing to run: the initial carry, no gradient but its own
            for c, c0 in zip(carry_n, args[1:1 + k]):
                np.testing.assert_array_equal(c, c0[n])
            g0 = [g[n] for g in grads[1:1 + k]]
            assert_close(g0, [2 * c0[n] for c0 in args[1:1 + k]], 1e-12, "d carry0")
            assert np.all(np.asarray(grads[0][:, n]) == 0)
            continue
        (hs1, carry1), g1 = alone[n]
        assert_close(hs[:length, n], hs1[:, 0], 1e-12, f"hs of sequence {n}")
        assert_close(carry_n, [c[0] for c in jax.tree_util.tree_leaves(carry1)], 1e-12,
                     f"carry of sequence {n}")
        assert_close(grads[0][:length, n], g1[0][:, 0], 1e-10, f"dxs of sequence {n}")
        assert np.all(np.asarray(grads[0][length:, n]) == 0), "no gradient into padding"
        for i in range(1, 1 + k):
            assert_close(grads[i][n], g1[i][0], 1e-10, f"d carry0[{i}] of sequence {n}")
        want_w = [w + g for w, g in zip(want_w, g1[1 + k:])]
    assert_close(list(grads[1 + k:]), want_w, 1e-10, "weight gradients = sum over sequences")
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_full_lengths_equal_no_lengths(name):
    op, _, make = OPS[name]
    args = make(T, N, D, H, seed=50)
    full = np.full((N,), T, np.int32)

    @jax.jit
    def run(args):                     # one program (eagerly: one compile per primitive)
        return (op(*args, lengths=full), op(*args), jax.grad(_loss(op, full))(args),
                jax.grad(_loss(op, None))(args))

    value, value_none, grads, grads_none = run(args)
    assert_close(value, value_none, 1e-14, "value")
    assert_close(grads, grads_none, 1e-12, "grads")


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_vmap_over_lengths_and_weights(name):
    """Batched experiments: vmap over (weights, lengths) pairs equals a Python loop."""
    op, _, make = OPS[name]
    args = make(T, N, D, H, seed=60)
    lengths = np.stack([LENGTHS, LENGTHS[::-1]])
    scales = np.array([1.0, 0.5])

    def run(scale, lengths):
        a = args[:-1] + (scale * args[-1],)
        return jax.grad(_loss(op, lengths))(a)[-1]

    got, loop = jax.jit(lambda s, l: (jax.vmap(run)(s, l), [run(s[i], l[i]) for i in range(2)]))(
        scales, lengths)
    for i in range(2):
        assert_close(got[i], loop[i], 1e-12, f"member {i}")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.uint32])
def test_integer_dtypes(dtype):
    args = OPS["gru"][2](T, N, D, H, seed=70)
    want = ops.gru(*args, lengths=LENGTHS)
    assert_close(ops.gru(*args, lengths=LENGTHS.astype(dtype)), want, 0, str(dtype))


BAD = [
    (np.array([1.0, 2, 3, 4]), TypeError,
     r"lstm: lengths must have an integer dtype \(steps per sequence\), got float64"),
    (np.array([1, 2, 3]), ValueError,
     r"lstm: lengths has shape \(3,\), expected \(4,\) \(one length per sequence"),
    (np.array([1, 7, 3, 4]), ValueError,
     r"lstm: lengths hold 7 \(at index \(1,\)\), expected lengths in \[0, T = 6\]"),
    (np.array([1, 2, -1, 4]), ValueError, r"lstm: lengths hold -1 \(at index \(2,\)\)"),
    ([1, 2, 3, 4], TypeError, r"lstm: lengths must be an array, got list"),
]


@pytest.mark.parametrize("lengths, exc, match", BAD)
def test_bad_lengths_raise(lengths, exc, match):
    args = OPS["lstm"][2](T, N, D, H)
    for fn in (ops.lstm, R.lstm):
        with pytest.raises(exc, match=match):
            fn(*args, lengths=lengths)
    if exc is TypeError or np.ndim(lengths) and len(lengths) != N:   # static: under jit too
        with pytest.raises(exc, match=match):
            jax.jit(lambda *a: ops.lstm(*a, lengths=lengths))(*args)


@pytest.mark.parametrize("name, bad", [
    ("lstm", np.array([T + 1, 3, -1, 2])), ("gru", np.array([T + 1, 3, -1, 2])),
    ("rnn", np.array([T + 1, 3, -1, 2])),
    # unsigned lengths of 2**32 and 2**64 - 1 wrapped to 0 and 2**32 - 1 when cast to int32
    ("lstm", np.array([2**32, 3, 2**64 - 1, 2], np.uint64)),
])
def test_out_of_range_lengths_under_jit_give_nan_for_that_sequence(name, bad):
    op, twin, make = OPS[name]
    args = make(T, N, D, H, seed=80)
    for f in (op, twin):
        run = jax.jit(lambda a, l: f(*a, lengths=l))   # one program: the good ones bitwise
        hs, carry = run(args, bad)
        hs_ok, carry_ok = run(args, np.array([T, 3, 0, 2]))
        for got, want in ((hs, hs_ok),) + tuple(zip(jax.tree_util.tree_leaves(carry),
                                                    jax.tree_util.tree_leaves(carry_ok))):
            got = np.moveaxis(np.asarray(got), -2, 0)    # sequences first
            want = np.moveaxis(np.asarray(want), -2, 0)
            assert np.isnan(got[[0, 2]]).all()
            np.testing.assert_array_equal(got[[1, 3]], want[[1, 3]])


@pytest.mark.parametrize("name, per_step", [("lstm", 5), ("gru", 4), ("rnn", 1)])
def test_residuals_are_the_unpadded_ones_plus_the_mask(name, per_step):
    """The masks live inside the rules: beyond the unpadded op's residuals (gate
    activations and states) only the (T, N, 1) mask of real steps and the initial
    carries (N, H) (NaN for a bad length: an added column whose derivative keeps
    nothing) are kept, not autodiff's selects over (T, N, H) or (N, H)."""
    op, _, make = OPS[name]
    t, n, h = 10, 4, 8
    args = tuple(jnp.asarray(a) for a in make(t, n, 3, h))
    lengths = jnp.array([10, 0, 3, 7])
    kept = [r for r in saved_residuals(lambda *a: op(*a, lengths=lengths)[0], *args)
            if not r.is_argument]
    big = [r for r in kept if r.nbytes > n * h * 8]       # more than one (N, H) carry
    assert sum(r.nbytes for r in big) == t * n * per_step * h * 8
    assert sum(r.nbytes for r in kept) == (t * n * (per_step * h * 8 + 1)
                                           + n_carry(name) * n * h * 8)
