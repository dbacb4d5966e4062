"""fit and checkpoint directories: exact resume, history, announcements, runs never mixed."""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import checkpoint, data, ops, optim, train
from funcnet.train.run import META_KEY
from tests.train._setup import (ADAM, BN_MLP, FIT, KEY, MLP, assert_trees_equal, init,
                                subset)

X, Y = subset(192)


def test_resume_is_bit_identical_and_history_covers_every_epoch(tmp_path, capsys):
    params, state = init(BN_MLP)
    full = train.fit(BN_MLP, params, state, ADAM, (X, Y), 3, **FIT)
    manager = checkpoint.CheckpointManager(tmp_path / "ckpt", keep=2)
    train.fit(BN_MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **FIT)
    assert manager.latest_step() == 2
    assert manager.metadata()[META_KEY]["history"]["epoch"] == [1, 2]
    # a fresh start from other params: everything must come from the checkpoint
    other_params, other_state = init(BN_MLP, seed=1)
    resumed = train.fit(BN_MLP, other_params, other_state, ADAM, (X, Y), 3,
                        checkpoint=manager, batch_size=32, key=KEY)
    out = capsys.readouterr().out
    assert "fit: resumed at epoch 2 of 3" in out and "epoch 3/3  loss" in out
    assert_trees_equal(full[:3], resumed[:3])
    assert resumed[3]["epoch"] == [1, 2, 3]
    assert resumed[3]["loss"] == full[3]["loss"]
    assert manager.metadata(3)[META_KEY]["history"]["loss"] == full[3]["loss"]


def test_checkpoint_at_or_past_epochs_says_nothing_to_train(tmp_path, capsys):
    """Issue 16: rerunning a finished run trained 0 epochs silently."""
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    first = train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **FIT)
    again = train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager,
                      batch_size=32, key=KEY)
    assert capsys.readouterr().out.strip() == ("fit: nothing to train: checkpoint at "
                                               "epoch 2 of 2")
    assert_trees_equal(first[:3], again[:3])
    assert again[3] == first[3]


def test_checkpoint_every_and_extending_a_run(tmp_path):
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path, keep=None)
    train.fit(MLP, params, state, ADAM, (X, Y), 5, checkpoint_every=2, checkpoint=manager,
              **FIT)
    assert manager.all_steps() == [2, 4, 5]
    # epochs is not part of the run: asking for more continues the same run
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 6, checkpoint=manager, **FIT)
    assert hist["epoch"] == [1, 2, 3, 4, 5, 6] and manager.latest_step() == 6


def test_runs_are_never_mixed(tmp_path):
    """Issue 13 item 1: resume=False into a longer run's directory interleaved the runs,
    and a later resume restored the OTHER run's weights with an empty history."""
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path, keep=None)
    train.fit(MLP, params, state, ADAM, (X, Y), 5, checkpoint=manager, **FIT)
    with pytest.raises(train.RunMismatchError, match=r"fit: the checkpoint directory "
                       r".* holds another run's checkpoints \(latest: epoch 5; resume=False"):
        train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager, resume=False,
                  **FIT)
    assert manager.all_steps() == [1, 2, 3, 4, 5]          # untouched
    other_key = dict(FIT, key=jax.random.PRNGKey(7))
    with pytest.raises(train.RunMismatchError, match=r"key is '.*' now but '.*' in the "
                                                     r"checkpoint of epoch 5"):
        train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager, **other_key)
    with pytest.raises(ValueError, match=r"batch_size is 64 now but 32 .*; data is 'x "
                                         r"float32\[96, 64\]"):
        train.fit(MLP, params, state, ADAM, (X[:96], Y[:96]), 3, checkpoint=manager,
                  **dict(FIT, batch_size=64))
    fresh = train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager,
                      overwrite=True, **other_key)
    assert manager.all_steps() == [1, 2, 3] and fresh[3]["epoch"] == [1, 2, 3]
    alone = train.fit(MLP, params, state, ADAM, (X, Y), 3, **other_key)
    assert_trees_equal(fresh[:3], alone[:3])


