"""funcnet.parallel in the one-device pytest process: layouts, errors, the one-device step.

The 8-device behaviour is tested in tests/parallel/devices/ (run by test_fake_devices.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import bn_mlp, digits, init, reference_step


def test_shard_batch_splits_leading_axis_in_blocks():
    x, y = np.arange(24.0).reshape(12, 2), np.arange(12)
    xs, ys = parallel.shard_batch((x, y), num_devices=4)
    assert xs.shape == (4, 3, 2) and ys.shape == (4, 3)
    np.testing.assert_array_equal(ys[1], [3, 4, 5])
    np.testing.assert_array_equal(xs.reshape(12, 2), x)
    assert parallel.shard_batch(x).shape == (1, 12, 2)          # default: local devices


@pytest.mark.parametrize("bad, exc, match", [
    ((np.zeros((100, 3)), 8), ValueError,
     r"shard_batch: x has shape \(100, 3\); its leading size must be divisible by 8 "
     r"\(num_devices=8\)"),
    (((np.zeros((8, 3)), np.zeros((6,))), 2), ValueError,
     r"shard_batch: x\[0\] has shape \(8, 3\) but x\[1\] has shape \(6,\), expected the same "
     r"leading \(batch\) size"),
    ((np.zeros(()), 1), ValueError, r"shard_batch: x has shape \(\), expected a leading "
                                    r"\(batch\) axis"),
    ((np.zeros((4,)), 0), ValueError, r"shard_batch: num_devices must be >= 1, got 0"),
    ((np.zeros((4,)), 2.0), TypeError, r"shard_batch: num_devices must be an int"),
])
def test_shard_batch_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
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
    with pytest.raises(ValueError, match="^replicate: devices is empty$"):
        parallel.replicate(tree, devices=[])
    with pytest.raises(ValueError, match="^make_mesh: devices is empty$"):
        parallel.make_mesh([])


def test_process_batch_contiguous_blocks():
    x, y = np.arange(12).reshape(6, 2), np.arange(6)
    blocks = [parallel.process_batch(x, y, process_index=p, process_count=3) for p in range(3)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), x)
    np.testing.assert_array_equal(blocks[1][1], [2, 3])
    (whole,) = parallel.process_batch(x)                        # one process: everything
    np.testing.assert_array_equal(whole, x)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"process_count": 4}, ValueError,
     r"process_batch: arrays\[0\] has shape \(6, 2\); its leading size must be divisible by "
     r"4 \(process_count=4\)"),
    ({"process_index": 2, "process_count": 2}, ValueError,
     r"process_index 2 is not < process_count 2"),
    ({"process_index": -1, "process_count": 2}, ValueError,
     r"process_batch: process_index must be >= 0, got -1"),
    ({"process_index": 0.0, "process_count": 2}, TypeError,
     r"process_batch: process_index must be an int"),
])
def test_process_batch_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        parallel.process_batch(np.zeros((6, 2)), np.zeros(6), **kwargs)


def test_process_batch_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match=r"process_batch: arrays\[0\] has shape \(6, 2\) but "
                                         r"arrays\[1\] has shape \(4,\), expected the same "
                                         r"leading \(batch\) size"):
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


STEP_FACTORIES = (parallel.pmap_train_step, parallel.sharded_train_step,
                  parallel.shard_map_train_step)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"model": "m"}, TypeError, "train_step: model must be a Layer"),
    ({"opt": nn.ReLU()}, TypeError, "train_step: opt must be an optimizer"),
    ({"loss_fn": 3}, TypeError, "train_step: loss_fn must be callable"),
    ({"metrics_fn": 3}, TypeError, "train_step: metrics_fn must be callable"),
    ({"accum_steps": 0}, ValueError, "train_step: accum_steps must be >= 1"),
    ({"donate": "no"}, TypeError, r"(pmap|sharded|shard_map)_train_step: donate must be a "
                                  r"bool"),
])
@pytest.mark.parametrize("factory", STEP_FACTORIES)
def test_step_factories_check_arguments(factory, kwargs, exc, match):
    args = {"model": bn_mlp(), "opt": optim.sgd(0.1), "loss_fn": ops.softmax_cross_entropy}
    kwargs = dict(kwargs)
    extra = {k: kwargs.pop(k) for k in ("metrics_fn", "accum_steps", "donate") if k in kwargs}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        factory(args["model"], args["opt"], args["loss_fn"], **extra)


def test_mapped_steps_on_one_device_return_the_single_device_metrics():
    """One step, three maps: the same params and the same metrics (loss AND accuracy).

    Adam's eps is 1e-3 (not 1e-8): see tests/parallel/devices/test_steps.py."""
    model, opt = bn_mlp(), optim.adam(1e-2, eps=1e-3)
    params, state = init(model)
    x, y = digits(8)
    p_ref, s_ref, o_ref, loss = reference_step(model, opt)(params, state, opt.init(params), x, y)
    single = jax.jit(train.train_step(model, opt))(params, state, opt.init(params), x, y)
    assert_close(single[:3] + (single[3]["loss"],), (p_ref, s_ref, o_ref, loss), 1e-12, "step")
    mesh = parallel.make_mesh()
    for factory in STEP_FACTORIES[1:]:
        step = factory(bn_mlp(), opt, mesh=mesh)
        out = step(*parallel.put_replicated((params, state, opt.init(params)), mesh), x, y)
        assert_close(out, single, 1e-12, factory.__name__)
    step = parallel.pmap_train_step(bn_mlp("batch"), opt)
    out = step(*parallel.replicate((params, state, opt.init(params))),
               *parallel.shard_batch((x, y)))
    assert set(out[3]) == {"loss", "accuracy"}
    assert_close(parallel.unreplicate(out), single, 1e-10, "pmap")   # compiled apart


