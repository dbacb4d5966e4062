"""CheckpointManager: keep the newest k, fall back past damaged files, metadata, several
writers (threads here; processes in test_checkpoint_faults.py), stray temporaries."""
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import CheckpointError, CheckpointManager, fileformat
from tests.checkpoint._helpers import members


def tree(value: float):
    return {"w": np.full((4,), float(value)), "step_seen": int(value)}


def test_save_restore_and_listing(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep=None)
    assert manager.latest_step() is None and manager.all_steps() == []
    for step in (5, 10, 7):
        path = manager.save(step, tree(step), metadata={"seen": step})
        assert path == tmp_path / "run" / f"ckpt_{step:06d}.npz"
    assert manager.all_steps() == [5, 7, 10] and manager.latest_step() == 10
    step, out = manager.restore(like=tree(0.0))
    assert step == 10 and float(out["w"][0]) == 10.0 and out["step_seen"] == 10
    assert manager.restore(7)[0] == 7 and manager.restore(step=7)[1]["step_seen"] == 7
    assert manager.metadata() == {"seen": 10} and manager.metadata(5) == {"seen": 5}
    # a file of the manager is an ordinary checkpoint file: same result shape
    assert checkpoint.restore(tmp_path / "run" / "ckpt_000007.npz")[0] == 7
    assert repr(manager) == f"CheckpointManager({str(tmp_path / 'run')!r}, keep=None)"


@pytest.mark.parametrize("keep, expected", [(1, [40]), (2, [30, 40]), (3, [20, 30, 40]),
                                            (None, [10, 20, 30, 40])])
def test_keep_newest(tmp_path, keep, expected):
    manager = CheckpointManager(tmp_path, keep=keep)
    for step in (10, 20, 30, 40):
        manager.save(step, tree(step))
    assert manager.all_steps() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ckpt_{s:06d}.npz" for s in expected]


def test_keep_never_deletes_the_new_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 5):  # 5: e.g. restarted from earlier
        manager.save(step, tree(step))
    assert manager.all_steps() == [5, 10, 20]


def test_delete_and_clear(tmp_path):
    manager = CheckpointManager(tmp_path, keep=None)
    for step in (1, 2, 3):
        manager.save(step, tree(step))
    (tmp_path / "notes.txt").write_text("kept")
    manager.delete(2)
    assert manager.all_steps() == [1, 3]
    with pytest.raises(FileNotFoundError, match=r"delete: no checkpoint for step 2 .*\[1, 3\]"):
        manager.delete(2)
    assert manager.clear() == [1, 3]
    assert manager.all_steps() == [] and (tmp_path / "notes.txt").exists()


def test_missing_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path / "never_created")
    for call in (manager.restore, manager.metadata):
        with pytest.raises(FileNotFoundError, match=r"no checkpoint \(ckpt_<step>.npz\)"):
            call()
    manager.save(1, tree(1))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 2 .*steps there: \[1\]"):
        manager.restore(2)


def damage(path, how: str):
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif how == "leaf":  # a valid archive whose leaf no longer matches the checksum
        found = members(path)
        found["leaf_0"] = found["leaf_0"] + 1
        np.savez(path, **found)
    else:
        path.write_bytes(b"not a checkpoint at all")


@pytest.mark.parametrize("how", ["truncated", "leaf", "garbage"])
def test_damaged_latest_falls_back_with_a_warning(tmp_path, how):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2, 3):
        manager.save(step, tree(step), metadata={"seen": step})
    damage(tmp_path / "ckpt_000003.npz", how)
    with pytest.warns(RuntimeWarning, match=r"restore: skipping damaged checkpoint .*"
                                            r"ckpt_000003.npz: .*trying the next older"):
        step, out = manager.restore(like=tree(0))
    assert step == 2 and out["step_seen"] == 2
    # metadata() reads the header only: it falls back only when the header is damaged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert manager.metadata() == {"seen": 2 if how != "leaf" else 3}
    assert len(caught) == (how != "leaf")
    # an explicit step never falls back
    with pytest.raises(CheckpointError) as info:
        manager.restore(3)
    assert info.value.damaged and "ckpt_000003.npz" in str(info.value)


