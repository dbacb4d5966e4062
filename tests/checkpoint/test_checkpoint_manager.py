"""Checkpoint directories (keep the newest k) and atomic writes under a killed writer."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import CheckpointError, CheckpointManager


def tree(value: float):
    return {"w": np.full((4,), float(value)), "step_seen": int(value)}


def test_save_step_and_restore_latest(tmp_path):
    directory = tmp_path / "run"
    assert checkpoint.latest_step(directory) is None
    for step in (5, 10, 7):
        path = checkpoint.save_step(directory, step, tree(step))
        assert path.name == f"ckpt_{step:06d}.npz"
    assert checkpoint.all_steps(directory) == [5, 7, 10]
    assert checkpoint.latest_step(directory) == 10
    step, out = checkpoint.restore_latest(directory, like=tree(0.0))
    assert step == 10 and float(out["w"][0]) == 10.0 and out["step_seen"] == 10
    assert checkpoint.restore_step(directory, 7)[1]["step_seen"] == 7
    # save()/restore() on a directory delegate to the same functions
    checkpoint.save(directory, tree(11), step=11)
    assert checkpoint.restore(directory)["step_seen"] == 11


@pytest.mark.parametrize("keep, expected", [(1, [40]), (2, [30, 40]), (3, [20, 30, 40]),
                                            (None, [10, 20, 30, 40])])
def test_keep_newest(tmp_path, keep, expected):
    for step in (10, 20, 30, 40):
        checkpoint.save_step(tmp_path, step, tree(step), keep=keep)
    assert checkpoint.all_steps(tmp_path) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ckpt_{s:06d}.npz" for s in expected]


def test_keep_never_deletes_the_new_checkpoint(tmp_path):
    for step in (10, 20):
        checkpoint.save_step(tmp_path, step, tree(step), keep=2)
    checkpoint.save_step(tmp_path, 5, tree(5), keep=2)  # e.g. restarted from earlier
    assert checkpoint.all_steps(tmp_path) == [5, 10, 20]


def test_manager(tmp_path):
    manager = CheckpointManager(tmp_path / "m", keep=2)
    assert manager.latest_step() is None
    for step in range(4):
        manager.save(step, tree(step))
    assert manager.all_steps() == [2, 3] and manager.latest_step() == 3
    assert manager.restore()[0] == 3
    assert manager.restore(step=2, like=tree(0.0))[1]["step_seen"] == 2
    assert "keep=2" in repr(manager)


def test_missing_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.restore_latest(tmp_path)
    checkpoint.save_step(tmp_path, 1, tree(1))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 2 .*steps there: \[1\]"):
        checkpoint.restore_step(tmp_path, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(step=-1), "step must be a non-negative int"),
    (dict(step=1, keep=0), "keep must be a positive int or None, got 0"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        checkpoint.save_step(tmp_path, tree=tree(1), **kwargs)


def test_directory_save_needs_step(tmp_path):
    with pytest.raises(ValueError, match="is a directory; pass step="):
        checkpoint.save(tmp_path, tree(1))


def test_renamed_file_detected(tmp_path):
    checkpoint.save_step(tmp_path, 1, tree(1))
    os.replace(tmp_path / "ckpt_000001.npz", tmp_path / "ckpt_000009.npz")
    with pytest.raises(CheckpointError, match="file name says step 9 but the file records step 1"):
        checkpoint.restore_latest(tmp_path)


def test_stray_temporary_files_ignored_then_cleaned(tmp_path):
    checkpoint.save_step(tmp_path, 1, tree(1))
    stray = tmp_path / ".ckpt_000002.npz.tmp-123-abcd1234"
    stray.write_bytes(b"PK\x03\x04 half written")
    other = tmp_path / "notes.txt"
    other.write_text("kept")
    assert checkpoint.latest_step(tmp_path) == 1
    assert checkpoint.restore_latest(tmp_path)[0] == 1
    checkpoint.save_step(tmp_path, 2, tree(2))
    assert not stray.exists() and other.exists()
    assert checkpoint.all_steps(tmp_path) == [1, 2]


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, tree(1))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, tree(2))
    monkeypatch.undo()
    assert checkpoint.restore(path)["step_seen"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


KILLED_WRITER = textwrap.dedent("""
    import io, sys, time
    import numpy as np
    from funcnet import checkpoint

    directory, single = sys.argv[1], sys.argv[2]
    checkpoint.save_step(directory, 1, {"w": np.full(1000, 1.0)})
    checkpoint.save(single, {"w": np.full(1000, 1.0)})
    real_savez = np.savez

    def half_then_hang(f, **members):  # write half an archive, then wait to be killed
        buffer = io.BytesIO()
        real_savez(buffer, **members)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        print("HALF", flush=True)
        time.sleep(120)

    np.savez = half_then_hang
    which = sys.argv[3]
    if which == "dir":
        checkpoint.save_step(directory, 2, {"w": np.full(1000, 2.0)}, keep=1)
    else:
        checkpoint.save(single, {"w": np.full(1000, 2.0)})
""")


@pytest.mark.multiprocess
@pytest.mark.parametrize("which", ["dir", "single"])
def test_writer_killed_mid_write(tmp_path, which):
    directory, single = tmp_path / "run", tmp_path / "single.npz"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(directory), str(single), which],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HALF", proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # the previous checkpoints are intact; the half-written temporary is ignored
    assert checkpoint.latest_step(directory) == 1
    assert float(checkpoint.restore_latest(directory)[1]["w"][0]) == 1.0
    assert float(checkpoint.restore(single)["w"][0]) == 1.0
    folder = directory if which == "dir" else tmp_path
    temps = [p for p in folder.iterdir() if p.name.startswith(".")]
    assert len(temps) == 1 and ".tmp-" in temps[0].name
    # the next save cleans the stray temporary up
    checkpoint.save_step(directory, 2, {"w": np.full(3, 2.0)}, keep=1)
    assert checkpoint.all_steps(directory) == [2]
    assert not any(p.name.startswith(".") for p in directory.iterdir())
