"""Plain JAX: models from ``jax.lax`` / ``jax.numpy``, autodiff, hand-written Adam."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.cases import RECURRENT, Case, cnn_flat_size, mlp_sizes
from benchmarks.libs import JaxBuild

NAME = "jax"
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def versions() -> dict[str, str]:
    return {"jax": jax.__version__}


def _dense_init(key, d, h, dtype):
    w = jax.random.normal(key, (d, h), jnp.float32) * np.sqrt(2.0 / d)
    return {"w": w.astype(dtype), "b": jnp.zeros((h,), dtype)}


def init_params(case: Case, key, dtype):
    d = case.dims
    if case.model == "mlp":
        sizes = mlp_sizes(d)
        keys = jax.random.split(key, len(sizes) - 1)
        return [_dense_init(k, a, b, dtype) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    if case.model == "cnn":
        k1, k2, k3 = jax.random.split(key, 3)
        fan_in = d["k"] * d["k"] * d["cin"]
        w = jax.random.normal(k1, (d["k"], d["k"], d["cin"], d["filters"])) * np.sqrt(2.0 / fan_in)
        conv = {"w": w.astype(dtype), "b": jnp.zeros((d["filters"],), dtype)}
        return [conv, _dense_init(k2, cnn_flat_size(d), d["hidden"], dtype),
                _dense_init(k3, d["hidden"], d["out"], dtype)]
    if case.model in RECURRENT:  # the LSTM's gates i, f, g, o side by side: width 4H
        g = 4 * d["H"] if case.model == "lstm" else d["H"]
        k1, k2, k3 = jax.random.split(key, 3)
        wx = jax.random.normal(k1, (d["D"], g)) / np.sqrt(d["D"])
        wh = jax.random.normal(k2, (d["H"], g)) / np.sqrt(d["H"])
        cell = {"wx": wx.astype(dtype), "wh": wh.astype(dtype), "b": jnp.zeros((g,), dtype)}
        return [cell, _dense_init(k3, d["H"], d["out"], dtype)]
    raise ValueError(case.model)


def forward(case: Case, params, x):
    if case.model == "mlp":
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]
    if case.model == "cnn":
        conv, fc1, fc2 = params
        y = lax.conv_general_dilated(x, conv["w"], (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["b"]
        y = jax.nn.relu(y)
        y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        y = y.reshape(y.shape[0], -1)
        y = jax.nn.relu(y @ fc1["w"] + fc1["b"])
        return y @ fc2["w"] + fc2["b"]
    if case.model == "rnn":
        cell, head = params
        h0 = jnp.zeros((x.shape[1], cell["wh"].shape[0]), x.dtype)

        def body(h, xt):
            h = jnp.tanh(xt @ cell["wx"] + h @ cell["wh"] + cell["b"])
            return h, None

        h, _ = lax.scan(body, h0, x)
        return h @ head["w"] + head["b"]
    if case.model == "lstm":
        cell, head = params
        h0 = jnp.zeros((x.shape[1], cell["wh"].shape[0]), x.dtype)

        def body(carry, xt):
            h, c = carry
            i, f, g, o = jnp.split(xt @ cell["wx"] + h @ cell["wh"] + cell["b"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

        (h, _), _ = lax.scan(body, (h0, h0), x)
        return h @ head["w"] + head["b"]
    raise ValueError(case.model)


def softmax_ce(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def adam_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return {"count": jnp.zeros((), jnp.int32), "mu": zeros, "nu": zeros}


def adam_update(grads, state, params):
    count = state["count"] + 1
    mu = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * g, state["mu"], grads)
    nu = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * g * g, state["nu"], grads)
    t = count.astype(jnp.float32)
    c1, c2 = 1 - B1 ** t, 1 - B2 ** t

    def upd(p, m, v):
        step = LR * (m.astype(jnp.float32) / c1) / (jnp.sqrt(v.astype(jnp.float32) / c2) + EPS)
        return (p - step).astype(p.dtype)

    params = jax.tree.map(upd, params, mu, nu)
    return params, {"count": count, "mu": mu, "nu": nu}


def build(case: Case) -> JaxBuild:
    dtype = jnp.dtype(case.dtype)
    params = init_params(case, jax.random.PRNGKey(0), dtype)

    def loss(p, batch):
        x, y = batch
        return softmax_ce(forward(case, p, x), y)

    def step(state, batch):
        p, opt = state
        value, grads = jax.value_and_grad(loss)(p, batch)
        p, opt = adam_update(grads, opt, p)
        return (p, opt), value

    def prepare(x, y):
        return jnp.asarray(x, dtype), jnp.asarray(y)

    return JaxBuild(step, (params, adam_init(params)), loss, params, prepare)