def test_partial_settings_are_part_of_the_run_by_value(tmp_path):
    """A loss partial's NumPy or JAX scalar (label smoothing from a sweep) and a
    schedule partial's keyword are fingerprinted by value: another value is another run,
    refused; the same value as a Python float resumes."""
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)

    def sched(count, peak):
        return peak * 0.9 ** count.astype(jnp.float32)

    def run(smoothing, peak, epochs=1):
        loss = functools.partial(ops.softmax_cross_entropy, label_smoothing=smoothing)
        opt = optim.adam(functools.partial(sched, peak=peak))
        return train.fit(MLP, params, state, opt, (X, Y), epochs, checkpoint=manager,
                         loss_fn=loss, **FIT)

    run(np.float32(0.0), 1e-2)
    with pytest.raises(train.RunMismatchError, match=r"loss_fn is 'partial\(.*"
                                                     r"label_smoothing=0.3\)' now but "
                                                     r"'partial\(.*label_smoothing=0.0\)'"):
        run(jnp.float32(0.3), 1e-2, 2)
    with pytest.raises(train.RunMismatchError, match=r"peak=0.001\).* now but .*peak=0.01\)"):
        run(np.float32(0.0), 1e-3, 2)
    assert run(0.0, 1e-2, 2)[3]["epoch"] == [1, 2]


def test_a_changed_float32_learning_rate_reads_as_written(tmp_path):
    """The mismatch message printed a float32 rate with float64 noise
    (0.003000000026077032); the comparison stays exact: a float64 0.01 is not the
    checkpoint's float32 0.01, and then both are shown in full."""
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MLP, params, state, optim.adam(np.float32(0.01)), (X[:64], Y[:64]), 1,
              checkpoint=manager, **FIT)
    with pytest.raises(train.RunMismatchError, match=r"\(learning_rate is 0\.003 now but 0\.01 "
                                                     r"in the checkpoint of epoch 1; "
                                                     r"optimizer is .adam\(learning_rate="
                                                     r"0\.003, "):
        train.fit(MLP, params, state, optim.adam(np.float32(0.003)), (X[:64], Y[:64]), 1,
                  checkpoint=manager, **FIT)
    with pytest.raises(train.RunMismatchError, match=r"\(learning_rate is 0\.01 now but "
                                                     r"0\.009999999776482582 in the checkpoint"):
        train.fit(MLP, params, state, optim.adam(0.01), (X[:64], Y[:64]), 1,
                  checkpoint=manager, **FIT)


def test_a_foreign_checkpoint_is_not_resumed(tmp_path):
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    manager.save(1, {"params": params})
    with pytest.raises(train.RunMismatchError, match="was not written by fit"):
        train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **FIT)


def test_callable_data_resumes_exactly(tmp_path):
    """A callable epoch -> batches is re-created per epoch: resume == uninterrupted run."""
    params, state = init(BN_MLP)
    loader = data.Loader(X, Y, 32, key=KEY)
    full = train.fit(BN_MLP, params, state, ADAM, loader, 3, key=KEY, progress=False)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(BN_MLP, params, state, ADAM, loader, 1, key=KEY, progress=False,
              checkpoint=manager)
    resumed = train.fit(BN_MLP, params, state, ADAM, loader, 3, key=KEY, progress=False,
                        checkpoint=manager)
    assert_trees_equal(full[:3], resumed[:3])
    assert resumed[3]["loss"] == full[3]["loss"]


def test_damaged_latest_checkpoint_falls_back_to_a_readable_one(tmp_path):
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path, keep=None)
    full = train.fit(MLP, params, state, ADAM, (X, Y), 3, **FIT)
    train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **FIT)
    path = sorted(tmp_path.glob("ckpt_*2.npz"))[-1]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train.fit(MLP, params, state, ADAM, (X, Y), 3, checkpoint=manager, **FIT)
    assert any("damaged" in str(w.message) or "skip" in str(w.message).lower()
               for w in caught), [str(w.message) for w in caught]
    assert_trees_equal(full[:3], resumed[:3])
    assert resumed[3]["epoch"] == [1, 2, 3]


def test_a_loader_is_part_of_the_run(tmp_path):
    """A Loader's arrays, batch size, order key and drop_last are in the run's
    fingerprint: resuming with another Loader is refused, the same one resumes; another
    iterable of batches is recorded as "iterable", and a Loader's run written that way
    (by an older funcnet) still resumes."""
    from funcnet.train.run import _mismatch, fingerprint

    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    loader = data.Loader(X, Y, 32, key=KEY)
    train.fit(MLP, params, state, ADAM, loader, 1, key=KEY, progress=False,
              checkpoint=manager)
    others = {"batch_size 16": data.Loader(X, Y, 16, key=KEY),
              "key ": data.Loader(X, Y, 32, key=jax.random.PRNGKey(7)),
              "in order": data.Loader(X, Y, 32),
              r"x float32\[96, ": data.Loader(X[:96], Y[:96], 32, key=KEY),
              "drop_last False": data.Loader(X, Y, 32, key=KEY, drop_last=False)}
    for what, other in others.items():
        with pytest.raises(train.RunMismatchError, match=r"data is 'Loader\(.*" + what):
            train.fit(MLP, params, state, ADAM, other, 2, key=KEY, progress=False,
                      checkpoint=manager)
    *_, hist = train.fit(MLP, params, state, ADAM, data.Loader(X, Y, 32, key=KEY), 2,
                         key=KEY, progress=False, checkpoint=manager)
    assert hist["epoch"] == [1, 2]

    def fp(source):
        return fingerprint(model=MLP, params=params, state=state, opt_state=(),
                           learning_rate=None, loss_fn=len, key=KEY, batch_size=None,
                           data=source)
    assert fp(lambda epoch: loader(epoch))["data"] == "iterable"
    old = {META_KEY: {"fingerprint": dict(fp(loader), data="iterable")}}
    assert _mismatch(old, fp(loader), 1) is None
    assert "data is" in _mismatch(old, fp((X, Y)), 1)


