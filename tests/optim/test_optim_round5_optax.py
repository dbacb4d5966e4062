"""Round 5's optimizers against optax 0.2.8 (``optax`` and ``optax.contrib``): the call
strings of ``_round5_calls.CALLS`` give optax's trajectory in float64 over 8 steps
(1e-12) and their states move between the libraries in both directions; lookahead
(parameters as a pair), SAM's opaque mode, ``scale_gradient`` and ``add_noise``'s typed
key likewise; initial states have optax's dtypes. The runs are
eager (many small programs compile slower than they run op by op).
"""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._both_ways import STEPS, both_ways, close, flat
from tests.optim._contrib_calls import PARAMS, loss, namespace
from tests.optim._round5_calls import CALLS, needs_value

optax = pytest.importorskip("optax")
import optax.contrib  # noqa: E402

# optax rebuilds these states in its own classes (inside a lax.cond / a tree_map with
# the state given): a funcnet state goes to optax converted, leaf for leaf
OPTAX_NEEDS_ITS_CLASSES = ("reduce_on_plateau", "sam(")


def _optax_call(call):
    with warnings.catch_warnings():      # optimistic_adam is deprecated in optax
        warnings.simplefilter("ignore", DeprecationWarning)
        return eval(call, namespace(optax, optax.contrib))  # noqa: S307


@functools.lru_cache(maxsize=None)
def _run(call):
    f, o = eval(call, namespace(optim)), _optax_call(call)  # noqa: S307
    # optax's reduce_on_plateau traces a new lax.cond at each eager call: jit it
    o = o._replace(update=jax.jit(o.update)) if "plateau" in call else o
    return both_ways(f, o, needs_value(call),
                     any(name in call for name in OPTAX_NEEDS_ITS_CLASSES))


@pytest.mark.parametrize("call", CALLS)
def test_call_gives_optax_trajectory_and_state_moves_between_libraries(call):
    (pf, sf), (po, so), (u1, s1), (u2, s2) = _run(call)
    assert not np.allclose(flat(po), flat(PARAMS))                 # it moved
    assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(pf))
    close(pf, po)
    assert jax.tree_util.tree_structure(sf).num_leaves == len(jax.tree_util.tree_leaves(so))
    # funcnet continues optax's state in optax's classes (a lax.scan carry stays stable)
    assert jax.tree_util.tree_structure(s2) == jax.tree_util.tree_structure(so)
    close(u1, u2)
    close(s1, s2)


def test_lookahead_trajectory_and_states_both_ways():
    """Gradients at the fast parameters; updates of the parameters' own class."""
    def run(lib, opt, state, params, n=STEPS):
        for _ in range(n):
            u, state = opt.update(jax.grad(loss)(params.fast), state, params)
            assert type(u) is type(params)
            params = lib.apply_updates(params, u)
        return params, state

    for call in ("lookahead(adam(0.05), 3, 0.5)", "lookahead(sgd(0.05, 0.9), 2, 0.3, True)",
                 "lookahead(chain(zero_nans(), adam(0.05)), 3, 0.8, reset_state=True)"):
        f, o = eval(call, namespace(optim)), _optax_call(call)  # noqa: S307
        pf, sf = run(optim, f, f.init(optim.LookaheadParams.init_synced(PARAMS)),
                     optim.LookaheadParams.init_synced(PARAMS))
        with jax.numpy_dtype_promotion("standard"):
            start = optax.LookaheadParams.init_synced(PARAMS)
            po, so = run(optax, o, o.init(start), start)
            s1 = run(optax, o, jax.tree_util.tree_unflatten(
                jax.tree_util.tree_structure(so), jax.tree_util.tree_leaves(sf)), po, 1)
        s2 = run(optim, f, so, po, 1)
        assert jax.tree_util.tree_structure(s2[1]) == jax.tree_util.tree_structure(so)
        close(pf, po)
        assert not np.allclose(flat(po.slow), flat(PARAMS))
        close(s1, s2)


