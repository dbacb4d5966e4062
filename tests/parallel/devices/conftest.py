"""Tests here need 8 devices. Run directly with fake CPU devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest tests/parallel/devices

(tests/parallel/test_fake_devices.py does that in a subprocess); with fewer devices they
are skipped, and tests/parallel/conftest.py keeps them out of a normal run altogether.
"""
import jax
import pytest


def pytest_collection_modifyitems(config, items):
    if jax.device_count() >= 8:
        return
    skip = pytest.mark.skip(reason=f"needs 8 devices, found {jax.device_count()}; set "
                                   "XLA_FLAGS=--xla_force_host_platform_device_count=8")
    for item in items:
        if "tests/parallel/devices/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
