"""Round 6's wrappers and blocks against optax 0.2.8: the call strings of
``_wrappers2_calls.CALLS`` give optax's trajectory in float64 over 8 steps (1e-12) and
their states move between the libraries in both directions (funcnet continues optax's
state in optax's classes; optax continues funcnet's state given in its classes); the
signatures and state classes are optax's; the tree helpers equal optax's. Eager runs
(many small programs compile slower than they run op by op).
"""
import enum
import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._both_ways import both_ways, close as _close, flat as _real
from tests.optim._contrib_calls import PARAMS, namespace
from tests.optim._wrappers2_calls import CALLS, NORM, needs_value

optax = pytest.importorskip("optax")
import optax.contrib  # noqa: E402


def _flat(tree):
    """A complex leaf as its real and imaginary parts (round 5's ``_close`` takes reals)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.stack([x.real, x.imag]) if jnp.iscomplexobj(x) else x, tree)


def _build(call, *libs):
    with warnings.catch_warnings():      # inject_stateful_hyperparams is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return eval(call, {**namespace(*libs), "NORM": NORM})  # noqa: S307


@functools.lru_cache(maxsize=None)
def _run(call):
    f, o = _build(call, optim), _build(call, optax, optax.contrib)
    if "conditionally" in call:   # a lax.cond traced eagerly at each step: jit it once
        f, o = (t._replace(update=jax.jit(t.update)) for t in (f, o))
    return both_ways(f, o, needs_value(call))


@pytest.mark.parametrize("call", CALLS)
def test_call_gives_optax_trajectory_and_state_moves_between_libraries(call):
    (pf, sf), (po, so), (u1, s1), (u2, s2) = _run(call)
    assert not np.allclose(_real(po), _real(PARAMS))                 # it moved
    assert {x.dtype for x in jax.tree_util.tree_leaves(pf)} == {jnp.dtype(jnp.float64)}
    assert len(jax.tree_util.tree_leaves(sf)) == len(jax.tree_util.tree_leaves(so))
    assert jax.tree_util.tree_structure(s2) == jax.tree_util.tree_structure(so)  # optax's classes
    _close((pf, u1, s1), (po, u2, s2))   # trajectory, then one step from the other's state


NAMES = ["conditionally_transform", "conditionally_mask", "named_chain", "flatten",
         "periodic_update", "inject_stateful_hyperparams", "with_extra_args_support",
         "stateless", "stateless_with_tree_map", "init_empty_state", "tree_map_params",
         "per_example_global_norm_clip", "per_example_layer_norm_clip",
         "normalize_by_update_norm", "scale_by_param_block_norm", "snapshot",
         "measure_with_ema", "monitor", "bias_correction", "update_moment",
         "update_moment_per_elem_norm", "update_infinity_moment", "safe_norm",
         "safe_root_mean_squares", "safe_increment", "safe_int32_increment", "microbatch"]
STATES = ["ConditionallyTransformState", "ConditionallyMaskState", "SnapshotState",
          "MonitorState"]


def test_signatures_and_state_classes_are_optax():
    def sig(f):
        f = getattr(f, "__wrapped__", f)          # optax's jitted bias_correction
        def default(d):
            return d.name if isinstance(d, enum.Enum) else getattr(d, "__name__", d)
        return [(p.name, p.kind, default(p.default))
                for p in inspect.signature(f).parameters.values()]
    for name in NAMES:
        assert sig(getattr(optim, name)) == sig(getattr(optax, name)), name
        assert name in optim.__all__, name
    for name in STATES:
        ours, theirs = getattr(optim, name), getattr(optax, name)
        assert ours._fields == theirs._fields, name
        assert name in optim.__all__, name
    for name in ("ScaleState", "ClipState", "ClipByGlobalNormState", "AddDecayedWeightsState"):
        assert getattr(optim, name) is optim.EmptyState
        assert getattr(optax, name)._fields == ()
    for name in ("GradientTransformation", "GradientTransformationExtraArgs", "Params",
                 "Updates", "OptState", "Schedule", "ScalarOrSchedule", "MaskOrFn",
                 "TransformInitFn", "TransformUpdateFn", "TransformUpdateExtraArgsFn",
                 "ShouldSkipUpdateFunction", "WrappedSchedule", "microbatching"):
        assert hasattr(optim, name) and hasattr(optax, name), name
    assert optim.GradientTransformation is optim.Optimizer
    assert isinstance(optim.GradientTransformation(optim.init_empty_state, None), tuple)


def test_init_states_have_optax_structure_and_dtypes():
    params = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.ones(3)}
    for call in CALLS[:7]:
        ours = _build(call, optim).init(params)
        with jax.numpy_dtype_promotion("standard"):
            theirs = _build(call, optax, optax.contrib).init(params)
        assert (jax.tree_util.tree_map(jnp.result_type, ours)
                == jax.tree_util.tree_map(jnp.result_type, theirs)), call


_G = {"r": jnp.array([[0.5, -2.0], [3.0, 0.0]]), "c": jnp.array([1.0 + 2.0j, -0.5j]),
      "n": None}
_M = {"r": jnp.array([[0.1, 0.2], [0.3, 0.4]]), "c": jnp.array([0.2 + 0.1j, 0.3 + 0.0j]),
      "n": None}
_X = jnp.array([[3.0, -4.0, 0.0], [1.0, 2.0, -2.0]])
_NORMS = (({}, 10.0), ({"axis": 1}, 2.5), ({"axis": 0, "keepdims": True}, 2.5),
          ({"ord": 1, "axis": 1}, 0.0), ({"ord": "fro"}, 0.0), ({"ord": jnp.inf, "axis": 0}, 2.5))
_MOMENTS = (("update_moment", (0.9, 2)), ("update_moment", (0.8, 1)),
            ("update_moment_per_elem_norm", (0.9, 2)),
            ("update_moment_per_elem_norm", (0.7, 3)),
            ("update_infinity_moment", (0.9, 1e-3)))


def _helpers(lib):
    """Every tree helper of ``lib`` on the inputs above, in one compiled function."""
    moments = [{k: v for k, v in getattr(lib, name)(_G, _M, *args).items() if v is not None}
               for name, args in _MOMENTS]
    corrected = lib.bias_correction(_M, 0.9, jnp.asarray(3, jnp.int32))
    norms = [lib.safe_norm(_X, floor, **kw) for kw, floor in _NORMS]
    rms = [lib.safe_root_mean_squares(_X, floor) for floor in (0.0, 1.0, 5.0)]
    zero = jnp.zeros((3, 4))
    grads = [jax.grad(fn)(zero) for floor in (0.0, 3.0) for fn in (
        lambda v: lib.safe_norm(v, floor), lambda v: lib.safe_norm(v, floor, axis=1).sum(),
        lambda v: lib.safe_root_mean_squares(v, floor))]
    return moments, corrected, norms, rms, grads


def test_tree_helpers_equal_optax():
    """bias_correction, the three moment updates (real and complex leaves, None leaves
    kept), safe_norm / safe_root_mean_squares and their gradients at 0 (optax's tests:
    0, not NaN), and the result dtypes."""
    for name, args in _MOMENTS:
        assert getattr(optim, name)(_G, _M, *args)["n"] is None
    ours = jax.jit(lambda: _helpers(optim))()
    with jax.numpy_dtype_promotion("standard"):
        theirs = jax.jit(lambda: _helpers(optax))()
    assert jax.tree_util.tree_map(jnp.shape, ours) == jax.tree_util.tree_map(jnp.shape, theirs)
    assert jax.tree_util.tree_map(jnp.result_type, ours) == jax.tree_util.tree_map(
        jnp.result_type, theirs)
    _close(_flat(ours), _flat(theirs))
    for g in ours[-1]:
        np.testing.assert_array_equal(g, np.zeros((3, 4)))


def test_tree_map_params_equals_optax():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    specs = {"w": "W", "b": "B"}
    for call in ("adam(0.1)", "chain(clip_by_global_norm(1.0), sgd(0.1, 0.9))",
                 "named_chain(('a', scale_by_adam()), ('b', ema(0.9)))",
                 "adamw(0.1, mask={'w': True, 'b': False})",      # masked: optax's case
                 "multi_transform({'x': sgd(0.1, 0.9), 'y': adam(0.1)}, {'w': 'x', 'b': 'y'})"):
        f, o = _build(call, optim), _build(call, optax)
        ours = optim.tree_map_params(f, lambda p: p + 1, f.init(params))
        theirs = optax.tree_map_params(o, lambda p: p + 1, o.init(params))
        _close(ours, theirs)
        if "mask" in call or "multi" in call:
            continue
        ours = optim.tree_map_params(f, lambda p, s: s, f.init(params), specs,
                                     transform_non_params=lambda _: None)
        theirs = optax.tree_map_params(o, lambda p, s: s, o.init(params), specs,
                                       transform_non_params=lambda _: None)
        assert jax.tree_util.tree_leaves(ours) == jax.tree_util.tree_leaves(theirs), call
        assert "W" in jax.tree_util.tree_leaves(ours)


def _microbatched(lib, w, x, y, k):
    """optax's docstring example and every accumulation type, keyword batch arguments,
    a batch on axis 1 and an early stop, in one compiled function."""
    A = lib.microbatching.AccumulationType
    doc = lib.microbatch(lambda d: (d + 1, jnp.sum(3 * d)), argnums=0, microbatch_size=2,
                         accumulator=(A.CONCAT, A.SUM))(jnp.array([1, 2, 3, 4]))
    f = lambda w, x, y=None: {"m": jnp.mean(x @ w), "r": x @ w + y}  # noqa: E731
    out = [lib.microbatch(f, 1, 2, acc, argnames="y")(w, x, y=y) for acc in (
        {"m": A.MEAN, "r": A.CONCAT}, {"m": A.RUNNING_MEAN, "r": A.SUM})]
    out.append(lib.microbatch(f, 1, 4, {"m": A.RUNNING_MEAN, "r": A.SUM}, argnames="y",
                              num_real_microbatches=k)(w, x, y=y))
    out.append(lib.microbatch(lambda xt: jnp.sum(xt.T @ w), 0, 2, A.SUM, in_axes=1)(x.T))
    out.append(lib.microbatching.reshape_batch_axis(x, 4))
    return doc, out


def test_microbatch_equals_optax():
    args = (jnp.array([0.5, -1.0, 2.0]), jnp.arange(24.0).reshape(8, 3) / 10, jnp.arange(8.0),
            jnp.asarray(1))
    ours = jax.jit(functools.partial(_microbatched, optim))(*args)
    with jax.numpy_dtype_promotion("standard"):
        theirs = jax.jit(functools.partial(_microbatched, optax))(*args)
    assert jax.tree_util.tree_map(jnp.result_type, ours) == jax.tree_util.tree_map(
        jnp.result_type, theirs)
    _close(ours, theirs)
    np.testing.assert_array_equal(ours[0][0], [2, 3, 4, 5])
    assert optim.microbatch(jnp.sin, 0, None) is jnp.sin
