"""funcnet: ``funcnet.nn`` layers, ``funcnet.ops.softmax_cross_entropy`` and ``funcnet.optim.adam``.

Uses the public API only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.cases import RECURRENT, Case, input_shape
from benchmarks.libs import JaxBuild, optax_protocol_build

NAME = "funcnet"


def versions() -> dict[str, str]:
    import funcnet

    return {"funcnet": funcnet.__version__}


def make_model(case: Case):
    """The case's model as one ``funcnet.nn`` layer (the RNN/LSTM head reads the last state)."""
    from funcnet import nn

    dtype = jnp.dtype(case.dtype)
    d = case.dims
    if case.model == "mlp":
        layers = []
        for h in d["hidden"]:
            layers += [nn.Dense(h, dtype=dtype), nn.ReLU()]
        return nn.serial(*layers, nn.Dense(d["out"], dtype=dtype))
    if case.model == "cnn":
        return nn.serial(nn.Conv2D(d["filters"], d["k"], dtype=dtype), nn.ReLU(),
                         nn.MaxPool2D(2), nn.Flatten(),
                         nn.Dense(d["hidden"], dtype=dtype), nn.ReLU(),
                         nn.Dense(d["out"], dtype=dtype))
    if case.model in RECURRENT:
        cell = nn.RNN if case.model == "rnn" else nn.LSTM
        rnn, head = cell(d["H"], dtype=dtype), nn.Dense(d["out"], dtype=dtype)

        def init(key, shape):
            k1, k2 = jax.random.split(key)
            s1, p1, st1 = rnn.init(k1, shape)
            s2, p2, st2 = head.init(k2, (s1[1], s1[2]))
            return s2, (p1, p2), (st1, st2)

        def apply(params, state, x, *, key=None, train=False):
            hs, st1 = rnn.apply(params[0], state[0], x, key=key, train=train)
            y, st2 = head.apply(params[1], state[1], hs[-1], key=key, train=train)
            return y, (st1, st2)

        return nn.Layer(init, apply, f"{case.model.upper()}-last-state")
    raise ValueError(case.model)


def build(case: Case) -> JaxBuild:
    from funcnet import ops, optim

    model = make_model(case)
    dtype = jnp.dtype(case.dtype)
    shape = input_shape(case)
    # jitted only to build faster (op-by-op init compiles every small op)
    params, mstate = jax.jit(lambda k: model.init(k, shape)[1:])(jax.random.PRNGKey(0))
    opt = optim.adam(1e-3)

    def loss(p, batch):
        x, y = batch
        logits, _ = model.apply(p, mstate, x)
        return ops.softmax_cross_entropy(logits, y)

    def prepare(x, y):
        return jnp.asarray(x, dtype), jnp.asarray(y)

    return optax_protocol_build(loss, params, opt, optim.apply_updates, prepare)
