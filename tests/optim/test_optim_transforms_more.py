"""Round 4's small blocks and Adan / Yogi / AdaDelta / NovoGrad by hand, with optax's
own cases ported (optax 0.2.8: ``transforms/_constraining_test.py``,
``_clipping_test.py``, ``_adding_test.py``, ``_src/transform_test.py``, docstrings).
Trajectories and states against optax are in ``test_optim_contrib.py``."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim


def test_zero_nans():
    """optax's test_zero_nans: NaNs become 0 and the state says where they were."""
    opt = optim.zero_nans()
    params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    state = opt.init(params)
    assert [bool(x) for x in jax.tree_util.tree_leaves(state.found_nan)] == [False, False]
    grads = {"a": jnp.array([1.0, jnp.nan, 2.0]), "b": jnp.ones((2, 2))}
    out, state = jax.jit(opt.update)(grads, state)
    np.testing.assert_array_equal(out["a"], [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(out["b"], np.ones((2, 2)))
    assert [bool(x) for x in jax.tree_util.tree_leaves(state.found_nan)] == [True, False]
    with pytest.raises(ValueError, match=r"zero_nans: grads tree structure does not match "
                                         r"state.found_nan"):
        opt.update({"a": jnp.zeros(3)}, state)


def test_adaptive_grad_clip_by_hand():
    """Per column (axis 0) of a matrix: a column whose gradient norm exceeds clipping *
    max(||w_col||, eps) is scaled down to it, the others pass."""
    w = jnp.array([[3.0, 0.0], [4.0, 0.0]])        # column norms 5, 0 (-> eps = 0.1)
    g = jnp.array([[0.3, 1.0], [0.4, 0.0]])        # column norms 0.5, 1
    out, _ = optim.adaptive_grad_clip(0.2, eps=0.1).update(g, optim.EmptyState(), w)
    np.testing.assert_allclose(out[:, 0], [0.3, 0.4], rtol=1e-12)          # 0.5 < 1
    np.testing.assert_allclose(out[:, 1], [0.02, 0.0], rtol=1e-12)         # to 0.2 * 0.1
    whole, _ = optim.adaptive_grad_clip(0.2, axis=(0, 1)).update(g, (), w)  # one unit
    np.testing.assert_allclose(whole, g * 0.2 * 5 / np.sqrt(1.25), rtol=1e-12)
    with pytest.raises(ValueError, match="adaptive_grad_clip: update needs params"):
        optim.adaptive_grad_clip(0.1).update(g, ())
    with pytest.raises(ValueError, match=r"adaptive_grad_clip: a leaf of shape "
                                         r"\(1, 2, 1, 2, 1, 2\).*pass axis"):
        x = jnp.ones((1, 2, 1, 2, 1, 2))
        optim.adaptive_grad_clip(0.1).update(x, (), x)


def test_centralize_and_sign():
    """optax's centralize docstring; vectors pass unchanged; scale_by_sign."""
    out, state = optim.centralize().update(jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), ())
    np.testing.assert_array_equal(out, [[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])
    v = jnp.array([1.0, 5.0])
    np.testing.assert_array_equal(optim.centralize().update(v, ())[0], v)
    np.testing.assert_array_equal(optim.scale_by_sign().update(jnp.array([-2.0, 0.0, 3.0]),
                                                               ())[0], [-1.0, 0.0, 1.0])


def test_add_noise_keys_and_variance():
    """Every key form gives the same noise (optax's typed key of the same seed); the
    variance at step t is eta / t^gamma; a missing key warns (seed 0, as optax)."""
    optax = pytest.importorskip("optax")
    g = jnp.zeros(4000)
    noises = []
    for key in (3, jax.random.key(3), jax.random.PRNGKey(3)):
        opt = optim.add_noise(0.5, 1.0, key)
        s = opt.init(g)
        first, s = opt.update(g, s)
        second, s = opt.update(g, s)
        noises.append((first, second))
    theirs = optax.add_noise(0.5, 1.0, 3)
    with jax.numpy_dtype_promotion("standard"):
        t_first, _ = theirs.update(g, theirs.init(g))
    for first, second in noises:
        np.testing.assert_array_equal(first, t_first)
        np.testing.assert_array_equal(second, noises[0][1])
    first, second = noises[0]
    assert abs(np.var(first) / 0.5 - 1) < 0.1 and abs(np.var(second) / 0.25 - 1) < 0.1
    with pytest.warns(UserWarning, match="add_noise: no key given"):
        optim.noisy_sgd(0.1)
    with pytest.warns(DeprecationWarning, match="add_noise: seed is deprecated"), \
            pytest.raises(ValueError, match="add_noise: give key or seed, not both"):
        optim.add_noise(0.1, 0.5, 1, seed=2)


def test_adadelta_without_a_learning_rate_descends():
    """optax's adadelta() skips its learning-rate block and so ascends; funcnet's None
    is a rate of 1 (Zeiler's method)."""
    p = jnp.array([1.0, -2.0])
    ours = optim.adadelta()
    u, _ = ours.update(2 * p, ours.init(p), p)
    ref, _ = optim.adadelta(1.0).update(2 * p, ours.init(p), p)
    np.testing.assert_array_equal(u, ref)
    assert np.all(np.sign(u) == -np.sign(p))


def test_novograd_keeps_one_second_moment_per_leaf():
    opt = optim.scale_by_novograd(b1=0.5, b2=0.5, eps=0.0)
    params = {"a": jnp.array([3.0, 4.0]), "b": jnp.ones((2, 2))}
    state = opt.init(params)
    assert [x.shape for x in jax.tree_util.tree_leaves(state.nu)] == [(), ()]
    u, state = opt.update(params, state, params)
    np.testing.assert_allclose(state.nu["a"], 25.0)                 # ||g||^2 at t = 1
    np.testing.assert_allclose(u["a"], [0.6, 0.8], rtol=1e-12)       # g / ||g||
    u, state = opt.update(params, state, params)
    np.testing.assert_allclose(state.nu["a"], 25.0)
    np.testing.assert_allclose(u["a"], 1.5 * np.array([0.6, 0.8]), rtol=1e-12)
    with pytest.raises(ValueError, match="scale_by_novograd: update needs params"):
        opt.update(params, state)


def test_yogi_starts_from_the_initial_accumulator_and_adan_from_zero_difference():
    state = optim.scale_by_yogi(initial_accumulator_value=0.5).init(jnp.ones(2))
    np.testing.assert_array_equal(state.mu, [0.5, 0.5])
    np.testing.assert_array_equal(state.nu, [0.5, 0.5])
    opt = optim.scale_by_adan(b1=0.5, b2=0.5, b3=0.5, eps=0.0)
    g = jnp.array([2.0, -1.0])
    u, state = opt.update(g, opt.init(g))     # d_1 = 0: m_hat = g, v_hat = 0, n_hat = g^2
    np.testing.assert_allclose(u, np.sign(g), rtol=1e-12)
    np.testing.assert_array_equal(state.g, g)
    assert int(state.t) == 1
