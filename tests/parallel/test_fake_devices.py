"""Runs tests/parallel/devices/ in subprocesses with 8 fake CPU devices.

XLA fixes the device count when jax is first imported, so the 8-device tests cannot run in
this (one-device) pytest process. The files run in three groups of about equal time (50 s
each on a quiet 2-core machine), so that ``pytest -n`` spreads them over its workers
instead of waiting on one long subprocess at the end of the run; together the groups
cover every file of the folder (checked below).
"""
import pathlib
import re

import pytest

from tests.parallel._helpers import run_python

DEVICES = pathlib.Path(__file__).parent / "devices"
GROUPS = {
    "fit": ("test_fit_mesh.py", "test_explicit_mesh_recurrent.py", "test_mapped_vjps.py",
            "test_sync_bn.py"),
    "optim": ("test_optim_mesh.py", "test_steps.py", "test_lbfgs_devices.py",
              "test_optim_round4.py"),
    "models": ("test_model_parallel.py", "test_attention_window_mesh.py",
               "test_shard_map_vma.py", "test_llama_mesh.py"),
}


def test_groups_cover_every_eight_device_file():
    files = sorted(p.name for p in DEVICES.glob("test_*.py"))
    grouped = sorted(f for group in GROUPS.values() for f in group)
    assert grouped == files


@pytest.mark.multiprocess
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_eight_device_suite(group):
    paths = [f"tests/parallel/devices/{f}" for f in GROUPS[group]]
    r = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                    *paths], devices=8, timeout=1200)
    tail = r.stdout[-6000:] + "\n" + r.stderr[-3000:]
    assert r.returncode == 0, f"8-device suite ({group}) failed:\n{tail}"
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 10, tail
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", r.stdout), tail
