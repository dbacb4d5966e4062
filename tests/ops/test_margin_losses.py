"""The margin losses of optax: hinge_loss, perceptron_loss, multiclass_hinge_loss,
multiclass_perceptron_loss and triplet_margin_loss (optax's names and arguments).

Each op is the mean of optax's values: checked against its twin and central differences
(float64, the suite's conftest), against optax (value and gradient), at its kink, for what
the triplet's backward keeps, and for its errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import residual_bytes
from funcnet.ops import reference as ref
from tests.ops._cases import assert_raises_everywhere, normal, uniform

S = normal(140, (4, 6), 1.5)
Y = jnp.where(normal(141, (4, 6)) > 0, 1.0, -1.0)          # targets in {-1, +1}
SOFT_Y = uniform(142, (4, 6), -1.0, 1.0)                    # any real target
A, P, N = normal(143, (5, 4)), normal(144, (5, 4)), normal(145, (5, 4))
SC, SC_Y = normal(149, (2, 3, 5), 1.5), jnp.array([[0, 4, 2], [1, 1, 3]])   # (..., C)
A3, P3, N3 = normal(146, (3, 5, 2)), normal(147, (3, 5, 2)), normal(148, (3, 5, 2))


def _triplet(fn, **kw):
    return lambda a, p, n: fn(a, p, n, **kw)


# (id, op name, args, keywords)
CASES = [
    ("hinge", "hinge_loss", (S, Y), {}),
    ("hinge_soft_targets", "hinge_loss", (S, SOFT_Y), {}),
    ("perceptron", "perceptron_loss", (S, Y), {}),
    ("multiclass_hinge", "multiclass_hinge_loss", (SC, SC_Y), {}),
    ("multiclass_perceptron", "multiclass_perceptron_loss", (SC, SC_Y), {}),
    ("triplet", "triplet_margin_loss", (A, P, N), {}),
    ("triplet_margin_half", "triplet_margin_loss", (A, P, N), dict(margin=0.5)),
    ("triplet_p1", "triplet_margin_loss", (A, P, N), dict(norm_degree=1.0, margin=0.3)),
    ("triplet_p3", "triplet_margin_loss", (A, P, N), dict(norm_degree=3.0, margin=0.3)),
    ("triplet_p4_eps0", "triplet_margin_loss", (A, P, N), dict(norm_degree=4.0, eps=0.0)),
    ("triplet_axis1", "triplet_margin_loss", (A3, P3, N3), dict(axis=1, margin=2.0)),
]


@pytest.mark.parametrize("case_id, name, args, kw", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(case_id, name, args, kw):
    def bind(fn):
        return lambda *a: fn(*a, **kw)
    check_vjp(bind(getattr(ops, name)), bind(getattr(ref, name)), args, rtol=1e-10,
              fd_rtol=1e-6)


def test_values_and_gradients_equal_optax_mean():
    optax = pytest.importorskip("optax")
    losses = optax.losses
    cases = {   # id: (funcnet, optax-mean, args)
        "hinge": (ops.hinge_loss, losses.hinge_loss, (S, Y)),
        "perceptron": (ops.perceptron_loss, losses.perceptron_loss, (S, Y)),
        "multiclass_hinge": (ops.multiclass_hinge_loss, losses.multiclass_hinge_loss,
                             (SC, SC_Y)),
        "multiclass_perceptron": (ops.multiclass_perceptron_loss,
                                  losses.multiclass_perceptron_loss, (SC, SC_Y)),
        "triplet": (ops.triplet_margin_loss, losses.triplet_margin_loss, (A, P, N)),
        "triplet_p4": (_triplet(ops.triplet_margin_loss, norm_degree=4.0, margin=0.5),
                       _triplet(losses.triplet_margin_loss, norm_degree=4, margin=0.5),
                       (A, P, N)),
        "triplet_axis1": (_triplet(ops.triplet_margin_loss, axis=1, margin=2.0),
                          _triplet(losses.triplet_margin_loss, axis=1, margin=2.0),
                          (A3, P3, N3)),
    }
    with jax.numpy_dtype_promotion("standard"):
        for k, (f, g, args) in cases.items():
            argnums = tuple(i for i, a in enumerate(args)
                            if jnp.issubdtype(a.dtype, jnp.floating))
            v, grads = jax.jit(jax.value_and_grad(f, argnums))(*args)
            wv, wgrads = jax.jit(jax.value_and_grad(lambda *a, g=g: jnp.mean(g(*a)),
                                                    argnums))(*args)
            assert 0 < float(wv)
            assert_close(v, wv, 1e-12, f"{k} value")
            for i, (a, b) in enumerate(zip(grads, wgrads)):
                assert_close(a, b, 1e-10, f"{k} gradient {i}")


def test_kink_subgradient_is_zero_and_odd_degree_is_the_p_norm():
    """At ``y s = 1`` (hinge), ``y s = 0`` (perceptron) and ``z = 0`` (triplet) the
    subgradient is 0; with ``p = 3`` the distance is the 3-norm (optax's (x - y)^3 is not)."""
    s, y = jnp.array([1.0, 2.0, -0.5]), jnp.array([1.0, -1.0, 1.0])
    g = jax.grad(ops.hinge_loss, (0, 1))(s, y)
    np.testing.assert_array_equal(np.asarray(g[0]), [0.0, 1 / 3, -1 / 3])
    g = jax.grad(ops.perceptron_loss)(jnp.array([0.0, 2.0]), jnp.array([1.0, -1.0]))
    np.testing.assert_array_equal(np.asarray(g), [0.0, 0.5])
    a, p, n = jnp.zeros((1, 2)), jnp.array([[3.0, 0.0]]), jnp.array([[0.0, 2.0]])
    gs = jax.grad(ops.triplet_margin_loss, (0, 1, 2))(a, p, n, margin=-1.0, eps=0.0)
    assert all(np.all(np.asarray(x) == 0) for x in gs)       # 3 - 2 - 1 = 0: the kink
    v = ops.triplet_margin_loss(a, -p, n, norm_degree=3.0, margin=0.0, eps=0.0)
    np.testing.assert_allclose(float(v), 3.0 - 2.0, rtol=1e-12)


def test_multiclass_ties_share_the_gradient_as_jnp_max():
    """Two classes at the max share its gradient equally (``jnp.max``'s rule), so the op
    equals its twin at ties; a row whose label wins the perceptron has zero gradient."""
    s = jnp.array([[1.0, 1.0, 0.0], [2.0, 0.5, 0.0], [0.0, 1.0, 2.0]])
    y = jnp.array([0, 0, 1])
    for name in ("multiclass_hinge_loss", "multiclass_perceptron_loss"):
        g, twin = (jax.grad(getattr(m, name))(s, y) for m in (ops, ref))
        assert_close(g, twin, 1e-15, name)
    g = np.asarray(jax.grad(ops.multiclass_perceptron_loss)(s, y))
    np.testing.assert_array_equal(g, [[-1 / 6, 1 / 6, 0], [0, 0, 0], [0, -1 / 3, 1 / 3]])
    with pytest.raises(ValueError, match=r"multiclass_hinge_loss: labels .* \[0, 3\)"):
        ops.multiclass_hinge_loss(s, jnp.array([0, 3, 1]))     # eagerly: out of range


def test_triplet_backward_keeps_only_its_inputs():
    """The inputs and the margin (a scalar: a constant for a Python float, an argument
    when traced, tests/ops/test_contrastive_margin_sweep.py)."""
    assert residual_bytes(ops.triplet_margin_loss, A, P, N, include_arguments=False) == 8
    assert residual_bytes(lambda a, p, n, m: ops.triplet_margin_loss(a, p, n, margin=m),
                          A, P, N, jnp.asarray(0.5, A.dtype), include_arguments=False) == 0
    assert residual_bytes(ref.triplet_margin_loss, A, P, N, include_arguments=False) > 0


ERRORS = [
    ("hinge_shapes", ops.hinge_loss, (np.zeros((2, 3)), np.zeros(3)), {}, ValueError,
     r"hinge_loss: predictor_outputs has shape \(2, 3\) but targets has shape \(3,\)"),
    ("hinge_int", ops.hinge_loss, (np.zeros(3, np.int32), np.zeros(3)), {}, TypeError,
     "hinge_loss: predictor_outputs must have a floating dtype"),
    ("perceptron_empty", ops.perceptron_loss, (np.zeros(0), np.zeros(0)), {}, ValueError,
     "perceptron_loss: predictor_outputs has shape"),
    ("multiclass_float_labels", ops.multiclass_hinge_loss, (np.zeros((2, 3)), np.zeros(2)),
     {}, TypeError, "multiclass_hinge_loss: labels must be integer class indices"),
    ("multiclass_labels_shape", ops.multiclass_perceptron_loss,
     (np.zeros((2, 3)), np.zeros(3, np.int32)), {}, ValueError,
     r"multiclass_perceptron_loss: integer labels have shape \(3,\), expected \(2,\)"),
    ("triplet_shapes", ops.triplet_margin_loss,
     (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4))), {}, ValueError,
     r"triplet_margin_loss: anchors has shape \(2, 3\) but negatives has shape \(2, 4\)"),
    ("triplet_degree", ops.triplet_margin_loss, (A, P, N), dict(norm_degree=0.5), ValueError,
     r"triplet_margin_loss: norm_degree must be in \[1, inf\), got 0.5"),
    ("triplet_eps", ops.triplet_margin_loss, (A, P, N), dict(eps=-1e-3), ValueError,
     r"triplet_margin_loss: eps must be in \[0, inf\)"),
    ("triplet_margin_nan", ops.triplet_margin_loss, (A, P, N), dict(margin=float("nan")),
     ValueError, "triplet_margin_loss: margin must be finite"),
    ("triplet_axis", ops.triplet_margin_loss, (A, P, N), dict(axis=2), ValueError,
     "triplet_margin_loss: axis 2 is out of range"),
    ("triplet_rank0", ops.triplet_margin_loss, (np.zeros(()), np.zeros(()), np.zeros(())),
     {}, ValueError, "triplet_margin_loss: anchors has shape"),
]


@pytest.mark.parametrize("case_id, fn, args, kw, exc, match", ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_errors(case_id, fn, args, kw, exc, match):
    assert_raises_everywhere(lambda *a: fn(*a, **kw), args, exc, match)
