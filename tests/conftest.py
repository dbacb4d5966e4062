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
