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


def test_callback_objects_reused_by_another_fit_start_afresh():
    """A new run (no checkpoint) resets EarlyStopping and KeepBest by their on_resume with
    an empty history: the second fit neither stops at once on the first run's counters
    nor reports (or holds) the first run's best epoch."""
    params, state = init(MLP)
    stop = train.EarlyStopping("loss", patience=1, min_delta=10.0)  # never improves enough
    keeper = train.KeepBest("loss", mode="max")                     # the first epoch's
    runs = [train.fit(MLP, params, state, ADAM, (X, Y), 4, callbacks=[stop, keeper],
                      **{**FIT, "key": seed}) for seed in (0, 1)]
    first_epoch = train.fit(MLP, params, state, ADAM, (X, Y), 1, **{**FIT, "key": 1})
    for *_, hist in runs:
        assert hist["epoch"] == [1, 2]
    assert (stop.stopped_epoch, stop.best_epoch) == (2, 1)
    assert keeper.best_epoch == 1 and keeper.best_value == runs[1][3]["loss"][0]
    assert_trees_equal(tuple(keeper.best), first_epoch[:3])         # run 2's epoch 1


def test_fit_rejects_a_non_callable_callback():
    params, state = init(MLP)
    with pytest.raises(TypeError, match=r"fit: callbacks\[1\] must be callable"):
        train.fit(MLP, params, state, ADAM, (X, Y), 1, callbacks=[print, 3], **FIT)
    jax.block_until_ready(params)


# ------------------------------------------------------------------ resuming a run
def test_early_stopping_replays_the_history():
    """None is "not measured" (skipped); a NaN was measured and never improves."""
    nan = float("nan")
    history = {"epoch": [1, 2, 3, 4], "eval_loss": [None, 1.0, nan, None]}
    stop = train.EarlyStopping("eval_loss", patience=2)
    assert stop.on_resume(history) is False
    assert (stop.best_epoch, stop.best_value, stop.wait, stop.stopped_epoch) == (2, 1.0, 1, None)
    assert stop(5, {"eval_loss": 2.0}) is True and stop.stopped_epoch == 5
    short = train.EarlyStopping("eval_loss", patience=1)
    assert short.on_resume(history) is True and short.stopped_epoch == 3
    # a list shorter than "epoch" (histories of funcnet 0.2.0) is aligned to its end
    assert train.EarlyStopping("eval_loss", patience=1).on_resume(
        {"epoch": [1, 2, 3], "eval_loss": [1.0, 2.0]}) is True
    assert train.EarlyStopping("eval_loss").on_resume({}) is False


def test_a_resumed_run_stops_where_the_uninterrupted_one_stops(tmp_path, capsys):
    """Callbacks were not checkpointed: a resume reset EarlyStopping's patience, so the
    resumed run trained past the epoch where the uninterrupted run stopped."""
    params, state = init(MLP)

    def stopper(patience=3):     # improves at epoch 1 only: stops after epoch 1 + patience
        return train.EarlyStopping("loss", patience=patience, min_delta=10.0)

    full = train.fit(MLP, params, state, ADAM, (X, Y), 8, callbacks=[stopper()], **FIT)
    assert full[3]["epoch"] == [1, 2, 3, 4]
    manager = checkpoint.CheckpointManager(tmp_path, keep=None)
    train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager,
              callbacks=[stopper()], **FIT)
    stop = stopper()
    resumed = train.fit(MLP, params, state, ADAM, (X, Y), 8, checkpoint=manager,
                        callbacks=[stop], **FIT)
    assert resumed[3]["epoch"] == [1, 2, 3, 4] and stop.stopped_epoch == 4
    assert resumed[3]["loss"] == full[3]["loss"]
    assert_trees_equal(full[:3], resumed[:3])
    assert manager.all_steps() == [1, 2, 3, 4]                 # nothing past the stop
    # running the cell again trains nothing, and says why
    again = stopper()
    out = train.fit(MLP, params, state, ADAM, (X, Y), 8, checkpoint=manager,
                    batch_size=32, key=FIT["key"], callbacks=[again])
    assert capsys.readouterr().out.strip() == (
        "fit: nothing to train: EarlyStopping('loss', patience=3, min_delta=10.0, "
        "mode='min') had stopped this run at epoch 4")
    assert again.stopped_epoch == 4 and out[3] == resumed[3]
    assert_trees_equal(out[:3], resumed[:3])
    # less patience: by the history the run would have stopped earlier; nothing to train
    train.fit(MLP, params, state, ADAM, (X, Y), 8, checkpoint=manager, batch_size=32,
              key=FIT["key"], callbacks=[stopper(patience=1)])
    assert capsys.readouterr().out.strip().endswith("had stopped this run at epoch 2")
    # more patience continues the same run
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 8, checkpoint=manager,
                         callbacks=[stopper(patience=5)], **FIT)
    assert hist["epoch"] == [1, 2, 3, 4, 5, 6]


