"""``ops.reference_mode()`` and the transformations that work where (issue 16).

* inside the context every op is its plain-JAX twin: ``jax.jacfwd``/``jax.jvp``/
  ``jax.linearize`` work and equal ``jax.jacrev``/``jax.vjp`` of the custom-rule ops;
* outside, the ops are ``custom_vjp`` again, yet ``jax.hessian`` and ``jvp`` of ``grad``
  work on them (the hand-written backward rules are plain JAX) and equal the twins';
* the switch is in JAX's trace context: ``jit`` retraces across it, nesting and threads.

Each case compiles once: the custom-rule and the reference computations of both per-case
tests are traced into the same jitted function (the switch is read while tracing).
"""
import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet import nn
from funcnet.gradcheck import assert_close
from funcnet.ops._mode import is_reference_mode, reference_mode_is_traced
from tests.ops._cases import CORE_CASES, labels, normal

KEY = jax.random.PRNGKey(3)
# (id, op name, args factory, static keyword arguments)
CASES = [(c[0], c[1], c[2], {}) for c in CORE_CASES] + [
    ("conv2d", "conv2d", lambda: (normal(70, (1, 5, 4, 2)), normal(71, (3, 2, 2, 3)),
                                  normal(72, (3,))), dict(stride=(2, 1), padding=1, impl="xla")),
    ("max_pool2d", "max_pool2d", lambda: (normal(73, (1, 5, 5, 2)),), dict(window=3, stride=2)),
    ("avg_pool2d", "avg_pool2d", lambda: (normal(74, (1, 4, 4, 2)),), dict(padding=1)),
    ("rnn", "rnn", lambda: (normal(75, (3, 2, 2)), normal(76, (2, 3)), normal(77, (2, 3), 0.5),
                            normal(78, (3, 3), 0.5), normal(79, (3,))), {}),
    ("dropout", "dropout", lambda: (normal(80, (3, 4)), 0.25, KEY), {}),
]
IDS = [c[0] for c in CASES]


def _split(args):
    """Indices of the differentiable (floating array / pytree) arguments."""
    def is_float(a):
        leaves = jax.tree_util.tree_leaves(a)
        return leaves and all(hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
                              for x in leaves)
    return tuple(i for i, a in enumerate(args) if is_float(a))


def _restricted(name, args, kwargs):
    diff = _split(args)

    def f(*d):
        full = list(args)
        for i, v in zip(diff, d):
            full[i] = v
        return getattr(ops, name)(*full, **kwargs)
    return f, tuple(args[i] for i in diff)


def _scalar(f):
    return lambda *d: sum(jnp.sum(jnp.sin(y)) for y in jax.tree_util.tree_leaves(f(*d)))


def test_the_switch_is_in_the_trace_context():
    assert reference_mode_is_traced()   # jax exposes the hook this suite relies on


@functools.lru_cache(maxsize=None)
def _both_modes(case_id):
    """One compiled program per case, shared by the two tests below (the switch is read
    while tracing): the custom rules' jacrev and jvp of grad, and inside reference_mode
    jacfwd, jvp, linearize and jvp of grad."""
    _, name, make, kwargs = CASES[IDS.index(case_id)]
    f, d = _restricted(name, make(), kwargs)
    s = _scalar(f)
    argnums = tuple(range(len(d)))
    tangents = jax.tree_util.tree_map(lambda a: jnp.cos(a + 1.0), d)

    def jvp_of_grad(*d):
        return jax.jvp(lambda *p: jax.grad(s, argnums)(*p), d, tangents)[1]

    @jax.jit
    def both(*d):
        rev = jax.jacrev(f, argnums)(*d)                 # hand-written rules
        custom = jvp_of_grad(*d)
        with ops.reference_mode():
            fwd = jax.jacfwd(f, argnums)(*d)
            y, y_dot = jax.jvp(f, d, tangents)
            y_lin, lin = jax.linearize(f, *d)
            lin_dot = lin(*tangents)
            twin = jvp_of_grad(*d)
        return dict(rev=rev, fwd=fwd, y_op=f(*d), y=y, y_lin=y_lin, y_dot=y_dot,
                    lin_dot=lin_dot, custom=custom, twin=twin)

    return f, d, both(*d)