def test_numpy_float64_params_resume_when_x64_is_off(tmp_path, capsys):
    """NumPy float64 params (np.load, a NumPy initialiser) train as float32 when x64 is
    off; the run was checkpointed in float32 but its resume template said float64, so
    every rerun failed with a dtype mismatch."""
    with jax.enable_x64(False):
        params, state = init(MLP)
        p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
        full = train.fit(MLP, p64, state, ADAM, (X, Y), 2, **FIT)
        manager = checkpoint.CheckpointManager(tmp_path)
        train.fit(MLP, p64, state, ADAM, (X, Y), 1, checkpoint=manager, **FIT)
        resumed = train.fit(MLP, p64, state, ADAM, (X, Y), 2, checkpoint=manager,
                            batch_size=32, key=KEY)
        assert "fit: resumed at epoch 1 of 2" in capsys.readouterr().out
        assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves(resumed[0]))
        assert_trees_equal(full[:3], resumed[:3])
        # the same run from the float32 params it trains as
        again = train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager,
                          batch_size=32, key=KEY)
        assert "nothing to train" in capsys.readouterr().out
        assert_trees_equal(full[:3], again[:3])


def test_a_config_is_part_of_the_run_and_mismatches_name_the_leaf(tmp_path):
    """An optax optimizer's hyperparameters are closures fit cannot read: config= puts
    them into the fingerprint. A changed optimizer state names its first differing leaf
    (it read as two hex hashes), and a checkpoint of an older funcnet, without "leaves"
    or "config", still resumes."""
    from funcnet.train.run import _mismatch, fingerprint

    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    config = {"lr": 1e-2, "betas": (0.9, 0.999)}
    train.fit(MLP, params, state, ADAM, (X, Y), 1, checkpoint=manager, config=config, **FIT)
    with pytest.raises(train.RunMismatchError, match=r"config is \{'betas': \[0.9, 0.999\], "
                                                     r"'lr': 0.1\} now but \{'betas': \[0.9, "
                                                     r"0.999\], 'lr': 0.01\} in the "
                                                     r"checkpoint of epoch 1"):
        train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager,
                  config=dict(config, lr=0.1), **FIT)
    with pytest.raises(train.RunMismatchError, match=r"config is None now but"):
        train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager, **FIT)
    with pytest.raises(train.RunMismatchError,
                       match=r"opt_state differs from the checkpoint of epoch 1: \[0\]\."
                             r"trace\[0\]\['b'\] float32\[32\] now, \[0\]\.count int32\[\] in "
                             r"the checkpoint"):
        train.fit(MLP, params, state, optim.sgd(1e-2, momentum=0.9), (X, Y), 2,
                  checkpoint=manager, config=config, **FIT)
    *_, hist = train.fit(MLP, params, state, ADAM, (X, Y), 2, checkpoint=manager,
                         config={"betas": [0.9, 0.999], "lr": 1e-2}, **FIT)   # list == tuple
    assert hist["epoch"] == [1, 2]
    with pytest.raises(TypeError, match=r"fit: config must be JSON-serialisable"):
        train.fit(MLP, params, state, ADAM, (X, Y), 1, config={"lr": float("nan")}, **FIT)

    fp = fingerprint(model=MLP, params=params, state=state, opt_state=ADAM.init(params),
                     learning_rate=0.01, loss_fn=len, key=KEY, batch_size=32, data=(X, Y))
    older = {k: v for k, v in fp.items() if k != "leaves"}
    assert _mismatch({META_KEY: {"fingerprint": older}}, fp, 1) is None
    assert "opt_state differs" in _mismatch(
        {META_KEY: {"fingerprint": dict(fp, opt_state="0" * 16)}}, fp, 1)
