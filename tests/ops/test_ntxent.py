"""ntxent (SimCLR's NT-Xent; optax's name, arguments and value).

Checked against its twin and central differences (float64, the suite's conftest),
against ``optax.ntxent`` (value and gradient), for its stability at small temperatures in
float32, under ``vmap``, for what its backward pass keeps, in reference mode, and for its
errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet import train
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import residual_bytes
from funcnet.ops import reference as ref
from tests.ops._cases import assert_raises_everywhere, normal

E = normal(130, (8, 5))
Y = jnp.array([0, 1, 0, 2, 1, 2, 3, 0])          # label 3: a row without a positive
E_ZERO = E.at[3].set(0.0)                        # a zero row: the norm guard

# (id, args, temperature, central differences)
CASES = [
    ("groups", (E, Y), 0.07, True),
    ("warm", (E, Y), 0.5, True),
    ("cold", (E, Y), 0.02, True),
    ("pairs_only", (normal(131, (6, 3)), jnp.array([0, 0, 1, 1, 2, 2])), 0.1, True),
    ("no_negatives", (normal(132, (4, 3)), jnp.array([5, 5, 5, 5])), 0.1, True),
    ("zero_row", (E_ZERO, Y), 0.07, False),      # the guard's kink is inside the FD step
]


@pytest.mark.parametrize("case_id, args, tau, fd", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(case_id, args, tau, fd):
    out = check_vjp(lambda e, y: ops.ntxent(e, y, tau), lambda e, y: ref.ntxent(e, y, tau),
                    args, rtol=1e-10, fd_rtol=1e-6 if fd else None)
    if case_id == "no_negatives":            # every row's only rival is its positive
        assert float(out["value"]) == 0.0
        assert np.all(np.asarray(out["grads"][0]) == 0)


def test_values_and_gradients_equal_optax():
    optax = pytest.importorskip("optax")
    cases = [(E, Y, 0.07), (E, Y, 0.5), (E, Y, 0.02), (E_ZERO, Y, 0.07),
             (normal(133, (16, 32)), jnp.arange(16) % 4, 0.1)]
    for i, (e, y, tau) in enumerate(cases):
        v, g = jax.jit(jax.value_and_grad(lambda e: ops.ntxent(e, y, tau)))(e)
        with jax.numpy_dtype_promotion("standard"):     # optax mixes bool and int
            wv, wg = jax.jit(jax.value_and_grad(lambda e: optax.ntxent(e, y, tau)))(e)
        assert_close(v, wv, 1e-12, f"case {i} value")
        assert_close(g, wg, 1e-10, f"case {i} gradient")


def test_float32_stays_finite_at_small_temperatures():
    """softplus(lse - s) keeps the value and gradient finite and accurate in float32 where
    ``e^{s/tau}`` overflows (tau = 0.005: ``s`` up to 200)."""
    e, y = np.asarray(normal(134, (12, 6))), jnp.arange(12) % 3
    for tau in (0.07, 0.005):
        v, g = jax.jit(jax.value_and_grad(lambda e: ops.ntxent(e, y, tau)))(
            jnp.asarray(e, jnp.float32))
        wv, wg = jax.jit(jax.value_and_grad(lambda e: ref.ntxent(e, y, tau)))(jnp.asarray(e))
        assert v.dtype == jnp.float32 and np.isfinite(float(v))
        np.testing.assert_allclose(float(v), float(wv), rtol=1e-4)
        np.testing.assert_allclose(np.asarray(g), np.asarray(wg), rtol=2e-3,
                                   atol=2e-4 * float(np.abs(wg).max()))


def test_vmap_over_experiments_equals_a_loop():
    es, ys = normal(135, (3, 6, 4)), jnp.array([[0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1],
                                                [3, 3, 3, 4, 4, 4]])
    one = jax.value_and_grad(lambda e, y: ops.ntxent(e, y, 0.2))
    vs, gs = jax.jit(jax.vmap(one))(es, ys)
    single = jax.jit(one)                        # compiled once, called per experiment
    for i in range(3):
        v, g = single(es[i], ys[i])
        assert_close(vs[i], v, 1e-12, f"value {i}")
        assert_close(gs[i], g, 1e-12, f"gradient {i}")


def test_backward_keeps_nothing_n_by_n_and_reference_mode():
    """The residuals are the unit rows, their norms and masks and the labels: O(N D),
    against the twin's N x N similarities and softmax terms."""
    e, y = normal(136, (64, 8)), jnp.arange(64) % 8
    ours = residual_bytes(ops.ntxent, e, y, include_arguments=False)
    twin = residual_bytes(ref.ntxent, e, y, include_arguments=False)
    assert ours < 64 * 64 * 8 <= twin, (ours, twin)
    assert "custom_vjp_call" in str(jax.make_jaxpr(ops.ntxent)(e, y))
    with ops.reference_mode():
        assert "custom_vjp_call" not in str(jax.make_jaxpr(ops.ntxent)(e, y))


