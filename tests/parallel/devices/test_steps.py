"""On 8 devices, every data-parallel step equals single-device training on the global batch.

float64 throughout (conftest enables it), so the comparisons are tight: ``rtol = 1e-10``
(scale-aware, see ``funcnet.gradcheck.assert_close``) after 3 Adam steps. Only the order
of floating-point sums differs between the runs. Adam's ``eps`` is 1e-3 rather than 1e-8:
a bias feeding batch norm through a ReLU that is active on the whole batch has a zero
gradient, which both runs compute as round-off (~1e-17), and ``m / (sqrt(v) + 1e-8)``
would blow that up into a 1e-11 step that differs between the runs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import (GLOBAL_BATCH, bn_mlp, digits, dropout_mlp, init,
                                     reference_step)

RTOL = 1e-10
STEPS = 3
OPT = optim.adam(1e-2, eps=1e-3)


def _reference(model, opt, params, state, batches):
    step = reference_step(model, opt)
    opt_state, losses = opt.init(params), []
    for x, y in batches:
        params, state, opt_state, loss = step(params, state, opt_state, x, y)
        losses.append(float(loss))
    return params, state, opt_state, losses


def _batches():
    return [digits(GLOBAL_BATCH, offset=GLOBAL_BATCH * t) for t in range(STEPS)]


@pytest.fixture(scope="module")
def start():
    params, state = init(bn_mlp())
    ref = _reference(bn_mlp(), OPT, params, state, _batches())
    return params, state, ref


def test_eight_devices():
    assert jax.local_device_count() == 8


def test_pmap_equals_single_device(start):
    params, state, (p_ref, s_ref, o_ref, losses) = start
    traces = []

    def loss_fn(logits, y):     # counts the traces of the step
        traces.append(1)
        return ops.softmax_cross_entropy(logits, y)

    step = parallel.pmap_train_step(bn_mlp("batch"), OPT, loss_fn, "batch")
    p, s, o = parallel.replicate((params, state, OPT.init(params)))
    for t, (x, y) in enumerate(_batches()):
        p, s, o, metrics = step(p, s, o, *parallel.shard_batch((x, y)))
        np.testing.assert_allclose(metrics["loss"], np.full(8, losses[t]), rtol=RTOL)
        assert set(metrics) == {"loss", "accuracy"}          # the single-device metrics
        first = first if t else len(traces)
    # replicate's layout is the one pmap returns: the later steps reuse the first's program
    assert first >= 1 and len(traces) == first, (first, len(traces))
    for leaf in jax.tree_util.tree_leaves((p, s, o)):     # replicas stay bitwise equal
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
    assert_close(parallel.unreplicate((p, s, o)), (p_ref, s_ref, o_ref), RTOL, "pmap")


def test_pmap_without_key_on_two_devices():
    """key=None (the default) with a Conv2D model and a stateless optimizer: 6 argument
    leaves for 6 arguments, where jax 0.10.2's pmap mapped ``in_axes=(0, 0, 0, 0, 0, None)``
    leaf by leaf and handed ``ys`` over unmapped (shape (2, 8) instead of (8,))."""
    model = nn.serial(nn.Conv2D(2, (3, 3), dtype=jnp.float64), nn.ReLU(), nn.Flatten(),
                      nn.Dense(10, dtype=jnp.float64))
    opt = optim.sgd(0.5)
    params, state = init(model)
    x, y = digits(GLOBAL_BATCH)
    args = (params, state, opt.init(params), x, y)
    assert len(jax.tree_util.tree_leaves(args)) == len(args) + 1   # the pmap bug's condition
    p_ref, _, _, loss = reference_step(model, opt)(*args)
    devices = jax.local_devices()[:2]
    step = parallel.pmap_train_step(model, opt, devices=devices)
    p, _, _, metrics = step(*parallel.replicate(args[:3], devices),
                            *parallel.shard_batch((x, y), 2))
    np.testing.assert_allclose(metrics["loss"], [loss, loss], rtol=RTOL)
    assert_close(parallel.unreplicate(p), p_ref, RTOL, "pmap, key=None")


@pytest.mark.parametrize("style", ["shard_map", "jit"])
def test_mesh_steps_equal_single_device(start, style):
    params, state, (p_ref, s_ref, o_ref, losses) = start
    mesh = parallel.make_mesh()
    # ONE model definition for both: sync BN over "data" under shard_map; under jit with
    # shardings the name is not bound and BN falls back to the (global-batch) statistics
    factory = parallel.sharded_train_step if style == "jit" else parallel.shard_map_train_step
    step = factory(bn_mlp("data"), OPT, ops.softmax_cross_entropy, mesh)
    p, s, o = parallel.put_replicated((params, state, OPT.init(params)), mesh)
    for t, (x, y) in enumerate(_batches()):
        xg, yg = parallel.global_batch((x, y), mesh)
        assert xg.sharding.spec == jax.sharding.PartitionSpec("data")
        p, s, o, metrics = step(p, s, o, xg, yg)
        np.testing.assert_allclose(metrics["loss"], losses[t], rtol=RTOL)
        assert set(metrics) == {"loss", "accuracy"}
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(p))
    assert_close(parallel.to_host((p, s, o)), (p_ref, s_ref, o_ref), RTOL, style)


def test_masked_metrics_of_every_style_are_the_global_batch_metrics():
    """Targets ``{"labels", "mask"}`` with the kept entries spread unevenly (device 3 keeps
    none): the masked accuracy of the pmap, shard_map and jit steps, with and without
    accumulation, is the single-device step's on the global batch (each device's and
    micro-batch's accuracy weighted by its kept entries, not averaged)."""
    model = nn.serial(nn.Flatten(), nn.Dense(10, dtype=jnp.float64))
    params, state = init(model)
    x, _ = digits()
    pred = np.argmax(model.apply(params, state, x)[0], axis=-1)   # right on rows 0, 3, 6, ..
    labels = np.where(np.arange(GLOBAL_BATCH) % 3 == 0, pred, (pred + 1) % 10)
    mask = np.zeros(GLOBAL_BATCH, bool)
    mask[[0, 1, 2, 3, 5, 8, 11]] = True
    y = {"labels": np.where(mask, labels, -100), "mask": mask}

    def loss_fn(logits, t):
        return ops.softmax_cross_entropy(logits, t["labels"], where=t["mask"])

    opt = optim.sgd(0.1)
    ref = train.train_step(model, opt, loss_fn)(params, state, opt.init(params), x, y)[3]
    assert 0 < ref["accuracy"] < 1
    mesh = parallel.make_mesh()
    for k in (1, 2):
        step = parallel.pmap_train_step(model, opt, loss_fn, accum_steps=k)
        m = step(*parallel.replicate((params, state, opt.init(params))),
                 *parallel.shard_batch((x, y)))[3]
        for name in ("loss", "accuracy"):
            np.testing.assert_allclose(m[name], np.full(8, ref[name]), rtol=1e-6,
                                       err_msg=f"pmap, accum_steps={k}: {name}")
        for factory in (parallel.shard_map_train_step, parallel.sharded_train_step):
            step = factory(model, opt, loss_fn, mesh, accum_steps=k)
            m = step(*parallel.put_replicated((params, state, opt.init(params)), mesh),
                     *parallel.global_batch((x, y), mesh))[3]
            for name in ("loss", "accuracy"):
                np.testing.assert_allclose(m[name], ref[name], rtol=1e-6,
                                           err_msg=f"{factory.__name__}, k={k}: {name}")


