"""Muon: optax's own tests ported (optax 0.2.8, ``contrib/_muon_test.py``) and properties
checked by hand. Its trajectories and states against optax are in
``test_optim_contrib.py``."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from funcnet.optim import orthogonal
from funcnet.optim.orthogonal import MuonDimensionNumbers as Dims


@pytest.mark.parametrize("shape, dims, flat", [
    ((2, 3), Dims(0, 1), (1, 2, 3)),
    ((2, 3, 4), Dims(0, 2), (3, 2, 4)),
    ((2, 3, 4), Dims(-3, -1), (3, 2, 4)),
    ((2, 3, 4, 5), Dims(2, 3), (6, 4, 5)),
    ((2, 3, 4, 5), Dims(2, (0, 3)), (3, 4, 10)),
], ids=["2d", "3d_batch", "3d_negative", "4d_batches", "4d_outputs"])
def test_reshape_to_matrices_and_back(shape, dims, flat):
    x = jnp.arange(math.prod(shape), dtype=jnp.float64).reshape(shape)
    stacked, back = orthogonal._as_matrices("t", x, dims)
    assert stacked.shape == flat
    np.testing.assert_array_equal(back(stacked), x)


def _first_update(params, **kwargs):
    opt = optim.muon(1e-3, **kwargs)
    return opt.update(params, opt.init(params), params)   # loss 0.5 |params|^2


@pytest.mark.parametrize("preconditioning", ["frobenius", "aol"])
def test_dimension_numbers_reshape_like_the_matrix(preconditioning):
    """optax's test_reshape_and_update_single_param: a (10, 12) matrix laid out as
    (4, 1, 10, 3) or (5, 12, 1, 2) with the matching dimension numbers gets the same
    update, laid out alike."""
    w = jax.random.normal(jax.random.key(0), (10, 12), jnp.float64)
    layouts = [(lambda x: x, Dims(0, 1)),
               (lambda x: x.reshape(10, 3, 1, 4).transpose(3, 2, 0, 1), Dims((2,), (0, 3))),
               (lambda x: x.reshape(2, 1, 5, 12).transpose(2, 3, 1, 0), Dims((0, 3), (1,)))]

    def updates():
        want = _first_update({"w": w}, preconditioning=preconditioning)[0]["w"]
        return want, [_first_update({"w": layout(w)}, preconditioning=preconditioning,
                                    muon_weight_dimension_numbers={"w": dims})[0]["w"]
                      for layout, dims in layouts]

    want, got = jax.jit(updates)()
    for (layout, _), g in zip(layouts, got):
        np.testing.assert_allclose(g, layout(want), rtol=1e-10, atol=1e-12)


def _muon_mu(params, dims=None):
    state = optim.muon(1e-3, muon_weight_dimension_numbers=dims).init(params)
    return state.inner_states["muon"].inner_state[0].mu


def test_which_leaves_are_muons():
    """optax's test_dim_nums_combinations: the muon state holds the leaves that have
    dimension numbers (by default the 2-D ones), a MaskedNode elsewhere, also below a
    prefix None."""
    masked = lambda x: isinstance(x, optim.MaskedNode)  # noqa: E731
    d = Dims(1, 2)
    mu = _muon_mu({"a": jnp.ones((1, 2, 3)), "b": jnp.ones((2, 3, 4))}, {"a": d, "b": d})
    assert not masked(mu["a"]) and not masked(mu["b"])
    mu = _muon_mu({"a": jnp.ones((1, 2, 3)), "b": jnp.ones((3, 4))})
    assert masked(mu["a"]) and not masked(mu["b"])
    pair = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 3))}
    mu = _muon_mu({"x": pair, "y": pair}, {"x": None, "y": {"a": Dims(), "b": None}})
    assert (jax.tree_util.tree_structure(mu, is_leaf=masked)
            == jax.tree_util.tree_structure({"x": pair, "y": pair}))
    assert [masked(mu[k][j]) for k in "xy" for j in "ab"] == [True, True, False, True]
    mu = _muon_mu({"x": pair, "y": pair}, lambda p: {"x": Dims(), "y": None})  # a prefix
    assert [masked(mu[k][j]) for k in "xy" for j in "ab"] == [False, False, True, True]


def test_newton_schulz_orthogonalizes():
    """optax's test_newton_schulz: with the convergent coefficients (2, -1.5, 0.5) the
    result is orthonormal (real) and unitary (complex)."""
    coeffs = jnp.array([2.0, -1.5, 0.5])
    orthogonalize = orthogonal.orthogonalize_via_newton_schulz
    real = jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)
    cplx = jax.random.normal(jax.random.key(0), (4, 3), jnp.complex128)
    q, u = jax.jit(lambda: (orthogonalize(real, coeffs, ns_steps=20, eps=1e-12),
                            orthogonalize(cplx, coeffs, ns_steps=10,
                                          dimension_numbers=Dims(0, 1))))()
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-5)
    assert u.shape == (4, 3) and u.dtype == jnp.complex128
    np.testing.assert_allclose(u.conj().T @ u, np.eye(3), atol=1e-5)


@pytest.mark.parametrize("preconditioning", ["frobenius", "aol", "schatten"])
def test_update_of_a_scaled_identity_is_orthogonal(preconditioning):
    """optax's test_orthogonality; and (test_aol_numerical_difference) the AOL steps with
    dion's coefficients are another iteration than frobenius'."""
    params = {"w": jnp.eye(8) * 2.0}
    u, _ = jax.jit(optim.muon(0.1, preconditioning=preconditioning).update)(
        params, optim.muon(0.1).init(params), params)
    gram = u["w"].T @ u["w"]
    assert np.linalg.norm(gram / gram.max() - np.eye(8)) < 1e-3
    if preconditioning == "aol":
        opt = optim.muon(0.1, ns_coeffs="dion", preconditioning="aol")
        other, _ = jax.jit(opt.update)(params, opt.init(params), params)
        assert not np.allclose(other["w"], u["w"])


@pytest.mark.parametrize("shape", [(12, 12), (12, 6), (6, 12)])
def test_singular_values_of_an_update_are_near_one(shape):
    """optax's test_muon_orthogonalization_modes, plus the width scaling: the update of a
    (fan_in, fan_out) matrix is lr * sqrt(max(1, fan_out / fan_in)) * (~orthogonal)."""
    w = jax.random.normal(jax.random.key(42), shape, jnp.float64)
    u, _ = jax.jit(_first_update)({"w": w})
    s = np.linalg.svd(np.asarray(u["w"]) / 1e-3 / math.sqrt(max(1, shape[1] / shape[0])),
                      compute_uv=False)
    assert 0.5 < s.min() and s.max() < 1.5


def test_complex_parameters_reach_the_target():
    """optax's test_complex_mixed_target (conjugated gradients), 300 steps."""
    target = jnp.array([[1.0 + 2.0j, 0.0], [-1.0 + 1.0j, 1.0 - 3.0j]], jnp.complex128)

    def run(adaptive):
        opt = optim.muon(1e-2, adaptive=adaptive)

        def body(carry, _):
            p, s = carry
            g = jnp.conj(jax.grad(lambda q: jnp.sum(jnp.abs(q - target) ** 2))(p))
            u, s = opt.update(g, s, p)
            return (p + u, s), None

        p0 = jnp.zeros((2, 2), jnp.complex128)
        return jax.lax.scan(body, (p0, opt.init(p0)), None, length=1000)[0][0]

    for p in jax.jit(lambda: [run(False), run(True)])():
        np.testing.assert_allclose(p, target, atol=3e-2)


