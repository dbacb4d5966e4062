"""Combinators: stax equivalence, keys/state/train flow, Residual, shapes, errors, summary."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from funcnet import nn, ops
from tests.nn._models import abstract_init, numpy_init, randn, struct, trace_apply

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)
TOL = dict(rtol=1e-12, atol=1e-14)


def _stax_to_funcnet(p):
    """stax's Dense params ``(W, b)`` -> funcnet's ``{"w", "b"}``; lists -> tuples."""
    if isinstance(p, tuple) and len(p) == 2 and all(hasattr(a, "shape") for a in p):
        return {"w": p[0], "b": p[1]}
    if isinstance(p, (tuple, list)):
        return tuple(_stax_to_funcnet(q) for q in p)
    return p


# A branching model written twice: stax (the anchor of the names) and funcnet.
STAX = stax.serial(stax.Dense(6), stax.FanOut(3),
                   stax.parallel(stax.Dense(6), stax.serial(stax.Dense(6), stax.Tanh),
                                 stax.Identity),
                   stax.FanInSum, stax.Relu, stax.FanOut(2),
                   stax.parallel(stax.Dense(2), stax.Identity), stax.FanInConcat(-1))
FUNCNET = nn.serial(nn.Dense(6), nn.FanOut(3),
                    nn.parallel(nn.Dense(6), nn.serial(nn.Dense(6), nn.Tanh()), nn.Identity),
                    nn.FanInSum, nn.ReLU(), nn.FanOut(2),
                    nn.parallel(nn.Dense(2), nn.Identity()), nn.FanInConcat(-1))


def _funcnet_to_stax(p):
    if isinstance(p, dict):
        return (p["w"], p["b"])
    return [_funcnet_to_stax(q) for q in p] if isinstance(p, tuple) and p else p


def test_same_values_and_gradients_as_stax():
    """Same structure and shapes from init; same values and gradients from apply (float64,
    params drawn once by NumPy and laid out for each library)."""
    stax_init, stax_apply = STAX
    out = {}

    def stax_params_of(k):
        out["shape"], p = stax_init(k, (-1, 5))
        return p

    stax_abstract = _stax_to_funcnet(jax.eval_shape(stax_params_of, KEY))
    f_shape, params, f_state = numpy_init(FUNCNET, (-1, 5))
    assert f_shape == tuple(out["shape"]) == (-1, 8)
    assert jax.tree_util.tree_map(lambda a: a.shape, stax_abstract) == \
        jax.tree_util.tree_map(lambda a: a.shape, params)
    stax_params = _funcnet_to_stax(params)
    x = randn((4, 5))

    @jax.jit
    def both(params, stax_params):
        def ours(p):
            return jnp.sum(jnp.sin(FUNCNET.apply(p, f_state, x)[0]))

        def theirs(p):
            return jnp.sum(jnp.sin(stax_apply(p, x)))
        with jax.numpy_rank_promotion("allow"):            # stax's Dense broadcasts b
            return (FUNCNET.apply(params, f_state, x)[0], stax_apply(stax_params, x),
                    jax.grad(ours)(params), _stax_to_funcnet(jax.grad(theirs)(stax_params)))

    y, y_stax, g, g_stax = both(params, stax_params)
    assert y.shape == (4, 8)
    np.testing.assert_allclose(y, y_stax, **TOL)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_stax)):
        np.testing.assert_allclose(a, b, **TOL)
    assert all(float(jnp.abs(a).max()) > 0 for a in jax.tree_util.tree_leaves(g))


def test_value_and_call_styles_are_the_same_layer():
    assert nn.FanInSum() is nn.FanInSum and nn.Identity() is nn.Identity
    assert isinstance(nn.FanInSum, nn.Layer) and nn.FanInSum.name == "FanInSum"
    init, apply, *_ = nn.Identity                      # stax-style unpacking
    assert init(KEY, ((-1, 2), (3,))) == (((-1, 2), (3,)), (), ())
    tree = (jnp.ones(2), {"a": jnp.zeros(3)})
    assert apply((), (), tree)[0] is tree               # any pytree passes through
    assert repr(nn.FanInSum) == "Layer(name='FanInSum')"


def test_init_shapes_of_branches():
    assert nn.FanOut(3).init(KEY, (-1, 4))[0] == ((-1, 4),) * 3
    par = nn.parallel(nn.Dense(3), nn.Flatten())
    assert abstract_init(par, ((-1, 4), (-1, 2, 5)))[0] == ((-1, 3), (-1, 10))
    assert nn.FanInConcat().init(KEY, ((-1, 4), (-1, 3)))[0] == (-1, 7)
    assert nn.FanInConcat(0).init(KEY, ((-1, 4), (2, 4)))[0] == (-1, 4)
    assert nn.FanInConcat(1).init(KEY, ((-1, 2, 3), (-1, 5, 3)))[0] == (-1, 7, 3)
    assert nn.FanInSum.init(KEY, ((-1, 4), (-1, 4)))[0] == (-1, 4)
    assert abstract_init(nn.Residual(nn.Dense(4)), (-1, 4))[0] == (-1, 4)
    # apply agrees with init, batch 1 and 3
    for b in (1, 3):
        y, _ = trace_apply(par, *abstract_init(par, ((-1, 4), (-1, 2, 5)))[1:],
                           (struct((b, 4), F64), struct((b, 2, 5), F64)))
        assert [a.shape for a in y] == [(b, 3), (b, 10)]


def test_keys_split_per_branch_state_and_train_flow():
    """parallel splits the key like serial; each branch's state is updated; train flows."""
    drop = nn.Dropout(0.5)
    bn = nn.BatchNorm(dtype=F64)
    model = nn.serial(nn.FanOut(3), nn.parallel(drop, drop, nn.Residual(bn)))
    _, params, state = abstract_init(model, (-1, 64))
    params = ((), ((), (), {"gamma": jnp.ones(64, F64), "beta": jnp.zeros(64, F64)}))
    state = ((), ((), (), {"mean": jnp.zeros(64, F64), "var": jnp.ones(64, F64)}))
    x = randn((4, 64), seed=3)

    @jax.jit     # the model, in both modes, and the layers run by hand: one program
    def run(params, state, x):
        k_par = jax.random.split(KEY, 2)[1]        # serial: one key per layer
        k0, k1, _ = jax.random.split(k_par, 3)     # parallel: one key per branch
        p_bn, s_bn = params[1][2], state[1][2]
        return (model.apply(params, state, x, key=KEY, train=True),
                model.apply(params, state, x, key=KEY, train=False),
                drop.apply((), (), x, key=k0, train=True)[0],
                drop.apply((), (), x, key=k1, train=True)[0],
                bn.apply(p_bn, s_bn, x, train=True), bn.apply(p_bn, s_bn, x)[0])

    ((a, b, c), new_state), ((ea, _, ec), same), a_ref, b_ref, (bn_y, bn_state), bn_eval = run(
        params, state, x)
    np.testing.assert_array_equal(a, a_ref)
    np.testing.assert_array_equal(b, b_ref)
    assert not np.array_equal(np.asarray(a) != 0, np.asarray(b) != 0)   # different masks
    np.testing.assert_allclose(c, x + bn_y, **TOL)
    for k in ("mean", "var"):
        np.testing.assert_allclose(new_state[1][2][k], bn_state[k], **TOL)
    assert not np.allclose(new_state[1][2]["mean"], 0)
    # train=False: dropout is the identity, batch norm uses (and keeps) the running stats
    np.testing.assert_array_equal(ea, x)
    np.testing.assert_allclose(ec, x + bn_eval, **TOL)
    for k in ("mean", "var"):
        np.testing.assert_array_equal(same[1][2][k], state[1][2][k])


