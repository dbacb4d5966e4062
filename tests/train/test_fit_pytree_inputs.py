"""fit, evaluate and the data helpers with several inputs: ``x`` a pytree of arrays.

The model ``Halves(BN_MLP)`` takes the digits split into two dict entries and
concatenates them, so training it on ``{"left", "right"}`` must equal training ``BN_MLP``
on the whole array: the same shuffled rows, dropout keys, params, state and history, on
the scan path, the per-step path and through a Loader; resume and the run fingerprint
follow the pytree; bad pytrees are refused naming the leaf.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import checkpoint, data, nn, train
from funcnet.gradcheck import assert_close
from tests.train._setup import ADAM, BN_MLP, FIT, KEY, init, subset

X, Y = subset(192)


def halves(x):
    return {"left": x[:, :32], "right": x[:, 32:]}


def Halves(inner):
    """``inner`` on the concatenation of a dict's arrays (in key order)."""
    def init_fn(key, shape):
        first = shape[min(shape)]
        return inner.init(key, tuple(first[:-1]) + (sum(s[-1] for s in shape.values()),))

    def apply(params, state, x, *, key=None, train=False):
        return inner.apply(params, state, jnp.concatenate([x[k] for k in sorted(x)], -1),
                           key=key, train=train)

    return nn.Layer(init_fn, apply, f"Halves({inner.name})")


MODEL = Halves(BN_MLP)
XD = halves(X)
EVAL = (X[:50], Y[:50])
EVAL_D = (halves(EVAL[0]), EVAL[1])


def _same_run(got, want):
    assert_close(got[:3], want[:3], 1e-6, "params, state, opt_state")
    assert got[3].keys() == want[3].keys()
    for k in set(want[3]) - {"epoch_time"}:
        np.testing.assert_allclose(got[3][k], want[3][k], rtol=1e-6, err_msg=k)


@pytest.mark.parametrize("scan", [True, False])
def test_fit_on_a_dict_of_inputs_equals_one_array(scan):
    params, state = init(BN_MLP)
    want = train.fit(BN_MLP, params, state, ADAM, (X, Y), 2, scan=scan, eval_data=EVAL,
                     **FIT)
    got = train.fit(MODEL, params, state, ADAM, (XD, Y), 2, scan=scan, eval_data=EVAL_D,
                    **FIT)
    _same_run(got, want)
    ev = train.evaluate(MODEL, *got[:2], *EVAL_D, batch_size=16)   # a padded last batch
    ev1 = train.evaluate(BN_MLP, *want[:2], *EVAL, batch_size=16)
    assert ev.keys() == ev1.keys() and np.allclose(list(ev.values()), list(ev1.values()))


def test_loader_and_batches_give_the_same_rows_as_for_one_array():
    loader, loader1 = data.Loader(XD, Y, 32, key=KEY), data.Loader(X, Y, 32, key=KEY)
    for (xb, yb), (xb1, yb1) in zip(loader(1), loader1(1)):
        assert set(xb) == {"left", "right"}
        np.testing.assert_array_equal(np.concatenate([xb["left"], xb["right"]], -1), xb1)
        np.testing.assert_array_equal(yb, yb1)
    (xb, _), (xb1, _) = next(data.batches(XD, Y, 40, key=3)), next(data.batches(X, Y, 40, key=3))
    np.testing.assert_array_equal(xb["right"], xb1[:, 32:])
    stacked, _ = data.epoch_batches(XD, Y, 32, jax.random.PRNGKey(5))
    stacked1, _ = data.epoch_batches(X, Y, 32, jax.random.PRNGKey(5))
    assert stacked["left"].shape == (6, 32, 32)
    np.testing.assert_array_equal(stacked["left"], stacked1[..., :32])
    params, state = init(BN_MLP)
    want = train.fit(BN_MLP, params, state, ADAM, loader1, 2, key=KEY, progress=False)
    _same_run(train.fit(MODEL, params, state, ADAM, loader, 2, key=KEY, progress=False), want)


def test_resume_and_the_fingerprint_follow_the_pytree(tmp_path):
    params, state = init(BN_MLP)
    full = train.fit(MODEL, params, state, ADAM, (XD, Y), 2, **FIT)
    manager = checkpoint.CheckpointManager(tmp_path / "ckpt")
    train.fit(MODEL, params, state, ADAM, (XD, Y), 1, checkpoint=manager, **FIT)
    resumed = train.fit(MODEL, params, state, ADAM, (XD, Y), 2, checkpoint=manager, **FIT)
    assert_close(resumed[:3], full[:3], 0, "resumed")
    renamed = {"l": XD["left"], "right": XD["right"]}
    with pytest.raises(train.RunMismatchError,
                       match=r"data is \"x\['l'\] float32\[192, 32\] x\['right'\]"):
        train.fit(Halves(BN_MLP), params, state, ADAM, (renamed, Y), 2, checkpoint=manager,
                  **FIT)


BAD = [
    ({"left": X[:, :32], "right": X[:100, 32:]}, ValueError,
     r"fit: data x\['left'\] has shape \(192, 32\) but data x\['right'\] has shape "
     r"\(100, 32\), expected the same leading \(batch\) size"),
    ({"left": X[:, :32], "right": [1, 2]}, TypeError,
     r"fit: data x\['right'\]\[0\] must be an array, got int"),
    ({}, TypeError, r"fit: data x must be an array or a pytree of arrays, got dict with no "
                    r"arrays"),
]


def test_a_list_of_two_batches_is_batches_and_y_is_no_tuple():
    """x may be a pytree, so a list of two (x, y) batches must not read as one pair."""
    params, state = init(BN_MLP)
    listed = [(XD, Y), (halves(X[:64]), Y[:64])]
    *_, hist = train.fit(MODEL, params, state, ADAM, listed, 1, key=KEY, progress=False)
    assert len(hist["loss"]) == 1
    with pytest.raises(TypeError, match=r"fit: data y must be an array \(the targets\) or a "
                                        r"non-empty dict of arrays .*got tuple"):
        train.fit(MODEL, params, state, ADAM, (XD, (Y, Y)), 1, **FIT)


@pytest.mark.parametrize("x, exc, match", BAD)
def test_bad_pytrees_are_refused_naming_the_leaf(x, exc, match):
    params, state = init(BN_MLP)
    with pytest.raises(exc, match=match):
        train.fit(MODEL, params, state, ADAM, (x, Y), 1, **FIT)


def test_labels_are_still_checked_against_the_model_outputs():
    params, state = init(BN_MLP)
    with pytest.raises(ValueError, match=r"fit: the labels in data y hold 10 .* for a model "
                                         r"with 10 outputs"):
        train.fit(MODEL, params, state, ADAM, (XD, np.full_like(Y, 10)), 1, **FIT)
