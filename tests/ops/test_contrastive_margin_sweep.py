"""ntxent's ``temperature`` and triplet_margin_loss's ``margin`` as traced scalars: a
``jax.vmap`` sweep (or a jitted function's argument) equals the static calls one by one,
values and input gradients, for the op and its twin on each input variant; ``dL/dtau``
and ``dL/dmargin`` equal the twin's ``jax.grad`` and central differences (float64) and
optax's under the same sweep; extreme temperatures and the triplet's kink give the static
values and gradients traced; errors. ``norm_degree`` and ``eps`` stay static."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import normal
from tests.ops._sweeps import assert_sweep_equals_static

jax.config.update("jax_enable_x64", True)

# ------------------------------------------------------------------------------ NT-Xent
E = normal(230, (8, 5))
Y = jnp.array([0, 1, 0, 2, 1, 2, 3, 0])          # label 3: a row without a positive
TAUS = [0.05, 0.2, 1.0]
NTXENT_CASES = [                                  # (id, embeddings, labels, central diffs)
    ("groups", E, Y, True),
    ("pairs_only", normal(231, (6, 3)), jnp.array([0, 0, 1, 1, 2, 2]), True),
    ("many_features", normal(232, (12, 16)), jnp.arange(12) % 4, True),
    ("zero_row", E.at[3].set(0.0), Y, False),     # the norm guard's kink is in the FD step
]
NTXENT_IDS = [c[0] for c in NTXENT_CASES]


@pytest.mark.parametrize("op", [ops.ntxent, R.ntxent], ids=["op", "twin"])
@pytest.mark.parametrize("case_id, e, y, fd", NTXENT_CASES, ids=NTXENT_IDS)
def test_ntxent_temperature_sweep_equals_the_static_calls(op, case_id, e, y, fd):
    assert_sweep_equals_static(lambda x, t: op(x, y, t), e, TAUS, case_id)


@pytest.mark.parametrize("case_id, e, y, fd", NTXENT_CASES, ids=NTXENT_IDS)
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_ntxent_temperature_gradient_equals_the_twin_and_central_differences(
        case_id, e, y, fd, tau):
    out = check_vjp(lambda x, t: ops.ntxent(x, y, t), lambda x, t: R.ntxent(x, y, t),
                    (e, jnp.asarray(tau)), seed=5, fd_rtol=1e-6 if fd else None)
    assert float(out["grads"][1]) != 0.0
    if not fd:      # the temperature alone: no kink in its direction
        h = 1e-6
        want = (R.ntxent(e, y, tau + h) - R.ntxent(e, y, tau - h)) / (2 * h)
        dtau = jax.grad(lambda t: ops.ntxent(e, y, t))(jnp.asarray(tau))
        np.testing.assert_allclose(float(dtau), float(want), rtol=1e-6)


@pytest.mark.parametrize("tau", [1e-3, 1e4])
def test_ntxent_extreme_temperatures_traced_equal_the_static_calls(tau):
    """No edge value is allowed (``tau > 0``): a very cold and a very warm ``tau`` traced
    give the static value and gradient, a finite ``dL/dtau`` equal to the twin's."""
    for op in (ops.ntxent, R.ntxent):
        v, (ge, gt) = jax.jit(jax.value_and_grad(lambda x, t: op(x, Y, t), (0, 1)))(
            E, jnp.asarray(tau))
        sv, sg = jax.value_and_grad(lambda x: op(x, Y, tau))(E)
        assert_close((v, ge), (sv, sg), 1e-12, f"tau={tau}")
        assert np.isfinite(float(gt))
    dtau = jax.grad(lambda t: ops.ntxent(E, Y, t))(jnp.asarray(tau))
    assert_close(dtau, jax.grad(lambda t: R.ntxent(E, Y, t))(jnp.asarray(tau)), 1e-10, "dtau")


def test_ntxent_without_negatives_is_zero_for_every_temperature():
    """One label for every row: each row's only rival is its positive, the loss is 0
    (``softplus(-inf)``) with zero gradients, ``dL/dtau`` included, and no NaN."""
    e, y = normal(233, (4, 3)), jnp.array([5, 5, 5, 5])
    for op in (ops.ntxent, R.ntxent):
        v, (ge, gt) = jax.jit(jax.vmap(jax.value_and_grad(lambda x, t: op(x, y, t), (0, 1)),
                                       (None, 0)))(e, jnp.asarray(TAUS))
        assert np.all(np.asarray(v) == 0.0)
        assert np.all(np.asarray(ge) == 0.0) and np.all(np.asarray(gt) == 0.0)


