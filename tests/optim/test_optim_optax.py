"""Cross-check with optax (optional): default hyperparameters give the same trajectories.

The primary checks are the formula transcriptions in test_optim_trajectories.py; this
file only confirms that funcnet's defaults are optax's defaults.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import funcnet.optim as optim
from tests.optim._cases import QUAD_PARAMS, quad_loss, run

optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)

PAIRS = [
    ("sgd", lambda: optim.sgd(0.3), lambda: optax.sgd(0.3)),
    ("momentum", lambda: optim.momentum(0.05), lambda: optax.sgd(0.05, momentum=0.9)),
    ("nesterov", lambda: optim.nesterov(0.05),
     lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
    ("adagrad", lambda: optim.adagrad(0.3), lambda: optax.adagrad(0.3)),
    ("rmsprop", lambda: optim.rmsprop(0.003), lambda: optax.rmsprop(0.003)),
    ("adam", lambda: optim.adam(0.01), lambda: optax.adam(0.01)),
    ("adamw", lambda: optim.adamw(0.01), lambda: optax.adamw(0.01)),
    ("adamw_wd", lambda: optim.adamw(0.01, weight_decay=0.1),
     lambda: optax.adamw(0.01, weight_decay=0.1)),
    ("clip_adam_schedule",
     lambda: optim.chain(optim.clip_by_global_norm(0.5),
                         optim.adam(optim.warmup_cosine_decay(0.0, 0.02, 10, 100))),
     lambda: optax.chain(optax.clip_by_global_norm(0.5),
                         optax.adam(optax.warmup_cosine_decay_schedule(0.0, 0.02, 10, 100)))),
    ("accumulate", lambda: optim.accumulate(optim.adam(0.01), 3),
     lambda: optax.MultiSteps(optax.adam(0.01), 3)),
]


@functools.lru_cache(maxsize=None)
def _trajectories():
    """Both libraries' 100-step runs on the quadratic (two leaves) for every pair, compiled
    as one program (the MLP is covered by the formula tests; compiling it 20 times here
    would dominate the suite's time)."""
    def both():
        out = {}
        for name, ours, theirs in PAIRS:
            mine = run(ours(), quad_loss, QUAD_PARAMS)[0]  # under the suite's strict promotion
            with jax.numpy_dtype_promotion("standard"):  # optax is not strict-clean
                out[name] = (mine, run(theirs(), quad_loss, QUAD_PARAMS)[0])
        return out
    out = jax.jit(both)()
    return {k: (np.asarray(ravel_pytree(a)[0]), np.asarray(ravel_pytree(b)[0]))
            for k, (a, b) in out.items()}


@pytest.mark.parametrize("name", [p[0] for p in PAIRS])
def test_same_trajectory_as_optax(name):
    ours, theirs = _trajectories()[name]
    assert not np.allclose(ours, np.asarray(ravel_pytree(QUAD_PARAMS)[0]))  # it moved
    # optax's MultiSteps keeps a running mean (acc + (g - acc)/(n+1)); we sum then divide.
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def test_state_drop_in_with_optax_update_loop():
    """funcnet's optimizer in an optax-style loop (optax.apply_updates) and vice versa."""
    opt = optim.adam(0.01)
    p = QUAD_PARAMS
    s = opt.init(p)
    u, s = opt.update(jax.grad(quad_loss)(p), s, p)
    with jax.numpy_dtype_promotion("standard"):
        a = optax.apply_updates(p, u)
    b = optim.apply_updates(p, u)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-15)
    assert jnp.result_type(s[0].count) == jnp.int32
