"""nn.Repeat: the same as serial of n copies (values, gradients, state, dropout masks), one
scan in the program, remat/unroll options, summary, errors eager and under jit."""
import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from tests.nn._models import numpy_init, randn

KEY = jax.random.PRNGKey(0)
TOL = dict(rtol=1e-10, atol=1e-12)
N = 3
BLOCK = nn.serial(nn.Dense(4), nn.BatchNorm(0.8), nn.Tanh(), nn.Dropout(0.3))
REP = nn.Repeat(BLOCK, N)
SER = nn.serial(*[BLOCK] * N)


def _slices(tree, n=N):
    return tuple(jax.tree_util.tree_map(lambda a: a[i], tree) for i in range(n))


def _stack(trees):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _close(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(la, lb):
        np.testing.assert_allclose(u, v, **TOL)


@functools.lru_cache(maxsize=None)
def _init():
    return jax.jit(lambda k: REP.init(k, (-1, 4))[1:])(KEY)


def test_init_draws_one_independent_set_per_key():
    """Copy i is layer.init(split(key, n)[i]) exactly; leaves stacked on axis 0; the
    copies differ; the output shape is the input's."""
    params, state = _init()
    shapes = []                        # output shapes, read while tracing

    @jax.jit
    def draws(key, seeds, typed):      # one program (eagerly: one compile per primitive)
        shapes.append(REP.init(key, (-1, 4))[0])
        loop = [BLOCK.init(k, (-1, 4)) for k in jax.random.split(key, N)]
        shapes.extend(out for out, _, _ in loop)
        return (_stack([p for _, p, _ in loop]), _stack([s for _, _, s in loop]),
                # init vmapped over seeds (a seed sweep) and init of one seed
                jax.vmap(lambda k: REP.init(k, (-1, 4))[1])(seeds),
                REP.init(seeds[1], (-1, 4))[1],
                # a typed key, and the copies drawn from its split one by one
                REP.init(typed, (-1, 4))[1],
                _stack([BLOCK.init(kk, (-1, 4))[1] for kk in jax.random.split(typed, N)]))

    seeds = jax.random.split(jax.random.PRNGKey(2), 2)
    loop_p, loop_s, swept, seed1, typed, typed_loop = draws(KEY, seeds, jax.random.key(0))
    assert shapes == [(-1, 4)] * (N + 1)
    _close(params, loop_p)
    _close(state, loop_s)
    w = params[0]["w"]
    assert w.shape == (N, 4, 4) and not np.allclose(w[0], w[1])
    assert state[1]["mean"].shape == (N, 4)
    # init vmapped over seeds (a seed sweep) draws what init draws per seed
    _close(jax.tree_util.tree_map(lambda a: a[1], swept), seed1)
    # typed keys work too and give the same draw as raw keys of the same seed
    _close(typed[0], typed_loop[0])
    _close(typed[0], params[0])


@functools.lru_cache(maxsize=None)
def _both():
    """Repeat and serial (slices of the same params) in one compiled program: outputs,
    new states and gradients (params and x), train with a key and eval without."""
    def loss(model, p, s, x, key, train):
        y, s = model.apply(p, s, x, key=key, train=train)
        return jnp.sum(jnp.sin(y) * jnp.arange(1.0, 1.0 + y.size).reshape(y.shape)), (y, s)

    def run(p, s, x, key):
        out = {}
        for train, k in ((True, key), (False, None)):
            g_r, (y_r, s_r) = jax.grad(lambda p, x: loss(REP, p, s, x, k, train),
                                       argnums=(0, 1), has_aux=True)(p, x)
            g_s, (y_s, s_s) = jax.grad(lambda p, x: loss(SER, p, _slices(s), x, k, train),
                                       argnums=(0, 1), has_aux=True)(_slices(p), x)
            out[train] = (y_r, s_r, g_r, y_s, _stack(s_s), (_stack(g_s[0]), g_s[1]))
        return out
    return jax.jit(run)


def test_equals_unrolled_serial_values_gradients_state():
    params, state = _init()
    x = randn((6, 4), seed=1)
    out = _both()(params, state, x, jax.random.PRNGKey(7))
    for train in (True, False):
        y_r, s_r, g_r, y_s, s_s, g_s = out[train]
        _close(y_r, y_s)
        _close(s_r, s_s)
        _close(g_r, g_s)
        assert float(jnp.abs(g_r[0][0]["w"]).min()) > 0      # every copy gets a gradient
    # train updates the running statistics of every copy, eval leaves them alone
    s_train, s_eval = out[True][1], out[False][1]
    assert not np.allclose(s_train[1]["mean"], state[1]["mean"])
    assert all(not np.allclose(s_train[1]["mean"][i], s_train[1]["mean"][0])
               for i in range(1, N))
    _close(s_eval, state)
    # eager (no jit) gives the same as the compiled program
    y_eager, _ = REP.apply(params, state, x, key=jax.random.PRNGKey(7), train=True)
    _close(y_eager, out[True][0])


def test_dropout_keys_differ_per_layer_and_are_reproducible():
    """Each copy draws its own mask from its own key (1/8 of the units survive three
    Dropout(0.5), 1/2 if all copies shared a mask); the same key gives the same masks,
    and they are serial's."""
    model, twin = nn.Repeat(nn.Dropout(0.5), 3), nn.serial(*[nn.Dropout(0.5)] * 3)
    _, p, s = model.init(KEY, (-1, 4000))
    assert p == () and s == ()
    x = jnp.ones((1, 4000))
    f = jax.jit(lambda k: (model.apply(p, s, x, key=k, train=True)[0],
                           twin.apply(((),) * 3, ((),) * 3, x, key=k, train=True)[0]))
    y, y_twin = f(jax.random.PRNGKey(3))
    kept = float(jnp.mean(y > 0))
    assert 0.1 < kept < 0.15, kept
    np.testing.assert_allclose(np.unique(y), [0.0, 8.0])
    np.testing.assert_array_equal(y, y_twin)
    np.testing.assert_array_equal(y, f(jax.random.PRNGKey(3))[0])
    assert not np.array_equal(y, f(jax.random.PRNGKey(4))[0])
    # eval: the identity, no key needed
    np.testing.assert_array_equal(model.apply(p, s, x)[0], x)


def test_vmap_per_example_and_grad():
    """Per-example vmap (one (D,) example, its own key) equals a Python loop over the
    examples, for outputs and per-example gradients."""
    block = nn.serial(nn.Dense(4), nn.Tanh(), nn.Dropout(0.25))
    model = nn.Repeat(block, 4)
    _, p, s = jax.jit(lambda k: model.init(k, (4,)))(KEY)
    xs = randn((3, 4), seed=2)
    keys = jax.random.split(jax.random.PRNGKey(5), 3)

    def one(p, x, k):
        return jnp.sum(model.apply(p, s, x, key=k, train=True)[0] ** 2)

    f = jax.jit(lambda p, xs, keys: (
        jax.vmap(jax.value_and_grad(one), in_axes=(None, 0, 0))(p, xs, keys),
        [jax.value_and_grad(one)(p, xs[i], keys[i]) for i in range(3)]))    # the loop
    (vals, grads), loop = f(p, xs, keys)
    for i in range(3):
        v, g = loop[i]
        np.testing.assert_allclose(vals[i], v, **TOL)
        _close(jax.tree_util.tree_map(lambda a: a[i], grads), g)


def _scans(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "scan"
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _scans(sub)
    return count


def test_one_scan_and_program_size_independent_of_n():
    block = nn.serial(nn.Dense(4), nn.Tanh())
    x = jnp.ones((2, 4))
    sizes = []
    for n in (2, 7):
        model = nn.Repeat(block, n)
        _, p, s = model.init(KEY, (-1, 4))
        jaxpr = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(model.apply(p, s, x)[0])))(p)
        fwd = jax.make_jaxpr(lambda p: model.apply(p, s, x)[0])(p)
        assert _scans(fwd.jaxpr) == 1
        sizes.append((len(fwd.jaxpr.eqns), len(jaxpr.jaxpr.eqns)))
    assert sizes[0] == sizes[1], sizes


