"""States are NamedTuples of arrays that keep their structure and dtypes; steps jit once;
float32 parameters work with float64 hyperparameter arrays under strict promotion."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._cases import OPT_IDS, OPTIMIZERS, QUAD_PARAMS, quad_loss


DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def _leaf_dtypes(tree):
    return [jnp.result_type(x) for x in jax.tree_util.tree_leaves(tree)]


@functools.lru_cache(maxsize=None)
def _three_jitted_steps(dtype_name):
    """All optimizers of the table, stepped together by one jitted function, 3 times.

    Compiling the whole table in one function keeps the test cheap; a state whose
    structure, dtype or weak-type flag changed after a step would make the second call
    recompile, which a second trace of ``step`` reveals (counted in Python: the C++
    dispatch cache's size is 0 whenever JAX takes its slow path, whatever the cause).
    """
    dtype = DTYPES[dtype_name]
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), QUAD_PARAMS)
    # float64 *array* learning rates, also with float32 params (strict promotion).
    opts = {oid: make(jnp.asarray(0.01 if lr is None else lr, jnp.float64))
            for oid, make, _, lr in OPTIMIZERS}
    init = {k: o.init(params) for k, o in opts.items()}

    traces = []

    @jax.jit
    def step(ps, ss):
        traces.append(1)        # once per compilation (a Python trace)
        out = {}
        for k, o in opts.items():
            u, s = o.update(jax.grad(quad_loss)(ps[k]), ss[k], ps[k])
            out[k] = (optim.apply_updates(ps[k], u), s, u)
        return out

    ps, ss, history = {k: params for k in opts}, init, []
    for _ in range(3):
        out = step(ps, ss)
        ps = {k: v[0] for k, v in out.items()}
        ss = {k: v[1] for k, v in out.items()}
        history.append(out)
    return params, init, history, len(traces)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("oid", OPT_IDS)
def test_state_stable_and_no_recompile(oid, dtype_name):
    params, init, history, traced = _three_jitted_steps(dtype_name)
    dtype = DTYPES[dtype_name]
    state = init[oid]
    leaves = jax.tree_util.tree_leaves(state)
    assert all(isinstance(x, jax.Array) for x in leaves), [type(x) for x in leaves]
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        if "count" in jax.tree_util.keystr(path):
            assert x.dtype == jnp.int32 and x.shape == ()
        else:
            assert x.dtype == dtype
    for out in history:
        p, s, u = out[oid]
        assert jax.tree_util.tree_structure(s) == jax.tree_util.tree_structure(state)
        assert _leaf_dtypes(s) == _leaf_dtypes(state)
        assert _leaf_dtypes(u) == _leaf_dtypes(params) == _leaf_dtypes(p)
        assert all(type(a) is type(b) for a, b in zip(s, state))
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(p))
    assert traced == 1                    # three steps, one compilation


def test_traced_learning_rate_does_not_recompile():
    """A jitted train(lr) compiles once for any number of learning-rate values."""
    traces = []

    @jax.jit
    def train(lr):
        traces.append(1)  # Python side effect: runs once per trace
        opt = optim.adam(lr)
        p, s = QUAD_PARAMS, opt.init(QUAD_PARAMS)
        for _ in range(3):
            u, s = opt.update(jax.grad(quad_loss)(p), s, p)
            p = optim.apply_updates(p, u)
        return p

    a = train(jnp.asarray(0.1))
    b = train(jnp.asarray(0.01))
    assert len(traces) == 1
    assert not np.allclose(a["a"], b["a"])
    np.testing.assert_allclose(b["a"], jax.jit(lambda: train.__wrapped__(0.01))()["a"],
                               rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: optim.adam(0.01), lambda: optim.rmsprop(0.01),
                                  lambda: optim.momentum(0.01, 0.9, form="ema")],
                         ids=["adam", "rmsprop", "momentum_ema"])
def test_bfloat16_params_stay_finite_and_track_float32(make):
    """b2 = 0.999 is 1.0 in bfloat16: (1 - b2) and the bias corrections must not be
    formed in bfloat16, or v never moves and the steps blow up."""
    opt = make()
    g = jnp.array([0.5, -1e-2, 3.0])
    runs = {}
    for dtype in (jnp.bfloat16, jnp.float32):
        p = jnp.zeros(3, dtype)
        s = opt.init(p)
        for _ in range(3):
            u, s = opt.update(g.astype(dtype), s, p)
            p = optim.apply_updates(p, u)
        runs[dtype] = np.asarray(p.astype(jnp.float32))
    assert np.all(np.isfinite(runs[jnp.bfloat16]))
    np.testing.assert_allclose(runs[jnp.bfloat16], runs[jnp.float32], rtol=2e-2, atol=1e-4)


def test_adam_moments_do_not_share_buffers():
    # A shared zeros tree for mu and nu could not be donated to a jitted train step.
    params = {"w": jnp.ones((3, 2), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    state = optim.adam(1e-3).init(params)[0]
    for mu, nu in zip(jax.tree_util.tree_leaves(state.mu), jax.tree_util.tree_leaves(state.nu)):
        assert mu is not nu
    step = jax.jit(lambda s: s, donate_argnums=0)
    step(optim.adam(1e-3).init(params))  # raises "donate the same buffer twice" if shared


@pytest.mark.parametrize("g", [jnp.array([0.3, 1.7, -2.9], jnp.float32),
                               jnp.linspace(-3, 3, 1001, dtype=jnp.float32)],
                         ids=["audit_input", "linspace"])
def test_centered_rmsprop_variance_is_clamped_at_zero(g):
    """First step with bias correction: v_hat - m_hat^2 is 0 up to rounding, which eps
    (1e-8) does not cover; unclamped, rsqrt of a negative gave NaN for 171 of these 1001
    gradients (optax too, under x64). Clamped, the step is the exact-arithmetic one,
    -lr g / sqrt(eps), and never larger."""
    for opt in (optim.rmsprop(1e-3, centered=True, bias_correction=True),
                optim.scale_by_stddev(bias_correction=True, eps_in_sqrt=False)):
        u, _ = jax.jit(opt.update)(g, opt.init(g), g)
        assert np.all(np.isfinite(u))
    opt = optim.rmsprop(1e-3, centered=True, bias_correction=True)
    u, _ = opt.update(g, opt.init(g), g)
    bound = 1e-3 * np.abs(np.asarray(g, np.float64)) / np.sqrt(1e-8)
    assert np.all(np.abs(np.asarray(u, np.float64)) <= bound * (1 + 1e-6))
