"""DP-SGD: ``differentially_private_aggregate`` and ``dpsgd`` against optax (the same key
gives the same noise, float64 trajectories to 1e-12, states both ways), optax's own test
cases (``optax/contrib/_privacy_test.py``), and what a chain opened by the aggregate
checks."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._both_ways import close

optax = pytest.importorskip("optax")
contrib = pytest.importorskip("optax.contrib")

B = 8
PARAMS = {"w": jnp.linspace(-0.5, 0.5, 12, dtype=jnp.float64).reshape(4, 3),
          "b": jnp.array([0.1, -0.2, 0.3], jnp.float64)}
_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.standard_normal((B, 4)))
Y = jnp.asarray(_rng.standard_normal((B, 3)))


def _loss(p, x, y):
    return jnp.sum((jnp.tanh(x @ p["w"] + p["b"]) - y) ** 2)


per_example_grads = jax.jit(jax.vmap(jax.grad(_loss), (None, 0, 0)))


def _run(opt, steps=5):
    params, state = PARAMS, opt.init(PARAMS)
    for _ in range(steps):
        u, state = opt.update(per_example_grads(params, X, Y), state, params)
        params = jax.tree_util.tree_map(lambda p, d: p + d, params, u)
    return params, state


def _optax(make):
    with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
        warnings.simplefilter("ignore", DeprecationWarning)   # optax's dpsgd passes seed=
        opt = make()
        return opt, _run(opt)


@pytest.mark.parametrize("clip, sigma", [(0.5, 1.1), (1e9, 0.0), (0.05, 3.0)],
                         ids=["clipped-noised", "no-privacy", "all-clipped"])
def test_aggregate_equals_optax_and_states_move_both_ways(clip, sigma):
    f = optim.differentially_private_aggregate(clip, sigma, key=7)
    o, (po, so) = _optax(lambda: contrib.differentially_private_aggregate(clip, sigma, key=7))
    pf, sf = _run(f)
    close(pf, po)
    close(sf, so)
    g = per_example_grads(pf, X, Y)
    with jax.numpy_dtype_promotion("standard"):
        to_optax = o.update(g, sf, pf)
    close(f.update(g, so, pf), to_optax)


@pytest.mark.parametrize("momentum, nesterov", [(None, False), (0.9, False), (0.8, True)])
def test_dpsgd_equals_optax(momentum, nesterov):
    args = (0.05, 0.7, 1.3, 11, momentum, nesterov)
    f = optim.dpsgd(*args)
    o, (po, so) = _optax(lambda: contrib.dpsgd(*args))
    pf, sf = _run(f)
    close(pf, po)
    close(sf, so)
    assert [type(s).__name__ for s in sf] == [type(s).__name__ for s in so]


def test_int_typed_and_raw_keys_give_the_same_noise():
    runs = [_run(optim.differentially_private_aggregate(1.0, 2.0, key=k))[0]
            for k in (3, jax.random.key(3), jax.random.PRNGKey(3))]
    close(runs[0], runs[1], 0)
    close(runs[0], runs[2], 0)
    other = _run(optim.differentially_private_aggregate(1.0, 2.0, key=4))[0]
    assert not np.allclose(other["w"], runs[0]["w"])


# ------------------------------------------------------- optax's own cases (ported)

_CASE_PARAMS = {"key_a": (jnp.zeros((2, 3, 4)), jnp.zeros([])), "key_b": jnp.zeros((6, 7))}
# example i's gradients are full of i (0 included: no division by a zero norm)
_CASE_GRADS = jax.tree_util.tree_map(
    lambda p: jnp.broadcast_to(jnp.arange(8.0).reshape((8,) + (1,) * p.ndim), (8,) + p.shape),
    _CASE_PARAMS)


def test_ported_no_privacy_is_the_mean_gradient():
    agg = optim.differentially_private_aggregate(float(np.finfo(np.float32).max), 0.0, key=0)
    state, update = agg.init(_CASE_PARAMS), jax.jit(agg.update)
    mean = jax.tree_util.tree_map(lambda g: g.mean(0), _CASE_GRADS)
    for _ in range(3):
        updates, state = update(_CASE_GRADS, state)
        close(updates, mean, 1e-12)


def test_ported_clipping_norm():
    """optax's cases 0.5, 10, 20, 40, 80, through one compiled update (the bound traced)."""
    @jax.jit
    def update(clip, grads, state):
        return optim.differentially_private_aggregate(clip, 0.0, key=42).update(
            grads, state, _CASE_PARAMS)

    norms = jnp.stack([jnp.linalg.norm(g.reshape(8, -1), axis=1)
                       for g in jax.tree_util.tree_leaves(_CASE_GRADS)])
    for clip in (0.5, 10.0, 20.0, 40.0, 80.0):
        state = optim.differentially_private_aggregate(clip, 0.0, key=42).init(_CASE_PARAMS)
        divisors = jnp.maximum(jnp.linalg.norm(norms, axis=0) / clip, 1.0)
        want = jax.tree_util.tree_map(
            lambda p: jnp.broadcast_to(jnp.mean(jnp.arange(8.0) / divisors), p.shape),
            _CASE_PARAMS)
        for _ in range(3):
            updates, state = update(jnp.float64(clip), _CASE_GRADS, state)
            close(updates, want, 1e-12)