def test_ntxent_temperature_sweep_equals_optax():
    """``jax.vmap`` of ``optax.ntxent`` (already a mean over the positive pairs) over the
    same temperatures: values, embedding gradients and ``dL/dtau``."""
    taus = jnp.asarray(TAUS)
    for case_id, e, y, _ in NTXENT_CASES:
        grad = jax.value_and_grad(lambda x, t: ops.ntxent(x, y, t), (0, 1))
        ours = jax.jit(jax.vmap(grad, (None, 0)))(e, taus)   # one compile, not per primitive
        with jax.numpy_dtype_promotion("standard"):     # optax mixes bool and int
            theirs = jax.jit(jax.vmap(
                jax.value_and_grad(lambda x, t: optax.ntxent(x, y, t), (0, 1)),
                (None, 0)))(e, taus)
        assert_close(ours[0], theirs[0], 1e-12, f"{case_id} value")
        assert_close(ours[1], theirs[1], 1e-10, f"{case_id} gradients")


# ------------------------------------------------------------------------------ triplet
A, P, N = normal(243, (6, 4)), normal(244, (6, 4)), normal(245, (6, 4))
A3, P3, N3 = normal(246, (3, 5, 2)), normal(247, (3, 5, 2)), normal(248, (3, 5, 2))
MARGINS = [-0.5, 0.3, 2.0]
TRIPLET_CASES = [                     # (id, (a, p, n), static keywords, optax's keywords)
    ("p2", (A, P, N), {}, {}),
    ("p1", (A, P, N), dict(norm_degree=1.0), None),          # optax: no abs, not a norm
    ("p3", (A, P, N), dict(norm_degree=3.0), None),
    ("p4_eps0", (A, P, N), dict(norm_degree=4.0, eps=0.0), dict(norm_degree=4, eps=0.0)),
    ("axis1", (A3, P3, N3), dict(axis=1), dict(axis=1)),
]
TRIPLET_IDS = [c[0] for c in TRIPLET_CASES]


def _active_fraction(args, kw, m):
    """``#{i : z_i > 0} / n`` from the twin's distances (the expected ``dL/dmargin``)."""
    a, p, n = (jnp.moveaxis(x, kw.get("axis", -1), -1) for x in args)
    deg, eps = kw.get("norm_degree", 2.0), kw.get("eps", 1e-6)

    def dist(x, y):
        return jnp.sum(jnp.abs(x - y) ** deg, axis=-1) + eps
    z = dist(a, p) ** (1 / deg) - dist(a, n) ** (1 / deg) + m
    return float(jnp.mean((z > 0).astype(jnp.float64)))


@pytest.mark.parametrize("op", [ops.triplet_margin_loss, R.triplet_margin_loss],
                         ids=["op", "twin"])
@pytest.mark.parametrize("case_id, args, kw, optax_kw", TRIPLET_CASES, ids=TRIPLET_IDS)
def test_triplet_margin_sweep_equals_the_static_calls(op, case_id, args, kw, optax_kw):
    def loss(x, m):     # the three inputs stacked: the helper takes one array
        return op(x[0], x[1], x[2], margin=m, **kw)

    assert_sweep_equals_static(loss, jnp.stack(args), MARGINS, case_id)


@pytest.mark.parametrize("case_id, args, kw, optax_kw", TRIPLET_CASES, ids=TRIPLET_IDS)
@pytest.mark.parametrize("margin", MARGINS)
def test_triplet_margin_gradient_equals_the_twin_and_central_differences(
        case_id, args, kw, optax_kw, margin):
    """``dL/dmargin`` is the fraction of rows with ``z > 0``."""
    out = check_vjp(lambda a, p, n, m: ops.triplet_margin_loss(a, p, n, margin=m, **kw),
                    lambda a, p, n, m: R.triplet_margin_loss(a, p, n, margin=m, **kw),
                    (*args, jnp.asarray(margin)), seed=6)
    dm = jax.grad(lambda m: ops.triplet_margin_loss(*args, margin=m, **kw))(
        jnp.asarray(margin))
    assert float(dm) == pytest.approx(_active_fraction(args, kw, margin), rel=1e-14)
    assert out["grads"][3].shape == ()


def test_triplet_kink_and_far_margins_traced_equal_the_static_calls():
    """The margin has no interval, its edges are the kink ``z = 0`` (subgradient 0 for the
    inputs and the margin, as the static call) and margins so far out that every row is
    inactive (``L = 0``, no gradient) or active (``dL/dmargin = 1``)."""
    a = jnp.zeros((2, 2))
    p, n = jnp.array([[3.0, 0.0], [1.0, 0.0]]), jnp.array([[0.0, 2.0], [0.0, 3.0]])
    # rows: d_pos - d_neg = 1 and -2; margin -1 puts row 0 on its kink, row 1 inactive
    for margin, value, dm in ((-1.0, 0.0, 0.0), (-1e3, 0.0, 0.0), (1e3, 1e3 - 0.5, 1.0),
                              (2.5, (2.5 + 1.0 + 0.5) / 2, 1.0), (1.5, 2.5 / 2, 0.5)):
        for op in (ops.triplet_margin_loss, R.triplet_margin_loss):
            def loss(xs, m, op=op):
                return op(*xs, margin=m, eps=0.0)
            v, (gx, gm) = jax.jit(jax.value_and_grad(loss, (0, 1)))((a, p, n),
                                                                    jnp.asarray(margin))
            sv, sgx = jax.value_and_grad(loss)((a, p, n), margin)
            assert_close((v, gx), (sv, sgx), 1e-15, f"margin={margin}")
            assert float(v) == pytest.approx(value, rel=1e-15)
            assert float(gm) == dm, (margin, float(gm))
    g = jax.grad(lambda xs: ops.triplet_margin_loss(*xs, margin=jnp.asarray(-1.0), eps=0.0))(
        (a, p, n))
    assert all(np.all(np.asarray(x) == 0) for x in g)        # the kink and an inactive row