def test_remat_policy_unroll_same_values_and_gradients():
    params, state = _init()
    x = randn((5, 4), seed=3)
    k = jax.random.PRNGKey(9)

    def grads(model, p):
        def loss(p):
            y, s = model.apply(p, state, x, key=k, train=True)
            return jnp.sum(jnp.cos(y)), s
        return jax.value_and_grad(loss, has_aux=True)(p)

    variants = [nn.Repeat(BLOCK, N, remat=True),
                nn.Repeat(BLOCK, N, remat=True,
                          policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
                nn.Repeat(BLOCK, N, unroll=2), nn.Repeat(BLOCK, N, unroll=N)]
    # one program for the five (five compilations took twice as long)
    ref, *got = jax.jit(lambda p: [grads(model, p) for model in (REP, *variants)])(params)
    for g in got:
        _close(g, ref)
    jaxpr = str(jax.make_jaxpr(lambda p: variants[0].apply(p, state, x)[0])(params))
    assert "checkpoint" in jaxpr or "remat" in jaxpr
    # remat saves less for the backward pass than the plain scan
    def loss_of(model):
        return lambda p: jnp.sum(model.apply(p, state, x)[0])
    plain = nn.residual_bytes(loss_of(REP), params, include_arguments=False)
    remat = nn.residual_bytes(loss_of(variants[0]), params, include_arguments=False)
    assert remat < plain, (remat, plain)


def test_n_equal_one_and_dtype_promotion():
    """n=1 is the layer itself; a float32 input into float64 params computes in float64,
    as serial does."""
    block = nn.serial(nn.Dense(4), nn.Tanh())
    one = nn.Repeat(block, 1)
    _, p, s = one.init(KEY, (-1, 4))
    _, p1, _ = block.init(jax.random.split(KEY, 1)[0], (-1, 4))
    _close(_slices(p, 1)[0], p1)
    x = randn((2, 4), seed=4)
    _close(one.apply(p, s, x)[0], block.apply(p1, ((), ()), x)[0])
    model = nn.Repeat(block, 2)
    _, p, s = model.init(KEY, (-1, 4))
    y, _ = model.apply(p, s, x.astype(jnp.float32))
    y_ser, _ = nn.serial(block, block).apply(_slices(p, 2), _slices(s, 2),
                                            x.astype(jnp.float32))
    assert y.dtype == y_ser.dtype == jnp.float64
    _close(y, y_ser)


def test_summary_and_count_params():
    model = nn.serial(nn.Dense(4), REP, nn.Dense(2))
    _, p, s = model.init(KEY, (-1, 3))
    per_block = nn.count_params(BLOCK.init(KEY, (-1, 4))[1])
    assert nn.count_params(p[1]) == N * per_block == N * (16 + 4 + 8)
    text = nn.summary(model, (-1, 3))
    total = 16 + N * per_block + 10
    assert f"Total params: {total:,}" in text
    assert f"Non-trainable state: {N * 8}" in text
    assert f"Repeat(serial, {N})" in text
    rows = [line.split() for line in text.splitlines() if line[:1].isdigit()
            or line.startswith("  ")]
    depth = {}
    for r in rows:
        depth.setdefault(r[0].count("."), []).append(int(r[-1].replace(",", "")))
    # rows of one depth add up to the total: the repeated rows count all N copies
    assert sum(depth[0]) == total
    assert sum(depth[2]) == N * per_block


def _jit_apply(model, p, s, x, **kw):
    return jax.jit(lambda p, s, x: model.apply(p, s, x, **kw))(p, s, x)


@pytest.mark.parametrize("n, err", [(0, ValueError), (-1, ValueError), (2.0, TypeError),
                                    (True, TypeError), ("3", TypeError)])
def test_bad_n(n, err):
    with pytest.raises(err, match=r"Repeat: n must be"):
        nn.Repeat(BLOCK, n)


def test_bad_construction():
    with pytest.raises(TypeError, match=r"Repeat: layer must be a Layer"):
        nn.Repeat(lambda x: x, 2)
    with pytest.raises(TypeError, match=r"Repeat\(serial, 2\): remat must be a bool"):
        nn.Repeat(BLOCK, 2, remat="yes")
    with pytest.raises(ValueError, match=r"needs remat=True"):
        nn.Repeat(BLOCK, 2, policy=jax.checkpoint_policies.nothing_saveable)
    with pytest.raises(TypeError, match=r"policy must be callable"):
        nn.Repeat(BLOCK, 2, remat=True, policy="dots")
    with pytest.raises(ValueError, match=r"unroll must be >= 1"):
        nn.Repeat(BLOCK, 2, unroll=0)


def test_shape_changing_layer_refused_at_init():
    with pytest.raises(ValueError, match=r"Repeat\(Dense\(3\), 2\): layer maps shape "
                                         r"\(-1, 4\) to \(-1, 3\); Repeat feeds"):
        nn.Repeat(nn.Dense(3), 2).init(KEY, (-1, 4))
    with pytest.raises(ValueError, match=r"Repeat\(Dense\(3\), 2\): layer maps shape"):
        jax.jit(lambda k: nn.Repeat(nn.Dense(3), 2).init(k, (-1, 4))[1])(KEY)
    # the layer's own init errors carry Repeat's name
    with pytest.raises(ValueError, match=r"^Repeat\(serial, 3\): serial\[0\] \(Dense\(4\)\): "
                                         r"input_shape \(-1, 4, 0\) must have positive"):
        REP.init(KEY, (-1, 4, 0))
    with pytest.raises(TypeError, match=r"Repeat\(serial, 3\)\.init: key must be a PRNG"):
        REP.init(0, (-1, 4))


@pytest.mark.parametrize("jit", [False, True])
def test_apply_errors(jit):
    params, state = _init()
    call = _jit_apply if jit else (lambda m, p, s, x, **kw: m.apply(p, s, x, **kw))
    x = jnp.ones((2, 4))
    # the serial's params (no stacked axis) or another n's
    with pytest.raises(ValueError, match=r"Repeat\(serial, 3\): params\[0\]\['b'\] has shape "
                                         r"\(4,\), expected a leading axis of size 3"):
        call(REP, _slices(params)[0], state, x)
    with pytest.raises(ValueError, match=r"state\[1\]\['mean'\] has shape \(2, 4\), expected "
                                         r"a leading axis of size 3"):
        call(REP, params, jax.tree_util.tree_map(lambda a: a[:2], state), x)
    # the layer's errors, with Repeat's name in front
    with pytest.raises(ValueError, match=r"^Repeat\(serial, 3\): serial\[0\] \(Dense\(4\)\): "
                                         r"affine: x has shape \(2, 5\)"):
        call(REP, params, state, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"Repeat\(serial, 3\): serial\[3\] \(Dropout\(0.3\)\)"
                                         r": train=True needs a PRNG key"):
        call(REP, params, state, x, train=True)
    with pytest.raises(TypeError, match=r"Repeat\(serial, 3\): key must be a PRNG key"):
        call(REP, params, state, x, key=3, train=True)
    # a layer that keeps the shape at init but not on this input is refused at apply
    with pytest.raises(ValueError, match=r"Repeat\(Flatten, 2\): layer maps shape "
                                         r"\(2, 2, 3\) to \(2, 6\)"):
        call(nn.Repeat(nn.Flatten(), 2), (), (), jnp.ones((2, 2, 3)))


def test_train_must_be_a_python_bool():
    params, state = _init()
    with pytest.raises(TypeError, match=r"Repeat\(serial, 3\): train must be a Python bool"):
        jax.jit(lambda t: REP.apply(params, state, jnp.ones((2, 4)), train=t))(True)


def test_pre_norm_transformer_stack_with_remat_equals_serial():
    """The motivating case: Embedding, PositionEmbedding, Repeat(pre-LN block with causal
    attention and dropout, remat) equals the unrolled serial in loss and every gradient
    (train mode, one key)."""
    att = nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(2, causal=True, dropout_rate=0.1),
                    nn.Dropout(0.1))
    mlp = nn.serial(nn.LayerNorm(), nn.Dense(8), nn.GELU(), nn.Dense(4), nn.Dropout(0.1))
    block = nn.serial(nn.Residual(att), nn.Residual(mlp))
    head = (nn.Embedding(7, 4), nn.PositionEmbedding(5))
    model = nn.serial(*head, nn.Repeat(block, 2, remat=True))
    twin = nn.serial(*head, nn.serial(block, block))
    _, p, s = numpy_init(model, (-1, 5))     # any params: init's program took 1.5 s to compile
    pt, st = (*p[:2], _slices(p[2], 2)), (*s[:2], _slices(s[2], 2))
    ids = jnp.asarray([[1, 2, 3, 4, 5], [6, 0, 0, 2, 1]], jnp.int32)
    k = jax.random.PRNGKey(4)

    def loss(m, p, s):
        return jnp.sum(jnp.tanh(m.apply(p, s, ids, key=k, train=True)[0]))

    f = jax.jit(lambda p, pt: (jax.value_and_grad(lambda p: loss(model, p, s))(p),
                               jax.value_and_grad(lambda p: loss(twin, p, st))(pt)))
    (a, ga), (b, gb) = f(p, pt)
    np.testing.assert_allclose(a, b, **TOL)
    _close(ga[:2], gb[:2])
    _close(ga[2], _stack(gb[2]))