def test_residual_equals_its_stax_spelling():
    block = nn.serial(nn.Dense(5), nn.Tanh(), nn.Dense(5))
    res = nn.Residual(block)
    spelled = nn.serial(nn.FanOut(2), nn.parallel(block, nn.Identity), nn.FanInSum)
    _, p, s = abstract_init(res, (-1, 5))
    p = jax.tree_util.tree_map(lambda a: randn(a.shape, seed=a.size), p)
    x = randn((3, 5), seed=7)

    @jax.jit
    def both(p):
        sp = ((), (p, ()), ())
        y1 = res.apply(p, s, x)[0]
        y2 = spelled.apply(sp, ((), (s, ()), ()), x)[0]
        g1 = jax.grad(lambda q: jnp.sum(res.apply(q, s, x)[0] ** 2))(p)
        g2 = jax.grad(lambda q: jnp.sum(spelled.apply(((), (q, ()), ()), ((), (s, ()), ()),
                                                      x)[0] ** 2))(p)
        return y1, y2, g1, g2

    y1, y2, g1, g2 = both(p)
    np.testing.assert_allclose(y1, x + block.apply(p, s, x)[0], **TOL)
    np.testing.assert_allclose(y1, y2, **TOL)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, **TOL)


def test_fan_in_promotes_dtypes():
    x32, x64 = jnp.ones((2, 3), jnp.float32), jnp.ones((2, 3), F64)
    assert nn.FanInSum.apply((), (), (x32, x64))[0].dtype == F64
    y = nn.FanInConcat().apply((), (), [x32, x64])[0]        # a list works too (stax)
    assert y.dtype == F64 and y.shape == (2, 6)