def test_keep_best_across_a_resume(tmp_path):
    params, state = init(MLP)
    ev = dict(eval_data=(X_TEST, Y_TEST), **FIT)
    # the best epoch is the restored one: KeepBest holds it again, as if never stopped
    full_keeper = train.KeepBest("loss")
    train.fit(MLP, params, state, ADAM, (X, Y), 3, callbacks=[full_keeper], **ev)
    manager = checkpoint.CheckpointManager(tmp_path / "a")
    train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **ev)
    keeper = train.KeepBest("loss")
    assert keeper.on_resume({"epoch": [1, 2], "loss": [2.0, 1.0]}) is False
    train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager, callbacks=[keeper],
              **ev)
    assert (keeper.best_epoch, keeper.best_value) == (full_keeper.best_epoch,
                                                      full_keeper.best_value) == (
        3, full_keeper.best_value)
    assert_trees_equal(tuple(keeper.best), tuple(full_keeper.best))
    # the best epoch is older than the checkpoint: its arrays are gone, and it says so
    worst = train.KeepBest("eval_loss", mode="max")               # epoch 1, as above
    train.fit(MLP, params, state, ADAM, (X, Y), 3, callbacks=[worst], **ev)
    manager = checkpoint.CheckpointManager(tmp_path / "b")
    train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **ev)
    late = train.KeepBest("eval_loss", mode="max")
    with pytest.warns(RuntimeWarning, match=r"KeepBest: resumed at epoch 2, but the best "
                                            r"epoch so far is 1 \(eval_loss = "):
        train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager,
                  callbacks=[late], **ev)
    assert (late.best_epoch, late.best_value, late.best) == (1, worst.best_value, None)


def test_history_stays_aligned_when_a_resume_adds_eval_data(tmp_path):
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **FIT)
    stop = train.EarlyStopping("eval_loss", patience=1)   # epochs 1-2 were not measured
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager,
                         eval_data=(X_TEST, Y_TEST), callbacks=[stop], **FIT)
    assert hist["epoch"] == [1, 2, 3] and stop.stopped_epoch is None
    assert hist["eval_loss"][:2] == [None, None] and hist["eval_loss"][2] > 0
    assert {len(v) for v in hist.values()} == {3}
    # and the other way round: a later resume without eval_data pads with None
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 4, checkpoint=manager, **FIT)
    assert hist["eval_loss"][3] is None and {len(v) for v in hist.values()} == {4}


def test_non_finite_history_values_survive_the_checkpoint(tmp_path):
    from funcnet.train.run import META_KEY, resume_point, save_metadata

    inf, nan = float("inf"), float("nan")
    history = {"epoch": [1, 2, 3, 4], "eval_loss": [nan, inf, -inf, None]}
    meta = save_metadata({"run": 1}, history, 4)
    assert meta[META_KEY]["history"]["eval_loss"] == ["nan", "inf", "-inf", None]
    manager = checkpoint.CheckpointManager(tmp_path)
    tree = {"a": np.zeros(2, np.float32)}
    manager.save(4, tree, metadata=meta)
    step, _, restored, stopped = resume_point("fit", manager, resume=True, overwrite=False,
                                              fp={"run": 1}, like=tree)
    assert stopped is None
    got = restored["eval_loss"]
    assert step == 4 and np.isnan(got[0]) and got[1:] == [inf, -inf, None]


def test_an_error_in_a_callback_keeps_the_epochs_checkpoint(tmp_path, capsys):
    """Callbacks run after the epoch's checkpoint is written: a failing plot or log
    callback used to throw the epoch away."""
    params, state = init(MLP)

    def broken(epoch, logs):
        if epoch == 2:
            raise RuntimeError("the plotting callback failed")
        return False

    manager = checkpoint.CheckpointManager(tmp_path)
    with pytest.raises(RuntimeError, match="plotting"):
        train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager, callbacks=[broken],
                  **FIT)
    assert manager.all_steps() == [1, 2]
    full = train.fit(MLP, params, state, ADAM, (X, Y), 3, **FIT)
    resumed = train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager,
                        batch_size=32, key=FIT["key"])
    assert "fit: resumed at epoch 2 of 3" in capsys.readouterr().out
    assert_trees_equal(full[:3], resumed[:3])


def test_a_run_a_plain_callback_stopped_stays_stopped(tmp_path, capsys):
    """A callable without on_resume cannot replay the history; the checkpoint records that
    it stopped the run, so the same call trains nothing (it used to train on); without
    that callback the run continues."""
    params, state = init(MLP)

    def stop_at_2(epoch, logs):
        return epoch == 2

    manager = checkpoint.CheckpointManager(tmp_path)
    args = (MLP, params, state, ADAM, (X, Y), 5)
    kwargs = dict(checkpoint=manager, batch_size=32, key=FIT["key"])
    first = train.fit(*args, callbacks=[stop_at_2], **kwargs)
    again = train.fit(*args, callbacks=[stop_at_2], **kwargs)
    out = capsys.readouterr().out
    assert ("fit: nothing to train: tests.train.test_callbacks.test_a_run_a_plain_callback_"
            "stopped_stays_stopped.<locals>.stop_at_2 had stopped this run at epoch 2") in out
    assert again[3]["epoch"] == [1, 2] and manager.all_steps() == [1, 2]
    assert_trees_equal(first[:3], again[:3])
    more = train.fit(*args, **kwargs)                               # without it: trains on
    assert "fit: resumed at epoch 2 of 5" in capsys.readouterr().out
    assert more[3]["epoch"] == [1, 2, 3, 4, 5]
