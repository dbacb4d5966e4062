"""fit, evaluate and train_step with ``y`` a dict of arrays: padded sequence labels.

A tagger (Embedding -> Dense over ``(N, T)`` tokens) learns one label per token of
sequences of different lengths, padded to ``T``: its targets travel as ``{"labels": (N, T)
int with -100 in the padding, "mask": (N, T) bool}``. The padding must never count: the
same run with other padding labels is bit-for-bit the same run, on the scan path, the
per-step path and through a Loader; ``evaluate`` equals the loss and masked accuracy of
the whole set computed at once; an all-kept mask equals training on the plain array.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import data, nn, ops, optim, train
from funcnet.gradcheck import assert_close
from tests.train._setup import ADAM, BN_MLP, F32, FIT, KEY, init, subset

N, T, V, C = 96, 12, 20, 5
TAGGER = nn.serial(nn.Embedding(V, 8, dtype=F32), nn.Dense(C, dtype=F32))


def _tagging_set(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (N, T)).astype(np.int32)
    lengths = rng.integers(1, T + 1, N)
    mask = np.arange(T)[None] < lengths[:, None]
    labels = np.where(mask, tokens % C, -100).astype(np.int32)   # learnable: id mod C
    return tokens, {"labels": labels, "mask": mask}


TOKENS, TARGETS = _tagging_set()
TARGETS_EVAL = jax.tree_util.tree_map(lambda a: a[:40], TARGETS)


def masked_loss(logits, t):
    return ops.softmax_cross_entropy(logits, t["labels"], where=t["mask"])


def masked_metrics(logits, t):
    return {"accuracy": train.accuracy(logits, t["labels"], where=t["mask"])}


SEQ = dict(loss_fn=masked_loss, metrics_fn=masked_metrics, batch_size=16, key=KEY,
           progress=False)


def tagger_params():
    _, params, state = TAGGER.init(jax.random.PRNGKey(1), (-1, T))
    return params, state


def _repadded(targets, value):
    return {**targets, "labels": np.where(targets["mask"], targets["labels"], value)}


@pytest.mark.parametrize("scan", [True, False])
def test_padding_labels_never_count(scan):
    params, state = tagger_params()
    run = train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 3, scan=scan,
                    eval_data=(TOKENS[:40], TARGETS_EVAL), **SEQ)
    other = train.fit(TAGGER, params, state, ADAM, (TOKENS, _repadded(TARGETS, 3)), 3,
                      scan=scan, eval_data=(TOKENS[:40], _repadded(TARGETS_EVAL, 0)), **SEQ)
    assert_close(other[:3], run[:3], 0, "the padding's labels changed the run")
    hist = run[3]
    assert set(hist) == {"epoch", "loss", "accuracy", "eval_loss", "eval_accuracy",
                         "epoch_time", "learning_rate"}
    assert hist["loss"][-1] < hist["loss"][0] and hist["accuracy"][-1] > 0.5
    assert all(np.isfinite(v) for k in ("loss", "eval_loss") for v in hist[k])


def test_the_scan_and_per_step_paths_and_a_loader_are_one_run():
    params, state = tagger_params()
    scanned = train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 2, scan=True, **SEQ)
    stepped = train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 2, scan=False, **SEQ)
    loader = data.Loader(TOKENS, TARGETS, 16, key=KEY)
    seq = {k: v for k, v in SEQ.items() if k != "batch_size"}
    loaded = train.fit(TAGGER, params, state, ADAM, loader, 2, **seq)
    for got in (stepped, loaded):
        assert_close(got[:3], scanned[:3], 1e-6, "params, state, opt_state")
        np.testing.assert_allclose(got[3]["loss"], scanned[3]["loss"], rtol=1e-6)
    xb, yb = next(iter(loader(0)))
    assert set(yb) == {"labels", "mask"} and yb["labels"].shape == yb["mask"].shape == (16, T)


@functools.lru_cache(maxsize=None)
def _trained_tagger():
    """One epoch of training, shared by the evaluate tests (they only read it)."""
    params, state = tagger_params()
    return train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 1, **SEQ)[:2]


@pytest.mark.parametrize("metrics_fn", [masked_metrics, None])
def test_evaluate_equals_the_whole_set_at_once(metrics_fn):
    """The row-masked loss is the mean over all N*T tokens of the kept ones' losses, so
    its per-example mean over N sequences (a padded last batch included) is the loss of
    the whole set; the accuracy is over every kept token of the set (each sequence
    weighted by its kept tokens), not the mean of each sequence's accuracy."""
    params, state = _trained_tagger()
    got = train.evaluate(TAGGER, params, state, TOKENS, TARGETS, batch_size=40,
                         loss_fn=masked_loss, metrics_fn=metrics_fn)
    logits, _ = TAGGER.apply(params, state, TOKENS)
    hits = (np.asarray(jnp.argmax(logits, -1)) == TARGETS["labels"]) & TARGETS["mask"]
    per_sequence = hits.sum(1) / TARGETS["mask"].sum(1)
    assert got["loss"] == pytest.approx(float(masked_loss(logits, TARGETS)), rel=1e-5)
    assert got["accuracy"] == pytest.approx(hits.sum() / TARGETS["mask"].sum(), rel=1e-6)
    assert abs(got["accuracy"] - per_sequence.mean()) > 1e-3     # the two differ here


