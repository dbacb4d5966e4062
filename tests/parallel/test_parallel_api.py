"""funcnet.parallel in the one-device pytest process: layouts, errors, the one-device step.

The 8-device behaviour is tested in tests/parallel/devices/ (run by test_fake_devices.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, parallel
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import bn_mlp, digits, init, reference_step


def test_shard_batch_splits_leading_axis_in_blocks():
    x, y = np.arange(24.0).reshape(12, 2), np.arange(12)
    xs, ys = parallel.shard_batch((x, y), num_devices=4)
    assert xs.shape == (4, 3, 2) and ys.shape == (4, 3)
    np.testing.assert_array_equal(ys[1], [3, 4, 5])
    np.testing.assert_array_equal(xs.reshape(12, 2), x)
    assert parallel.shard_batch(x).shape == (1, 12, 2)          # default: local devices


@pytest.mark.parametrize("bad, match", [
    ((np.zeros((100, 3)), 8), r"shard_batch: batch size 100 is not divisible by 8 devices"),
    (((np.zeros((8, 3)), np.zeros((6,))), 2), r"different batch sizes"),
    ((np.zeros(()), 1), r"expected a leading axis"),
    ((np.zeros((4,)), 0), r"num_devices must be a positive int"),
])
def test_shard_batch_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        parallel.shard_batch(*bad)


def test_shard_batch_rejects_non_arrays():
    with pytest.raises(TypeError, match=r"shard_batch: x\[1\] must be an array, got str"):
        parallel.shard_batch((np.zeros((2,)), "labels"))


def test_replicate_unreplicate_round_trip():
    tree = {"w": np.ones((2, 3), np.float32), "count": jnp.zeros((), jnp.int32)}
    rep = parallel.replicate(tree)
    assert rep["w"].shape == (1, 2, 3) and rep["count"].shape == (1,)
    assert rep["w"].devices() == set(jax.local_devices())
    back = parallel.unreplicate(rep)
    np.testing.assert_array_equal(back["w"], tree["w"])
    assert back["count"].dtype == jnp.int32
    with pytest.raises(ValueError, match=r"unreplicate: tree\['count'\] has shape \(\)"):
        parallel.unreplicate(tree)
    with pytest.raises(ValueError, match="devices is empty"):
        parallel.replicate(tree, devices=[])


def test_process_batch_contiguous_blocks():
    x, y = np.arange(12).reshape(6, 2), np.arange(6)
    blocks = [parallel.process_batch(x, y, process_index=p, process_count=3) for p in range(3)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), x)
    np.testing.assert_array_equal(blocks[1][1], [2, 3])
    (whole,) = parallel.process_batch(x)                        # one process: everything
    np.testing.assert_array_equal(whole, x)


@pytest.mark.parametrize("kwargs, match", [
    ({"process_count": 4}, r"process_batch: batch size 6 is not divisible by 4 processes"),
    ({"process_index": 2, "process_count": 2}, r"process_index 2 is not < process_count 2"),
    ({"process_index": -1, "process_count": 2}, r"process_index must be an int >= 0"),
])
def test_process_batch_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        parallel.process_batch(np.zeros((6, 2)), np.zeros(6), **kwargs)


def test_process_batch_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match=r"different batch sizes \[4, 6\]"):
        parallel.process_batch(np.zeros((6, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="at least one array"):
        parallel.process_batch()


def test_mesh_helpers_on_one_device():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    xg = parallel.global_batch(np.arange(6.0).reshape(3, 2), mesh)
    assert xg.shape == (3, 2) and xg.sharding.spec == jax.sharding.PartitionSpec("data")
    rep = parallel.put_replicated({"a": np.ones(3)}, mesh)
    assert rep["a"].sharding.is_fully_replicated
    np.testing.assert_array_equal(parallel.to_host(rep)["a"], np.ones(3))
    with pytest.raises(ValueError, match=r"axis_name 'batch' is not an axis of the mesh"):
        parallel.global_batch(np.zeros((2, 2)), mesh, axis_name="batch")
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        parallel.sharded_train_step(bn_mlp(), optim.sgd(0.1), ops.softmax_cross_entropy, "m")


def test_initialize_is_a_no_op_for_one_process():
    assert parallel.initialize(num_processes=1) is False
    jax.devices()                                 # the backend is in use in this process
    with pytest.warns(UserWarning, match="continuing as a single process"):
        assert parallel.initialize() is False
    assert jax.process_count() == 1


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"model": "m"}, TypeError, "model must be a funcnet.nn.Layer"),
    ({"opt": nn.ReLU()}, TypeError, "opt must be an optimizer"),
    ({"loss_fn": 3}, TypeError, "loss_fn must be callable"),
    ({"metrics_fn": 3}, TypeError, "metrics_fn must be None or callable"),
    ({"accum_steps": 0}, ValueError, "accum_steps must be a positive int"),
])
def test_step_factories_check_arguments(kwargs, exc, match):
    args = {"model": bn_mlp(), "opt": optim.sgd(0.1), "loss_fn": ops.softmax_cross_entropy}
    extra = {k: kwargs.pop(k) for k in ("metrics_fn", "accum_steps") if k in kwargs}
    args.update(kwargs)
    for factory in (parallel.data_parallel_step, parallel.pmap_train_step):
        with pytest.raises(exc, match=match):
            factory(args["model"], args["opt"], args["loss_fn"], **extra)


def test_one_device_step_equals_reference_and_reports_metrics():
    model, opt = bn_mlp(), optim.adam(1e-2)
    params, state = init(model)
    x, y = digits(8)
    acc = lambda logits, labels: {"accuracy": jnp.mean(  # noqa: E731
        (jnp.argmax(logits, -1).astype(labels.dtype) == labels).astype(jnp.float64))}
    step = jax.jit(parallel.data_parallel_step(model, opt, metrics_fn=acc))
    p, s, o, metrics = step(params, state, opt.init(params), x, y)
    p_ref, s_ref, o_ref, loss = reference_step(model, opt)(params, state, opt.init(params), x, y)
    assert_close((p, s, o, metrics["loss"]), (p_ref, s_ref, o_ref, loss), 1e-12, "step")
    assert set(metrics) == {"loss", "accuracy"} and 0.0 <= float(metrics["accuracy"]) <= 1.0
    with pytest.raises(ValueError, match=r"divisible by accum_steps=3"):
        parallel.data_parallel_step(model, opt, accum_steps=3)(params, state, o, x, y)
    with pytest.raises(ValueError, match=r"different batch sizes"):
        parallel.data_parallel_step(model, opt)(params, state, o, x, y[:4])


def test_mesh_steps_reject_a_batch_without_leading_axis():
    for factory in (parallel.sharded_train_step, parallel.shard_map_train_step):
        step = factory(bn_mlp(), optim.sgd(0.1))
        name = factory.__name__
        with pytest.raises(ValueError, match=rf"{name}: batch\['x'\] has shape \(\); its "
                                             r"leading size must be divisible by 1 devices"):
            step((), (), (), np.zeros(()), np.zeros(3))
