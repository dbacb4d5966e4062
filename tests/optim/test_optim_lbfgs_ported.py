"""The cases of optax 0.2.8's own tests of these names (``optax/_src/linesearch_test.py``,
``alias_test.py``'s ``LBFGSTest``), rewritten here: their problems, inputs and expected
values; each also checks funcnet's step against optax's where the case is a single
update.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._lbfgs_cases import flat

optax = pytest.importorskip("optax")


def _std():
    return jax.numpy_dtype_promotion("standard")


# ------------------------------------------------------------- test problems (optax's)


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def himmelblau(x):
    return (x[0] ** 2 + x[1] - 11.0) ** 2 + (x[0] + x[1] ** 2 - 7.0) ** 2


def matyas(x):
    return 0.26 * (x[0] ** 2 + x[1] ** 2) - 0.48 * x[0] * x[1]


def eggholder(x):
    return (-(x[1] + 47) * jnp.sin(jnp.sqrt(jnp.abs(x[0] / 2.0 + x[1] + 47.0)))
            - x[0] * jnp.sin(jnp.sqrt(jnp.abs(x[0] - (x[1] + 47.0)))))


def zakharov(x):
    s2 = jnp.sum(0.5 * jnp.arange(1, x.shape[0] + 1, dtype=x.dtype) * x)
    return jnp.sum(x ** 2) + s2 ** 2 + s2 ** 4


def _one_update(lib, opt, fn, params, updates, learning_rate=None):
    state = opt.init(params)
    if learning_rate is not None:
        state = state._replace(learning_rate=jnp.asarray(learning_rate))
    value, grad = jax.value_and_grad(fn)(params)
    updates, state = opt.update(updates, state, params, value=value, grad=grad, value_fn=fn)
    return lib.apply_updates(params, updates), state


# ----------------------------------------------------------------- backtracking


SLOW = pytest.mark.slow


@pytest.mark.parametrize("problem,shape", [
    (rosenbrock, (16,)), pytest.param(himmelblau, (2,), marks=SLOW),
    pytest.param(matyas, (2,), marks=SLOW), pytest.param(eggholder, (2,), marks=SLOW)])
def test_backtracking_sufficient_decrease(problem, shape):
    """optax's test_linesearch: one SGD step with the search ends with sufficient
    decrease, for several options (a few of optax's product; traced, so one program),
    as optax's step."""
    x0 = jax.random.normal(jax.random.key(0), shape)
    value, grad = jax.value_and_grad(problem)(x0)
    runs = {}
    for lib in (optim, optax):
        @jax.jit
        def run(inc, c, atol, rtol, lib=lib):
            opt = lib.chain(lib.sgd(1.0), lib.scale_by_backtracking_linesearch(
                50, slope_rtol=c, increase_factor=inc, atol=atol, rtol=rtol))
            u, s = opt.update(grad, opt.init(x0), x0, value=value, grad=grad,
                              value_fn=problem)
            return x0 + u, s[-1].learning_rate
        runs[lib] = run
    for inc, c, atol, rtol in ((1.0, 1e-4, 1e-4, 0.0), (1.5, 0.0, 0.0, 1e-4),
                               (math.inf, 1e-4, 0.0, 0.0)):
        args = [jnp.asarray(a) for a in (inc, c, atol, rtol)]
        (x1, lr), theirs = runs[optim](*args), _run_std(runs[optax], *args)
        np.testing.assert_allclose(flat((x1, lr)), flat(theirs), rtol=1e-12, atol=1e-14)
        assert problem(x1) <= (1 + rtol) * value + c * lr * -jnp.sum(grad * grad) + atol


def _run_std(fn, *args):
    with _std():
        return fn(*args)


def test_backtracking_update_stores_a_finite_value_and_descends():
    """optax's test_linesearch_update, gradient_descent_with_linesearch (sgd(10), 40
    jitted steps reach the minimum to 1e-2) and test_armijo_sgd (data as extra args)."""
    fun = lambda x: jnp.sum(x ** 2)                                       # noqa: E731
    opt = optim.scale_by_backtracking_linesearch(max_backtracking_steps=5)
    state = opt.init(jnp.zeros(2))
    assert jnp.isinf(state.value)
    _, state = jax.jit(lambda s: opt.update(jnp.zeros(2), s, jnp.zeros(2), value=0.0,
                                            grad=jnp.zeros(2), value_fn=fun))(state)
    assert jnp.isfinite(state.value)

    target = jnp.array([1.0, -1.0, 1.0])
    fn = lambda p: jnp.sum((p - target) ** 2)                             # noqa: E731
    solver = optim.chain(optim.sgd(10.0), optim.scale_by_backtracking_linesearch(15))

    def body(_, carry):
        p, s = carry
        v, g = jax.value_and_grad(fn)(p)
        u, s = solver.update(g, s, p, value=v, grad=g, value_fn=fn)
        return optim.apply_updates(p, u), s

    p0 = jnp.array([-1.0, 10.0, 1.0])
    p, _ = jax.jit(lambda p: jax.lax.fori_loop(0, 40, body, (p, solver.init(p))))(p0)
    np.testing.assert_allclose(p, target, atol=1e-2, rtol=1e-2)


def test_armijo_sgd_with_data_as_extra_arguments():
    def fn(params, x, y):
        return jnp.sum((x @ params - y) ** 2)

    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    xs = jax.random.normal(kx, (2, 16, 2))
    target = jax.random.normal(kp, (2,))
    ys = xs @ target + 1e-3 * jax.random.normal(ky, (2, 16))
    solver = optim.chain(optim.sgd(1.0), optim.scale_by_backtracking_linesearch(15))

    @jax.jit
    def step(p, s, x, y):
        v, g = jax.value_and_grad(fn)(p, x, y)
        u, s = solver.update(g, s, p, value=v, grad=g, value_fn=fn, x=x, y=y)
        return optim.apply_updates(p, u), s

    p, s = jnp.zeros(2), solver.init(jnp.zeros(2))
    for i in range(10):
        p, s = step(p, s, xs[i % 2], ys[i % 2])
    np.testing.assert_allclose(p, target, atol=5e-2, rtol=5e-2)


def test_recycling_value_and_grad_skips_the_function():
    """optax's test_recycling_value_and_grad / test_value_and_grad_from_state: after the
    first step the stored value and gradient are used (a fake function is never
    called), and 40 steps reach the minimum."""
    target = jnp.array([1.0, -1.0, 1.0])
    fn = lambda p: jnp.sum((p - target) ** 2)                             # noqa: E731
    real = optim.value_and_grad_from_state(fn)
    fake = optim.value_and_grad_from_state(lambda p: jnp.sum(p) * 0.0 + 1.0)
    solver = optim.chain(optim.sgd(0.1), optim.scale_by_backtracking_linesearch(
        15, increase_factor=1.0, slope_rtol=0.5, store_grad=True))

    def body(i, carry):
        p, s = carry
        v, g = jax.lax.cond(i > 0, lambda: fake(p, state=s), lambda: real(p, state=s))
        u, s = solver.update(g, s, p, value=v, grad=g, value_fn=fn)
        return optim.apply_updates(p, u), s

    p0 = jnp.array([1.0, 10.0, 1.0])
    p, s = jax.jit(lambda p: jax.lax.fori_loop(0, 40, body, (p, solver.init(p))))(p0)
    np.testing.assert_allclose(p, target, atol=1e-2, rtol=1e-2)
    assert fake(p, state=s)[0] != 1.0


@pytest.mark.parametrize("make", [lambda: optim.scale_by_backtracking_linesearch(5),
                                  lambda: optim.scale_by_zoom_linesearch(5)])
def test_unused_extra_arguments_raise(make):
    def value_fn(params, batch):
        return jnp.sum(params * batch)

    opt, params = make(), jnp.array([1.0, 2.0])
    with pytest.raises(TypeError, match=r"\['unused_arg'\] that value_fn does not take"):
        opt.update(jnp.array([-0.1, -0.1]), opt.init(params), params, value=3.0,
                   grad=jnp.ones(2), value_fn=value_fn, batch=jnp.ones(2), unused_arg=42)


# ------------------------------------------------------------------------- zoom


def _dot(x):
    return jnp.dot(x, x)


def _zoom_dot(lib):
    """One search on ``x.x`` from ``w`` along ``u``, hyperparameters traced (one program
    for optax's four cases; ``max_learning_rate=inf`` is no bound)."""
    @jax.jit
    def run(w, u, steps, curv_rtol, max_lr):
        opt = lib.scale_by_zoom_linesearch(steps, max_lr, curv_rtol=curv_rtol)
        return _one_update(lib, opt, _dot, w, u, 1.0)
    return run


def test_zoom_failures_on_a_quadratic():
    """optax's test_failure_descent_direction, _too_small_max_stepsize,
    _not_enough_iter (and its working case), each as optax's search."""
    e0 = jnp.array([1.0, 0.0])
    ours, theirs = _zoom_dot(optim), _zoom_dot(optax)
    cases = [(60 * e0, 18, jnp.inf), (-60 * e0, 10, 10.0), (-60 * e0, 5, jnp.inf),
             (-60 * e0, 30, jnp.inf)]
    results = []
    for w, steps, max_lr in cases:
        args = (w, e0, jnp.asarray(steps), jnp.asarray(0.5), jnp.asarray(max_lr))
        out = ours(*args)
        np.testing.assert_allclose(flat(out), flat(_run_std(theirs, *args)), rtol=1e-12,
                                   atol=1e-14)
        results.append(out)
    (_, s_up), (_, s_max), (_, s_few), (w1, s_ok) = results
    assert s_up.learning_rate < 1e-5                  # not a descent direction: no step
    assert s_max.learning_rate == 10.0                # the cap (Wolfe steps start at 30)
    assert s_few.learning_rate == 16.0 and s_few.info.curvature_error > 0.0   # 1..16 tried
    assert s_ok.learning_rate >= 30.0                 # enough steps: both conditions
    assert _dot(w1) <= 3600.0 + 1e-4 * s_ok.learning_rate * -120.0
    assert abs(jnp.dot(2 * w1, e0)) <= 0.5 * 120.0


@pytest.mark.slow
def test_zoom_edge_cases():
    """optax's test_failure_inf_value, test_high_smaller_than_low, test_failure_flat_fun."""
    def one(fn, w, u):
        out = [_run_std(_one_update, lib, lib.scale_by_zoom_linesearch(30), fn, w, u, 1.0)
               if lib is optax else _one_update(lib, lib.scale_by_zoom_linesearch(30), fn, w,
                                                u, 1.0) for lib in (optim, optax)]
        np.testing.assert_allclose(flat(out[0]), flat(out[1]), rtol=1e-12, atol=1e-14)
        return out[0][1]
    # inf/NaN values (log of a negative number): a positive step all the same
    assert one(jnp.log, jnp.asarray(1.0), jnp.asarray(-2.0)).learning_rate > 0.0
    # high < low at the first bracket (jax issue 16236): success
    s = one(lambda x: x ** 2, jnp.asarray(-1.0), jnp.asarray(1.95))
    assert s.info.decrease_error <= 0.0 and s.info.curvature_error <= 0.0
    # a very flat function stops on the interval length, with a finite step
    flat_fn = lambda x: jnp.exp(-1 / x ** 2)                              # noqa: E731
    w = jnp.asarray(-0.2)
    assert jnp.isfinite(one(flat_fn, w, -jax.grad(flat_fn)(w)).learning_rate)


def test_zoom_update_value_and_grad_in_state(capfd):
    fun = lambda x: jnp.sum(x ** 2)                                       # noqa: E731
    opt = optim.scale_by_zoom_linesearch(max_linesearch_steps=5)
    state = opt.init(jnp.zeros(2))
    assert jnp.isinf(state.value)
    x0 = jnp.array([1.0, -2.0])
    x1, state = jax.jit(lambda x: _one_update(optim, opt, fun, x, -jax.grad(fun)(x)))(x0)
    np.testing.assert_allclose(state.value, fun(x1), rtol=1e-12)
    np.testing.assert_allclose(state.grad, jax.grad(fun)(x1), rtol=1e-12)
    # verbose: a failing search says so
    loud = optim.scale_by_zoom_linesearch(3, curv_rtol=0.5, verbose=True)
    _one_update(optim, loud, _dot, jnp.array([60.0, 0.0]), jnp.array([1.0, 0.0]))
    jax.effects_barrier()
    assert "scale_by_zoom_linesearch: no step size" in capfd.readouterr().out


# ------------------------------------------------------------------------ L-BFGS


def _inverse_hessian(dws, dus, rhos, k):
    """optax's materialized L-BFGS matrix: ``P = V^T P V + rho s s^T`` from the oldest
    pair (slot ``k``) to the newest, ``P_0 = I``."""
    dws, dus, rhos = (np.roll(np.asarray(a), -k, axis=0) for a in (dws, dus, rhos))
    d = dws.shape[1]
    p = np.eye(d)
    for s, y, r in zip(dws, dus, rhos):
        v = np.eye(d) - r * np.outer(y, s)
        p = v.T @ p @ v + r * np.outer(s, s)
    return p


@pytest.mark.parametrize("tree", [pytest.param(False, marks=SLOW), True])
def test_two_loop_is_the_materialized_matrix(tree):
    from funcnet.optim.lbfgs import _two_loop
    kw, ku, kv = jax.random.split(jax.random.key(0), 3)
    m, shapes = 4, ((3, 2), (5,)) if tree else ((3,),)
    dws = tuple(jax.random.normal(k, (m, *s)) for k, s in zip(jax.random.split(kw, 2), shapes))
    dus = tuple(jax.random.normal(k, (m, *s)) for k, s in zip(jax.random.split(ku, 2), shapes))
    vec = tuple(jax.random.normal(k, s) for k, s in zip(jax.random.split(kv, 2), shapes))
    fw = np.concatenate([np.asarray(x).reshape(m, -1) for x in dws], 1)
    fu = np.concatenate([np.asarray(x).reshape(m, -1) for x in dus], 1)
    rhos = 1.0 / np.sum(fw * fu, axis=1)
    run = jax.jit(lambda i: _two_loop(vec, dws, dus, jnp.asarray(rhos), 1.0, i))
    for idx in range(m):
        np.testing.assert_allclose(flat(run(idx)), _inverse_hessian(fw, fu, rhos, idx)
                                   @ flat(vec), rtol=1e-10, atol=1e-10)


def _plain_lbfgs(fun, w, stepsize, maxiter, memory_size, scale_init_precond):
    """optax's plain L-BFGS (fixed step), in NumPy."""
    grad = jax.grad(fun)
    g = np.asarray(grad(w))
    dws, dus = [], []
    for it in range(maxiter):
        if not scale_init_precond:
            gamma = 1.0
        elif it == 0:
            gamma = min(1.0, 1.0 / np.linalg.norm(g))
        else:
            gamma = dus[-1] @ dws[-1] / (dus[-1] @ dus[-1])
        q, alphas = g.copy(), []
        for s, y in zip(dws[::-1], dus[::-1]):
            alphas.append(s @ q / (s @ y))
            q = q - alphas[-1] * y
        r = gamma * q
        for s, y, a in zip(dws, dus, alphas[::-1]):
            r = r + s * (a - (y @ r) / (s @ y))
        w_old, g_old = w, g
        w = w - stepsize * r
        g = np.asarray(grad(w))
        dws, dus = (dws + [w - w_old])[-memory_size:], (dus + [g - g_old])[-memory_size:]
    return w


@pytest.mark.parametrize("fun,x0", [
    (rosenbrock, np.zeros(2)), pytest.param(himmelblau, np.ones(2), marks=SLOW),
    pytest.param(zakharov, np.array([600.0, 700.0, 200.0, 100.0, 90.0, 1e3]), marks=SLOW)])
def test_lbfgs_without_linesearch_is_the_plain_algorithm(fun, x0):
    """optax's test_against_plain_implementation: learning rate 1e-3, memory 5, 15 steps
    (to 1e-10; Zakharov's quartic term makes these 15 steps unstable: to 1e-5 there, the
    tolerance of optax's test)."""
    tol = 1e-5 if fun is zakharov else 1e-10
    for scale_init in (True,) if fun is zakharov else (True, False):   # else overflows
        opt = optim.lbfgs(1e-3, 5, scale_init, linesearch=None)

        def body(_, carry):
            p, s = carry
            u, s = opt.update(jax.grad(fun)(p), s, p)
            return p + u, s

        x = jax.jit(lambda p: jax.lax.fori_loop(0, 15, body, (p, opt.init(p)))[0])(
            jnp.asarray(x0))
        expected = _plain_lbfgs(fun, x0, 1e-3, 15, 5, scale_init)
        assert np.isfinite(expected).all()
        np.testing.assert_allclose(x, expected, rtol=tol, atol=tol)


def _solve(opt, fun, x0, maxiter, tol):
    """optax's _run_opt: steps until the gradient norm is below ``tol``."""
    def step(carry):
        p, s, n, _ = carry
        v, g = jax.value_and_grad(fun)(p)
        g = jax.tree_util.tree_map(jnp.conj, g)
        u, s = opt.update(g, s, p, value=v, grad=g, value_fn=fun)
        return optim.apply_updates(p, u), s, n + 1, g

    def going(carry):
        return (optim.global_norm(carry[3]) >= tol) & (carry[2] < maxiter)

    return jax.jit(lambda p: jax.lax.while_loop(going, step, (p, opt.init(p), 0,
                                                              jax.grad(fun)(p)))[0])(x0)


@pytest.mark.parametrize("fun,x0,expected", [
    (rosenbrock, np.zeros(2), np.ones(2)),
    pytest.param(matyas, np.ones(2) * 6.0, np.zeros(2), marks=SLOW),
    pytest.param(himmelblau, np.array([92.0, 0.001]), None, marks=SLOW),  # bad start
    (lambda x: jnp.mean((1e4 * x) ** 2), np.ones(2), np.zeros(2)),       # steep objective
])
def test_lbfgs_minimizes(fun, x0, expected):
    """optax's test_against_scipy / bad initialization / steep objective (tol 1e-5)."""
    x = _solve(optim.lbfgs(), fun, jnp.asarray(x0), 500, 1e-5)
    if expected is not None:
        np.testing.assert_allclose(x, expected, atol=1e-5, rtol=1e-5)
    assert abs(float(fun(x))) <= 1e-5


@pytest.mark.slow
def test_lbfgs_handles_pytrees_and_complex_parameters():
    """optax's test_handling_pytrees and test_lbfgs_complex (both line searches)."""
    def f(x):
        return jnp.sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2)

    x0 = jax.random.normal(jax.random.key(0), (2, 4))
    opt = optim.lbfgs()
    arr = _solve(opt, f, x0, 3, 1e-3)
    tree = _solve(opt, lambda t: f(t[0]) + f(t[1]), (x0[0], x0[1]), 3, 1e-3)
    np.testing.assert_allclose(arr, jnp.stack(tree), rtol=5e-5, atol=5e-5)

    mat = jnp.array([[1, -2], [3, 4], [-4 + 2j, 5 - 3j], [-2 - 2j, 6]])

    def f_complex(z):
        return jnp.sum(jnp.abs(mat @ z) ** 1.5)

    z0 = jnp.array([1 - 1j, 0 + 1j])
    for ls in (optim.scale_by_backtracking_linesearch(20),
               optim.scale_by_zoom_linesearch(20, initial_guess_strategy="one")):
        opt = optim.lbfgs(linesearch=ls)
        zc = _solve(opt, f_complex, z0, 500, 1e-5)
        xr = _solve(opt, lambda x: f_complex(jax.lax.complex(x[0], x[1])),
                    jnp.stack([z0.real, z0.imag]), 500, 1e-5)
        np.testing.assert_allclose(zc, jax.lax.complex(xr[0], xr[1]), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fun,x0", [(himmelblau, np.ones(2)), (eggholder, np.ones(2) * 6.0)])
def test_lbfgs_finds_scipy_bfgs_minimizer(fun, x0):
    """optax's test_against_scipy: the same local minimizer and minimum as scipy's BFGS."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    x = _solve(optim.lbfgs(), fun, jnp.asarray(x0), 500, 1e-5)
    ref = scipy_optimize.minimize(lambda v: float(fun(jnp.asarray(v))), x0, method="BFGS",
                                  jac=lambda v: np.asarray(jax.grad(fun)(jnp.asarray(v)))).x
    np.testing.assert_allclose(x, ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fun(x), fun(jnp.asarray(ref)), atol=1e-5, rtol=1e-5)