@pytest.mark.parametrize("case_id", IDS)
def test_forward_mode_inside_equals_reverse_mode_of_the_custom_rules(case_id):
    f, d, out = _both_modes(case_id)
    assert_close(out["fwd"], out["rev"], 1e-10,
                 "jacfwd (reference mode) vs jacrev (custom rules)")
    assert_close(out["y"], out["y_op"], 1e-12, "values")
    assert_close(out["y_lin"], out["y_op"], 1e-12, "linearize")
    assert_close(out["lin_dot"], out["y_dot"], 1e-12, "linearize vs jvp")
    with ops.reference_mode():
        assert "custom_vjp_call" not in str(jax.make_jaxpr(f)(*d))
    assert "custom_vjp_call" in str(jax.make_jaxpr(f)(*d))


@pytest.mark.parametrize("case_id", IDS)
def test_jvp_of_grad_works_on_the_custom_rules_and_equals_the_twin(case_id):
    """Documented claim: second order built on reverse mode needs no reference_mode."""
    out = _both_modes(case_id)[2]
    assert_close(out["custom"], out["twin"], 1e-9, "jvp(grad) custom vs twin")


@pytest.mark.parametrize("case_id", ["sce_index", "batch_norm_2d", "conv2d", "rnn", "l2"])
def test_hessian_works_on_the_custom_rules(case_id):
    _, name, make, kwargs = CASES[IDS.index(case_id)]
    f, d = _restricted(name, make(), kwargs)
    s = _scalar(f)
    h = jax.jit(jax.hessian(s))(*d)
    with ops.reference_mode():
        h_ref = jax.jit(jax.hessian(s))(*d)
    assert_close(h, h_ref, 1e-9, "hessian")


def test_jvp_outside_fails_with_jaxs_message():
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(ops.tanh, (jnp.ones(3),), (jnp.ones(3),))


# ----------------------------------------------------------------------------- a model
MODEL = nn.serial(nn.Dense(5), nn.ReLU(), nn.Dense(3))


def _model_setup():
    _, params, state = MODEL.init(jax.random.PRNGKey(0), (-1, 4))
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)   # non-zero biases
    return params, state, normal(90, (6, 4)), labels(91, (6,), 3)


def test_forward_mode_on_a_model():
    params, state, x, y = _model_setup()

    def logits(p, x):
        return MODEL.apply(p, state, x)[0]

    def loss(p, x):
        return ops.softmax_cross_entropy(logits(p, x), y)

    @jax.jit
    def both(p, x):
        rev = jax.jacrev(logits, (0, 1))(p, x)
        grad = jax.grad(loss, (0, 1))(p, x)
        hess_x = jax.hessian(loss, 1)(p, x)
        with ops.reference_mode():
            fwd = jax.jacfwd(logits, (0, 1))(p, x)
            grad_fwd = jax.jacfwd(loss, (0, 1))(p, x)
            hess_x_ref = jax.hessian(loss, 1)(p, x)
            tangent = jax.tree_util.tree_map(jnp.ones_like, p)
            _, jvp_p = jax.jvp(lambda q: loss(q, x), (p,), (tangent,))
            _, lin = jax.linearize(lambda q: loss(q, x), p)
            lin_p = lin(tangent)
        return rev, fwd, grad, grad_fwd, hess_x, hess_x_ref, jvp_p, lin_p

    rev, fwd, grad, grad_fwd, hess_x, hess_x_ref, jvp_p, lin_p = both(params, x)
    assert_close(fwd, rev, 1e-10, "model jacfwd vs jacrev")
    assert_close(grad_fwd, grad, 1e-10, "jacfwd(loss) vs jax.grad")
    assert_close(hess_x, hess_x_ref, 1e-10, "hessian custom vs twin")
    dot = sum(jnp.sum(g) for g in jax.tree_util.tree_leaves(grad[0]))   # <grad, ones>
    assert_close(jvp_p, dot, 1e-10, "jvp vs grad")
    assert_close(lin_p, jvp_p, 1e-12, "linearize vs jvp")


