"""Callbacks: the protocol in fit, EarlyStopping, KeepBest."""
import jax
import numpy as np
import pytest

from funcnet import checkpoint, train
from tests.train._setup import ADAM, FIT, MLP, X_TEST, Y_TEST, assert_trees_equal, init, subset

X, Y = subset(192)


def test_early_stopping_rule():
    stop = train.EarlyStopping("eval_loss", patience=2, min_delta=0.1)
    values = [1.0, 0.8, 0.75, 0.72, 0.5]            # 0.75 and 0.72 are within min_delta
    stops = [stop(e + 1, {"eval_loss": v}) for e, v in enumerate(values[:4])]
    assert stops == [False, False, False, True]
    assert (stop.best_epoch, stop.best_value, stop.stopped_epoch) == (2, 0.8, 4)
    acc = train.EarlyStopping("eval_accuracy", patience=1)          # auto: max
    assert acc.mode == "max"
    assert [acc(1, {"eval_accuracy": 0.5}), acc(2, {"eval_accuracy": 0.4})] == [False, True]
    with pytest.raises(KeyError, match=r"EarlyStopping: monitor 'eval_loss' is not in the "
                                       r"logs \['loss'\]; pass eval_data"):
        train.EarlyStopping()(1, {"loss": 1.0})


@pytest.mark.parametrize("make, exc, match", [
    (lambda: train.EarlyStopping(patience=0), ValueError, "patience must be >= 1"),
    (lambda: train.EarlyStopping(patience=1.5), TypeError, "patience must be an int"),
    (lambda: train.EarlyStopping(mode="up"), ValueError, "mode must be one of"),
    (lambda: train.EarlyStopping(min_delta=-1.0), ValueError, "min_delta must be in"),
    (lambda: train.KeepBest(monitor=3), TypeError, "monitor must be a str"),
])
def test_callback_arguments_are_checked(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_fit_calls_callbacks_every_epoch_and_stops(tmp_path, capsys):
    params, state = init(MLP)
    seen = []

    def record(epoch, logs):
        seen.append((epoch, sorted(logs)))
        return epoch == 2

    manager = checkpoint.CheckpointManager(tmp_path)
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 5, checkpoint=manager,
                         checkpoint_every=10, callbacks=[record], batch_size=32,
                         key=FIT["key"])
    assert [e for e, _ in seen] == [1, 2] and hist["epoch"] == [1, 2]
    assert seen[0][1] == ["accuracy", "epoch_time", "learning_rate", "loss"]
    assert manager.all_steps() == [2]                      # the stopping epoch is saved
    assert "fit: stopped by a callback after epoch 2 of 5" in capsys.readouterr().out


def test_early_stopping_in_fit():
    params, state = init(MLP)
    stop = train.EarlyStopping("loss", patience=1, min_delta=10.0)  # never improves enough
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 6, callbacks=[stop], **FIT)
    assert hist["epoch"] == [1, 2] and stop.stopped_epoch == 2 and stop.best_epoch == 1


def test_keep_best_keeps_a_copy_of_the_best_epoch():
    params, state = init(MLP)
    keeper = train.KeepBest("eval_loss", mode="max")   # max: keeps the WORST loss, epoch 1
    out = train.fit(MLP, params, state, ADAM, (X, Y), 3, eval_data=(X_TEST, Y_TEST),
                    callbacks=[keeper], **FIT)
    assert keeper.best_epoch == 1 and keeper.best_value == out[3]["eval_loss"][0]
    one = train.fit(MLP, params, state, ADAM, (X, Y), 1, **FIT)
    assert isinstance(keeper.best, train.TrainState)
    assert_trees_equal(tuple(keeper.best), one[:3])       # a copy, not donated away
    assert not np.array_equal(np.asarray(keeper.best.params[0]["w"]),
                              np.asarray(out[0][0]["w"]))
    assert keeper(4, {"eval_loss": 99.0}) is False and keeper.best_epoch == 4


def test_fit_rejects_a_non_callable_callback():
    params, state = init(MLP)
    with pytest.raises(TypeError, match=r"fit: callbacks\[1\] must be callable"):
        train.fit(MLP, params, state, ADAM, (X, Y), 1, callbacks=[print, 3], **FIT)
    jax.block_until_ready(params)