def test_learning_rate_is_the_muon_groups():
    opt = optim.muon(optim.linear_schedule(0.1, 0.0, 10), adam_learning_rate=0.5)
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    state = opt.init(params)
    np.testing.assert_allclose(optim.current_learning_rate(opt, state), 0.1)
    _, state = jax.jit(opt.update)(params, state, params)
    np.testing.assert_allclose(optim.current_learning_rate(opt, state), 0.09)


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("params, dims, match", [
    ({"w": jnp.ones(3)}, {"w": Dims()},
     r"muon: scale_by_muon: Muon's parameters must have rank >= 2, got shape \(3,\)"),
    ({"w": jnp.ones((2, 3))}, {"w": Dims(0, (0, 1))},
     r"muon: scale_by_muon: reduction axes \(0,\) and output axes \(0, 1\) of shape "
     r"\(2, 3\) must be disjoint"),
    ({"w": jnp.ones((2, 3))}, {"w": Dims(0, 2)}, r"muon: scale_by_muon: .*output_axis"),
], ids=["rank1", "overlap", "axis_out_of_range"])
def test_bad_dimension_numbers_raise_at_the_first_update(params, dims, match, under_jit):
    opt = optim.muon(0.1, muon_weight_dimension_numbers=dims)
    update = jax.jit(opt.update) if under_jit else opt.update
    with pytest.raises(ValueError, match=match):
        update(params, opt.init(params), params)


def test_scale_by_muon_dimension_numbers_of_another_structure():
    opt = optim.scale_by_muon(weight_dimension_numbers={"a": Dims()})
    params = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=r"scale_by_muon: weight_dimension_numbers must "
                                         r"have the structure of the updates"):
        opt.update(params, opt.init(params))
    # None (optax fails on a dict here): every leaf is an (in, out) matrix
    plain = optim.scale_by_muon()
    u, _ = plain.update(params, plain.init(params))
    assert u["a"].shape == (2, 2)
