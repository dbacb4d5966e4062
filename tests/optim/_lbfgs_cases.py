"""Problems and loops shared by the L-BFGS / line-search tests: Rosenbrock, a random
convex quadratic and a small logistic regression, each with dict-of-arrays parameters,
and optax's documented loop (``value_and_grad_from_state`` then ``update(grad, state,
params, value=, grad=, value_fn=)``) as a ``lax.fori_loop`` or ``lax.while_loop``
that records the trajectory (one compiled program per call site and optimizer).
"""
import jax
import jax.numpy as jnp
import numpy as np


def rosenbrock(p):
    x = jnp.concatenate([p["a"], p["b"]])
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


ROSEN_START = {"a": jnp.array([-1.2, 1.0]), "b": jnp.array([0.5])}

_rng = np.random.default_rng(0)
_m = _rng.normal(size=(5, 5))
QUAD_H = jnp.asarray(_m @ _m.T + 0.5 * np.eye(5))
QUAD_C = jnp.asarray(_rng.normal(size=5))


def quadratic(p):
    x = jnp.concatenate([p["u"].ravel(), p["v"]])
    return 0.5 * x @ QUAD_H @ x - QUAD_C @ x


QUAD_START = {"u": jnp.ones((2, 1)), "v": jnp.array([0.5, -1.0, 2.0])}

LOGREG_X = jnp.asarray(_rng.normal(size=(12, 3)))
LOGREG_Y = jnp.asarray((_rng.uniform(size=12) < 0.5).astype(np.float64))


def logreg(p, x=LOGREG_X, y=LOGREG_Y):
    z = x @ p["w"] + p["b"]
    return jnp.mean(jax.nn.softplus(z) - y * z) + 0.05 * jnp.sum(p["w"] ** 2)


LOGREG_START = {"w": jnp.zeros(3), "b": jnp.zeros(())}

PROBLEMS = {"rosenbrock": (rosenbrock, ROSEN_START), "quadratic": (quadratic, QUAD_START),
            "logreg": (logreg, LOGREG_START)}


def flat(tree):
    """The leaves as one float64 (complex128 for complex leaves) NumPy vector."""
    leaves = [np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)]
    dt = np.complex128 if any(np.iscomplexobj(x) for x in leaves) else np.float64
    return np.concatenate([x.astype(dt) for x in leaves]) if leaves else np.zeros(0)


def trajectory(lib, opt, f, params, n, *, loop="fori", **data):
    """``n`` steps of optax's documented loop with ``lib``'s value_and_grad_from_state
    and apply_updates: the params after each step (stacked leaves) and the last state."""
    value_and_grad = lib.value_and_grad_from_state(f)

    def step(carry):
        p, s = carry
        value, grad = value_and_grad(p, state=s, **data)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f, **data)
        return lib.apply_updates(p, updates), s

    state = opt.init(params)
    zeros = jax.tree_util.tree_map(lambda x: jnp.zeros((n,) + x.shape, x.dtype), params)
    if loop == "fori":
        def body(i, carry):
            p, s, hist = carry
            p, s = step((p, s))
            return p, s, jax.tree_util.tree_map(lambda h, x: h.at[i].set(x), hist, p)
        _, state, hist = jax.lax.fori_loop(0, n, body, (params, state, zeros))
    else:
        def body(carry):
            i, p, s, hist = carry
            p, s = step((p, s))
            return i + 1, p, s, jax.tree_util.tree_map(lambda h, x: h.at[i].set(x), hist, p)
        _, _, state, hist = jax.lax.while_loop(lambda c: c[0] < n, body,
                                               (0, params, state, zeros))
    return hist, state


def plain_loop(opt, f, params, n, *, apply_updates):
    """``n`` steps with ``jax.value_and_grad`` (no line search needs ``value_fn``'s
    state): the final params and state."""
    state = opt.init(params)

    def body(i, carry):
        p, s = carry
        value, grad = jax.value_and_grad(f)(p)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
        return apply_updates(p, updates), s

    return jax.lax.fori_loop(0, n, body, (params, state))