def test_no_positive_pair_is_an_error_eagerly_and_nan_under_jit():
    e, y = normal(137, (3, 4)), jnp.array([0, 1, 2])
    with pytest.raises(ValueError, match="ntxent: labels hold no positive pair"):
        ops.ntxent(e, y)
    assert np.isnan(float(jax.jit(ops.ntxent)(e, y)))


ERRORS = [
    ("rank", (np.zeros((2, 3, 4)), np.zeros(2, np.int32)), {}, ValueError,
     r"ntxent: embeddings has shape \(2, 3, 4\) \(rank 3\), expected rank 2"),
    ("empty", (np.zeros((2, 0)), np.zeros(2, np.int32)), {}, ValueError,
     r"ntxent: embeddings has shape \(2, 0\), expected at least one row and one feature"),
    ("int_embeddings", (np.zeros((2, 3), np.int32), np.zeros(2, np.int32)), {}, TypeError,
     "ntxent: embeddings must have a floating dtype"),
    ("float_labels", (np.zeros((2, 3)), np.zeros(2)), {}, TypeError,
     "ntxent: labels must have an integer dtype"),
    ("labels_shape", (np.zeros((2, 3)), np.zeros(3, np.int32)), {}, ValueError,
     r"ntxent: labels has shape \(3,\), expected \(2,\)"),
    ("temperature_0", (np.ones((2, 3)), np.zeros(2, np.int32)), dict(temperature=0.0),
     ValueError, r"ntxent: temperature must be in \(0, inf\), got 0"),
    ("temperature_nan", (np.ones((2, 3)), np.zeros(2, np.int32)),
     dict(temperature=float("nan")), ValueError, "ntxent: temperature must be finite"),
    ("temperature_str", (np.ones((2, 3)), np.zeros(2, np.int32)), dict(temperature="0.1"),
     TypeError, "ntxent: temperature must be a number or a scalar array, got str"),
]


@pytest.mark.parametrize("case_id, args, kw, exc, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(case_id, args, kw, exc, match):
    assert_raises_everywhere(lambda e, y: ops.ntxent(e, y, **kw), args, exc, match)


def test_default_metrics_report_no_accuracy():
    """Its labels group rows; an argmax of the embeddings against them means nothing."""
    e, y = normal(138, (6, 6)), jnp.array([0, 0, 1, 1, 2, 2])
    assert train.default_metrics(ops.ntxent)(e, y) == {}
    assert train.default_metrics(ref.ntxent)(e, y) == {}
    assert set(train.default_metrics(ops.multiclass_hinge_loss)(e, y)) == {"accuracy"}


def test_fit_trains_with_group_labels_and_evaluate_refuses_it():
    """In ``fit`` the labels are group ids (not checked against the embedding size);
    ``evaluate`` (per-example losses) refuses a loss over pairs with a clear error."""
    from funcnet import nn, optim
    model = nn.serial(nn.Dense(8), nn.ReLU(), nn.Dense(3))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 5))
    x = np.asarray(normal(139, (32, 5)), np.float32)
    y = (np.arange(32) // 4).astype(np.int32)           # 8 groups: ids up to 7 > 3 outputs
    params, state, _, history = train.fit(model, params, state, optim.adam(1e-2), (x, y), 3,
                                          batch_size=32, key=0, loss_fn=ops.ntxent, progress=False)
    assert history["loss"][-1] < history["loss"][0] and "accuracy" not in history
    with pytest.raises(ValueError, match="evaluate: loss_fn is a loss over pairs of rows"):
        train.evaluate(model, params, state, x, y, loss_fn=ops.ntxent)
    with pytest.raises(ValueError, match=r"fit: loss_fn \(with eval_data\) is a loss over"):
        train.fit(model, params, state, optim.adam(1e-2), (x, y), 1, batch_size=32,
                  key=0, loss_fn=ops.ntxent, eval_data=(x, y), progress=False)
