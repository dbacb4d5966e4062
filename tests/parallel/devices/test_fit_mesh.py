"""fit(mesh=...) and evaluate(mesh=...) on 8 devices equal one-device training on the same
global batches: the scan path, the per-step path and a Loader, with a batch-norm model
(float64, rtol 1e-10 scale-aware; Adam eps 1e-3 as in test_steps.py)."""
import jax
import numpy as np
import pytest

from funcnet import data, nn, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import bn_mlp, digits, dropout_mlp, init

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