def test_gradient_accumulation_equals_optim_accumulate():
    """accum_steps=2 == two calls of optim.accumulate(opt, 2) on x[0::2], x[1::2] (BN too)."""
    params, state = init(bn_mlp())
    x, y = digits(2 * GLOBAL_BATCH)       # 4 rows per device: x[i::2] != contiguous halves
    acc = optim.accumulate(OPT, 2)
    p_ref, s_ref, _, _ = _reference(bn_mlp(), acc, params, state,
                                    [(x[0::2], y[0::2]), (x[1::2], y[1::2])])
    step = parallel.pmap_train_step(bn_mlp("batch"), OPT, accum_steps=2)
    p, s, _, _ = step(*parallel.replicate((params, state, OPT.init(params))),
                      *parallel.shard_batch((x, y)))
    assert_close(parallel.unreplicate((p, s)), (p_ref, s_ref), RTOL, "pmap accumulation")
    mesh = parallel.make_mesh()
    step = parallel.sharded_train_step(bn_mlp(), OPT, mesh=mesh, accum_steps=2)
    p, s, _, _ = step(*parallel.put_replicated((params, state, OPT.init(params)), mesh),
                      *parallel.global_batch((x, y), mesh))
    assert_close(parallel.to_host((p, s)), (p_ref, s_ref), RTOL, "jit accumulation")


def test_dropout_uses_one_key_per_device():
    """Device d draws its mask from fold_in(key, d): the step equals the mean over d of the
    per-shard gradients computed with those keys, and differs from using one key."""
    model, opt = dropout_mlp(), optim.sgd(0.5)
    params, state = init(model)
    x, y = digits(GLOBAL_BATCH)
    xs, ys = parallel.shard_batch((x, y))
    key = jax.random.PRNGKey(7)

    @jax.jit
    def mean_grads(keys):
        def grad(xd, yd, kd):
            def loss(q):
                logits, _ = model.apply(q, state, xd, key=kd, train=True)
                return ops.softmax_cross_entropy(logits, yd)
            return jax.grad(loss)(params)
        return jax.tree_util.tree_map(lambda g: jnp.mean(g, 0), jax.vmap(grad)(xs, ys, keys))

    grads = mean_grads(jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(8)))
    expected = optim.apply_updates(params, opt.update(grads, opt.init(params), params)[0])
    step = parallel.pmap_train_step(model, opt)
    p, _, _, _ = step(*parallel.replicate((params, state, opt.init(params))), xs, ys, key)
    assert_close(parallel.unreplicate(p), expected, RTOL, "per-device dropout keys")
    same_key = mean_grads(jnp.stack([key] * 8))          # the test can tell the two apart
    assert not np.allclose(grads[1]["w"], same_key[1]["w"])


def test_vmap_over_models_inside_pmap_equals_separate_runs():
    """4 seeds (vmap) x 8 devices (pmap) in one program == 4 single-device runs."""
    model, seeds = bn_mlp("batch"), 4
    inits = [init(bn_mlp(), seed) for seed in range(seeds)]
    stack = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    params, state = stack([p for p, _ in inits]), stack([s for _, s in inits])
    opt_state = jax.vmap(OPT.init)(params)
    step = jax.pmap(
        jax.vmap(train.train_step(model, OPT, axis_name="batch"),
                 in_axes=(0, 0, 0, None, None)),
        axis_name="batch", in_axes=(0, 0, 0, 0, 0))
    p, s, o = parallel.replicate((params, state, opt_state))
    batches = _batches()[:2]
    for x, y in batches:
        p, s, o, _ = jax.block_until_ready(step(p, s, o, *parallel.shard_batch((x, y))))
    p, s = parallel.unreplicate((p, s))
    for seed, (p0, s0) in enumerate(inits):
        p_ref, s_ref, _, _ = _reference(bn_mlp(), OPT, p0, s0, batches)
        got = jax.tree_util.tree_map(lambda a: a[seed], (p, s))
        assert_close(got, (p_ref, s_ref), RTOL, f"seed {seed}")
