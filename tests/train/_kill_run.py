"""Subprocess body of test_fit_faults: ``python -m tests.train._kill_run DIR MODE [SOURCE]``,
or several such runs one after the other in one process, separated by ``--`` (their
outputs separated by a line ``=== next run``; a second run reuses the first's compiled
steps instead of paying a process and its compilations again).

MODE ``kill``: fit 4 epochs with a checkpoint per epoch and SIGKILL itself between epoch
2's checkpoint and epoch 3's (from a callback of epoch 2: callbacks run after the epoch's
checkpoint is written). MODE ``resume``: resume that run to 4
epochs, train the same run uninterrupted in memory, and print ``IDENTICAL`` when the two
end bit for bit equal (params, state, optimizer state, history losses). MODE ``stop``: the
same with an ``EarlyStopping`` that stops the uninterrupted run after epoch 3 (it improves
at epoch 1 only): the resumed run must stop there too. SOURCE ``arrays`` (default):
``(x, y)`` with ``batch_size=32``; ``loader``: a shuffling ``data.Loader`` of the same
batches, made afresh in every process (its fingerprint must match across processes).
"""
import os
import signal
import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import numpy as np  # noqa: E402

from funcnet import checkpoint, data, train  # noqa: E402
from tests.train._setup import ADAM, BN_MLP, FIT, init, subset  # noqa: E402


def main(directory: str, mode: str, source: str = "arrays") -> int:
    x, y = subset(192)
    if source == "loader":
        train_data, batching = data.Loader(x, y, 32, key=FIT["key"]), {}
    else:
        train_data, batching = (x, y), {"batch_size": 32}
    params, state = init(BN_MLP)
    manager = checkpoint.CheckpointManager(directory)

    def kill_after_epoch_2(epoch, logs):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    if mode == "kill":
        train.fit(BN_MLP, params, state, ADAM, train_data, 4, checkpoint=manager,
                  callbacks=[kill_after_epoch_2], key=FIT["key"], progress=False, **batching)
        return 1                                   # not reached
    def callbacks():
        return [train.EarlyStopping("loss", patience=2, min_delta=10.0)] if mode == "stop" else []

    resumed = train.fit(BN_MLP, params, state, ADAM, train_data, 4, checkpoint=manager,
                        key=FIT["key"], callbacks=callbacks(), **batching)
    full = train.fit(BN_MLP, params, state, ADAM, train_data, 4, callbacks=callbacks(),
                     key=FIT["key"], progress=False, **batching)
    epochs = [1, 2, 3] if mode == "stop" else [1, 2, 3, 4]
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree_util.tree_leaves(resumed[:3]), jax.tree_util.tree_leaves(full[:3])))
    same = (same and resumed[3]["loss"] == full[3]["loss"] and resumed[3]["epoch"] == epochs
            and full[3]["epoch"] == epochs)
    print("IDENTICAL" if same else "DIFFERENT", flush=True)
    return 0


def runs(argv) -> int:
    """``main`` for each ``--``-separated group of ``argv``, in order."""
    groups, code = [[]], 0
    for arg in argv:
        if arg == "--":
            groups.append([])
        else:
            groups[-1].append(arg)
    for i, group in enumerate(groups):
        if i:
            print("=== next run", flush=True)
        code = main(*group) or code
    return code


if __name__ == "__main__":
    sys.exit(runs(sys.argv[1:]))