def test_pmap_step_names_unreplicated_params():
    """Issue 13 item 12: unreplicated params used to give pmap's own message."""
    model, opt = bn_mlp("batch"), optim.sgd(0.1)
    params, state = init(model)
    step = parallel.pmap_train_step(model, opt)
    xs, ys = parallel.shard_batch(digits(8))
    with pytest.raises(ValueError, match=r"pmap_train_step: params\[1\]\['b'\] has shape "
                                         r"\(16,\), expected a leading device axis of "
                                         r"size 1: replicate params"):
        step(params, state, opt.init(params), xs, ys)
    p, s, o = parallel.replicate((params, state, opt.init(params)))
    with pytest.raises(ValueError, match=r"pmap_train_step: xs has shape \(8, 8, 8, 1\), "
                                         r"expected a leading device axis"):
        step(p, s, o, *digits(8))


def test_pmap_step_diagnoses_only_layout_errors():
    """The diagnosis runs only after pmap raised a ValueError, raises the clear error
    itself (pmap's error is its context), and lets every other error through unchanged."""
    model, opt = bn_mlp("batch"), optim.sgd(0.1)
    params, state = init(model)
    step = parallel.pmap_train_step(model, opt)
    p, s, o = parallel.replicate((params, state, opt.init(params)))
    xs, ys = parallel.shard_batch(digits(8))
    with pytest.raises(ValueError, match=r"^pmap_train_step: ys has shape \(8,\)") as err:
        step(p, s, o, xs, digits(8)[1])
    assert isinstance(err.value.__context__, ValueError)
    assert "pmap_train_step" not in str(err.value.__context__)
    # a correct layout with a wrong batch: the step's own error, not a layout diagnosis
    with pytest.raises(ValueError, match=r"^train_step: x has shape \(8, 8, 8, 1\) but y has "
                                         r"shape \(7,\), expected the same leading"):
        step(p, s, o, xs, ys[:, :7])
    with pytest.raises((TypeError, ValueError)) as err:         # not a layout problem:
        step(p, s, o, xs, "labels")                              # JAX's own error
    assert "pmap_train_step" not in str(err.value)


def test_mesh_steps_reject_a_batch_without_leading_axis():
    for factory in (parallel.sharded_train_step, parallel.shard_map_train_step):
        step = factory(bn_mlp(), optim.sgd(0.1))
        name = factory.__name__
        with pytest.raises(ValueError, match=rf"{name}: x has shape \(\), expected a "
                                             r"leading \(batch\) axis"):
            step((), (), (), np.zeros(()), np.zeros(3))


def test_mapped_accumulated_steps_return_the_optimizers_own_state():
    """train_step wraps ``opt`` internally (the gradient pmean, the accumulation) but returns
    ``opt``'s own state: current_learning_rate(opt, state) reads the schedule after it."""
    sched = optim.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    opt = optim.adam(sched)
    params, state = init(bn_mlp())
    x, y = digits(8)
    step = parallel.pmap_train_step(bn_mlp("batch"), opt, accum_steps=2)
    _, _, o, _ = step(*parallel.replicate((params, state, opt.init(params))),
                      *parallel.shard_batch((x, y)))
    mesh = parallel.make_mesh()
    step = parallel.shard_map_train_step(bn_mlp("data"), opt, mesh=mesh, accum_steps=2)
    _, _, o2, _ = step(*parallel.put_replicated((params, state, opt.init(params)), mesh), x, y)
    for got in (parallel.unreplicate(o), parallel.to_host(o2)):
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(
            opt.init(params))
        assert float(optim.current_learning_rate(opt, got)) == pytest.approx(float(sched(1)))
