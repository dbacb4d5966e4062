"""``split_real_and_imaginary``: optax's float64 trajectory on complex parameters (to
1e-12, states both ways), the same as the inner optimizer on the two real parts, real
leaves untouched; optax's own test case (``optax/contrib/_complex_valued_test.py``)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._both_ways import close

optax = pytest.importorskip("optax")
contrib = pytest.importorskip("optax.contrib")

PARAMS = {"z": jnp.array([1.0 + 2.0j, -0.5 + 0.25j, 0.3 - 1.0j], jnp.complex128),
          "r": jnp.array([0.5, -1.5], jnp.float64)}
TARGET = jnp.array([0.2 - 0.7j, 1.0 + 0.5j, -0.4 + 0.1j], jnp.complex128)


def _loss(p):
    return jnp.sum(jnp.abs(p["z"] ** 2 - TARGET) ** 2) + jnp.sum(p["r"] ** 4)


def _grad(p):
    """The steepest-descent direction: JAX's gradient conjugated (optax's convention)."""
    return jax.tree_util.tree_map(jnp.conj, jax.grad(_loss)(p))


def _run(opt, steps=6):
    params, state = PARAMS, opt.init(PARAMS)
    for _ in range(steps):
        u, state = opt.update(_grad(params), state, params)
        params = jax.tree_util.tree_map(lambda p, d: p + d, params, u)
    return params, state


@pytest.mark.parametrize("inner", [
    lambda m: m.adam(0.05), lambda m: m.sgd(0.01, momentum=0.9),
    lambda m: m.chain(m.clip_by_global_norm(1.0), m.adamw(0.05)),
], ids=["adam", "sgd-momentum", "chain-clip-adamw"])
def test_equals_optax_and_states_move_both_ways(inner):
    f = optim.split_real_and_imaginary(inner(optim))
    o = contrib.split_real_and_imaginary(inner(optax))
    pf, sf = _run(f)
    with jax.numpy_dtype_promotion("standard"):
        po, so = _run(o)
        g = _grad(pf)
        to_optax = o.update(g, _as(so, sf), pf)
    close(pf, po)
    close(sf, so)
    close(f.update(g, _as(sf, so), pf), to_optax)


def _as(like, state):
    """``state``'s leaves in ``like``'s tree: the split pairs inside the inner states are
    each library's own NamedTuple class, so a state moves leaf for leaf."""
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like),
                                        jax.tree_util.tree_leaves(state))


def test_is_the_inner_optimizer_on_the_two_real_parts():
    """Adam on (Re z, Im z) as two real leaves: each part keeps its own second moment."""
    pf, _ = _run(optim.split_real_and_imaginary(optim.adam(0.05)))
    split = {"a": jnp.real(PARAMS["z"]), "b": jnp.imag(PARAMS["z"]), "r": PARAMS["r"]}
    adam, params = optim.adam(0.05), split
    state = adam.init(params)
    for _ in range(6):
        g = _grad({"z": jax.lax.complex(params["a"], params["b"]), "r": params["r"]})
        u, state = adam.update({"a": jnp.real(g["z"]), "b": jnp.imag(g["z"]), "r": g["r"]},
                               state, params)
        params = optim.apply_updates(params, u)
    np.testing.assert_allclose(pf["z"], jax.lax.complex(params["a"], params["b"]), rtol=1e-14)
    np.testing.assert_allclose(pf["r"], params["r"], rtol=1e-14)
    # plain adam on complex z differs: its second moment is of |g|^2
    plain, _ = _run(optim.adam(0.05))
    assert not np.allclose(plain["z"], pf["z"])


def test_ported_optax_case_converges_on_a_complex_quadratic():
    """optax's test: minimize |z - target|^2 over complex z with split SGD."""
    target = jnp.array([1.0 + 1.0j, -2.0 + 0.5j], jnp.complex128)
    opt = optim.split_real_and_imaginary(optim.sgd(0.1))
    z = jnp.zeros(2, jnp.complex128)
    state = opt.init(z)
    step = jax.jit(lambda z, s: opt.update(
        jnp.conj(jax.grad(lambda z: jnp.sum(jnp.abs(z - target) ** 2))(z)), s, z))
    for _ in range(100):
        u, state = step(z, state)
        z = z + u
    np.testing.assert_allclose(z, target, rtol=1e-8)


def test_bad_inner_and_state_raise():
    with pytest.raises(TypeError, match="split_real_and_imaginary: inner"):
        optim.split_real_and_imaginary(0.1)
    opt = optim.split_real_and_imaginary(optim.adam(0.1))
    with pytest.raises(ValueError, match="split_real_and_imaginary"):
        opt.update(_grad(PARAMS), optim.adam(0.1).init(PARAMS), PARAMS)
