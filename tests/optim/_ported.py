"""Inputs and helpers shared by the ported optax tests (optax's setUp values)."""
import jax
import jax.numpy as jnp
import numpy as np

import funcnet.optim as optim

STEPS, LR = 50, 1e-2
INIT = (jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))
PER_STEP = (jnp.array([500.0, 5.0]), jnp.array([300.0, 3.0]))


def close(a, b, rtol=1e-6, atol=0.0):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _norm(tree):
    return float(optim.global_norm(tree))


BUILDERS = {"sgd": lambda: optim.sgd(1.0), "stateful_sgd": lambda: optim.sgd(1.0, momentum=0.0)}
