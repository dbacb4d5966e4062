"""Fault injection: kill -9 during fit, then resume: bit-identical to an uninterrupted run,
and with EarlyStopping, stopped at the same epoch."""
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.multiprocess
def test_kill_9_during_fit_then_resume_is_bit_identical(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "tests.train._kill_run", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)

    killed = run(str(tmp_path), "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.npz"))[-1] == "ckpt_000002.npz"
    copy = tmp_path.parent / "copy"
    shutil.copytree(tmp_path, copy)                         # the same killed run, twice
    # the resume and, with EarlyStopping (whose patience must survive the kill: it stops
    # after epoch 3), the resume of the copy: two runs in one process (one compilation)
    both = run(str(tmp_path), "resume", "--", str(copy), "stop")
    assert both.returncode == 0, both.stderr[-3000:]
    resumed, stopped = both.stdout.split("=== next run")
    assert "fit: resumed at epoch 2 of 4" in resumed, resumed
    assert resumed.strip().endswith("IDENTICAL"), resumed
    assert "fit: stopped by a callback after epoch 3 of 4" in stopped, stopped
    assert stopped.strip().endswith("IDENTICAL"), stopped


@pytest.mark.multiprocess
def test_kill_9_with_a_loader_then_resume_is_bit_identical(tmp_path):
    """The same with a shuffling data.Loader made afresh in each process: its part of the
    run's fingerprint (arrays, batch size, order key) matches, and the resume is exact."""
    def run(mode):
        return subprocess.run([sys.executable, "-m", "tests.train._kill_run", str(tmp_path),
                               mode, "loader"], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)

    killed = run("kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run("resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fit: resumed at epoch 2 of 4" in resumed.stdout, resumed.stdout
    assert resumed.stdout.strip().endswith("IDENTICAL"), resumed.stdout