def test_evaluate_counts_each_kept_token_once_whatever_the_batching():
    """Sequences with nothing kept add nothing (not a 0 accuracy); a float mask weighs
    each entry by its value; the batch size (padded last batch) and a mesh of one device
    change nothing; a set with nothing kept reports 0."""
    params, state = _trained_tagger()
    mask = TARGETS["mask"].copy()
    mask[::3] = False                                    # a third of the sequences empty
    targets = {**TARGETS, "mask": mask}
    logits, _ = TAGGER.apply(params, state, TOKENS)
    hits = (np.asarray(jnp.argmax(logits, -1)) == TARGETS["labels"]) & mask
    runs = [train.evaluate(TAGGER, params, state, TOKENS, targets, batch_size=b,
                           loss_fn=masked_loss, metrics_fn=masked_metrics, mesh=m)
            for b, m in ((96, None), (7, None), (40, jax.make_mesh((1,), ("data",))))]
    for got in runs:
        assert got["accuracy"] == pytest.approx(hits.sum() / mask.sum(), rel=1e-6)
    weights = np.where(mask, np.linspace(0.5, 2.0, T, dtype=np.float32), 0.0)
    got = train.evaluate(TAGGER, params, state, TOKENS, {**TARGETS, "mask": weights},
                         batch_size=40, loss_fn=lambda lg, t: masked_loss(
                             lg, {**t, "mask": t["mask"] > 0}), metrics_fn=masked_metrics)
    assert got["accuracy"] == pytest.approx((hits * weights).sum() / weights.sum(), rel=1e-6)
    none = train.evaluate(TAGGER, params, state, TOKENS, {**TARGETS, "mask": mask & False},
                          loss_fn=masked_loss, metrics_fn=masked_metrics)
    assert none == {"loss": 0.0, "accuracy": 0.0}


@pytest.mark.parametrize("scan", [True, False])
def test_the_epoch_metrics_count_each_kept_token_once(scan):
    """With the params held still (learning rate 0), an epoch's accuracy is the accuracy
    over every kept token of the training set (each step weighted by its batch's kept
    tokens, as evaluate weighs examples), not the mean of the batches' accuracies; the
    loss stays the mean of the steps' losses; the count never shows in the history."""
    params, state = tagger_params()
    mask = TARGETS["mask"] & (np.arange(N) % 3 > 0)[:, None]      # some rows hold none
    targets = {**TARGETS, "mask": mask}
    hist = train.fit(TAGGER, params, state, optim.sgd(0.0), (TOKENS, targets), 1,
                     **{**SEQ, "scan": scan})[3]
    logits, _ = TAGGER.apply(params, state, TOKENS)
    hits = (np.asarray(jnp.argmax(logits, -1)) == TARGETS["labels"]) & mask
    order = data.epoch_batches(np.arange(N), np.arange(N), 16, data.epoch_keys(KEY, 0)[0])[0]
    per_batch = [hits[i].sum() / mask[i].sum() for i in np.asarray(order)]
    assert hist["accuracy"][0] == pytest.approx(hits.sum() / mask.sum(), rel=1e-6)
    assert abs(hist["accuracy"][0] - np.mean(per_batch)) > 1e-3   # the two differ here
    assert hist["loss"][0] == pytest.approx(float(masked_loss(logits, targets)), rel=1e-5)
    assert set(hist) == {"epoch", "loss", "accuracy", "learning_rate", "epoch_time"}


