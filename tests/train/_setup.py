"""Shared small models and data for the training tests (module-level so jit caches hit).

Every fit test uses MLP or BN_MLP with ADAM, a subset of 192 digits and batch size 32
unless it needs otherwise, so that ``fit``'s compiled epoch is shared between tests.
"""
import jax
import numpy as np

from funcnet import data, nn, optim

X, Y = data.load_digits(flatten=True)
X_TRAIN, X_TEST, Y_TRAIN, Y_TEST = data.train_test_split(X, Y, key=0)

F32 = np.float32  # the digits are float32; the suite runs with x64 on (float64 default)
MLP = nn.serial(nn.Dense(32, dtype=F32), nn.ReLU(), nn.Dense(10, dtype=F32))
# no bias before the batch norm: its gradient is 0 in exact arithmetic, so what a step sees
# is rounding noise, which Adam scales to full-size updates; two runs that round one sum
# differently (a masked mean against a plain one) then part by 1e-3 in that bias
BN_MLP = nn.serial(nn.Dense(32, use_bias=False, dtype=F32), nn.BatchNorm(dtype=F32), nn.ReLU(),
                   nn.Dropout(0.2), nn.Dense(10, dtype=F32))
ADAM = optim.adam(1e-2)
KEY = jax.random.PRNGKey(42)
FIT = dict(batch_size=32, key=KEY, progress=False)


def init(model, seed=0, dim=64):
    _, params, state = model.init(jax.random.PRNGKey(seed), (-1, dim))
    return params, state


def subset(n, seed=0):
    idx = np.random.default_rng(seed).permutation(len(X_TRAIN))[:n]
    return X_TRAIN[idx], Y_TRAIN[idx]


def assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
