"""fit(mesh=...) and evaluate(mesh=...) on 8 devices equal one-device training on the same
global batches: the scan path, the per-step path and a Loader, with a batch-norm model
(float64, rtol 1e-10 scale-aware; Adam eps 1e-3 as in test_steps.py)."""
import jax
import numpy as np
import pytest

from funcnet import checkpoint, data, nn, ops, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import bn_mlp, digits, dropout_mlp, init, laid_out, mesh_2d

RTOL = 1e-10
OPT = optim.adam(1e-2, eps=1e-3)
KEY = jax.random.PRNGKey(3)
X, Y = digits(128)
EVAL = digits(50, offset=128)
FIT = dict(batch_size=32, key=KEY, progress=False)


def _replicated(tree):
    return all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
               for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("scan", [True, False])
def test_fit_on_a_mesh_equals_one_device(scan):
    model = bn_mlp("data")       # the same definition as for pmap/shard_map steps
    params, state = init(model)
    single = train.fit(model, params, state, OPT, (X, Y), 2, scan=scan, eval_data=EVAL,
                       **FIT)
    keeper = train.KeepBest("eval_loss")
    multi = train.fit(model, params, state, OPT, (X, Y), 2, scan=scan, eval_data=EVAL,
                      mesh=parallel.make_mesh(), callbacks=[keeper], **FIT)
    assert _replicated(multi[:3]) and _replicated(tuple(keeper.best))
    assert_close(parallel.to_host(multi[:3]), single[:3], RTOL, f"fit mesh scan={scan}")
    for k in ("loss", "accuracy", "eval_loss", "eval_accuracy"):
        np.testing.assert_allclose(multi[3][k], single[3][k], rtol=RTOL)


def test_fit_on_a_mesh_with_a_loader_and_dropout():
    model = dropout_mlp()
    params, state = init(model)
    loader = data.Loader(X, Y, 32, key=KEY)
    single = train.fit(model, params, state, OPT, loader, 2, key=KEY, progress=False)
    multi = train.fit(model, params, state, OPT, loader, 2, key=KEY, progress=False,
                      mesh=parallel.make_mesh())
    assert_close(parallel.to_host(multi[:3]), single[:3], RTOL, "fit mesh loader")
    ev = train.evaluate(model, *multi[:2], *EVAL, batch_size=20, mesh=parallel.make_mesh())
    ev1 = train.evaluate(model, *single[:2], *EVAL, batch_size=20)
    assert list(ev) == ["loss", "accuracy"]
    np.testing.assert_allclose([ev["loss"], ev["accuracy"]], [ev1["loss"], ev1["accuracy"]],
                               rtol=RTOL)


def test_fit_on_a_mesh_refuses_batches_that_do_not_split():
    model = bn_mlp("data")
    params, state = init(model)
    mesh = parallel.make_mesh()
    with pytest.raises(ValueError, match=r"fit: batch_size 36 is not divisible by the 8 "
                                         r"devices of the mesh; use a multiple of 8"):
        train.fit(model, params, state, OPT, (X, Y), 1, mesh=mesh, **dict(FIT, batch_size=36))
    with pytest.raises(ValueError, match=r"fit: a batch of data x has shape \(20, .*\); its "
                                         r"leading size must be divisible by 8 \(the 8 "
                                         r"devices of the mesh\)"):
        train.fit(model, params, state, OPT, lambda e: [(X[:20], Y[:20])], 1, key=KEY,
                  progress=False, mesh=mesh)


@pytest.mark.parametrize("scan", [True, False])
def test_fit_on_a_mesh_with_a_dict_of_inputs(scan):
    """x = {"a", "b"} with a + b = X, every leaf split over the devices: equals one
    device on X (both paths, and evaluate)."""
    inner = bn_mlp("data")

    def apply(params, state, x, *, key=None, train=False):
        return inner.apply(params, state, x["a"] + x["b"], key=key, train=train)

    model = nn.Layer(lambda key, shape: inner.init(key, shape["a"]), apply, "Sum")
    params, state = init(inner)
    a = np.random.default_rng(0).standard_normal(X.shape)
    xd, evald = {"a": a, "b": X - a}, {"a": EVAL[0], "b": np.zeros_like(EVAL[0])}
    single = train.fit(inner, params, state, OPT, (X, Y), 2, scan=scan, **FIT)
    multi = train.fit(model, params, state, OPT, (xd, Y), 2, scan=scan,
                      mesh=parallel.make_mesh(), **FIT)
    assert_close(parallel.to_host(multi[:3]), single[:3], 1e-9, "fit mesh dict")
    ev = train.evaluate(model, *multi[:2], evald, EVAL[1], batch_size=16,
                        mesh=parallel.make_mesh())
    ev1 = train.evaluate(inner, *single[:2], *EVAL, batch_size=16)
    np.testing.assert_allclose(ev["loss"], ev1["loss"], rtol=1e-9)