def test_default_metrics_of_a_dict_are_the_masked_accuracy_of_its_labels():
    """The default rule runs on the dict's "labels" where its "mask" is true (the
    convention of the host label check); a dict without "labels" reports nothing."""
    params, state = tagger_params()
    runs = [train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 2,
                      **{**SEQ, "metrics_fn": m})[3] for m in (None, masked_metrics)]
    np.testing.assert_allclose(runs[0]["accuracy"], runs[1]["accuracy"], rtol=1e-6)
    logits = jnp.asarray(np.random.default_rng(3).standard_normal((N, T, C)))
    want = masked_metrics(logits, TARGETS)["accuracy"]
    for loss in (masked_loss, ops.softmax_cross_entropy):
        assert train.default_metrics(loss)(logits, TARGETS)["accuracy"] == want
    first = functools.partial(ops.softmax_cross_entropy, axis=1)   # classes first
    got = train.default_metrics(first)(jnp.swapaxes(logits, 1, 2), TARGETS)["accuracy"]
    np.testing.assert_allclose(got, want, rtol=1e-7)
    assert train.default_metrics(masked_loss)(logits, {"mask": TARGETS["mask"]}) == {}
    assert "accuracy" in train.default_metrics(masked_loss)(
        logits, {"labels": TARGETS["mask"].astype(np.int32)})      # no mask: every row


def test_an_all_kept_mask_equals_the_plain_array():
    x, y = subset(96)
    params, state = init(BN_MLP)
    want = train.fit(BN_MLP, params, state, ADAM, (x, y), 2, **FIT)
    got = train.fit(BN_MLP, params, state, ADAM, (x, {"labels": y, "mask": y >= 0}), 2,
                    loss_fn=masked_loss, metrics_fn=masked_metrics, **FIT)
    assert_close(got[:3], want[:3], 1e-6, "params, state, opt_state")
    np.testing.assert_allclose(got[3]["accuracy"], want[3]["accuracy"], rtol=1e-6)


def test_train_step_accumulates_over_dict_targets():
    params, state = tagger_params()
    opt_state = ADAM.init(params)
    step = train.make_train_step(TAGGER, ADAM, masked_loss, metrics_fn=masked_metrics)
    accum = train.make_train_step(TAGGER, ADAM, masked_loss, metrics_fn=masked_metrics,
                                  accum_steps=2)
    # equal halves: the mean of the two halves' means is the batch mean
    x, t = TOKENS[:16], {"labels": TARGETS["labels"][:16], "mask": np.ones((16, T), bool)}
    t["labels"] = np.where(t["labels"] < 0, 0, t["labels"])
    copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)  # noqa: E731 - donated
    one = step(*copy((params, state, opt_state)), x, t)
    two = accum(*copy((params, state, opt_state)), x, t)
    assert_close(two[:3], one[:3], 1e-6, "accumulated step")


def test_padding_labels_in_an_array_are_refused_with_the_dict_fix():
    with pytest.raises(ValueError, match=r"fit: the labels in data y hold -100 .* pass y as a "
                                         r"dict, y=\{'labels': y, 'mask': y >= 0\}"):
        train.fit(TAGGER, *tagger_params(), ADAM, (TOKENS, TARGETS["labels"]), 1,
                  **{**SEQ, "loss_fn": ops.softmax_cross_entropy, "metrics_fn": None})


def test_the_labels_of_a_dict_are_checked_where_the_mask_is_true():
    """A dict's "labels" (class indices of the logits) are range-checked like a plain y,
    only where its "mask" is true: -100 padding passes, a real label out of range is a
    ValueError naming where it is (before any training, not a NaN mid-epoch)."""
    bad = TARGETS["labels"].copy()
    bad[3, 0] = C                                    # position 0 is always kept
    with pytest.raises(ValueError, match=rf"fit: the labels in data y\['labels'\] hold {C} "
                                         rf"\(at index \(3, 0\)\), expected class indices "
                                         rf"in \[0, {C}\) .*where y\['mask'\] is true"):
        train.fit(TAGGER, *tagger_params(), ADAM, (TOKENS, {**TARGETS, "labels": bad}), 1,
                  **SEQ)
    with pytest.raises(ValueError, match=r"evaluate: the labels in y\['labels'\] hold"):
        train.evaluate(TAGGER, *tagger_params(), TOKENS, {**TARGETS, "labels": bad},
                       loss_fn=masked_loss, metrics_fn=masked_metrics)
    hidden = np.where(TARGETS["mask"], TARGETS["labels"], C + 7)  # out of range, masked
    train.evaluate(TAGGER, *tagger_params(), TOKENS, {**TARGETS, "labels": hidden},
                   loss_fn=masked_loss, metrics_fn=masked_metrics)


