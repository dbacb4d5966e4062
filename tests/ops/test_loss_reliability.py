"""Issue 13 items for the ops: exact label gathers, label ranges, BCE in half precision,
empty batches, dtype promotion of losses, batch_norm's minimum batch, zero-size policy.

Each test here fails on the ops as they were at commit a72e982 (one-hot products in the
label gather, silent out-of-range labels, NaN BCE in float16, NaN losses on empty
batches, TypeError for float64 predictions with float32 targets, NaN batch_norm on an
empty batch).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as ref

FLOATS = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]
CLASS_LOSSES = ["softmax_cross_entropy", "cross_entropy", "multiclass_hinge"]


def _f64(x):
    return np.asarray(x, np.float64)


def _eager_and_jit(fn, *args):
    """``fn(*args)`` eagerly and under jit (value and gradient wrt the first argument)."""
    vg = jax.value_and_grad(fn)
    return vg(*args), jax.jit(vg)(*args)


# ------------------------------------------------------------------ item 3: -inf logits
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("one_hot", [False, True], ids=["index", "one_hot"])
def test_softmax_cross_entropy_exact_with_masked_logits(dtype, one_hot):
    logits = jnp.array([[0.0, -jnp.inf, 1.0], [2.0, 0.5, -jnp.inf]], dtype)
    labels = jnp.array([0, 1], jnp.int32)
    if one_hot:
        labels = jax.nn.one_hot(labels, 3, dtype=dtype)
    x = _f64(logits)
    lse = np.log(np.sum(np.exp(x), axis=-1))
    want = np.mean(lse - x[[0, 1], [0, 1]])
    (v, g), (vj, gj) = _eager_and_jit(ops.softmax_cross_entropy, logits, labels)
    tol = 4 * float(jnp.finfo(dtype).eps)
    for value in (v, vj):
        assert value.dtype == dtype and np.isfinite(_f64(value))
        assert abs(_f64(value) - want) <= tol * abs(want)
    assert abs(_f64(v) - _f64(vj)) <= tol * abs(want)   # eager == jit
    soft = np.exp(x - lse[:, None])
    want_g = (soft - np.eye(3)[[0, 1]]) / 2
    for grad in (g, gj):
        assert np.all(np.isfinite(_f64(grad)))
        assert _f64(grad)[0, 1] == 0.0 and _f64(grad)[1, 2] == 0.0   # masked logit: 0
        np.testing.assert_allclose(_f64(grad), want_g, atol=4 * tol)


@pytest.mark.parametrize("label, want", [(0, 0.0), (2, 6e4)])
def test_softmax_cross_entropy_float16_large_logits_exact(label, want):
    logits = jnp.array([[6e4, -2e4, 0.0]], jnp.float16)
    labels = jnp.array([label], jnp.int32)
    (v, g), (vj, gj) = _eager_and_jit(ops.softmax_cross_entropy, logits, labels)
    assert float(v) == want and float(vj) == want
    assert np.all(np.isfinite(_f64(g))) and np.array_equal(_f64(g), _f64(gj))
    with ops.reference_mode():   # the twin gathers the same way
        assert float(ops.softmax_cross_entropy(logits, labels)) == want


@pytest.mark.parametrize("dtype", FLOATS)
def test_hinge_and_cross_entropy_gather_exactly_at_infinite_scores(dtype):
    scores = jnp.array([[3.0, -jnp.inf, 1.0], [0.0, 0.5, -jnp.inf]], dtype)
    labels = jnp.array([0, 1], jnp.int32)
    (v, g), (vj, gj) = _eager_and_jit(ops.multiclass_hinge, scores, labels)
    assert float(v) == float(vj) == 0.25      # only row 1, class 0: 0 - 0.5 + 1 = 0.5
    np.testing.assert_array_equal(_f64(g), [[0, 0, 0], [0.5, -0.5, 0]])
    np.testing.assert_array_equal(_f64(gj), _f64(g))
    probs = jnp.array([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0]], dtype)
    (c, gc), (cj, gcj) = _eager_and_jit(lambda p, t: ops.cross_entropy(p, t, 0.0), probs, labels)
    want = -np.log(0.75) / 2
    assert abs(_f64(c) - want) <= 4 * float(jnp.finfo(dtype).eps) and _f64(c) == _f64(cj)
    assert np.all(np.isfinite(_f64(gc))) and np.array_equal(_f64(gc), _f64(gcj))


# ------------------------------------------------------------ item 4: labels out of range
@pytest.mark.parametrize("name", CLASS_LOSSES)
@pytest.mark.parametrize("bad", [3, -1])
def test_out_of_range_labels_refused_eagerly(name, bad):
    scores = jax.nn.softmax(jnp.zeros((3, 3)))
    labels = jnp.array([0, bad, 2], jnp.int32)
    msg = rf"{name}: labels hold {bad} \(at index \(1,\)\), expected class indices in \[0, 3\)"
    for fn in (getattr(ops, name), getattr(ref, name)):
        with pytest.raises(ValueError, match=msg):
            fn(scores, labels)


_JIT_VALUE_AND_GRAD = {name: jax.jit(jax.value_and_grad(getattr(ops, name)))
                       for name in CLASS_LOSSES}


@pytest.mark.parametrize("name", CLASS_LOSSES)
@pytest.mark.parametrize("bad, dtype", [
    (3, jnp.int32), (-1, jnp.int32), (2 ** 31 - 1, jnp.int32),
    (2 ** 32, jnp.uint64), (2 ** 32 + 1, jnp.uint64), (2 ** 63, jnp.uint64),  # int32 cast: 0, 1, 0
    (2 ** 32 - 1, jnp.uint32), (255, jnp.uint8), (2 ** 32, jnp.int64)],
    ids=["3", "-1", "int32_max", "u64_2e32", "u64_2e32+1", "u64_2e63", "u32_max", "u8_max",
         "i64_2e32"])
def test_out_of_range_labels_under_jit_give_nan_loss_and_zero_gradient_row(name, bad, dtype):
    """jit cannot check values: the loss is NaN (never a silent 0), the bad row's
    gradient is 0 (parameters are not corrupted), and the twin does the same. Wide
    unsigned labels are not wrapped into a valid class by the cast to int32 (2**32 as
    uint64 was read as class 0 under jit)."""
    assert jax.config.jax_enable_x64   # (tests/conftest.py) else uint64 would be uint32
    scores = jax.nn.softmax(jnp.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [0.3, 0.3, 0.2]]))
    labels = jnp.array([0, bad, 2], dtype)
    assert labels.dtype == dtype and int(labels[1]) == bad
    vg = _JIT_VALUE_AND_GRAD[name]          # shared: one compile per label dtype and mode
    v, g = vg(scores, labels)
    assert np.isnan(float(v))
    assert np.all(_f64(g[1]) == 0.0) and np.all(np.isfinite(_f64(g)))
    rows = np.array([0, 2])
    good = vg(scores[rows], labels[rows])[1] * 2 / 3   # the other rows unchanged
    assert_close(g[rows], good, 1e-12, "valid rows")
    with ops.reference_mode():              # jit retraces inside: the twin
        vr, gr = vg(scores, labels)
    assert np.isnan(float(vr)) and np.all(_f64(gr[1]) == 0.0)


def test_small_integer_label_dtypes_work():
    logits = jnp.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    want = ops.softmax_cross_entropy(logits, jnp.array([2, 0], jnp.int32))
    for dt in (jnp.int8, jnp.uint8, jnp.int16, jnp.int64):
        got = jax.jit(ops.softmax_cross_entropy)(logits, jnp.array([2, 0], dt))
        assert float(got) == float(want)


# ----------------------------------------------------------------- item 9: BCE in half
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("eps", [1e-7, 0.0])
def test_binary_cross_entropy_finite_at_zero_and_one(dtype, eps):
    p = jnp.array([0.0, 1.0, 0.0, 1.0, 0.5], dtype)
    t = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0], dtype)
    f = lambda p, t: ops.binary_cross_entropy(p, t, eps)  # noqa: E731
    (v, g), (vj, gj) = _eager_and_jit(f, p, t)
    assert v.dtype == g.dtype == dtype
    assert np.isfinite(_f64(v)) and np.all(np.isfinite(_f64(g))) and _f64(v) == _f64(vj)
    # In float32 at least (float64 for float64): p is clipped to [lo, hi], the smallest
    # normal / eps and the largest float below 1 / 1 - eps; log 2 for the p = 0.5 term.
    ct = np.float64 if dtype == jnp.float64 else np.float32
    lo = max(ct(eps), np.finfo(ct).tiny)
    hi = min(ct(1 - eps), np.nextafter(ct(1), ct(0)))
    want = (-np.log1p(-_f64(lo)) - np.log(_f64(hi)) - np.log(_f64(lo)) - np.log1p(-_f64(hi))
            + np.log(2.0)) / 5
    assert abs(_f64(v) - want) <= 1e-2 * want
    np.testing.assert_array_equal(_f64(g)[:4], 0.0)   # outside the clip range: flat
    grads = jax.grad(f, argnums=1)(p, t)
    assert np.all(np.isfinite(_f64(grads)))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_binary_cross_entropy_half_equals_float32_on_the_same_inputs(dtype):
    p = jnp.array([0.0, 1e-3, 0.25, 0.999, 1.0], dtype)
    t = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0], dtype)
    half = ops.binary_cross_entropy(p, t)
    full = ops.binary_cross_entropy(p.astype(jnp.float32), t.astype(jnp.float32))
    assert float(half) == float(full.astype(dtype))


# ----------------------------------------------------------------- empty batches
EMPTY = [
    ("softmax_cross_entropy", (np.zeros((0, 3)), np.zeros((0,), np.int32)), "at least one row"),
    ("softmax_cross_entropy", (np.zeros((4, 0)), np.zeros((4,), np.int32)), "at least one row"),
    ("cross_entropy", (np.zeros((0, 3)), np.zeros((0, 3))), "at least one row"),
    ("multiclass_hinge", (np.zeros((2, 0, 3)), np.zeros((2, 0), np.int32)), "at least one row"),
    ("mean_squared_error", (np.zeros((0, 2)), np.zeros((0, 2))), "at least one element"),
    ("binary_cross_entropy", (np.zeros((0,)), np.zeros((0,))), "at least one element"),
    ("sigmoid_binary_cross_entropy", (np.zeros((3, 0)), np.zeros((3, 0))), "at least one element"),
]


@pytest.mark.parametrize("name, args, what", EMPTY, ids=[f"{e[0]}-{i}" for i, e in enumerate(EMPTY)])
def test_losses_refuse_empty_batches(name, args, what):
    shape = re_shape(args[0].shape)
    for fn in (getattr(ops, name), jax.jit(getattr(ops, name))):
        with pytest.raises(ValueError, match=rf"{name}: \w+ has shape {shape}, expected {what}"):
            fn(*args)


def re_shape(shape):
    return "\\(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + "\\)"


# ----------------------------------------------------------------- dtype promotion
PAIRS = [
    ("mean_squared_error", 0.0, 1.0),
    ("binary_cross_entropy", 0.05, 0.95),
    ("sigmoid_binary_cross_entropy", -3.0, 3.0),
]


@pytest.mark.parametrize("name, lo, hi", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("da, db, want", [
    (jnp.float64, jnp.float32, jnp.float64), (jnp.float32, jnp.float64, jnp.float64),
    (jnp.bfloat16, jnp.float32, jnp.float32), (jnp.float16, jnp.bfloat16, jnp.float32),
])
def test_elementwise_losses_promote_like_jax(name, lo, hi, da, db, want):
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.uniform(lo, hi, (4, 3)), da)
    b = jnp.asarray(rng.uniform(0.0, 1.0, (4, 3)), db)
    fn = getattr(ops, name)
    (v, g), (vj, _) = _eager_and_jit(fn, a, b)
    gb = jax.grad(fn, argnums=1)(a, b)
    assert v.dtype == vj.dtype == want and g.dtype == da and gb.dtype == db
    same = fn(a.astype(want), b.astype(want))
    assert float(v) == float(same)
    with ops.reference_mode():
        assert fn(a, b).dtype == want


def test_probability_labels_promote_and_integers_stay_refused():
    logits = jnp.zeros((2, 3), jnp.float32)
    probs = jnp.full((2, 3), 1 / 3, jnp.float64)
    assert ops.softmax_cross_entropy(logits, probs).dtype == jnp.float64
    assert ops.cross_entropy(jax.nn.softmax(logits), probs).dtype == jnp.float64
    with pytest.raises(TypeError, match=r"mean_squared_error: target must have a floating "
                                        r"dtype, got int32"):
        ops.mean_squared_error(jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match=r"binary_cross_entropy: targets must have a floating "
                                        r"dtype, got bool"):
        ops.binary_cross_entropy(jnp.zeros(3), jnp.zeros(3, bool))
    with pytest.raises(TypeError, match=r"softmax_cross_entropy: labels must be integer "
                                        r"indices or floating probabilities, got dtype bool"):
        ops.softmax_cross_entropy(logits, jnp.zeros((2, 3), bool))


# ------------------------------------------------------------------------ batch_norm
@pytest.mark.parametrize("rows", [0, 1])
def test_batch_norm_refuses_fewer_than_two_values_per_feature(rows):
    x, g = jnp.zeros((rows, 3)), jnp.ones(3)
    msg = (rf"batch_norm: x has shape \({rows}, 3\): {rows} value\(s\) per feature, "
           r"expected at least 2 in training mode")
    for fn in (ops.batch_norm, ref.batch_norm, jax.jit(ops.batch_norm)):
        with pytest.raises(ValueError, match=msg):
            fn(x, g, g)
    with pytest.raises(ValueError, match=r"batch_norm: x has shape \(1, 1, 1, 3\)"):
        ops.batch_norm(jnp.zeros((1, 1, 1, 3)), g, g)


def test_batch_norm_counts_the_mapped_axis():
    g = jnp.ones(2)
    per_example = jax.vmap(lambda a: ops.batch_norm(a, g, g, 1e-5, "i")[0], axis_name="i")
    y = per_example(jnp.arange(8.0).reshape(4, 2))       # 1 row each, 4 along "i"
    np.testing.assert_allclose(y[:, 0], (np.arange(0, 8, 2) - 3) / np.sqrt(5 + 1e-5) + 1)
    with pytest.raises(ValueError, match=r"1 value\(s\) per feature times 1 along axis 'i'"):
        per_example(jnp.ones((1, 2)))


# ------------------------------------------------------------------ zero-size policy
ZERO_OK = [
    ("affine N=0", lambda: ops.affine(jnp.zeros((0, 3)), jnp.ones((3, 2)), jnp.ones(2)), (0, 2)),
    ("affine D=0 gives b", lambda: ops.affine(jnp.zeros((4, 0)), jnp.ones((0, 2)),
                                              jnp.array([1.0, 2.0])), (4, 2)),
    ("matmul H=0", lambda: ops.matmul(jnp.ones((4, 3)), jnp.ones((3, 0))), (4, 0)),
    ("conv2d Cin=0 gives b", lambda: ops.conv2d(jnp.zeros((1, 4, 4, 0)), jnp.ones((3, 3, 0, 2)),
                                                jnp.array([1.0, 2.0])), (1, 2, 2, 2)),
    ("conv2d Cout=0", lambda: ops.conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 0))),
     (1, 2, 2, 0)),
    ("conv2d N=0", lambda: ops.conv2d(jnp.ones((0, 4, 4, 2)), jnp.ones((3, 3, 2, 1))),
     (0, 2, 2, 1)),
    ("max_pool2d C=0", lambda: ops.max_pool2d(jnp.ones((1, 4, 4, 0)), 2, 1), (1, 3, 3, 0)),
    ("avg_pool2d N=0", lambda: ops.avg_pool2d(jnp.ones((0, 4, 4, 2))), (0, 2, 2, 2)),
    ("rnn N=0", lambda: ops.rnn(jnp.ones((2, 0, 3)), jnp.ones((0, 4)), jnp.ones((3, 4)),
                                jnp.ones((4, 4)), jnp.ones(4)), (2, 0, 4)),
    ("rnn D=0", lambda: ops.rnn(jnp.ones((2, 1, 0)), jnp.zeros((1, 4)), jnp.ones((0, 4)),
                                jnp.ones((4, 4)), jnp.zeros(4)), (2, 1, 4)),
    ("batch_norm C=0", lambda: ops.batch_norm(jnp.ones((4, 0)), jnp.ones(0), jnp.ones(0))[0],
     (4, 0)),
    ("softmax N=0", lambda: ops.softmax(jnp.ones((0, 3))), (0, 3)),
    ("dropout empty", lambda: ops.dropout(jnp.ones((0, 3)), 0.5, jax.random.PRNGKey(0)), (0, 3)),
]


@pytest.mark.parametrize("name, make, shape", ZERO_OK, ids=[z[0] for z in ZERO_OK])
def test_zero_size_dims_that_are_defined_are_computed(name, make, shape):
    y, yj = make(), jax.jit(make)()
    assert y.shape == yj.shape == shape and np.all(np.isfinite(_f64(y)))
    np.testing.assert_array_equal(_f64(y), _f64(yj))
    if "gives b" in name:
        np.testing.assert_array_equal(_f64(y), np.broadcast_to([1.0, 2.0], shape))


@pytest.mark.parametrize("name, args", [
    ("affine", (jnp.zeros((4, 0)), jnp.ones((0, 2)), jnp.ones(2))),
    ("conv2d", (jnp.ones((2, 4, 4, 0)), jnp.ones((3, 3, 0, 2)), jnp.ones(2))),
    ("rnn", (jnp.ones((2, 1, 0)), jnp.ones((1, 3)), jnp.ones((0, 3)), jnp.ones((3, 3)),
             jnp.ones(3))),
])
def test_zero_size_gradients_match_the_twin(name, args):
    f = lambda *a: jnp.sum(jnp.sin(getattr(ops, name)(*a)))  # noqa: E731
    fr = lambda *a: jnp.sum(jnp.sin(getattr(ref, name)(*a)))  # noqa: E731
    idx = tuple(range(len(args)))
    got, want = jax.jit(lambda *a: (jax.grad(f, idx)(*a), jax.grad(fr, idx)(*a)))(*args)
    assert_close(got, want, 1e-12, "zero-size grads")


# ------------------------------------------------------ +inf logits: as optax, op = twin
def _per_row(fn, logits, labels):
    """Loss of each row (a batch of one) and its gradient wrt the logits, by vmap (jitted:
    eagerly every primitive compiles on its own)."""
    one = lambda x, y: fn(x[None], y[None])   # noqa: E731
    return jax.jit(lambda x, y: (jax.vmap(one)(x, y), jax.vmap(jax.grad(one))(x, y)))(
        logits, labels)


def _assert_same(got, want, what):
    for g, w in zip(got, want):   # NaN and +-inf at the same places, finite values close
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15, err_msg=what)


@pytest.mark.parametrize("one_hot", [False, True], ids=["index", "one_hot"])
def test_softmax_cross_entropy_at_plus_inf_logits_equals_optax(one_hot):
    """+inf at another class: loss +inf as optax's integer-label loss (the op gave NaN);
    +inf at the label: NaN. One-hot labels: optax.softmax_cross_entropy's values (NaN at
    +inf). Values and gradients equal the twin's and optax's."""
    optax = pytest.importorskip("optax")
    logits = jnp.array([[np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0], [0.5, np.inf, np.inf],
                        [1.0, 2.0, 3.0], [-np.inf, 2.0, 3.0]])
    y = jnp.array([1, 0, 0, 2, 1])
    if one_hot:
        y = jax.nn.one_hot(y, 3, dtype=logits.dtype)
        theirs = optax.softmax_cross_entropy
    else:
        theirs = optax.softmax_cross_entropy_with_integer_labels
    want = _per_row(lambda x, t: jnp.mean(theirs(x, t)), logits, y)
    got = both = _per_row(ops.softmax_cross_entropy, logits, y)
    if one_hot:   # values only: optax's gradient is NaN over a whole +inf row, funcnet's
        # only at the +inf entry (as optax's integer-label gradient); the last row (-inf at
        # a class of label 0) is 0 * -inf = NaN in optax's one-hot loss, funcnet's
        # 0 log 0 = 0 (test_softmax_cross_entropy_exact_with_masked_logits)
        got, want = got[0][:4], want[0][:4]
    _assert_same(got, want, "op vs optax")
    _assert_same(_per_row(ref.softmax_cross_entropy, logits, y), both, "twin vs op")
    if not one_hot:
        assert np.all(both[0][np.array([0, 2])] == np.inf) and np.isnan(both[0][1])


def test_sigmoid_binary_cross_entropy_at_infinite_logits_equals_optax():
    """x = +inf, t < 1 and x = -inf, t > 0: +inf as optax (the op gave NaN for the
    first); x = +inf, t = 1 and x = -inf, t = 0: NaN as optax. Gradients wrt both
    arguments equal the twin's and optax's."""
    optax = pytest.importorskip("optax")
    x = jnp.array([np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf, 0.5, -30.0, 1e30])
    t = jnp.array([0.0, 0.3, 1.0, 0.0, 0.3, 1.0, 0.2, 0.7, 0.4])

    def elementwise(fn):             # jitted: eagerly every primitive compiles on its own
        one = lambda a, b: fn(a[None], b[None])   # noqa: E731
        return jax.jit(lambda x, t: (jax.vmap(one)(x, t),
                                     jax.vmap(jax.grad(one, (0, 1)))(x, t)))(x, t)

    got = elementwise(ops.sigmoid_binary_cross_entropy)
    _assert_same(got, elementwise(lambda a, b: jnp.mean(optax.sigmoid_binary_cross_entropy(
        a, b))), "op vs optax")
    _assert_same(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(
        elementwise(ref.sigmoid_binary_cross_entropy)), "op vs twin")
    np.testing.assert_array_equal(got[0][:6], [np.inf, np.inf, np.nan, np.nan, np.inf, np.inf])