def _masked_loss(logits, t):
    return ops.softmax_cross_entropy(logits, t["labels"], where=t["mask"])


def _masked_metrics(logits, t):
    return {"accuracy": train.accuracy(logits, t["labels"], where=t["mask"])}


@pytest.mark.parametrize("scan", [True, False])
def test_fit_on_a_mesh_with_dict_targets(scan):
    """y = {"labels" (-100 where masked), "mask"}, every leaf split over the devices:
    equals one device (both paths, the eval logs, evaluate on a padded last batch)."""
    model = bn_mlp("data")
    params, state = init(model)
    mask = np.random.default_rng(1).random(len(Y)) < 0.75
    yd = {"labels": np.where(mask, Y, -100), "mask": mask}
    evald = {"labels": EVAL[1], "mask": np.arange(len(EVAL[1])) % 3 > 0}
    kw = dict(loss_fn=_masked_loss, metrics_fn=_masked_metrics, eval_data=(EVAL[0], evald),
              scan=scan, **FIT)
    single = train.fit(model, params, state, OPT, (X, yd), 2, **kw)
    multi = train.fit(model, params, state, OPT, (X, yd), 2, mesh=parallel.make_mesh(), **kw)
    assert_close(parallel.to_host(multi[:3]), single[:3], RTOL, "fit mesh dict targets")
    for k in ("loss", "accuracy", "eval_loss", "eval_accuracy"):
        np.testing.assert_allclose(multi[3][k], single[3][k], rtol=RTOL)
    ev = train.evaluate(model, *multi[:2], EVAL[0], evald, batch_size=16,
                        loss_fn=_masked_loss, metrics_fn=_masked_metrics,
                        mesh=parallel.make_mesh())
    np.testing.assert_allclose([ev["loss"], ev["accuracy"]],
                               [single[3]["eval_loss"][-1], single[3]["eval_accuracy"][-1]],
                               rtol=RTOL)


def test_a_mesh_run_resumes_on_the_same_mesh_and_on_fewer_devices(tmp_path, capsys):
    """A checkpoint fit(mesh=...) wrote was never resumable: its epoch was saved as a
    NumPy array where the resume template has an int."""
    model = bn_mlp("data")
    params, state = init(model)
    mesh = parallel.make_mesh()
    full = train.fit(model, params, state, OPT, (X, Y), 2, mesh=mesh, **FIT)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(model, params, state, OPT, (X, Y), 1, mesh=mesh, checkpoint=manager, **FIT)
    resumed = train.fit(model, params, state, OPT, (X, Y), 2, mesh=mesh, checkpoint=manager,
                        batch_size=32, key=KEY)
    assert "fit: resumed at epoch 1 of 2" in capsys.readouterr().out
    assert_close(parallel.to_host(resumed[:3]), parallel.to_host(full[:3]), RTOL, "resume")
    assert resumed[3]["loss"] == pytest.approx(full[3]["loss"], rel=RTOL)
    four = parallel.make_mesh(devices=jax.devices()[:4])
    more = train.fit(model, params, state, OPT, (X, Y), 3, mesh=four, checkpoint=manager,
                     batch_size=32, key=KEY)
    assert "fit: resumed at epoch 2 of 3" in capsys.readouterr().out
    assert more[3]["epoch"] == [1, 2, 3]
    assert all(len(a.sharding.device_set) == 4 for a in jax.tree_util.tree_leaves(more[:3]))


def test_a_typed_key_trains_on_a_mesh_like_a_raw_key(tmp_path):
    """jax.random.key(3) has PRNGKey(3)'s bits: the same run, on both paths; placing and
    reading typed keys (parallel.put_replicated / to_host) used to fail in NumPy."""
    model = dropout_mlp()
    params, state = init(model)
    mesh = parallel.make_mesh()
    typed = jax.random.key(3)
    for scan in (True, False):
        raw = train.fit(model, params, state, OPT, (X, Y), 1, scan=scan, mesh=mesh, **FIT)
        out = train.fit(model, params, state, OPT, (X, Y), 1, scan=scan, mesh=mesh,
                        checkpoint=checkpoint.CheckpointManager(tmp_path / str(scan)),
                        **dict(FIT, key=typed))
        assert_close(parallel.to_host(out[:3]), parallel.to_host(raw[:3]), 0.0, "typed key")
    placed = parallel.put_replicated({"k": typed}, mesh)["k"]
    assert jax.dtypes.issubdtype(placed.dtype, jax.dtypes.prng_key)
    assert len(placed.sharding.device_set) == 8
    back = parallel.to_host({"k": placed})["k"]
    np.testing.assert_array_equal(jax.random.key_data(back), jax.random.key_data(typed))