BAD = [
    ((TOKENS, (TARGETS["labels"], TARGETS["mask"])), TypeError,
     r"fit: data y must be an array \(the targets\) or a non-empty dict of arrays .* got "
     r"tuple \(a dict, not a tuple"),
    ((TOKENS, {}), TypeError, r"fit: data y must be an array .* got dict"),
    ((TOKENS, {**TARGETS, "mask": TARGETS["mask"][:50]}), ValueError,
     r"fit: data x has shape \(96, 12\) but data y\['mask'\] has shape \(50, 12\)"),
    ((TOKENS, {**TARGETS, "mask": [True]}), TypeError,
     r"fit: data y\['mask'\]\[0\] must be an array"),
]


def test_a_loss_that_takes_no_dict_is_refused_saying_so():
    with pytest.raises(TypeError, match=r"fit: data: softmax_cross_entropy: labels must be an "
                                        r"array, got dict; y is a dict \('labels', 'mask'\) "
                                        r"and loss_fn and metrics_fn get it whole"):
        train.fit(TAGGER, *tagger_params(), ADAM, (TOKENS, TARGETS), 1,
                  **{**SEQ, "loss_fn": ops.softmax_cross_entropy})


@pytest.mark.parametrize("pair, exc, match", BAD)
def test_bad_dict_targets_are_refused_naming_the_entry(pair, exc, match):
    with pytest.raises(exc, match=match):
        train.fit(TAGGER, *tagger_params(), ADAM, pair, 1, **SEQ)


@pytest.mark.parametrize("where, match", [
    (np.ones((4,), bool), r"accuracy: where has shape \(4,\), expected the logits' shape "
                          r"without the class axis \(4, 3\)"),
    ([True] * 12, r"accuracy: where must be an array, got list"),
])
def test_accuracy_where_is_checked(where, match):
    logits, labels = jnp.zeros((4, 3, C)), jnp.zeros((4, 3), int)
    with pytest.raises((TypeError, ValueError), match=match):
        train.accuracy(logits, labels, where=where)


def test_accuracy_where_counts_the_kept_rows_only():
    logits = jax.nn.one_hot(jnp.array([[0, 1, 2], [3, 4, 0]]), C)
    labels = jnp.array([[0, 1, 4], [3, -100, -100]])
    mask = labels >= 0
    assert float(train.accuracy(logits, labels, where=mask)) == pytest.approx(3 / 4)
    assert float(train.accuracy(logits, labels, where=jnp.zeros_like(mask))) == 0.0
    assert float(train.accuracy(logits[:, :2], labels[:, :2])) == pytest.approx(3 / 4)
    weights = jnp.array([[0.1, 0.2, 0.3], [0.05, 0.0, 0.0]])        # sum < 1: no clipping
    assert float(train.accuracy(logits, labels, where=weights)) == pytest.approx(0.35 / 0.65)


def test_a_resume_is_the_same_run_and_other_targets_are_refused(tmp_path):
    """The run's fingerprint names every entry of y: a resume with the same dict is the
    uninterrupted run bit for bit; an entry of another dtype is another run."""
    from funcnet import checkpoint
    params, state = tagger_params()
    full = train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 2, **SEQ)
    manager = checkpoint.CheckpointManager(tmp_path / "ckpt")
    train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 1, checkpoint=manager, **SEQ)
    resumed = train.fit(TAGGER, params, state, ADAM, (TOKENS, TARGETS), 2,
                        checkpoint=manager, **SEQ)
    assert_close(resumed[:3], full[:3], 0, "resumed")
    assert resumed[3]["loss"] == full[3]["loss"]
    other = {**TARGETS, "labels": TARGETS["labels"].astype(np.int64)}
    with pytest.raises(train.RunMismatchError, match=r"y\['labels'\] int64\[96, 12\]"):
        train.fit(TAGGER, params, state, ADAM, (TOKENS, other), 2, checkpoint=manager, **SEQ)

