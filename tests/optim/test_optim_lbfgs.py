"""L-BFGS and the line searches against optax 0.2.8: trajectories of optax's documented
loop (``value_and_grad_from_state`` + ``update(..., value=, grad=, value_fn=)``) agree to
1e-10 over 20 steps on Rosenbrock, a convex quadratic and a logistic regression (dict
parameters) under ``jit`` in ``lax.fori_loop`` / ``lax.while_loop``; states move between
the libraries both ways; convergence on Rosenbrock in optax's number of steps; ``vmap``
over starting points; float32 parameters; signatures, state classes and argument errors.
Trajectories marked slow (``-m slow``) add problems and settings of the same kinds.

optax's L-BFGS code fails under strict dtype promotion (int32 + int64 counters), so its
runs are traced under ``jax.numpy_dtype_promotion("standard")``; funcnet's run strict.
"""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._contrib_calls import namespace
from tests.optim._lbfgs_cases import (
    PROBLEMS, QUAD_START, ROSEN_START, flat, plain_loop, quadratic, rosenbrock,
    trajectory)

optax = pytest.importorskip("optax")

STEPS = 20
NAMES = ["lbfgs", "scale_by_lbfgs", "scale_by_zoom_linesearch",
         "scale_by_backtracking_linesearch", "value_and_grad_from_state"]
STATES = ["ScaleByLBFGSState", "ScaleByZoomLinesearchState", "ZoomLinesearchInfo",
          "ScaleByBacktrackingLinesearchState", "BacktrackingLinesearchInfo"]


def _lib_call(lib, call):
    return eval(call, namespace(lib))  # noqa: S307


def _run(lib, fn, *args):
    if lib is optax:
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args)
    return fn(*args)


def _close(a, b, tol=1e-10):
    np.testing.assert_allclose(flat(a), flat(b), rtol=tol, atol=tol)


# (call, problem, loop): the loop "fori"/"while" is optax's documented one (the
# line search's stored value and gradient reused); "plain" uses jax.value_and_grad. The
# slow ones add problems and settings that the others cover in kind.
SLOW = pytest.mark.slow
TRAJECTORIES = [
    ("lbfgs()", "rosenbrock", "fori"),
    ("lbfgs(memory_size=4, linesearch=scale_by_backtracking_linesearch(15, 1e-3, 0.5, 2.0,"
     " 2.0, 1e-12, 1e-12, True))", "logreg", "while"),
    ("chain(sgd(1.0), scale_by_backtracking_linesearch(15))", "logreg", "plain"),
    ("lbfgs(learning_rate=0.05, linesearch=None)", "quadratic", "plain"),
    pytest.param("lbfgs()", "quadratic", "while", marks=SLOW),
    pytest.param("lbfgs()", "logreg", "fori", marks=SLOW),
    pytest.param("lbfgs(None, 3, False)", "rosenbrock", "while", marks=SLOW),
    pytest.param("lbfgs(linesearch=scale_by_zoom_linesearch(8, 2.0, 0.0, 3.0, 1e-3, 0.5, None,"
                 " 1e-4, 'one'))", "logreg", "fori", marks=SLOW),
    pytest.param("lbfgs(linesearch=scale_by_backtracking_linesearch(20, store_grad=True))",
                 "rosenbrock", "fori", marks=SLOW),
    pytest.param("chain(sgd(1.0), scale_by_zoom_linesearch(15))", "quadratic", "fori",
                 marks=SLOW),
    pytest.param("lbfgs(1e-3, 5, False, None)", "rosenbrock", "plain", marks=SLOW),
]
ROSEN_STEPS = 45       # optax reaches (1, 1, 1) to 1e-6 at step 44; chaos grows from there


@functools.lru_cache(maxsize=None)
def _trajectory(lib, call, problem, loop):
    f, p0 = PROBLEMS[problem]
    opt = _lib_call(lib, call)
    n = ROSEN_STEPS if problem == "rosenbrock" else STEPS
    if loop == "plain":
        run = jax.jit(lambda p: plain_loop(opt, f, p, n, apply_updates=lib.apply_updates))
    else:
        run = jax.jit(lambda p: trajectory(lib, opt, f, p, n, loop=loop))
    return _run(lib, run, p0)


def _first(out, n=STEPS):
    """The first ``n`` steps of a trajectory's history and its final state."""
    hist, state = out
    return jax.tree_util.tree_map(lambda h: h[:n], hist), state