# ------------------------------------------------------------------------- jit and mode
def _count_traces():
    count = {"n": 0}

    def f(x):
        count["n"] += 1
        return jnp.sum(ops.tanh(x) ** 2)
    return f, count


def test_jit_retraces_across_the_switch_and_stays_correct():
    x = normal(92, (2, 3))
    f, count = _count_traces()
    jf = jax.jit(f)
    want, want_g = f(x), jax.grad(f)(x)          # custom rules, eagerly
    jf(x)                                        # traced outside
    with ops.reference_mode():
        _, tangent = jax.jvp(jf, (x,), (jnp.ones_like(x),))   # retraced inside: jvp works
        inside = jf(x)
    assert_close(tangent, jnp.sum(want_g), 1e-12, "jvp of a function jitted outside")
    assert_close(inside, want, 1e-12, "value inside")
    assert_close(jf(x), want, 1e-12, "value outside after an inside trace")
    assert_close(jax.grad(jf)(x), want_g, 1e-12, "grad outside")
    assert "custom_vjp_call" in str(jax.make_jaxpr(jf)(x))   # custom rules again outside
    n = count["n"]
    jf(x)
    with ops.reference_mode():
        jf(x)
    assert count["n"] == n                          # one cache entry per mode, no retrace


def test_nesting_and_threads():
    seen = {}

    def other_thread():
        seen["other"] = is_reference_mode()

    assert not is_reference_mode()
    with ops.reference_mode():
        with ops.reference_mode():
            assert is_reference_mode()
            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
        assert is_reference_mode()
    assert not is_reference_mode() and seen["other"] is False
    with pytest.raises(RuntimeError):
        with ops.reference_mode():
            raise RuntimeError("leaves the context")
    assert not is_reference_mode()


def test_every_public_op_dispatches_to_its_twin():
    names = {c[1] for c in CASES}
    core = {"affine", "matmul", "relu", "sigmoid", "tanh", "softmax", "log_softmax",
            "softmax_cross_entropy", "cross_entropy", "multiclass_hinge", "mean_squared_error",
            "binary_cross_entropy", "sigmoid_binary_cross_entropy", "l2_penalty",
            "batch_norm", "conv2d", "max_pool2d", "avg_pool2d", "rnn", "dropout"}
    assert core <= names
    for name in core:
        op = getattr(ops, name)
        assert op.__wrapped__.__name__ == name and "reference_mode" in op.__doc__


@pytest.mark.parametrize("name", ["relu", "softmax", "log_softmax"])
def test_reference_mode_keeps_values_at_nan_and_inf(name):
    """The twins compute the ops' values also at NaN and +-inf, and both equal jax.nn's:
    relu keeps NaN (the relu twin dropped it), a +inf logit gives a NaN row (the
    softmax twins gave NaN only at the +inf entry); gradients equal too."""
    x = jnp.array([[np.nan, -1.0, 2.0, 0.0], [np.inf, 0.0, 1.0, -np.inf],
                   [-np.inf, 1.0, 2.0, 3.0], [-np.inf, -np.inf, -np.inf, -np.inf]])
    w = jnp.array([[0.5, -1.0, 2.0, 1.5]])

    def value_and_grad(f, x):
        return f(x), jax.grad(lambda x: jnp.sum(f(x) * w))(x)

    @jax.jit
    def run(x):                        # one program (eagerly: one compile per primitive)
        custom = value_and_grad(getattr(ops, name), x)
        with ops.reference_mode():
            twin = value_and_grad(getattr(ops, name), x)
        return custom, twin, value_and_grad(getattr(jax.nn, name), x)

    custom, twin, want = run(x)
    for got in (custom, twin):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-15, atol=0)   # NaN where NaN
        np.testing.assert_allclose(got[1], want[1], rtol=1e-14, atol=1e-16)
    assert np.isnan(twin[0][0, 0]) and (name == "relu" or np.all(np.isnan(twin[0][1])))
