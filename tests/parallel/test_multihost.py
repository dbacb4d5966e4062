"""Two processes on this machine train like one: tpu/pod_train.py over jax.distributed.

Two processes with two fake CPU devices each (a 4-device global mesh, gloo collectives,
coordinator on 127.0.0.1) train the book CNN for 4 steps on a global batch of 32 (styles
``jit`` and ``shard_map``: the mesh steps fed by process_batch/global_batch) or for 2
epochs with ``train.fit(mesh=...)`` (style ``fit``); a third, single-process run with one
device trains on the same global batches. The two
processes must end with bitwise identical parameters, only process 0 may write the
checkpoint, and that checkpoint must equal the single-process one within float32
round-off: rtol 1e-5 (scale-aware, funcnet.gradcheck.assert_close), since the runs sum in
different orders.
"""
import re
import subprocess
import sys

import pytest

from funcnet import checkpoint
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import ROOT, env_with_devices, free_port

SCRIPT = str(ROOT / "tpu" / "pod_train.py")
COMMON = ["--steps", "4", "--batch-size", "32", "--log-every", "1", "--no-eval"]
TIMEOUT = 600
RTOL = 1e-5


def _launch(args, devices, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, SCRIPT, *COMMON, *args], cwd=ROOT,
                            env=env_with_devices(devices), stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, log


def _losses(text, style):
    unit = "epoch" if style == "fit" else "step"
    return [float(v) for v in re.findall(unit + r" \d+: loss ([0-9.]+)", text)]


# --style fit: train.fit(mesh=...) for 2 epochs of 5 steps (batch 256 of 1500 digits)
FIT_ARGS = ["--epochs", "2", "--batch-size", "256"]


@pytest.mark.multiprocess
@pytest.mark.parametrize("style", ["jit", "fit",
                                   pytest.param("shard_map", marks=pytest.mark.slow)])
def test_two_processes_train_like_one(tmp_path, style):
    port = free_port()
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    extra = ["--style", style] + (FIT_ARGS if style == "fit" else [])
    runs = [_launch(["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i), "--checkpoint-dir", str(multi), *extra], 2,
                    tmp_path / f"p{i}.log") for i in range(2)]
    runs.append(_launch(["--checkpoint-dir", str(single), *extra], 1,
                        tmp_path / "single.log"))
    try:
        codes = [proc.wait(timeout=TIMEOUT) for proc, _ in runs]
    finally:
        for proc, log in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = [(tmp_path / name).read_text() for name in ("p0.log", "p1.log", "single.log")]
    report = "\n".join(f"--- {n} (exit {c})\n{t[-3000:]}" for n, c, t in
                       zip(("process 0", "process 1", "single"), codes, logs))
    assert codes == [0, 0, 0], report
    assert "[process 0/2] 4 devices (2 local, cpu)" in logs[0], report

    digests = [re.findall(r"params sha256 ([0-9a-f]{64})", t) for t in logs[:2]]
    assert len(digests[0]) == 1 and digests[0] == digests[1], report   # bitwise identical
    assert "checkpoint written" in logs[0] and "checkpoint written" not in logs[1], report
    names = ["ckpt_000001.npz", "ckpt_000002.npz"] if style == "fit" else ["ckpt_000004.npz"]
    assert sorted(p.name for p in multi.iterdir()) == names, report

    got, want = (checkpoint.CheckpointManager(d).restore()[1] for d in (multi, single))
    assert_close((got["params"], got["state"]), (want["params"], want["state"]), RTOL,
                 "two-process vs one-process parameters")
    loss_multi, loss_single = _losses(logs[0], style), _losses(logs[2], style)
    assert len(loss_multi) == (2 if style == "fit" else 4), report
    assert len(set(loss_multi)) > 1, report                                # it trained
    assert loss_multi == pytest.approx(loss_single, rel=1e-4), report


WORKER = str(ROOT / "tests" / "parallel" / "fit_resume_worker.py")


def _two_processes(directories, epochs, *extra, timeout=180):
    """Runs fit_resume_worker.py as processes 0 and 1 (2 fake devices each); returns
    ``(exit codes, outputs)``."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, WORKER, str(i), port, str(d), str(epochs),
                               *extra],
                              cwd=ROOT, env=env_with_devices(2), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for i, d in enumerate(directories)]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], outs


@pytest.mark.multiprocess
def test_two_processes_resume_together_or_refuse_to_diverge(tmp_path):
    """A shared directory: both processes resume at epoch 1 and end equal. A directory on
    each host's local disk (only process 0's has the checkpoint): every process refuses
    with the reason; it used to train on, process 0 pairing its epoch 2 with process 1's
    epoch 1 (silently wrong params), then hang."""
    shared = tmp_path / "shared"
    codes, outs = _two_processes([shared, shared], 1)
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outs)
    codes, outs = _two_processes([shared, shared], 2)
    report = "\n".join(o[-3000:] for o in outs)
    assert codes == [0, 0], report
    assert "fit: resumed at epoch 1 of 2" in outs[0], report
    digests = [re.findall(r"params sha256 ([0-9a-f]{64})", o) for o in outs]
    assert len(digests[0]) == 1 and digests[0] == digests[1], report

    local = [tmp_path / "host0", tmp_path / "host1"]
    local[0].mkdir()
    (local[0] / "ckpt_000001.npz").write_bytes((shared / "ckpt_000001.npz").read_bytes())
    codes, outs = _two_processes(local, 2, timeout=120)
    report = "\n".join(o[-3000:] for o in outs)
    assert codes[0] != 0 and codes[1] != 0, report
    for out in outs:
        assert re.search(r"ValueError: fit: the processes disagree on where to resume from "
                         r"the checkpoint directory .* \(process 0: epoch 1, process 1: "
                         r"epoch 0\); every process must read the same checkpoint "
                         r"directory, on storage all hosts share", out), report


@pytest.mark.multiprocess
def test_two_processes_keep_a_weight_split_over_both_and_refuse_to_checkpoint_it(tmp_path):
    """fit(mesh=) keeps a weight laid out over the devices of both processes (FSDP) and
    trains it identically on both; with checkpoint= it refuses before training on every
    process (process 0 alone could not read the weight and would fail at the first
    save while the other process waited)."""
    codes, outs = _two_processes([tmp_path, tmp_path], 1, "fsdp")
    report = "\n".join(o[-3000:] for o in outs)
    assert codes == [0, 0], report
    spec = r"(P|PartitionSpec)\('data',\)"   # jax 0.8 prints the long name
    for out in outs:
        assert re.search(r"refused: fit: params\[0\]\['w'\] of shape \(64, 16\) is split "
                         r"over the devices of several processes \(" + spec + r"\); "
                         r"checkpoint= needs every leaf readable on process 0", out), report
        assert re.search("kept " + spec, out), report
    digests = [re.findall(r"params sha256 ([0-9a-f]{64})", o) for o in outs]
    assert len(digests[0]) == 1 and digests[0] == digests[1], report
    assert not list(tmp_path.iterdir())
