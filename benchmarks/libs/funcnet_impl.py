"""funcnet: ``funcnet.nn`` layers, ``funcnet.ops.softmax_cross_entropy`` and ``funcnet.optim.adam``.

Uses the public API only. If ``funcnet.nn`` or ``funcnet.optim`` cannot be imported (work
in progress), the model falls back to ``funcnet.ops`` functions and :mod:`jax_impl`'s
hand-written Adam, and ``versions()`` says so.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.cases import Case, input_shape
from benchmarks.libs import JaxBuild

NAME = "funcnet"


def versions() -> dict[str, str]:
    import funcnet

    out = {"funcnet": funcnet.__version__}
    try:
        import funcnet.nn  # noqa: F401
        import funcnet.optim  # noqa: F401
    except ImportError as e:  # pragma: no cover - only while the packages are being written
        out["fallback"] = f"funcnet.ops + hand-written Adam ({e})"
    return out


def make_model(case: Case):
    """The case's model as one ``funcnet.nn`` layer (the RNN head reads the last state)."""
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
    if case.model == "rnn":
        rnn, head = nn.RNN(d["H"], dtype=dtype), nn.Dense(d["out"], dtype=dtype)

        def init(key, shape):
            k1, k2 = jax.random.split(key)
            s1, p1, st1 = rnn.init(k1, shape)
            s2, p2, st2 = head.init(k2, (s1[1], s1[2]))
            return s2, (p1, p2), (st1, st2)

        def apply(params, state, x, *, key=None, train=False):
            hs, st1 = rnn.apply(params[0], state[0], x, key=key, train=train)
            y, st2 = head.apply(params[1], state[1], hs[-1], key=key, train=train)
            return y, (st1, st2)

        return nn.Layer(init, apply, "RNN-last-state")
    raise ValueError(case.model)


def build(case: Case) -> JaxBuild:
    from funcnet import ops

    try:
        from funcnet import optim
        model = make_model(case)
    except ImportError:  # pragma: no cover
        return _fallback_build(case)
    dtype = jnp.dtype(case.dtype)
    shape = input_shape(case)
    # jitted only to build faster (op-by-op init compiles every small op)
    params, mstate = jax.jit(lambda k: model.init(k, shape)[1:])(jax.random.PRNGKey(0))
    opt = optim.adam(1e-3)

    def loss(p, batch):
        x, y = batch
        logits, _ = model.apply(p, mstate, x)
        return ops.softmax_cross_entropy(logits, y)

    def step(state, batch):
        p, opt_state = state
        value, grads = jax.value_and_grad(loss)(p, batch)
        updates, opt_state = opt.update(grads, opt_state, p)
        return (optim.apply_updates(p, updates), opt_state), value

    def prepare(x, y):
        return jnp.asarray(x, dtype), jnp.asarray(y)

    return JaxBuild(step, (params, opt.init(params)), loss, params, prepare)


def _fallback_build(case: Case) -> JaxBuild:  # pragma: no cover - transitional
    """Model from ``funcnet.ops`` functions with jax_impl's params and Adam."""
    from funcnet import ops

    from benchmarks.libs import jax_impl

    dtype = jnp.dtype(case.dtype)
    params = jax_impl.init_params(case, jax.random.PRNGKey(0), dtype)

    def forward(p, x):
        if case.model == "mlp":
            for layer in p[:-1]:
                x = ops.relu(ops.affine(x, layer["w"], layer["b"]))
            return ops.affine(x, p[-1]["w"], p[-1]["b"])
        if case.model == "cnn":
            conv, fc1, fc2 = p
            y = ops.max_pool2d(ops.relu(ops.conv2d(x, conv["w"], conv["b"])), 2)
            y = ops.relu(ops.affine(y.reshape(y.shape[0], -1), fc1["w"], fc1["b"]))
            return ops.affine(y, fc2["w"], fc2["b"])
        cell, head = p
        h0 = jnp.zeros((x.shape[1], cell["wh"].shape[0]), x.dtype)
        hs = ops.rnn(x, h0, cell["wx"], cell["wh"], cell["b"])
        return ops.affine(hs[-1], head["w"], head["b"])

    def loss(p, batch):
        x, y = batch
        return ops.softmax_cross_entropy(forward(p, x), y)

    def step(state, batch):
        p, opt_state = state
        value, grads = jax.value_and_grad(loss)(p, batch)
        p, opt_state = jax_impl.adam_update(grads, opt_state, p)
        return (p, opt_state), value

    def prepare(x, y):
        return jnp.asarray(x, dtype), jnp.asarray(y)

    return JaxBuild(step, (params, jax_impl.adam_init(params)), loss, params, prepare)