@pytest.mark.parametrize("call,problem,loop", TRAJECTORIES)
def test_trajectory_and_state_are_optax(call, problem, loop):
    ours, theirs = _trajectory(optim, call, problem, loop), _trajectory(optax, call, problem,
                                                                        loop)
    if loop == "plain":
        _close(ours, theirs)                        # the last params and the state
    else:
        _close(_first(ours)[0], _first(theirs)[0])  # the params of the first 20 steps
        if problem != "rosenbrock":                 # its 45th state's memory: differences
            _close(ours[1], theirs[1])              # of iterates equal to 1e-9 only
    assert [type(s).__name__ for s in ours[-1]] == [type(s).__name__ for s in theirs[-1]]
    assert [jnp.result_type(x) for x in jax.tree_util.tree_leaves(ours[-1])] == \
        [jnp.result_type(x) for x in jax.tree_util.tree_leaves(theirs[-1])]


def test_initial_states_have_optax_classes_fields_and_dtypes():
    def layout(state):
        parts = state if type(state) is tuple else (state,)
        leaves = jax.tree_util.tree_leaves(state)
        return ([(type(s).__name__, getattr(s, "_fields", ())) for s in parts],
                [(jnp.result_type(x), np.shape(x)) for x in leaves])
    for call in ("lbfgs()", "lbfgs(0.1, 3, False, None)",
                 "lbfgs(linesearch=scale_by_backtracking_linesearch(5, store_grad=True))",
                 "scale_by_backtracking_linesearch(5)"):
        ours, theirs = (_lib_call(lib, call).init(QUAD_START) for lib in (optim, optax))
        assert layout(ours) == layout(theirs), call
    assert optim.scale_by_backtracking_linesearch(5).init(QUAD_START).grad is None


def _stepper(lib, opt, f, traces=None):
    """A jitted step of ``lib``'s ``opt`` on ``f``; each trace appends to ``traces``."""
    vg = lib.value_and_grad_from_state(f)

    @jax.jit
    def step(p, s):
        if traces is not None:
            traces.append(None)
        value, grad = vg(p, state=s)
        u, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
        return lib.apply_updates(p, u), s
    return step


def test_states_move_between_libraries():
    """After 3 steps in each library, a step of optax from funcnet's state and a step of
    funcnet from optax's state agree (to 1e-10, the states being equal); funcnet keeps
    optax's classes. optax's line searches rebuild their state in the structure of the
    given one (a tree_map over both), so a funcnet state goes to optax leaf for leaf."""
    call = "lbfgs(memory_size=3)"
    ours, theirs = _lib_call(optim, call), _lib_call(optax, call)
    traces = []
    step_f = _stepper(optim, ours, quadratic, traces)
    step_o = _stepper(optax, theirs, quadratic)
    p, s = QUAD_START, ours.init(QUAD_START)
    q, t = QUAD_START, theirs.init(QUAD_START)
    for _ in range(3):
        p, s = step_f(p, s)
        q, t = _run(optax, step_o, q, t)
    _close((p, s), (q, t))
    assert len(traces) == 1        # init's types are the updated state's: no retrace
    as_optax = jax.tree_util.tree_structure(t).unflatten(jax.tree_util.tree_leaves(s))
    from_ours = _run(optax, step_o, p, as_optax)      # funcnet state -> optax
    from_theirs = step_f(q, t)                        # optax state -> funcnet
    _close(from_ours, from_theirs)
    assert jax.tree_util.tree_structure(from_theirs[1]) == jax.tree_util.tree_structure(t)
    assert quadratic(from_ours[0]) < quadratic(p)


def test_converges_on_rosenbrock_within_optax_steps():
    """Both reach the minimum (1, 1, 1) to 1e-6 and stay; funcnet no later than optax."""
    first = []
    for lib in (optim, optax):
        hist, _ = _trajectory(lib, "lbfgs()", "rosenbrock", "fori")
        x = np.concatenate([np.asarray(hist[k]).reshape(ROSEN_STEPS, -1) for k in "ab"], 1)
        ok = np.abs(x - 1.0).max(axis=1) < 1e-6
        assert ok.any() and ok[ok.argmax():].all(), lib.__name__
        first.append(int(ok.argmax()))
    assert first[0] <= first[1]
    assert abs(float(rosenbrock({"a": x[-1, :2], "b": x[-1, 2:]}))) < 1e-12


