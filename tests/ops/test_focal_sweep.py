"""sigmoid_focal_loss's ``alpha`` and ``gamma`` as traced scalars: a ``jax.vmap`` sweep (or
a jitted function's argument) equals the static calls one by one, values and gradients of
the logits and labels, for soft and hard labels, with and without ``alpha``; ``dL/dalpha =
mean((2t - 1) ce w)`` and ``dL/dgamma = mean(a_t ce w log u)`` equal the twin's and central
differences (float64) and optax's autodiff under the same sweep; the edge values ``gamma =
0, 0.5, 1, 2`` and ``alpha = 0, 1`` traced give the static calls' values and gradients, at
infinite logits too; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import normal, uniform
from tests.ops._sweeps import assert_sweep_equals_static

jax.config.update("jax_enable_x64", True)

X = normal(0, (4, 3), 3.0)
SOFT = uniform(1, (4, 3), 0.05, 0.95)
HARD = (uniform(2, (4, 3), 0.0, 1.0) > 0.5).astype(jnp.float64)
MIXED = jnp.concatenate([SOFT[:2], HARD[2:]])         # rows 0-1 soft, 2-3 hard
LABELS = [("soft", SOFT), ("hard", HARD), ("mixed", MIXED)]
GAMMAS = jnp.asarray([0.0, 0.5, 2.0])
ALPHAS = jnp.asarray([0.0, 0.25, 1.0])
OPS = [ops.sigmoid_focal_loss, R.sigmoid_focal_loss]
inf = np.inf
# every infinite-logit case (u = 0 at (+inf, 1) and (-inf, 0)), large finite logits where
# w underflows to 0 (log u = -1e3 finite), and ordinary elements
X_EDGE = jnp.asarray([inf, inf, inf, -inf, -inf, -inf, 1e3, -1e3, 1e3, 0.3, -2.0, 4.0])
T_EDGE = jnp.asarray([0.0, 1.0, 0.5, 0.0, 1.0, 0.3, 1.0, 0.0, 0.0, 0.7, 0.0, 1.0])


@pytest.mark.parametrize("op", OPS, ids=["op", "twin"])
@pytest.mark.parametrize("alpha", [None, 0.25], ids=["no_alpha", "alpha"])
@pytest.mark.parametrize("case_id, t", LABELS, ids=[c[0] for c in LABELS])
def test_a_gamma_sweep_equals_the_static_calls(op, alpha, case_id, t):
    """``xt`` stacks the logits and the labels: both gradients are compared."""
    def loss(xt, g):
        return op(xt[0], xt[1], alpha, g)

    assert_sweep_equals_static(loss, jnp.stack([X, t]), GAMMAS, f"{case_id} alpha={alpha}")


@pytest.mark.parametrize("op", OPS, ids=["op", "twin"])
@pytest.mark.parametrize("gamma", [0.0, 2.0], ids=["gamma0", "gamma2"])
@pytest.mark.parametrize("case_id, t", LABELS, ids=[c[0] for c in LABELS])
def test_an_alpha_sweep_equals_the_static_calls(op, gamma, case_id, t):
    def loss(xt, a):
        return op(xt[0], xt[1], a, gamma)

    assert_sweep_equals_static(loss, jnp.stack([X, t]), ALPHAS, f"{case_id} gamma={gamma}")


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.7, 0.5), (0.4, 1.0), (0.3, 3.5)])
@pytest.mark.parametrize("case_id, t", LABELS, ids=[c[0] for c in LABELS])
def test_gradients_in_alpha_and_gamma_equal_the_twin_and_central_differences(
        case_id, t, alpha, gamma):
    """Every argument, hard labels included: the twin writes ``log u`` so that autodiff
    keeps the derivative in ``t`` of a term whose weight is 0 (``logsumexp(..., b=)``
    dropped it, which made the twin's ``dL/dt`` wrong at ``t`` in ``{0, 1}``)."""
    args = (X, t, jnp.asarray(alpha), jnp.asarray(gamma))
    check_vjp(ops.sigmoid_focal_loss, R.sigmoid_focal_loss, args, seed=5)
    check_vjp(lambda x, tt, g: ops.sigmoid_focal_loss(x, tt, None, g),
              lambda x, tt, g: R.sigmoid_focal_loss(x, tt, None, g),
              (X, t, jnp.asarray(gamma)), seed=6)


@pytest.mark.parametrize("case_id, t", LABELS, ids=[c[0] for c in LABELS])
def test_gradients_in_alpha_and_gamma_by_formula(case_id, t):
    """``dL/dalpha = mean((2t - 1) ce w)``, ``dL/dgamma = mean(a_t ce w log u)``, also at the
    interval's ends (``gamma = 0``: ``mean(a_t ce log u)``, not 0; ``alpha = 0, 1``)."""
    ce = optax.sigmoid_binary_cross_entropy(X, t)
    log_u = jnp.log((1 - t) * jax.nn.sigmoid(X) + t * jax.nn.sigmoid(-X))
    grad = jax.jit(jax.grad(ops.sigmoid_focal_loss, (2, 3)))
    for alpha in (0.0, 0.3, 1.0):
        for gamma in (0.0, 0.5, 1.0, 2.0):
            w = jnp.exp(gamma * log_u)
            a_t = alpha * t + (1 - alpha) * (1 - t)
            want = (jnp.mean((2 * t - 1) * ce * w), jnp.mean(a_t * ce * w * log_u))
            got = grad(X, t, jnp.asarray(alpha), jnp.asarray(gamma))
            assert_close(got, want, 1e-12, f"{case_id} alpha={alpha} gamma={gamma}")
            assert_close(got, jax.grad(R.sigmoid_focal_loss, (2, 3))(
                X, t, jnp.asarray(alpha), jnp.asarray(gamma)), 1e-12, "twin")


def _all_grads(op, x, t, a, g):
    """Value and gradients in every argument (``alpha=None`` fixed)."""
    if a is None:
        return jax.value_and_grad(lambda x, t, g: op(x, t, None, g), (0, 1, 2))(x, t, g)
    return jax.value_and_grad(op, (0, 1, 2, 3))(x, t, a, g)


def _assert_same(got, want, what):
    """Equal values, NaN and inf in the same places (``assert_close`` refuses NaN)."""
    for i, (a, b) in enumerate(zip(jax.tree_util.tree_leaves(got),
                                   jax.tree_util.tree_leaves(want))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=0,
                                   equal_nan=True, err_msg=f"{what}[{i}]")


@pytest.mark.parametrize("op", OPS, ids=["op", "twin"])
@pytest.mark.parametrize("alpha", [None, 0.0, 0.25, 1.0])
def test_edge_gammas_traced_equal_the_static_calls_at_infinite_logits(op, alpha):
    """``gamma = 0, 0.5, 1, 2`` (``0^(gamma - 1)`` is inf, inf, 1, 0 at ``u = 0``) and the
    ends of ``alpha``, traced (a ``vmap`` sweep and a ``jit`` argument), give the static
    calls' values and input gradients, NaN and inf included; no NaN in the finite
    elements' gradients (``gamma = 0``: the focal terms are 0, not ``0 * inf``)."""
    gammas = jnp.asarray([0.0, 0.5, 1.0, 2.0])
    a = None if alpha is None else jnp.asarray(alpha)
    swept = jax.vmap(lambda g: _all_grads(op, X_EDGE, T_EDGE, a, g))(gammas)
    jitted = jax.jit(lambda g: _all_grads(op, X_EDGE, T_EDGE, a, g))
    for i, g in enumerate(np.asarray(gammas)):
        static = jax.value_and_grad(op, (0, 1))(X_EDGE, T_EDGE, alpha, float(g))
        sweep_i = jax.tree_util.tree_map(lambda v, i=i: v[i], swept)
        for what, got in (("vmap", sweep_i), ("jit", jitted(jnp.asarray(g)))):
            _assert_same((got[0], got[1][0], got[1][1]), static, f"{what} gamma={g}")
        if op is ops.sigmoid_focal_loss and g == 0.0:
            # the static rule's gradients: finite logits-gradient everywhere at gamma = 0
            assert np.all(np.isfinite(np.asarray(static[1][0]))), static[1][0]


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.0, 1.0])
def test_edge_values_traced_at_finite_logits_equal_the_static_calls(alpha, gamma):
    """Large finite logits (``w`` underflows to 0 with ``log u = -1e3``: ``w log u = 0``)
    and ordinary ones: values and every gradient, traced, equal the static call, and
    (all but the labels' gradient) the twin's; all finite."""
    x, t = X_EDGE[6:], T_EDGE[6:]
    a = None if alpha is None else jnp.asarray(alpha)
    got = jax.jit(lambda g: _all_grads(ops.sigmoid_focal_loss, x, t, a, g))(jnp.asarray(gamma))
    static = jax.value_and_grad(ops.sigmoid_focal_loss, (0, 1))(x, t, alpha, gamma)
    _assert_same((got[0], got[1][0], got[1][1]), static, "static")
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(got))
    twin = _all_grads(R.sigmoid_focal_loss, x, t, a, jnp.asarray(gamma))
    # hard labels: not the twin's labels-gradient (see the central-difference test above)
    assert_close((got[0], got[1][0], got[1][2:]), (twin[0], twin[1][0], twin[1][2:]), 1e-12,
                 "twin")