def test_every_checkpoint_damaged(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2):
        manager.save(step, tree(step))
        damage(tmp_path / f"ckpt_{step:06d}.npz", "garbage")
    with pytest.warns(RuntimeWarning), pytest.raises(
            CheckpointError, match=r"no readable checkpoint in .*2 damaged: .*ckpt_000002.npz"):
        manager.restore()


def test_like_mismatch_never_falls_back(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(1, tree(1))
    manager.save(2, {"w": np.zeros(5), "step_seen": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError, match=r"ckpt_000002.npz: w: file has shape \(5,\), "
                                                  r"like has \(4,\)") as info:
            manager.restore(like=tree(0))
    assert info.value.damaged is False


def test_renamed_file_is_damage(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, tree(1))
    os.replace(tmp_path / "ckpt_000001.npz", tmp_path / "ckpt_000009.npz")
    with pytest.raises(CheckpointError, match="file name says step 9 but the file records "
                                              "step 1"):
        manager.restore(9)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_stray_temporaries_removed_only_when_abandoned(tmp_path):
    """Issue 13 item 6: a save removes only temporaries whose writer is dead (same
    machine) or that are a day old; a live writer's temporary is never touched."""
    manager = CheckpointManager(tmp_path)
    manager.save(1, tree(1))
    tag, me = fileformat.WRITER_TAG, os.getpid()
    names = {
        "dead": f".ckpt_000002.npz.tmp-{tag}-{dead_pid()}-abcd1234",
        "alive": f".ckpt_000003.npz.tmp-{tag}-{me}-abcd1234",
        "other_host": f".ckpt_000004.npz.tmp-0123456789ab-{me}-abcd1234",
        "other_host_old": f".ckpt_000005.npz.tmp-0123456789ab-{me}-abcd1234",
        "legacy_name": ".ckpt_000006.npz.tmp-123-abcd1234",
        "not_a_checkpoint": f".notes.txt.tmp-{tag}-{dead_pid()}-abcd1234",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"PK\x03\x04 half written")
    day_ago = time.time() - fileformat.STALE_AFTER_S - 60
    os.utime(tmp_path / names["other_host_old"], (day_ago, day_ago))
    assert manager.all_steps() == [1] and manager.restore()[0] == 1
    manager.save(2, tree(2))
    left = {k for k, name in names.items() if (tmp_path / name).exists()}
    assert left == {"alive", "other_host", "legacy_name", "not_a_checkpoint"}
    assert manager.all_steps() == [1, 2]


def test_file_save_cleans_its_own_stray_temporaries(tmp_path):
    path = tmp_path / "model.npz"
    stray = tmp_path / f".model.npz.tmp-{fileformat.WRITER_TAG}-{dead_pid()}-00ff00ff"
    other = tmp_path / f".other.npz.tmp-{fileformat.WRITER_TAG}-{dead_pid()}-00ff00ff"
    for p in (stray, other):
        p.write_bytes(b"PK\x03\x04 half")
    checkpoint.save(path, tree(1))
    assert not stray.exists() and other.exists()


def test_threads_saving_into_one_directory(tmp_path):
    """Two writers interleaving saves and rotations: no error, every survivor complete."""
    manager = CheckpointManager(tmp_path, keep=2)
    errors = []

    def writer(parity):
        try:
            for i in range(25):
                manager.save(2 * i + parity, tree(2 * i + parity))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    steps = manager.all_steps()
    assert 2 <= len(steps) <= 3 and 49 in steps
    for step in steps:
        assert manager.restore(step, like=tree(0))[1]["step_seen"] == step
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, tree(1))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, tree(2))
    monkeypatch.undo()
    assert checkpoint.restore(path)[1]["step_seen"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