def test_sam_opaque_mode_equals_optax():
    grad_fn = lambda p, i: jax.grad(loss)(p)  # noqa: E731
    call = "sam(sgd(0.05), chain(normalize(), sgd(0.1)), 3, opaque_mode=True)"
    runs = []
    for lib, ns in ((optim, namespace(optim)), (optax, namespace(optax, optax.contrib))):
        opt, p = eval(call, ns), PARAMS  # noqa: S307
        s = opt.init(p)
        with jax.numpy_dtype_promotion("standard" if lib is optax else "strict"):
            for _ in range(4):
                u, s = opt.update(jax.grad(loss)(p), s, p, grad_fn=grad_fn)
                p = lib.apply_updates(p, u)
        runs.append((p, s))
    close(runs[0], runs[1])
    assert runs[0][1].cache is None


@pytest.mark.parametrize("scale", [-0.5, 0.0, 0.5, 1.0, 2.0])
def test_scale_gradient_equals_optax(scale):
    x = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}

    def f(lib, s):
        return jax.grad(lambda t: sum(jnp.sum(jnp.sin(v) * v) for v in jax.tree_util.tree_leaves(
            lib.scale_gradient(t, s))))(x)

    with jax.numpy_dtype_promotion("standard"):
        theirs = f(optax, scale)
    close(f(optim, scale), theirs)
    close(f(optim, jnp.asarray(scale)), theirs)              # a traced-like array scale


def test_add_noise_state_holds_a_typed_key_as_optax():
    """optax's layout: the state's key is typed, for every key form given, and a state
    of either library continues in the other with the same noise."""
    g = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    theirs = optax.add_noise(0.1, 0.5, jax.random.key(5))
    ts = theirs.init(g)
    for key in (5, jax.random.key(5), jax.random.PRNGKey(5)):
        s = optim.add_noise(0.1, 0.5, key).init(g)
        assert s.rng_key.dtype == ts.rng_key.dtype and s.rng_key.shape == ()
        np.testing.assert_array_equal(jax.random.key_data(s.rng_key),
                                      jax.random.key_data(ts.rng_key))
    ours = optim.add_noise(0.1, 0.5, 5)
    with jax.numpy_dtype_promotion("standard"):
        u_t, ts = theirs.update(g, ts)
        u_to, _ = theirs.update(g, ours.init(g))
    u_f, fs = ours.update(g, ours.init(g))
    close(u_f, u_t)
    close(u_to, u_t)
    close(ours.update(g, ts)[0], ours.update(g, fs)[0])
    # a state of funcnet before round 5 (a raw uint32[2] key) still continues
    raw = ours.init(g)._replace(rng_key=jax.random.key_data(ours.init(g).rng_key))
    u_raw, s_raw = ours.update(g, raw)
    close(u_raw, u_f)
    assert s_raw.rng_key.dtype == jnp.uint32


# ------------------------------------------------------------------ initial states
# (signatures and state classes: test_optim_ported_more.py's tables)


def test_initial_states_have_optax_dtypes_for_mixed_params():
    """float32 and float64 leaves: the states' dtypes (lowest / highest dtype scalars,
    mu_dtype accumulators, int32 counts, lists per axis) are optax's."""
    params = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.ones(3)}
    for call in ("reduce_on_plateau()", "prodigy()", "ademamix(0.1, mu_dtype=jnp.float32)",
                 "adopt(0.1, mu_dtype=jnp.float32)", "sm3(0.1)", "rprop(0.1)",
                 "simplified_ademamix(0.1)", "optimistic_gradient_descent(0.1)",
                 "apply_every(2)", "sam(sgd(0.1), sgd(0.1))"):
        ours = eval(call, namespace(optim)).init(params)  # noqa: S307
        with jax.numpy_dtype_promotion("standard"):
            theirs = _optax_call(call).init(params)
        assert jax.tree_util.tree_map(jnp.result_type, ours) == jax.tree_util.tree_map(
            jnp.result_type, theirs), call