@pytest.mark.parametrize("case_id, args, kw, optax_kw",
                         [c for c in TRIPLET_CASES if c[3] is not None],
                         ids=[c[0] for c in TRIPLET_CASES if c[3] is not None])
def test_triplet_margin_sweep_equals_optax_mean(case_id, args, kw, optax_kw):
    """``jax.vmap`` of ``optax.losses.triplet_margin_loss(...).mean()`` (funcnet averages
    over the rows) over the same margins: values, input gradients and ``dL/dmargin``."""
    ms = jnp.asarray(MARGINS)
    ours = jax.vmap(jax.value_and_grad(
        lambda xs, m: ops.triplet_margin_loss(*xs, margin=m, **kw), (0, 1)), (None, 0))(
        args, ms)
    with jax.numpy_dtype_promotion("standard"):
        theirs = jax.vmap(jax.value_and_grad(
            lambda xs, m: jnp.mean(optax.losses.triplet_margin_loss(*xs, margin=m,
                                                                    **optax_kw)),
            (0, 1)), (None, 0))(args, ms)
    assert not np.allclose(ours[0][0], ours[0][-1])
    assert_close(ours[0], theirs[0], 1e-12, f"{case_id} value")
    assert_close(ours[1], theirs[1], 1e-10, f"{case_id} gradients")


def test_triplet_margin_keeps_the_inputs_dtype_and_norm_degree_eps_stay_static():
    """A float32 or integer margin array gives the float64 loss of the float64 inputs;
    ``norm_degree`` and ``eps`` choose the program and refuse a tracer."""
    for m in (jnp.asarray(0.5, jnp.float32), jnp.asarray(1, jnp.int32)):
        v = jax.jit(lambda m: ops.triplet_margin_loss(A, P, N, margin=m))(m)
        assert v.dtype == jnp.float64
        assert float(v) == pytest.approx(float(ops.triplet_margin_loss(A, P, N,
                                                                       margin=float(m))))
    with pytest.raises(TypeError, match="triplet_margin_loss: norm_degree must be a Python "
                                        "float"):
        jax.jit(lambda d: ops.triplet_margin_loss(A, P, N, norm_degree=d))(2.0)
    with pytest.raises(TypeError, match="triplet_margin_loss: eps must be a Python float"):
        jax.jit(lambda d: ops.triplet_margin_loss(A, P, N, eps=d))(1e-6)


# ------------------------------------------------------------------------------- errors
def _ntxent(value):
    return lambda: ops.ntxent(E, Y, value)


def _triplet(value):
    return lambda: ops.triplet_margin_loss(A, P, N, margin=value)


ERRORS = [   # (id, call of the value, value, exception, message, checked under jit too)
    ("ntxent_vector", _ntxent, jnp.full(2, 0.1), ValueError,
     r"ntxent: temperature must be a scalar, got shape \(2,\)", True),
    ("ntxent_bool", _ntxent, jnp.asarray(True), TypeError,
     "ntxent: temperature must have a real numeric dtype, got bool", True),
    ("ntxent_zero", _ntxent, jnp.asarray(0.0), ValueError,
     r"ntxent: temperature must be in \(0, inf\), got 0", False),
    ("ntxent_negative", _ntxent, np.float64(-0.5), ValueError,
     r"ntxent: temperature must be in \(0, inf\), got -0.5", False),
    ("ntxent_nan", _ntxent, jnp.asarray(jnp.nan), ValueError,
     "ntxent: temperature must be finite", False),
    ("triplet_vector", _triplet, jnp.ones(2), ValueError,
     r"triplet_margin_loss: margin must be a scalar, got shape \(2,\)", True),
    ("triplet_bool", _triplet, jnp.asarray(False), TypeError,
     "triplet_margin_loss: margin must have a real numeric dtype, got bool", True),
    ("triplet_inf", _triplet, jnp.asarray(jnp.inf), ValueError,
     "triplet_margin_loss: margin must be finite", False),
]


@pytest.mark.parametrize("case_id, call, value, exc, match, traced", ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_hyperparameter_errors(case_id, call, value, exc, match, traced):
    """Shape and dtype are checked on tracers too; a concrete array's value gets the
    Python number's message (the same check), in the op and its twin."""
    with pytest.raises(exc, match=match):
        call(value)()
    with ops.reference_mode(), pytest.raises(exc, match=match):
        call(value)()
    if traced:
        with pytest.raises(exc, match=match):
            jax.jit(lambda v: call(v)())(value)
    else:   # the same message as the Python number
        with pytest.raises(exc, match=match):
            call(float(value))()
