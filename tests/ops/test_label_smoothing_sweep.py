"""softmax_cross_entropy's ``label_smoothing`` and smooth_labels' ``alpha`` as traced
scalars: a ``jax.vmap`` sweep over smoothing values (or a jitted function's argument)
equals the static calls one by one, values and gradients, for index and probability
labels, row masks and class axes; ``d/da`` equals the twin's and central differences
(float64), and optax's ``smooth_labels`` under the same sweep; a masked class's ``-inf``
logit counts only for ``a > 0``; a sweep through ``train.train_step``; errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import nn, ops, optim, train
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import rand
from tests.ops._sweeps import assert_sweep_equals_static

jax.config.update("jax_enable_x64", True)

X = jnp.asarray(rand((6, 5), 0))
Y = jnp.asarray(np.random.default_rng(1).integers(0, 5, 6))
KEEP = np.array([True, True, False, True, True, False])
A = jnp.asarray([0.0, 0.05, 0.3])
CASES = [
    ("index", Y, {}),
    ("probs", jax.nn.one_hot(Y, 5, dtype=jnp.float64), {}),
    ("index_rows", Y, {"where": KEEP}),
    ("probs_rows", jax.nn.one_hot(Y, 5, dtype=jnp.float64), {"where": KEEP}),
    ("classes_first", Y, {"axis": 0, "_x": X.T}),
]


def _split(kw):
    kw = dict(kw)
    return kw.pop("_x", X), kw


@pytest.mark.parametrize("op", [ops.softmax_cross_entropy, R.softmax_cross_entropy],
                         ids=["op", "twin"])
@pytest.mark.parametrize("case_id, labels, kw", CASES, ids=[c[0] for c in CASES])
def test_a_vmap_sweep_equals_the_static_calls(op, case_id, labels, kw):
    x, kw = _split(kw)

    def loss(xx, a):
        return op(xx, labels, label_smoothing=a, **kw)

    assert_sweep_equals_static(loss, x, A, case_id)


@pytest.mark.parametrize("case_id, labels, kw", CASES, ids=[c[0] for c in CASES])
def test_gradient_in_the_smoothing_equals_the_twin_and_central_differences(case_id, labels,
                                                                             kw):
    """The loss is linear in ``a``: ``dL/da = L(1) - L(0)``, checked with every input."""
    x, kw = _split(kw)
    check_vjp(lambda xx, a: ops.softmax_cross_entropy(xx, labels, label_smoothing=a, **kw),
              lambda xx, a: R.softmax_cross_entropy(xx, labels, label_smoothing=a, **kw),
              (x, jnp.asarray(0.2)), seed=3)
    da = jax.grad(lambda a: ops.softmax_cross_entropy(x, labels, label_smoothing=a, **kw))
    with jax.numpy_dtype_promotion("standard"):
        ends = [R.softmax_cross_entropy(x, labels, label_smoothing=b, **kw)
                for b in (0.0, 1.0 - 1e-15)]
    np.testing.assert_allclose(da(0.2), ends[1] - ends[0], rtol=1e-10)


def test_a_masked_class_counts_only_for_positive_smoothing():
    """A ``-inf`` logit: at a traced ``a = 0`` the unsmoothed loss and gradient (not
    ``0 * inf``), for ``a > 0`` an infinite loss, as the static calls."""
    xm = X.at[0, (int(Y[0]) + 1) % 5].set(-jnp.inf)       # not the row's label
    for op in (ops.softmax_cross_entropy, R.softmax_cross_entropy):
        values = jax.vmap(lambda a: op(xm, Y, label_smoothing=a))(A)
        assert np.isfinite(values[0])
        assert float(values[0]) == pytest.approx(float(op(xm, Y)), rel=1e-14)
        assert np.all(np.isinf(values[1:]))
        grad = jax.jit(jax.grad(lambda x, a: op(x, Y, label_smoothing=a)))(xm, 0.0)
        assert_close(grad, jax.grad(lambda x: op(x, Y))(xm), 1e-14, "grad at a = 0")


def test_a_sweep_of_training_steps_in_one_vmap():
    """The research habit: one program trains a model per smoothing value."""
    model = nn.serial(nn.Dense(16), nn.ReLU(), nn.Dense(5))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 5))
    opt = optim.adam(1e-2)

    def run(a):
        loss = functools.partial(ops.softmax_cross_entropy, label_smoothing=a)
        step = train.train_step(model, opt, loss)
        return step(params, state, opt.init(params), X, Y)

    swept = jax.vmap(run)(A)
    for i, a in enumerate(A):
        one = run(float(a))
        assert_close(jax.tree_util.tree_map(lambda v, i=i: v[i], swept), one, 1e-12, str(a))


@pytest.mark.parametrize("a, kw, exc, match", [
    (jnp.zeros(2), {}, ValueError,
     r"softmax_cross_entropy: label_smoothing must be a scalar, got shape \(2,\)"),
    (jnp.asarray(0.1), {"where": np.ones((6, 5), bool)}, ValueError,
     r"softmax_cross_entropy: label_smoothing .* with a mask of classes"),
    (jnp.asarray(True), {}, TypeError,
     r"softmax_cross_entropy: label_smoothing must have a real numeric dtype, got bool"),
], ids=["vector", "class_mask", "bool"])
def test_a_traced_smoothing_is_checked(a, kw, exc, match):
    with pytest.raises(exc, match=match):
        jax.jit(lambda s: ops.softmax_cross_entropy(X, Y, label_smoothing=s, **kw))(a)


@pytest.mark.parametrize("kw", [{}, {"axis": 0}, {"where": np.arange(30).reshape(6, 5) % 4 > 0}],
                         ids=["last", "axis0", "where"])
def test_smooth_labels_takes_a_traced_alpha(kw):
    t = jax.nn.softmax(X)
    ct = jnp.asarray(rand((6, 5), 7))
    got = jax.vmap(lambda a: (ops.smooth_labels(t, a, **kw),
                              jax.vjp(lambda u: ops.smooth_labels(u, a, **kw), t)[1](ct)))(A)
    for i, a in enumerate(A):
        value, vjp = jax.vjp(lambda u, a=a: ops.smooth_labels(u, float(a), **kw), t)
        assert_close((got[0][i], got[1][0][i]), (value, vjp(ct)[0]), 1e-15, str(a))
    with jax.numpy_dtype_promotion("standard"):
        want = jax.vmap(lambda a: optax.smooth_labels(t, a, **kw))(A)
    assert_close(got[0], want, 1e-14, "optax")
    check_vjp(lambda u, a: ops.smooth_labels(u, a, **kw),
              lambda u, a: R.smooth_labels(u, a, **kw), (t, jnp.asarray(0.3)), seed=4)
