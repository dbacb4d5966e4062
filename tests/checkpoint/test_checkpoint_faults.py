"""Fault injection in real processes: kill -9 in the middle of saves, and two processes
saving interleaved steps into one directory (issue 13 item 6)."""
import signal

import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import CheckpointManager
from tests.checkpoint._helpers import popen

KILLED_WRITER = """
import io, sys, threading, time
import numpy as np
from funcnet import checkpoint

directory, single = sys.argv[1], sys.argv[2]
manager = checkpoint.CheckpointManager(directory, keep=1)
manager.save(1, {"w": np.full(1000, 1.0)})
checkpoint.save(single, {"w": np.full(1000, 1.0)}, step=1)
real_savez, half = np.savez, threading.Barrier(3)

def half_then_hang(f, **members):  # write half an archive, then wait to be killed
    buffer = io.BytesIO()
    real_savez(buffer, **members)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    half.wait()
    time.sleep(120)

np.savez = half_then_hang
for save in (lambda: manager.save(2, {"w": np.full(1000, 2.0)}),
             lambda: checkpoint.save(single, {"w": np.full(1000, 2.0)}, step=2)):
    threading.Thread(target=save, daemon=True).start()
half.wait()
print("HALF", flush=True)
time.sleep(120)
"""


@pytest.mark.multiprocess
def test_writer_killed_mid_save(tmp_path):
    """kill -9 while a manager save and a file save are half written: the previous
    checkpoints stay readable, no partial file is visible, the next saves clean up."""
    directory, single = tmp_path / "run", tmp_path / "single.npz"
    proc = popen(KILLED_WRITER, directory, single)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HALF", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    manager = CheckpointManager(directory, keep=1)
    assert manager.all_steps() == [1]
    assert manager.restore()[0] == 1 and float(manager.restore()[1]["w"][0]) == 1.0
    step, out = checkpoint.restore(single)
    assert step == 1 and float(out["w"][0]) == 1.0
    for folder, name in ((directory, "ckpt_000002.npz"), (tmp_path, "single.npz")):
        hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert len(hidden) == 1 and hidden[0].startswith(f".{name}.tmp-"), hidden
    # the next saves remove the dead writer's temporaries
    manager.save(2, {"w": np.full(3, 2.0)})
    checkpoint.save(single, {"w": np.full(3, 2.0)})
    assert sorted(p.name for p in directory.iterdir()) == ["ckpt_000002.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "single.npz"]


CONCURRENT_WRITER = """
import pathlib, sys, time
import numpy as np
from funcnet.checkpoint import CheckpointManager

directory, parity, count, flag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
manager = CheckpointManager(directory, keep=3)
pathlib.Path(f"{flag}{parity}").touch()
deadline = time.time() + 60
while not all(pathlib.Path(f"{flag}{p}").exists() for p in (0, 1)) and time.time() < deadline:
    time.sleep(0.001)
for i in range(count):
    step = 2 * i + parity
    manager.save(step, {"w": np.full(5000, float(step)), "step": step},
                 metadata={"writer": parity})
print("DONE", flush=True)
"""


@pytest.mark.multiprocess
def test_two_processes_save_into_one_directory(tmp_path):
    """Each save's cleanup deleted the other writer's temporary (FileNotFoundError)."""
    directory, count = tmp_path / "run", 60
    procs = [popen(CONCURRENT_WRITER, directory, parity, count, tmp_path / "ready")
             for parity in (0, 1)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0 and out.strip() == "DONE", err[-3000:]
    manager = CheckpointManager(directory)
    steps = manager.all_steps()
    assert 3 <= len(steps) <= 4 and 2 * count - 1 in steps, steps
    for step in steps:
        _, tree = manager.restore(step, like={"w": np.zeros(5000), "step": 0})
        assert tree["step"] == step and float(tree["w"][-1]) == step
        assert manager.metadata(step) == {"writer": step % 2}
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")]