def test_vmap_over_starting_points():
    """Three Rosenbrock starts in one vmapped run: the first is the unbatched run (as
    optax's), each run descends."""
    starts = {"a": jnp.stack([ROSEN_START["a"], jnp.array([0.0, 0.0]), jnp.array([2.0, -1.0])]),
              "b": jnp.stack([ROSEN_START["b"], jnp.array([0.0]), jnp.array([1.5])])}
    run = jax.jit(jax.vmap(lambda p: trajectory(optim, optim.lbfgs(), rosenbrock, p,
                                                ROSEN_STEPS)[0]))
    hist = run(starts)
    _close({k: v[0, :STEPS] for k, v in hist.items()},
           _first(_trajectory(optax, "lbfgs()", "rosenbrock", "fori"))[0])
    for i in range(3):
        end = {k: v[i, -1] for k, v in hist.items()}
        assert rosenbrock(end) < 1e-3 * rosenbrock({k: v[i] for k, v in starts.items()})


def test_signatures_and_state_classes_are_optax():
    def sig(f):
        return [(p.name, p.kind, p.default if not hasattr(p.default, "init") else "opt")
                for p in inspect.signature(f).parameters.values()]
    for name in NAMES:
        assert sig(getattr(optim, name)) == sig(getattr(optax, name)), name
        assert name in optim.__all__
    from optax._src import linesearch   # BacktrackingLinesearchInfo is not exported
    for name in STATES:
        ours, theirs = getattr(optim, name), getattr(linesearch, name, None) or \
            getattr(optax, name)
        assert ours._fields == theirs._fields, name
        assert name in optim.__all__
    assert optim.describe(optim.lbfgs()).startswith(
        "lbfgs(learning_rate=None, memory_size=10, scale_init_precond=True, "
        "linesearch=scale_by_zoom_linesearch(max_linesearch_steps=20")


P = {"w": jnp.ones(2)}
LS = optim.scale_by_zoom_linesearch(3)


def _f(p):
    return jnp.sum(p["w"] ** 2)


BAD_ARGS = [
    (lambda: optim.scale_by_lbfgs(0), ValueError, "scale_by_lbfgs: memory_size must be >= 1"),
    (lambda: optim.lbfgs(memory_size=2.0), TypeError, "lbfgs: scale_by_lbfgs: memory_size"),
    (lambda: optim.scale_by_lbfgs(scale_init_precond=1), TypeError, "scale_init_precond"),
    (lambda: optim.scale_by_zoom_linesearch(0), ValueError,
     "scale_by_zoom_linesearch: max_linesearch_steps must be >= 1"),
    (lambda: optim.scale_by_zoom_linesearch(5, tol=-1e-3), ValueError,
     "scale_by_zoom_linesearch: tol"),
    (lambda: optim.scale_by_zoom_linesearch(5, curv_rtol=-0.1), ValueError, "curv_rtol"),
    (lambda: optim.scale_by_zoom_linesearch(5, approx_dec_rtol=-1.0), ValueError,
     "approx_dec_rtol"),
    (lambda: optim.scale_by_zoom_linesearch(5, max_learning_rate=-1.0), ValueError,
     "max_learning_rate"),
    (lambda: optim.scale_by_zoom_linesearch(5, increase_factor=0.5), ValueError,
     "increase_factor"),
    (lambda: optim.scale_by_zoom_linesearch(5, initial_guess_strategy="two"), ValueError,
     "initial_guess_strategy must be one of 'one', 'keep'"),
    (lambda: optim.scale_by_backtracking_linesearch(-1), ValueError,
     "scale_by_backtracking_linesearch: max_backtracking_steps must be >= 0"),
    (lambda: optim.scale_by_backtracking_linesearch(5.0), TypeError, "max_backtracking_steps"),
    (lambda: optim.scale_by_backtracking_linesearch(5, atol=-1.0), ValueError, "atol"),
    (lambda: optim.scale_by_backtracking_linesearch(5, rtol=-1.0), ValueError, "rtol"),
    (lambda: optim.scale_by_backtracking_linesearch(5, slope_rtol=-1.0), ValueError,
     "slope_rtol"),
    (lambda: optim.scale_by_backtracking_linesearch(5, decrease_factor=0.0), ValueError,
     "decrease_factor"),
    (lambda: optim.scale_by_backtracking_linesearch(5, store_grad=None), TypeError,
     "store_grad must be a bool"),
    (lambda: optim.lbfgs(linesearch="zoom"), TypeError, "lbfgs: linesearch must be an optimizer"),
    (lambda: optim.lbfgs(learning_rate=-1.0), ValueError, "learning_rate"),
    (lambda: optim.value_and_grad_from_state(3), TypeError,
     "value_and_grad_from_state: value_fn must be callable"),
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("i", range(len(BAD_ARGS)))
def test_bad_constructor_arguments(i, jit):
    build, error, match = BAD_ARGS[i]
    with pytest.raises(error, match=match):
        jax.jit(lambda x: (build(), x)[1])(0.0) if jit else build()


def test_float32_parameters_keep_their_dtypes_in_a_jitted_loop():
    """float32 params under x64 and strict promotion: the fori_loop carry is stable
    (updates, params and memories float32; rho float64 as optax's jnp.zeros(m))."""
    p32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), QUAD_START)

    def f(p):
        return quadratic(jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), p)
                         ).astype(jnp.float32)

    hist, state = jax.jit(lambda p: trajectory(optim, optim.lbfgs(), f, p, 4))(p32)
    assert {x.dtype for x in jax.tree_util.tree_leaves(hist)} == {jnp.dtype(jnp.float32)}
    assert state[0].weights_memory.dtype == jnp.float64
    assert state[2].learning_rate.dtype == jnp.float32
    assert f(jax.tree_util.tree_map(lambda x: x[-1], hist)) < f(p32) - 1.0


