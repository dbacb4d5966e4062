"""Round 6's ports of ``optax.contrib`` against optax 0.2.8: the call strings of
``_contrib2_calls.CALLS`` give optax's trajectory in float64 over 8 steps (1e-12;
MADGRAD 1e-6, see ``_contrib2_calls.rtol``) and their states move between the libraries
in both directions; signatures, state classes and initial state dtypes are optax's. The
runs are eager (many small programs compile slower than they run op by op).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._both_ways import both_ways, close as _close, flat as _flat
from tests.optim._contrib2_calls import CALLS, needs_value, rtol
from tests.optim._contrib_calls import PARAMS, namespace

optax = pytest.importorskip("optax")
import optax.contrib  # noqa: E402


@functools.lru_cache(maxsize=None)
def _run(call):
    f = eval(call, namespace(optim))  # noqa: S307
    o = eval(call, namespace(optax, optax.contrib))  # noqa: S307
    # optax's LDoG multiplies (1,) by each leaf: both_ways lets optax broadcast ranks
    return both_ways(f, o, needs_value(call), convert_state=False)


@pytest.mark.parametrize("call", CALLS)
def test_call_gives_optax_trajectory_and_state_moves_between_libraries(call):
    (pf, sf), (po, so), (u1, s1), (u2, s2) = _run(call)
    assert not np.allclose(_flat(po), _flat(PARAMS))                 # it moved
    assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(pf))
    _close(pf, po, rtol(call))
    _close(sf, so, rtol(call))
    # funcnet continues optax's state in optax's classes (a lax.scan carry stays stable)
    assert jax.tree_util.tree_structure(s2) == jax.tree_util.tree_structure(so)
    _close(u1, u2, rtol(call))
    _close(s1, s2, rtol(call))


SOPHIA_CALLS = [   # update(..., obj_fn=loss): Hutchinson's estimator's random signs
    # one compiled program each (a few seconds): every argument in one call
    "sophia(SCHED, 0.9, 0.95, 1e-3, 0.01, {'w': True, 'b': False, 't': True}, 0.5, 0.8, 2,"
    " hutchinson_estimator_diag_hessian(jax.random.key(3)), jnp.float32)",
]


def _sophia_runs(call):
    """Both libraries' 4 steps and each one's next update from the other's state (one
    program: Hutchinson's lax.cond and JVP run slowly op by op)."""
    from tests.optim._contrib_calls import loss
    runs = []
    for lib, ns in ((optim, namespace(optim)), (optax, namespace(optax, optax.contrib))):
        opt, p = eval(call, ns), PARAMS  # noqa: S307
        with jax.numpy_dtype_promotion("standard" if lib is optax else "strict"):
            def step(carry, _, opt=opt, lib=lib):
                p, s = carry
                u, s = opt.update(jax.grad(loss)(p), s, p, obj_fn=loss)
                return (lib.apply_updates(p, u), s), None

            p, s = jax.lax.scan(step, (p, opt.init(p)), length=4)[0]
        runs.append((opt, p, s))
    (f, pf, sf), (o, po, so) = runs
    g = jax.grad(loss)(po)
    # optax rebuilds the estimator's state in its class inside a lax.cond: a funcnet
    # state goes to optax converted, leaf for leaf
    given = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(so),
                                         jax.tree_util.tree_leaves(sf))
    with jax.numpy_dtype_promotion("standard"):
        to_optax = o.update(g, given, po, obj_fn=loss)
    return (pf, sf), (po, so), to_optax, f.update(g, so, po, obj_fn=loss)


@pytest.mark.parametrize("call", SOPHIA_CALLS)
def test_sophia_gives_optax_trajectory_and_state_moves_between_libraries(call):
    ours, theirs, to_optax, to_funcnet = jax.jit(lambda: _sophia_runs(call))()
    assert not np.allclose(_flat(theirs[0]), _flat(PARAMS))
    _close(ours, theirs, 1e-12)
    assert jax.tree_util.tree_structure(to_funcnet[1]) == jax.tree_util.tree_structure(
        theirs[1])
    _close(to_optax, to_funcnet, 1e-12)


NAMES = ["dog", "dowg", "cocob", "dadapt_adamw", "mechanize", "momo", "momo_adam", "madgrad",
         "acprop", "scale_by_dog", "scale_by_dowg", "scale_by_cocob", "scale_by_madgrad",
         "scale_by_acprop", "scale_by_distance_over_gradients", "sophia", "scale_by_sophia",
         "hutchinson_estimator_diag_hessian"]
STATES = ["DoGState", "DoWGState", "COCOBState", "DAdaptAdamWState", "MechanicState",
          "MomoState", "MomoAdamState", "MadgradState", "ScaleByDistanceOverGradientsState",
          "SophiaState", "HutchinsonState"]


def _optax_name(name):
    from optax._src import transform      # ScaleByDistanceOverGradientsState
    from optax.contrib import _dog, _sophia   # scale_by_dog(w), scale_by_sophia: not
    for where in (optax.contrib, optax, _dog, _sophia, transform):     # exported by optax
        if hasattr(where, name):
            return getattr(where, name)
    raise AttributeError(name)


def test_signatures_and_state_classes_are_optax():
    """Same parameters, order, kinds and defaults; same state fields; exported."""
    import inspect

    def sig(f):      # a default optimizer (Sophia's estimator) as "an optimizer"
        return [(p.name, p.kind, "optimizer" if isinstance(p.default, tuple)
                 and hasattr(p.default, "update") else p.default)
                for p in inspect.signature(f).parameters.values()]

    for name in NAMES:
        assert sig(getattr(optim, name)) == sig(_optax_name(name)), name
        assert name in optim.__all__
    for name in STATES:
        ours, theirs = getattr(optim, name), _optax_name(name)
        assert (ours._fields, ours._field_defaults) == (theirs._fields,
                                                        theirs._field_defaults), name
        assert name in optim.__all__


def test_initial_states_have_optax_dtypes_for_mixed_params():
    """float32 and float64 leaves: scalars of the lowest dtype, copies of the params in
    theirs (LDoG's in float32), int32 counts, as optax's."""
    params = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.ones(3)}
    for call in ("dog()", "dowg()", "scale_by_distance_over_gradients()", "cocob()",
                 "mechanize(sgd(0.1))", "dadapt_adamw()", "madgrad(0.1)", "momo()",
                 "momo_adam()", "acprop(0.1)"):
        ours = jax.eval_shape(eval(call, namespace(optim)).init, params)  # noqa: S307
        with jax.numpy_dtype_promotion("standard"):
            theirs = jax.eval_shape(eval(call, namespace(optax, optax.contrib)).init,  # noqa: S307
                                    params)
        assert ours == theirs, call           # shapes and dtypes, leaf for leaf


def test_every_call_is_described_by_its_own_name_and_arguments():
    """optim.describe (fit's run fingerprint): the call that built it, stably."""
    for call in CALLS + SOPHIA_CALLS + ["sophia(0.05)"]:
        text = optim.describe(eval(call, namespace(optim)))  # noqa: S307
        assert text is not None and text.startswith(call.split("(")[0] + "("), (call, text)
        assert optim.describe(eval(call, namespace(optim))) == text, call  # noqa: S307
    assert "base_optimizer=adam(learning_rate=1.0" in optim.describe(
        optim.mechanize(optim.adam(1.0)))
    assert "init_step=('distance', 0.1)" in optim.describe(optim.dog(0.5, ("distance", 0.1)))
    assert "hessian_diagonal_fn=hutchinson_estimator_diag_hessian(random_seed=None)" in (
        optim.describe(optim.sophia(0.1)))
