"""Runs tests/parallel/devices/ in a subprocess with 8 fake CPU devices.

XLA fixes the device count when jax is first imported, so the 8-device tests cannot run in
this (one-device) pytest process.
"""
import re

import pytest

from tests.parallel._helpers import run_python


@pytest.mark.multiprocess
def test_eight_device_suite():
    r = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                    "tests/parallel/devices"], devices=8, timeout=1200)
    tail = r.stdout[-6000:] + "\n" + r.stderr[-3000:]
    assert r.returncode == 0, f"8-device suite failed:\n{tail}"
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 10, tail
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", r.stdout), tail