@pytest.mark.parametrize("clip, sigma", [(3.0, 2.0), (1.0, 5.0), (100.0, 4.0), (1.0, 90.0)])
def test_ported_noise_std_is_clip_times_multiplier(clip, sigma):
    agg = optim.differentially_private_aggregate(clip, sigma, key=1337)
    state, update = agg.init(None), jax.jit(agg.update)
    for _ in range(3):
        updates, state = update([jnp.ones((1, 100, 100))], state)      # one example
        assert abs(float(jnp.std(updates[0])) - clip * sigma) <= 0.1 * clip * sigma


def test_ported_averaged_gradients_are_refused():
    agg = optim.differentially_private_aggregate(0.1, 1.1, key=2021)
    mean = jax.tree_util.tree_map(lambda g: g.mean(0), _CASE_GRADS)
    with pytest.raises(ValueError, match="differentially_private_aggregate: .*axis 0"):
        agg.update(mean, agg.init(_CASE_PARAMS), _CASE_PARAMS)


# ------------------------------------------------------------ composition and checks

def test_chain_opened_by_the_aggregate_takes_per_example_grads():
    """optax's documented use: the aggregate first, any optimizer after it."""
    opt = optim.chain(optim.differentially_private_aggregate(1e9, 0.0, key=0), optim.adam(0.1))
    ref = optim.adam(0.1)
    g = per_example_grads(PARAMS, X, Y)
    u, _ = opt.update(g, opt.init(PARAMS), PARAMS)
    want, _ = ref.update(jax.tree_util.tree_map(lambda x: x.mean(0), g), ref.init(PARAMS),
                         PARAMS)
    close(u, want)
    with pytest.raises(ValueError, match=r"chain: grads without axis 0\['b'\] has shape "
                                         r"\(\), expected \(3,\)"):
        opt.update(jax.tree_util.tree_map(lambda x: x.mean(0), g), opt.init(PARAMS), PARAMS)
    with pytest.raises(ValueError, match="tree structure does not match params"):
        opt.update({"w": g["w"]}, opt.init(PARAMS), PARAMS)
    assert not getattr(optim.chain(optim.adam(0.1), optim.differentially_private_aggregate(
        1.0, 1.0, key=0)), "_per_example_grads")      # only a first block makes it one


@pytest.mark.parametrize("call, exc, match", [
    (lambda: optim.differentially_private_aggregate(-1.0, 1.0, key=0), ValueError,
     "l2_norm_clip"),
    (lambda: optim.differentially_private_aggregate(1.0, -1.0, key=0), ValueError,
     "noise_multiplier"),
    (lambda: optim.dpsgd(0.1, 1.0, 1.0, seed=0, nesterov="yes"), TypeError, "nesterov"),
    (lambda: optim.differentially_private_aggregate(1.0, 1.0, key=0, seed=1), ValueError,
     "not both"),
])
def test_bad_arguments_raise(call, exc, match):
    with pytest.raises(exc, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)       # seed= is deprecated
        call()


def test_sweep_over_noise_multipliers_under_vmap():
    """A vmap over sigma equals separate runs (an ablation of the privacy level)."""
    def run(sigma):
        return _run(optim.dpsgd(0.05, 0.7, sigma, seed=5, momentum=0.9), steps=3)[0]
    sigmas = jnp.array([0.0, 0.5, 2.0])
    swept = jax.jit(jax.vmap(run))(sigmas)
    for i, s in enumerate(sigmas):
        close(jax.tree_util.tree_map(lambda x: x[i], swept), jax.jit(run)(s), 1e-10)
