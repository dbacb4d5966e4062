"""Each optimizer == a direct transcription of its paper / note formula (float64, 100 steps).

The references live in ``_cases.py`` (NumPy, flat parameter vector, Python loop); the
funcnet side runs under ``jit`` + ``lax.scan`` on a pytree with several leaves.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import funcnet.optim as optim
from tests.optim._cases import (
    MLP_PARAMS, OPT_IDS, OPTIMIZERS, PROBLEMS, QUAD_MIN, mlp_loss, ref_adam, ref_adam_folded,
    reference_trajectory, run, run_reference, table_trajectories)


@pytest.mark.parametrize("problem", ["quadratic", "mlp"])
@pytest.mark.parametrize("oid", OPT_IDS)
def test_trajectory_matches_formula(problem, oid):
    got, _ = table_trajectories(problem)[oid]
    want = reference_trajectory(oid, problem)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("problem", ["quadratic", "mlp"])
@pytest.mark.parametrize("oid,make,ref,lr", OPTIMIZERS, ids=OPT_IDS)
def test_references_are_well_conditioned(problem, oid, make, ref, lr):
    """A start moved by 1e-14 (relative) ends within 1e-7 of the unmoved run: rounding
    differences between XLA and NumPy (~1e-16 a step) stay far inside the 1e-6 of
    test_trajectory_matches_formula, which then measures funcnet and not a chaotic run's
    amplification of them (the case failed on one CPU and passed on another)."""
    start = np.asarray(ravel_pytree(PROBLEMS[problem][1])[0])
    moved = start * (1 + 1e-14 * np.random.default_rng(1).standard_normal(start.shape))
    a = reference_trajectory(oid, problem)
    b = run_reference(ref(lr), problem, x0=moved)
    assert np.max(np.abs(a - b) / (1e-3 + np.abs(a))) < 1e-7


@pytest.mark.parametrize("problem", ["quadratic", "mlp"])
@pytest.mark.parametrize("oid", OPT_IDS)
def test_converges(problem, oid):
    _, losses = table_trajectories(problem)[oid]
    assert np.all(np.isfinite(losses))
    if problem == "quadratic":  # closes most of the gap to the known minimum
        assert losses[-1] - QUAD_MIN < 0.2 * (losses[0] - QUAD_MIN)
    else:
        assert losses[-1] < 0.7 * losses[0]


# ---------------------------------------------------------- the two Adam forms (note 000)

B1, B2, EPS, LR = 0.9, 0.999, 1e-3, 0.05


def test_note000_folded_with_eps_hat_t_equals_standard_numpy():
    """The algebra: standard Adam == folded form with eps_hat_t = eps * sqrt(1 - b2^t)."""
    folded = run_reference(
        ref_adam_folded(LR, B1, B2, eps_hat=lambda t: EPS * np.sqrt(1 - B2 ** t)), "mlp")
    standard = run_reference(ref_adam(LR, B1, B2, EPS), "mlp")
    np.testing.assert_allclose(folded, standard, rtol=1e-12, atol=1e-14)


def _run_folded_with_eps_t(eps_fn):
    """funcnet's folded adam, rebuilt every step with a (traced) eps depending on t."""
    def body(carry, _):
        p, s = carry
        g = jax.grad(mlp_loss)(p)
        t = (s[0].count + 1).astype(jnp.float64)
        opt = optim.adam(LR, B1, B2, eps_fn(t), form="folded")
        u, s = opt.update(g, s, p)
        return (optim.apply_updates(p, u), s), None

    init = optim.adam(LR, B1, B2, EPS, form="folded").init(MLP_PARAMS)
    (p, _), _ = jax.lax.scan(body, (MLP_PARAMS, init), None, length=100)
    return ravel_pytree(p)[0]


def test_folded_with_eps_hat_t_equals_standard_funcnet():
    standard, _ = table_trajectories("mlp")["adam"]  # adam(0.05), eps = 1e-8
    folded = jax.jit(lambda: _run_folded_with_eps_t(
        lambda t: 1e-8 * jnp.sqrt(1 - B2 ** t)))()
    np.testing.assert_allclose(folded, standard, rtol=1e-10, atol=1e-12)


def test_folded_and_standard_identical_with_eps_zero():
    loss, params = PROBLEMS["mlp"]
    a, b = jax.jit(lambda: (run(optim.adam(LR, eps=0.0), loss, params)[0],
                            run(optim.adam(LR, eps=0.0, form="folded"), loss, params)[0]))()
    np.testing.assert_allclose(ravel_pytree(a)[0], ravel_pytree(b)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("count", [0, 9, 999])
def test_folded_minus_standard_is_the_documented_amount(count):
    """From the same state, one step of each form differs by
    lr * c_t * m_t * (1 / (sqrt(v_t) + eps * sqrt(1 - b2^t)) - 1 / (sqrt(v_t) + eps)),
    c_t = sqrt(1 - b2^t) / (1 - b1^t): the folded form's eps is 1/sqrt(1-b2^t) too large."""
    rng = np.random.default_rng(1)
    g = jnp.asarray(rng.normal(size=6) * 1e-3)
    state0 = (optim.ScaleByAdamState(count=jnp.asarray(count, jnp.int32),
                                     mu=jnp.asarray(rng.normal(size=6) * 1e-3),
                                     nu=jnp.asarray(rng.uniform(size=6) * 1e-6)),
              optim.EmptyState())
    u_std, s_std = optim.adam(LR, B1, B2, EPS).update(g, state0)
    u_fold, s_fold = optim.adam(LR, B1, B2, EPS, form="folded").update(g, state0)
    t = count + 1
    m, v = np.asarray(s_std[0].mu), np.asarray(s_std[0].nu)
    c = np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
    expected = LR * c * m * (1 / (np.sqrt(v) + EPS * np.sqrt(1 - B2 ** t)) - 1 / (np.sqrt(v) + EPS))
    np.testing.assert_allclose(np.asarray(u_fold - u_std), expected, rtol=1e-9, atol=1e-300)
    assert np.all(np.abs(expected) > 0)
    np.testing.assert_array_equal(s_std[0].mu, s_fold[0].mu)  # same moments