@pytest.mark.parametrize("case_id, t", LABELS, ids=[c[0] for c in LABELS])
def test_sweeps_equal_optax(case_id, t):
    """``jax.vmap`` of ``optax.sigmoid_focal_loss(...).mean()`` over ``gamma`` (and over
    ``alpha``): values and the gradients in the logits and the hyperparameter."""
    def ours(x, a, g):
        return ops.sigmoid_focal_loss(x, t, a, g)

    def theirs(x, a, g):
        with jax.numpy_dtype_promotion("standard"):
            return jnp.mean(optax.sigmoid_focal_loss(x, t, alpha=a, gamma=g))

    for f_alpha, f_gamma, values in ((lambda h: 0.25, lambda h: h, GAMMAS),
                                     (lambda h: h, lambda h: 2.0, ALPHAS)):
        got, want = (jax.jit(jax.vmap(jax.value_and_grad(
            lambda x, h, f=f: f(x, f_alpha(h), f_gamma(h)), (0, 1)), (None, 0)))(X, values)
            for f in (ours, theirs))
        assert_close(got, want, 1e-12, case_id)
    got, want = (jax.jit(jax.vmap(jax.value_and_grad(lambda x, g, f=f: f(x, None, g), (0, 1)),
                                  (None, 0)))(X, GAMMAS) for f in (ours, theirs))
    assert_close(got, want, 1e-12, case_id + " alpha=None")


