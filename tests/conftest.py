"""Test-wide JAX switches: float64 available, strict dtype promotion, no rank promotion,
and one compilation cache for the whole run.

float64 is enabled for the whole session so gradient checks run in double precision;
tests of float32/bfloat16 behaviour request those dtypes explicitly.

Compilation is most of the suite's time (a second run over a warm cache takes a third of
the first), and many tests compile the same program through different Python functions
(``jax.jit``'s own cache is per function). JAX's persistent compilation cache, keyed on the
program and the compile options, shares those executables: one fresh directory per run
(``_shared_cache_dir``), used by every pytest-xdist worker and every subprocess a test
starts, removed when the run ends. The executables are the ones XLA builds with the
default flags; only their second compilation is skipped (the full suite on 2 cores: 22:27
against 27:00). ``FUNCNET_TEST_COMPILATION_CACHE=0`` turns it off. (One CI run saw a jitted
step report an empty ``_cache_size()``, JAX's dispatch cache, with the cache on; the next
run, with it off, saw the same, so the tests count traces instead of reading that cache.)
"""
import atexit
import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

_CACHE_ENV = "FUNCNET_TEST_COMPILATION_CACHE_DIR"


def _shared_cache_dir() -> str | None:
    """The run's cache directory: made by the first process (pytest itself, or the
    controller of ``pytest -n``), inherited through the environment by the workers and
    subprocesses it starts; ``None`` when turned off."""
    if os.environ.get("FUNCNET_TEST_COMPILATION_CACHE", "1") == "0":
        return None
    path = os.environ.get(_CACHE_ENV)
    if not path:
        path = tempfile.mkdtemp(prefix="funcnet-test-jax-cache-")
        os.environ[_CACHE_ENV] = path
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    # the environment carries the settings into subprocesses (their JAX reads it at import)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=path,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return path


_cache = _shared_cache_dir()
if _cache is not None:
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
