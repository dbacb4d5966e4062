"""huber_loss's ``delta`` and poly_loss_cross_entropy's ``epsilon`` as traced scalars: a
``jax.vmap`` sweep (or a jitted function's argument) equals the static calls one by one,
values and input gradients, for the op and its twin; ``dL/ddelta`` and ``dL/deps`` equal
the twin's, central differences (float64) and the hand formulas; the edges of the
intervals; optax's losses under the same sweep; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import channels_first_classes, labels, normal, probs, uniform
from tests.ops._sweeps import assert_sweep_equals_static

jax.config.update("jax_enable_x64", True)

MODULES = pytest.mark.parametrize("m", [ops, R], ids=["op", "twin"])

# ------------------------------------------------------------------------------ Huber
DELTAS = jnp.asarray([0.3, 1.0, 2.5])
P, T = normal(200, (4, 5), 1.5), normal(201, (4, 5))
P3, T3 = normal(202, (2, 3, 2), 2.0), normal(203, (2, 3, 2))
KINKS = P.at[0, :3].set(DELTAS).at[1, :3].set(-DELTAS)   # |x| = delta for each sweep value
HUBER = [("targets", P, T), ("no_targets", P, None), ("rank3", P3, T3),
         ("kinks", KINKS, None)]
HUBER_IDS = [c[0] for c in HUBER]


@MODULES
@pytest.mark.parametrize("case_id, p, t", HUBER, ids=HUBER_IDS)
def test_huber_delta_sweep_equals_the_static_calls(m, case_id, p, t):
    """Values and the gradients in the predictions, and in the targets when given."""
    assert_sweep_equals_static(lambda p, d: m.huber_loss(p, t, d), p, DELTAS, case_id)
    if t is not None:
        assert_sweep_equals_static(lambda t, d: m.huber_loss(p, t, d), t, DELTAS,
                                   case_id + " targets")


@pytest.mark.parametrize("delta", [0.7, 1.0], ids=["between", "at_kinks"])
@pytest.mark.parametrize("case_id, p, t", HUBER, ids=HUBER_IDS)
def test_huber_delta_gradient_equals_the_twin_and_central_differences(case_id, p, t, delta):
    """``dL/ddelta = (1/M) sum_{|x| > delta} (|x| - delta)``, the twin's ``jax.grad`` and
    central differences (also at a traced ``delta`` equal to some ``|x|``)."""
    d = jnp.asarray(delta)
    if t is None:
        check_vjp(lambda p, d: ops.huber_loss(p, delta=d),
                  lambda p, d: R.huber_loss(p, delta=d), (p, d), seed=5)
        x = p
    else:
        check_vjp(ops.huber_loss, R.huber_loss, (p, t, d), seed=5)
        x = p - t
    got = jax.jit(jax.grad(lambda d: ops.huber_loss(p, t, d)))(d)
    want = jnp.mean(jnp.maximum(jnp.abs(x) - d, 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-14)


@MODULES
def test_huber_delta_at_the_edges(m):
    """A tiny and a huge traced ``delta`` (every error outside, inside) equal the static
    calls; a traced 0 (outside the interval, unchecked when traced) gives the limit
    ``delta -> 0+``: loss 0, no input gradient, ``dL/ddelta = mean |x|``, no NaN; a traced
    ``inf`` the limit ``delta -> inf``: :func:`l2_loss`'s value and gradients,
    ``dL/ddelta = 0`` (optax gives NaN)."""
    assert_sweep_equals_static(lambda p, d: m.huber_loss(p, T, d), P,
                               jnp.asarray([1e-300, 1.0, 1e300]), "edges")
    value, (dp, dt, dd) = jax.jit(jax.value_and_grad(m.huber_loss, (0, 1, 2)))(
        P, T, jnp.asarray(0.0))
    assert float(value) == 0.0
    assert_close((dp, dt), (jnp.zeros_like(P), jnp.zeros_like(T)), 1e-15, "input grads")
    np.testing.assert_allclose(dd, jnp.mean(jnp.abs(P - T)), rtol=1e-14)
    value, (dp, dt, dd) = jax.jit(jax.value_and_grad(m.huber_loss, (0, 1, 2)))(
        P, T, jnp.asarray(jnp.inf))
    l2, (dp2, dt2) = jax.value_and_grad(m.l2_loss, (0, 1))(P, T)
    assert_close((value, dp, dt), (l2, dp2, dt2), 1e-15, "delta = inf is the L2 loss")
    assert float(dd) == 0.0


@pytest.mark.parametrize("case_id, p, t", HUBER, ids=HUBER_IDS)
def test_huber_delta_sweep_equals_optax(case_id, p, t):
    """``jax.vmap`` of ``optax.huber_loss(p, t, delta=d).mean()`` (optax returns the
    elementwise losses) and its gradient."""
    def ours(p, d):
        return ops.huber_loss(p, t, d)

    def theirs(p, d):
        with jax.numpy_dtype_promotion("standard"):
            return optax.huber_loss(p, t, delta=d).mean()

    # jitted: one compile per library instead of one dispatch (and compile) per primitive
    got, want = (jax.jit(jax.vmap(jax.value_and_grad(f), (None, 0)))(p, DELTAS)
                 for f in (ours, theirs))
    assert_close(got, want, 1e-14, case_id)
    dd, dd_want = (jax.jit(jax.vmap(jax.grad(f, 1), (None, 0)))(p, DELTAS)
                   for f in (ours, theirs))
    assert_close(dd, dd_want, 1e-13, "d/ddelta")


def test_huber_delta_float32_inputs_keep_their_dtype():
    p32, t32 = P.astype(jnp.float32), T.astype(jnp.float32)
    value, grads = jax.vmap(jax.value_and_grad(ops.huber_loss, (0, 2)), (None, None, 0))(
        p32, t32, DELTAS)
    assert value.dtype == grads[0].dtype == jnp.float32
    assert grads[1].dtype == DELTAS.dtype
    want = jax.vmap(lambda d: ops.huber_loss(P, T, d))(DELTAS)
    np.testing.assert_allclose(value, want, rtol=1e-6)


# ---------------------------------------------------------------------------- PolyLoss
EPSILONS = jnp.asarray([-1.0, 0.0, 2.0])
X, Y, TP, CLASSES, ROWS = channels_first_classes(220)   # classes on axis 1: (N, C, T)
TC = jnp.where(CLASSES, TP, 0.0)
X2, Y2, P2 = normal(224, (6, 4), 3.0), labels(225, (6,), 4), probs(226, (6, 4))
SOFT = uniform(227, (6, 4), 0.0, 1.0)             # label rows that do not sum to 1
POLY = [
    ("index", X2, Y2, {}),
    ("probs", X2, P2, {}),
    ("soft_rows", X2, SOFT, {}),
    ("index_axis1_rows", X, Y, dict(axis=1, where=ROWS)),
    ("index_axis1_classes", X, Y, dict(axis=1, where=CLASSES)),
    ("probs_axis1_classes", X, TC, dict(axis=1, where=CLASSES)),
    ("probs_axes02", X, TP, dict(axis=(0, 2))),
]
POLY_IDS = [c[0] for c in POLY]


def _is_index(t):
    return jnp.issubdtype(t.dtype, jnp.integer)


@MODULES
@pytest.mark.parametrize("case_id, x, t, kw", POLY, ids=POLY_IDS)
def test_poly_epsilon_sweep_equals_the_static_calls(m, case_id, x, t, kw):
    """Values and the gradients in the logits, and in probability labels."""
    assert_sweep_equals_static(
        lambda x, e: m.poly_loss_cross_entropy(x, t, epsilon=e, **kw), x, EPSILONS, case_id)
    if not _is_index(t):
        assert_sweep_equals_static(
            lambda t, e: m.poly_loss_cross_entropy(x, t, epsilon=e, **kw), t, EPSILONS,
            case_id + " labels")


@pytest.mark.parametrize("case_id, x, t, kw", POLY, ids=POLY_IDS)
def test_poly_epsilon_gradient_equals_the_twin_and_central_differences(case_id, x, t, kw):
    """The loss is linear in ``eps``: ``dL/deps = (1/n) sum_ik t_ik (1 - p_ik) = L(1) -
    L(0)``, checked with every input."""
    check_vjp(lambda x, t, e: ops.poly_loss_cross_entropy(x, t, epsilon=e, **kw),
              lambda x, t, e: R.poly_loss_cross_entropy(x, t, epsilon=e, **kw),
              (x, t, jnp.asarray(0.7)), seed=6)
    de = jax.jit(jax.grad(lambda e: ops.poly_loss_cross_entropy(x, t, epsilon=e, **kw)))
    ends = [R.poly_loss_cross_entropy(x, t, epsilon=e, **kw) for e in (0.0, 1.0)]
    np.testing.assert_allclose(de(jnp.asarray(0.7)), ends[1] - ends[0], rtol=1e-12)


@MODULES
@pytest.mark.parametrize("case_id, x, t, kw", POLY, ids=POLY_IDS)
def test_poly_traced_epsilon_zero_is_the_static_call(m, case_id, x, t, kw):
    """A traced ``eps = 0`` (masked classes' ``-inf`` logits included): the static
    call's value and gradients (the cross-entropy's), no NaN, a finite ``dL/deps``."""
    nums = (0,) if _is_index(t) else (0, 1)

    def loss(x, t, e):
        return m.poly_loss_cross_entropy(x, t, epsilon=e, **kw)

    value, grads = jax.jit(jax.value_and_grad(loss, nums + (2,)))(x, t, jnp.asarray(0.0))
    want = jax.value_and_grad(loss, nums)(x, t, 0.0)
    assert_close((value, grads[:-1]), want, 1e-14, case_id)
    assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves((value, grads)))


def _onehot(x, t, kw):
    if not _is_index(t):
        return t
    return jax.nn.one_hot(t, x.shape[kw.get("axis", -1)], axis=kw.get("axis", -1),
                          dtype=x.dtype)


OPTAX_POLY = [c for c in POLY if c[0] in ("index", "probs", "soft_rows", "index_axis1_rows",
                                          "probs_axis1_classes")]


@pytest.mark.parametrize("case_id, x, t, kw", OPTAX_POLY, ids=[c[0] for c in OPTAX_POLY])
def test_poly_epsilon_sweep_equals_optax(case_id, x, t, kw):
    """``jax.vmap`` of ``optax.losses.poly_loss_cross_entropy(x, t, epsilon=e).mean()``
    (one value per row in optax; index labels as their one-hot rows, a row mask as a
    full mask) and its gradients in the logits and in ``eps``."""
    kw_optax = dict(kw)
    if case_id == "index_axis1_rows":
        kw_optax["where"] = np.broadcast_to(ROWS[:, None, :], X.shape)
    onehot = _onehot(x, t, kw)

    def ours(x, e):
        return ops.poly_loss_cross_entropy(x, t, epsilon=e, **kw)

    def theirs(x, e):
        with jax.numpy_dtype_promotion("standard"):
            return optax.losses.poly_loss_cross_entropy(x, onehot, epsilon=e,
                                                        **kw_optax).mean()

    got, want = (jax.jit(jax.vmap(jax.value_and_grad(f, (0, 1)), (None, 0)))(x, EPSILONS)
                 for f in (ours, theirs))
    assert_close(got, want, 1e-12, case_id)


# ----------------------------------------------------------------------------- errors
ERRORS = [
    ("huber_vector", lambda m, h: m.huber_loss(P, T, h), jnp.zeros(2), None, ValueError,
     r"huber_loss: delta must be a scalar, got shape \(2,\)"),
    ("huber_bool", lambda m, h: m.huber_loss(P, T, h), jnp.asarray(True), None, TypeError,
     "huber_loss: delta must have a real numeric dtype, got bool"),
    ("huber_zero", lambda m, h: m.huber_loss(P, T, h), jnp.asarray(0.0), 0.0, ValueError,
     r"huber_loss: delta must be in \(0, inf\), got 0$"),
    ("huber_negative", lambda m, h: m.huber_loss(P, T, h), jnp.asarray(-1.0), -1.0,
     ValueError, r"huber_loss: delta must be in \(0, inf\), got -1$"),
    ("huber_inf", lambda m, h: m.huber_loss(P, T, h), jnp.asarray(jnp.inf), float("inf"),
     ValueError, "huber_loss: delta must be finite, got inf$"),
    ("poly_vector", lambda m, h: m.poly_loss_cross_entropy(X2, Y2, epsilon=h),
     jnp.zeros(2), None, ValueError,
     r"poly_loss_cross_entropy: epsilon must be a scalar, got shape \(2,\)"),
    ("poly_bool", lambda m, h: m.poly_loss_cross_entropy(X2, Y2, epsilon=h),
     jnp.asarray(False), None, TypeError,
     "poly_loss_cross_entropy: epsilon must have a real numeric dtype, got bool"),
    ("poly_nan", lambda m, h: m.poly_loss_cross_entropy(X2, Y2, epsilon=h),
     jnp.asarray(jnp.nan), float("nan"), ValueError,
     "poly_loss_cross_entropy: epsilon must be finite, got nan$"),
]


@MODULES
@pytest.mark.parametrize("case_id, call, value, number, exc, match", ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_a_hyperparameter_array_is_checked(m, case_id, call, value, number, exc, match):
    """Shape and dtype errors eagerly and under ``jit`` (traced); a concrete array out of
    the interval raises the Python number's error (a traced one is not checked)."""
    with pytest.raises(exc, match=match):
        call(m, value)
    if number is None:
        with pytest.raises(exc, match=match):
            jax.jit(lambda h: call(m, h))(value)
    else:
        with pytest.raises(exc, match=match):
            call(m, number)
