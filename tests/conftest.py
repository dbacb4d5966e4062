"""Test-wide JAX switches: float64 available, strict dtype promotion, no rank promotion.

float64 is enabled for the whole session so gradient checks run in double precision;
tests of float32/bfloat16 behaviour request those dtypes explicitly.
"""
import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


def pytest_collection_modifyitems(config, items):
    """Tests that start subprocesses (marker ``multiprocess``: the 8-device suite alone runs
    ~100 s) go first. pytest-xdist hands tests out in collection order, and these were
    collected near the end (tests/parallel, tests/train): under ``pytest -n 2`` one worker
    ran the 8-device suite while the other ran out of tests. The sort is stable: the
    order of everything else is unchanged."""
    items.sort(key=lambda item: item.get_closest_marker("multiprocess") is None)
