"""BatchNorm: running statistics, eval mode, single-example vmap, and seed ensembles."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops
from tests.nn._models import numpy_init, randint, randn

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)


def _bn(**kw):
    layer = nn.BatchNorm(dtype=F64, **kw)
    return layer, *layer.init(KEY, (-1, 1))[1:]      # eager: no random program to compile


def test_running_stats_hand_computed():
    """Two steps of the exponential averages, worked by hand (momentum 0.9).

    Batch 1: x = (1, 3): mu = 2, biased var = 1.
      mean = 0.9*0 + 0.1*2 = 0.2          var = 0.9*1 + 0.1*1 = 1.0
    Batch 2: x = (0, 4): mu = 2, biased var = 4.
      mean = 0.9*0.2 + 0.1*2 = 0.38       var = 0.9*1.0 + 0.1*4 = 1.3
    (PyTorch's unbiased running var would give 1.1 and 1.79.)
    """
    layer, p, s = _bn()
    np.testing.assert_array_equal(s["mean"], [0.0])
    np.testing.assert_array_equal(s["var"], [1.0])
    y, s = layer.apply(p, s, jnp.array([[1.0], [3.0]], F64), train=True)
    np.testing.assert_allclose(y[:, 0], np.array([-1, 1]) / np.sqrt(1 + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(s["mean"], [0.2], rtol=1e-14)
    np.testing.assert_allclose(s["var"], [1.0], rtol=1e-14)
    _, s = layer.apply(p, s, jnp.array([[0.0], [4.0]], F64), train=True)
    np.testing.assert_allclose(s["mean"], [0.38], rtol=1e-14)
    np.testing.assert_allclose(s["var"], [1.3], rtol=1e-14)
    # Eval uses the running statistics: y = (x - 0.38) / sqrt(1.3 + eps), and keeps them.
    y, s2 = layer.apply(p, s, jnp.array([[1.0], [2.0]], F64), train=False)
    np.testing.assert_allclose(y[:, 0], (np.array([1.0, 2.0]) - 0.38) / np.sqrt(1.3 + 1e-5),
                               rtol=1e-12)
    assert s2 is s


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_running_stats_k_steps_nhwc(momentum):
    """k = 4 steps on (N, H, W, C) batches: closed form sum of (1-m) m^(k-j) stat_j."""
    layer = nn.BatchNorm(momentum, dtype=F64)
    _, p, s = layer.init(KEY, (-1, 3, 3, 2))
    p = {"gamma": jnp.array([2.0, 0.5], F64), "beta": jnp.array([0.1, -0.3], F64)}
    xs = randn((4, 5, 3, 3, 2), seed=5, scale=3.0, shift=1.0)
    step = jax.jit(partial(layer.apply, train=True))
    for x in xs:
        y, s = step(p, s, x)
    xs = np.asarray(xs)
    mus = xs.mean(axis=(1, 2, 3))                      # (k, C)
    vars_ = xs.var(axis=(1, 2, 3))                     # biased (ddof=0)
    k = len(xs)
    w = (1 - momentum) * momentum ** (k - 1 - np.arange(k))
    np.testing.assert_allclose(s["mean"], w @ mus, rtol=1e-12)
    np.testing.assert_allclose(s["var"], momentum ** k + w @ vars_, rtol=1e-12)
    # train output: normalised with the batch statistics of the last batch
    x = xs[-1]
    expected = (x - mus[-1]) / np.sqrt(vars_[-1] + 1e-5) * [2.0, 0.5] + [0.1, -0.3]
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    # eval output: normalised with the running statistics
    y_eval, _ = jax.jit(layer.apply)(p, s, jnp.asarray(x))
    expected = ((x - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + 1e-5)
                * [2.0, 0.5] + [0.1, -0.3])
    np.testing.assert_allclose(y_eval, expected, rtol=1e-10, atol=1e-12)


def test_running_stats_get_no_gradient():
    layer, p, s = _bn()
    x = jnp.array([[1.0], [3.0], [4.0]], F64)
    g = jax.grad(lambda x: jnp.sum(layer.apply(p, s, x, train=True)[1]["mean"]))(x)
    np.testing.assert_array_equal(g, jnp.zeros_like(x))


def test_float32_state_under_strict_promotion():
    layer = nn.BatchNorm(dtype=jnp.float32)
    _, p, s = layer.init(KEY, (-1, 3))
    y, s = layer.apply(p, s, jnp.ones((4, 3), jnp.float32), train=True)
    assert y.dtype == s["mean"].dtype == s["var"].dtype == jnp.float32
    y, _ = layer.apply(p, s, jnp.ones((4, 3), jnp.float32), train=False)
    assert y.dtype == jnp.float32


def _single_and_batched():
    single = nn.serial(nn.Dense(16, dtype=F64), nn.BatchNorm(axis_name="batch", dtype=F64),
                       nn.ReLU(), nn.Dense(3, dtype=F64))
    batched = nn.serial(nn.Dense(16, dtype=F64), nn.BatchNorm(dtype=F64), nn.ReLU(),
                        nn.Dense(3, dtype=F64))
    return single, batched


def test_single_example_model_vmapped_equals_batched():
    single, batched = _single_and_batched()
    out_shape, params, state = numpy_init(single, (8,))
    assert out_shape == (3,)
    x = randn((6, 8), seed=1)
    labels = jnp.array([0, 1, 2, 0, 1, 2])

    def vmapped(params, state, x):
        return jax.vmap(lambda xi: single.apply(params, state, xi, train=True),
                        axis_name="batch", out_axes=(0, None))(x)

    # Gradients agree too. Data-parallel pattern (as under pmap): per-example gradients of
    # loss_i / N inside the vmap, where the sync-BN backward rule exchanges its two means
    # over the mapped axis, then summed over the examples; and the gradient of the batch
    # loss taken outside the vmap. Everything in one program (one compile).
    n = x.shape[0]

    def per_example(p, xi, yi):
        logits, _ = single.apply(p, state, xi, train=True)
        return ops.softmax_cross_entropy(logits[None], yi[None]) / n

    @jax.jit
    def everything(params, state, x):
        y1, s1 = vmapped(params, state, x)
        y2, s2 = batched.apply(params, state, x, train=True)
        gs = jax.vmap(jax.grad(per_example), in_axes=(None, 0, 0), axis_name="batch")(
            params, x, labels)
        g1 = jax.tree_util.tree_map(lambda a: a.sum(0), gs)
        g2 = jax.grad(lambda p: ops.softmax_cross_entropy(
            batched.apply(p, state, x, train=True)[0], labels))(params)
        g3 = jax.grad(lambda p: ops.softmax_cross_entropy(vmapped(p, state, x)[0],
                                                          labels))(params)
        # eval mode works per example without any mapped axis
        ye = jax.vmap(lambda xi: single.apply(params, s1, xi)[0])(x)
        ya = batched.apply(params, s2, x)[0]
        return y1, s1, y2, s2, g1, g2, g3, ye, ya

    y1, s1, y2, s2, g1, g2, g3, ye, ya = everything(params, state, x)
    np.testing.assert_allclose(y1, y2, rtol=1e-10, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(s1[1]["mean"], state[1]["mean"])
    for g in (g1, g3):
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g2)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ye, ya, rtol=1e-10, atol=1e-12)


def test_ensemble_of_seeds_in_one_vmap_equals_separate_runs():
    """4 seeds: init vmapped over keys, then 3 SGD steps (BN + dropout), all in one vmap."""
    model = nn.serial(nn.Dense(32, dtype=F64), nn.BatchNorm(dtype=F64), nn.ReLU(),
                      nn.Dropout(0.2), nn.Dense(10, dtype=F64))
    x = randn((3, 8, 20), seed=9)                                 # 3 batches of 8
    y = randint((3, 8), 10, seed=10)
    lr = 0.1

    def run(seed_key):
        init_key, drop_key = jax.random.split(seed_key)
        _, params, state = model.init(init_key, (-1, 20))

        def loss(p, s, xb, yb, k):
            logits, s = model.apply(p, s, xb, key=k, train=True)
            return ops.softmax_cross_entropy(logits, yb), s

        def sgd_step(carry, batch):                          # plain SGD, written here
            params, state = carry
            xb, yb, t = batch
            (l, state), g = jax.value_and_grad(loss, has_aux=True)(
                params, state, xb, yb, jax.random.fold_in(drop_key, t))
            params = jax.tree_util.tree_map(lambda w, gw: w - lr * gw, params, g)
            return (params, state), l

        (params, state), losses = jax.lax.scan(sgd_step, (params, state),
                                               (x, y, jnp.arange(3)))
        return params, state, losses

    keys = jax.random.split(jax.random.PRNGKey(42), 4)
    ens = jax.jit(jax.vmap(run))(keys)
    single = jax.jit(run)
    for i in range(4):
        sep = single(keys[i])
        for a, b in zip(jax.tree_util.tree_leaves(ens), jax.tree_util.tree_leaves(sep)):
            np.testing.assert_allclose(a[i], b, rtol=1e-10, atol=1e-12)
    # the members really differ (different seeds), and the state is per member
    w0 = ens[0][0]["w"]
    assert w0.shape == (4, 20, 32) and not np.allclose(w0[0], w0[1])
    assert ens[1][1]["mean"].shape == (4, 32)


def test_one_model_definition_with_or_without_a_bound_axis():
    """``BatchNorm(axis_name="batch")`` runs unchanged eagerly, under ``jit`` (no axis
    bound: local statistics, which under jit with shardings are the global batch's), under
    ``pmap`` and under ``shard_map`` (one device here, so the synchronised statistics are
    the local ones): everywhere it equals ``BatchNorm()`` on the same data."""
    from jax.sharding import Mesh, PartitionSpec as P

    synced = nn.serial(nn.Dense(4, dtype=F64), nn.BatchNorm(axis_name="batch", dtype=F64))
    plain = nn.serial(nn.Dense(4, dtype=F64), nn.BatchNorm(dtype=F64))
    _, p, s = numpy_init(plain, (-1, 3))
    x = randn((6, 3), seed=2)
    train = partial(synced.apply, train=True)
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    runs = {
        "eager": synced.apply(p, s, x, train=True),
        "jit": jax.jit(train)(p, s, x),
        "pmap": jax.tree_util.tree_map(lambda a: a[0], jax.pmap(
            train, axis_name="batch", in_axes=(None, None, 0))(p, s, x[None])),
        "pmap-other-axis": jax.tree_util.tree_map(lambda a: a[0], jax.pmap(
            train, axis_name="devices", in_axes=(None, None, 0))(p, s, x[None])),
        "shard_map": jax.jit(jax.shard_map(train, mesh=mesh, in_specs=(P(), P(), P("batch")),
                                           out_specs=(P("batch"), P())))(p, s, x),
    }
    y_ref, s_ref = jax.jit(partial(plain.apply, train=True))(p, s, x)
    assert not np.allclose(s_ref[1]["mean"], s[1]["mean"])
    for name, (y, new_state) in runs.items():
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14, err_msg=name)
        for a, b in zip(jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(s_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)