def test_nested_error_path():
    """serial adds its index and the layer's name; nested combinators the whole path,
    each level once."""
    model = nn.serial(nn.Dense(4), nn.FanOut(2),
                      nn.parallel(nn.Identity, nn.serial(nn.Dense(4), nn.ReLU())), nn.FanInSum)
    _, p, s = abstract_init(model, (-1, 5))
    p = (p[0], p[1], (p[2][0], ({"w": struct((3, 4)), "b": struct((4,))}, ())), p[3])
    with pytest.raises(ValueError, match=re.escape(
            "serial[2]: parallel[1]: serial[0] (Dense(4)): affine: x has shape (2, 4) and "
            "w has shape (3, 4)")):
        trace_apply(model, p, s, struct((2, 5)))
    bad = nn.serial(nn.Dense(4), nn.FanOut(2), nn.parallel(nn.Identity, nn.Dense(3)),
                    nn.FanInSum)
    with pytest.raises(ValueError, match=re.escape(
            "serial[3] (FanInSum): input_shape[1] has shape (-1, 3) but "
            "input_shape[0] has shape (-1, 4)")):
        abstract_init(bad, (-1, 5))
    # a custom layer that does not name itself in its errors is named by its place
    plain = nn.Layer(lambda k, shape: (shape, (), ()),
                     lambda p, s, x, **kw: (ops.relu(x), s), "Plain")
    with pytest.raises(TypeError, match=re.escape(
            "serial[1] (Plain): relu: x must have a floating dtype")):
        nn.serial(nn.Identity, plain).apply(((), ()), ((), ()), jnp.ones(3, jnp.int32))


def test_summary_shows_nested_branches():
    model = nn.serial(nn.Dense(3), nn.FanOut(2),
                      nn.parallel(nn.Dense(4), nn.serial(nn.Dense(2), nn.ReLU())),
                      nn.FanInConcat(), nn.Residual(nn.serial(nn.Dense(6), nn.BatchNorm())))
    text = nn.summary(model, (-1, 5))
    lines = text.splitlines()
    row = {ln.split()[0]: ln for ln in lines if ln[:1].isdigit() or ln.startswith(" ")}
    assert row["0"].startswith("0 Dense(3)") and row["0"].rstrip().endswith(" 18")
    assert "((N, 3), (N, 3))" in row["1"]
    assert row["2"].startswith("2 parallel") and "((N, 4), (N, 2))" in row["2"]
    assert row["2"].rstrip().endswith(" 24")                 # 16 + 8: the subtree
    assert any(ln.startswith("  2.0 Dense(4)") for ln in lines)
    assert any(ln.startswith("    2.1.1 ReLU") for ln in lines)
    assert any(ln.startswith("  4.0 serial") for ln in lines)
    assert any(ln.startswith("    4.0.1 BatchNorm") for ln in lines)
    assert "Total params: 96" in text and "Non-trainable state: 12" in text
    assert "Output shape: (N, 6)" in text
    top = [ln for ln in lines if ln[:1].isdigit()]
    assert sum(int(ln.split()[-1].replace(",", "")) for ln in top) == 96


def test_summary_checks_apply_against_init():
    def Liar():       # a custom layer whose init promises a shape its apply does not keep
        return nn.Layer(lambda k, s: ((s[0], 7), (), ()), lambda p, s, x, **kw: (x, s), "Liar")
    with pytest.raises(ValueError, match=r"summary: serial.apply returns shape \(N, 3\) on an "
                                         r"input of shape \(N, 3\), but init promised \(N, 7\)"):
        nn.summary(nn.serial(nn.ReLU(), Liar()), (-1, 3))