def test_fit_on_one_device_keeps_the_arrays_a_mesh_run_returned():
    """fit copies what it is given before donating; for arrays replicated over a mesh,
    device_put(may_alias=False) handed back a device's own shard, so the caller's
    params were deleted."""
    model = bn_mlp("data")
    params, state = init(model)
    out = train.fit(model, params, state, OPT, (X, Y), 1, mesh=parallel.make_mesh(), **FIT)
    train.fit(model, out[0], out[1], OPT, (X, Y), 1, opt_state=out[2], **FIT)
    leaves = jax.tree_util.tree_leaves(out[:3])
    assert not any(a.is_deleted() for a in leaves)
    train.evaluate(model, out[0], out[1], *EVAL)


def test_a_loader_whose_last_batch_does_not_split_is_refused_before_training():
    model = bn_mlp("data")
    params, state = init(model)
    ragged = data.Loader(X[:100], Y[:100], 32, key=KEY, drop_last=False)    # last batch: 4
    with pytest.raises(ValueError, match=r"fit: data: the Loader's last batch \(drop_last="
                                         r"False\) of 4 is not divisible by the 8 devices"):
        train.fit(model, params, state, OPT, ragged, 1, key=KEY, progress=False,
                  mesh=parallel.make_mesh())
    with pytest.raises(ValueError, match=r"fit: data: the Loader's batch_size 12 is not "
                                         r"divisible by the 8 devices"):
        train.fit(model, params, state, OPT, data.Loader(X, Y, 12), 1, key=KEY,
                  progress=False, mesh=parallel.make_mesh())


@pytest.mark.parametrize("style", ["tp", "fsdp"])
def test_fit_keeps_the_shardings_of_params_laid_out_on_its_mesh(tmp_path, capsys, style):
    """Params split over a 2-D ("data", "model") mesh (tensor parallel, FSDP) come back
    with the same shardings (Adam's moments too), before and after a resume, and train like
    one device; fit used to replicate every leaf."""
    model = bn_mlp("data")
    params, state = init(model)
    mesh = mesh_2d()
    sharded, specs = laid_out(params, mesh, style)
    single = train.fit(model, params, state, OPT, (X, Y), 2, eval_data=EVAL, **FIT)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(model, sharded, state, OPT, (X, Y), 1, mesh=mesh, checkpoint=manager, **FIT)
    out = train.fit(model, sharded, state, OPT, (X, Y), 2, mesh=mesh, checkpoint=manager,
                    eval_data=EVAL, **dict(FIT, progress=None))
    assert "fit: resumed at epoch 1 of 2" in capsys.readouterr().out
    want = [s.spec for s in jax.tree_util.tree_leaves(specs)]
    assert [a.sharding.spec for a in jax.tree_util.tree_leaves(out[0])] == want
    mu = out[2][0].mu                                      # optim.adam: ScaleByAdamState
    assert [a.sharding.spec for a in jax.tree_util.tree_leaves(mu)] == want
    assert not any(a.is_deleted() for a in jax.tree_util.tree_leaves(sharded))
    assert_close(parallel.to_host(out[:3]), single[:3], RTOL, f"fit {style}")
    np.testing.assert_allclose(out[3]["eval_loss"][-1], single[3]["eval_loss"][-1], rtol=RTOL)
    ev = train.evaluate(model, out[0], out[1], *EVAL, batch_size=24, mesh=mesh)
    ev1 = train.evaluate(model, *single[:2], *EVAL, batch_size=24)
    np.testing.assert_allclose(ev["loss"], ev1["loss"], rtol=RTOL)


def test_fit_and_evaluate_on_a_mesh_from_jax_make_mesh():
    """jax.make_mesh makes Explicit axes (jax 0.10), where funcnet's backward rules cannot
    name their results' shardings: fit failed ("can only refer to Auto axes" on the scan
    path, ShardingTypeError "Contracting dimensions are sharded" per step). fit and
    evaluate now compile on the mesh's Auto twin, also with params laid out on it."""
    explicit = jax.sharding.AxisType.Explicit   # jax.make_mesh's default from jax 0.9 on
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(explicit, explicit))
    assert explicit in mesh.axis_types
    model = bn_mlp("data")
    params, state = init(model)
    sharded, specs = laid_out(params, mesh, "tp")
    single = train.fit(model, params, state, OPT, (X, Y), 1, **FIT)
    for scan in (True, False):
        out = train.fit(model, sharded, state, OPT, (X, Y), 1, scan=scan, mesh=mesh, **FIT)
        assert [a.sharding.spec for a in jax.tree_util.tree_leaves(out[0])] == [
            s.spec for s in jax.tree_util.tree_leaves(specs)]
        assert_close(parallel.to_host(out[:3]), single[:3], RTOL, f"make_mesh scan={scan}")
    ev = train.evaluate(model, *out[:2], *EVAL, batch_size=24, mesh=mesh)
    ev1 = train.evaluate(model, *single[:2], *EVAL, batch_size=24)
    np.testing.assert_allclose(ev["loss"], ev1["loss"], rtol=RTOL)