Z = np.zeros((2, 3))


@pytest.mark.parametrize("op", OPS, ids=["op", "twin"])
@pytest.mark.parametrize("kw, exc, match", [
    ({"alpha": jnp.zeros(2)}, ValueError,
     r"sigmoid_focal_loss: alpha must be a scalar, got shape \(2,\)"),
    ({"gamma": jnp.ones(2)}, ValueError,
     r"sigmoid_focal_loss: gamma must be a scalar, got shape \(2,\)"),
    ({"alpha": jnp.asarray(True)}, TypeError,
     "sigmoid_focal_loss: alpha must have a real numeric dtype, got bool"),
    ({"gamma": jnp.asarray(True)}, TypeError,
     "sigmoid_focal_loss: gamma must have a real numeric dtype, got bool"),
], ids=["alpha_vector", "gamma_vector", "alpha_bool", "gamma_bool"])
def test_a_traced_hyperparameter_is_checked(op, kw, exc, match):
    with pytest.raises(exc, match=match):
        jax.jit(lambda v: op(Z, Z, **{k: v for k in kw}))(*kw.values())
    with pytest.raises(exc, match=match):
        op(Z, Z, **kw)


@pytest.mark.parametrize("op", OPS, ids=["op", "twin"])
@pytest.mark.parametrize("kw, match", [
    ({"alpha": 1.5}, r"sigmoid_focal_loss: alpha must be in \[0, 1\], got 1.5"),
    ({"alpha": -0.25}, r"sigmoid_focal_loss: alpha must be in \[0, 1\], got -0.25"),
    ({"gamma": -1.0}, r"sigmoid_focal_loss: gamma must be in \[0, inf\), got -1"),
    ({"gamma": np.inf}, "sigmoid_focal_loss: gamma must be finite, got inf"),
], ids=["alpha_above", "alpha_below", "gamma_negative", "gamma_inf"])
def test_a_concrete_array_out_of_range_raises_as_the_python_number(op, kw, match):
    for value in (kw, {k: jnp.asarray(v) for k, v in kw.items()}):
        with pytest.raises(ValueError, match=match):
            op(Z, Z, **value)


def test_python_floats_still_take_the_same_program():
    """A Python-float call and a concrete array give the same value and gradients (one rule
    for both), and a traced ``gamma`` of 0 gives the cross-entropy's (alpha-weighted)."""
    t = SOFT
    py = jax.value_and_grad(ops.sigmoid_focal_loss, (0, 1))(X, t, 0.25, 0.0)
    arr = jax.value_and_grad(ops.sigmoid_focal_loss, (0, 1))(X, t, jnp.asarray(0.25),
                                                              jnp.asarray(0.0))
    assert_close(arr, py, 1e-15, "array")
    ce = jax.value_and_grad(lambda x, tt: jnp.mean(
        (0.25 * tt + 0.75 * (1 - tt)) * optax.sigmoid_binary_cross_entropy(x, tt)), (0, 1))
    assert_close(py, ce(X, t), 1e-12, "gamma=0 is the weighted cross-entropy")