def _update(opt, **kw):
    return opt.update(P, opt.init(P), **kw)


BAD_UPDATES = [
    (dict(value=1.0, grad=P, value_fn=_f), TypeError, "update needs params="),
    (dict(params=P, grad=P, value_fn=_f), TypeError, "update needs value= .the loss"),
    (dict(params=P, value=1.0, value_fn=_f), TypeError, "update needs grad="),
    (dict(params=P, value=1.0, grad=P), TypeError, "update needs value_fn="),
    (dict(params=P, value=1.0, grad=P, value_fn=3), TypeError, "value_fn must be callable"),
    (dict(params=P, value=1.0, grad=P, value_fn=_f, batch=2), TypeError,
     r"keyword arguments \['batch'\] that value_fn does not take"),
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("i", range(len(BAD_UPDATES)))
def test_update_without_its_arguments_names_them(i, jit):
    kwargs, error, match = BAD_UPDATES[i]
    opts = [(LS, "scale_by_zoom_linesearch"),
            (optim.scale_by_backtracking_linesearch(3), "backtracking")]
    if jit:     # eagerly, lbfgs' first block would run (compile) before the error
        opts.append((optim.lbfgs(linesearch=LS), "lbfgs"))
    for opt, name in opts:
        call = (lambda: jax.jit(lambda: _update(opt, **kwargs))()) if jit else \
            (lambda: _update(opt, **kwargs))
        if name == "lbfgs" and "params" not in kwargs:
            match_ = "scale_by_lbfgs: update needs params"
        else:
            match_ = match
        with pytest.raises(error, match=f"{name if name != 'lbfgs' else ''}.*{match_}"):
            call()


def test_wrong_states_are_refused():
    with pytest.raises(ValueError, match="scale_by_zoom_linesearch: opt_state is"):
        LS.update(P, optim.adam(1.0).init(P), P, value=1.0, grad=P, value_fn=_f)
    with pytest.raises(ValueError, match="scale_by_lbfgs: state.weights_memory has shape "
                                         r"\(3,\), expected \(4,\)"):
        optim.scale_by_lbfgs(4).update(P, optim.scale_by_lbfgs(3).init(P), P)
    vg = optim.value_and_grad_from_state(_f)
    with pytest.raises(ValueError, match="value_and_grad_from_state: .* 'value' .* none"):
        vg(P, state=optim.adam(1.0).init(P))
    two = optim.chain(LS, LS).init(P)
    with pytest.raises(ValueError, match="found 2 of them"):
        jax.jit(lambda p: vg(p, state=two))(P)
    no_grad = optim.scale_by_backtracking_linesearch(3).init(P)
    with pytest.raises(ValueError, match="'grad'.*found None"):
        vg(P, state=no_grad)
