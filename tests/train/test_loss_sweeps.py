"""A hyperparameter sweep over a loss in one program: ``jax.vmap`` of ``train.train_step``
over traced loss hyperparameters (Huber's ``delta``, PolyLoss' ``epsilon``, focal
``alpha``/``gamma``, NT-Xent's ``temperature``, the triplet ``margin``) equals one step
per value with Python floats, and the values change the step (they are not ignored)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, train
from tests.train._setup import F32, subset

X, Y = (jnp.asarray(a) for a in subset(32))
TARGETS = {
    "regression": jnp.asarray(jax.nn.one_hot(Y, 10, dtype=F32) * 3.0),
    "classes": Y,
    "binary": jax.nn.one_hot(Y, 10, dtype=F32),
}
SWEEPS = [
    ("huber_delta", "regression", lambda h: functools.partial(ops.huber_loss, delta=h),
     [0.1, 0.5, 2.0]),
    ("poly_epsilon", "classes",
     lambda h: functools.partial(ops.poly_loss_cross_entropy, epsilon=h), [-1.0, 0.0, 2.0]),
    ("focal_gamma", "binary", lambda h: functools.partial(ops.sigmoid_focal_loss, gamma=h),
     [0.0, 0.5, 2.0]),
    ("focal_alpha", "binary", lambda h: functools.partial(ops.sigmoid_focal_loss, alpha=h),
     [0.0, 0.25, 1.0]),
    ("ntxent_temperature", "classes",
     lambda h: lambda z, y: ops.ntxent(z, y, temperature=h), [0.05, 0.1, 1.0]),
    ("triplet_margin", "classes",
     lambda h: lambda z, y: ops.triplet_margin_loss(z[:10], z[10:20], z[20:30], margin=h),
     [0.0, 1.0, 5.0]),
]
MODEL = nn.serial(nn.Dense(16, dtype=F32), nn.ReLU(), nn.Dense(10, dtype=F32))
_, PARAMS, STATE = MODEL.init(jax.random.PRNGKey(0), (-1, 64))
OPT = optim.sgd(0.1)   # not Adam: it turns the rounding noise of a zero gradient (the
# triplet loss ignores the last bias) into full steps that differ between the runs


@pytest.mark.parametrize("name, target, loss_of, values", SWEEPS, ids=[s[0] for s in SWEEPS])
def test_a_vmap_of_training_steps_over_a_loss_hyperparameter(name, target, loss_of, values):
    y = TARGETS[target]

    def run(h):
        step = train.train_step(MODEL, OPT, loss_of(h))
        return step(PARAMS, STATE, OPT.init(PARAMS), X, y)

    swept = jax.jit(jax.vmap(run))(jnp.asarray(values, F32))
    outs = []
    for i, h in enumerate(values):
        one = run(h)
        got = jax.tree_util.tree_map(lambda v, i=i: v[i], swept)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(one)):
            # atol: a zero gradient (the triplet loss ignores the last bias) is rounding
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"{name}={h}")
        outs.append(one)
    first, last = (jax.tree_util.tree_leaves(o[0]) for o in (outs[0], outs[-1]))
    assert not all(np.allclose(a, b) for a, b in zip(first, last)), "the value is ignored"
