"""Equinox modules (per-example, vmapped over the batch, NCHW images) trained with optax.adam.

The model is split into its array leaves (the jitted state) and its static rest with
``eqx.partition`` so that the step is a plain ``jax.jit``-able function of arrays, like
the other JAX libraries (``eqx.filter_jit`` would add Python overhead per call).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.cases import RECURRENT, Case, cnn_flat_size, mlp_sizes
from benchmarks.libs import JaxBuild, optax_protocol_build

NAME = "equinox"


def versions() -> dict[str, str]:
    import equinox
    import optax

    return {"equinox": equinox.__version__, "optax": optax.__version__}


def make_model(case: Case, key):
    import equinox as eqx

    dtype = jnp.dtype(case.dtype)
    d = case.dims

    if case.model == "mlp":
        sizes = mlp_sizes(d)
        keys = jax.random.split(key, len(sizes) - 1)

        class MLP(eqx.Module):
            layers: list

            def __call__(self, x):
                for layer in self.layers[:-1]:
                    x = jax.nn.relu(layer(x))
                return self.layers[-1](x)

        return MLP([eqx.nn.Linear(a, b, dtype=dtype, key=k)
                    for k, a, b in zip(keys, sizes[:-1], sizes[1:])])
    if case.model == "cnn":
        k1, k2, k3 = jax.random.split(key, 3)

        class CNN(eqx.Module):
            conv: eqx.nn.Conv2d
            pool: eqx.nn.MaxPool2d
            fc1: eqx.nn.Linear
            fc2: eqx.nn.Linear

            def __call__(self, x):  # x: (C, H, W)
                x = self.pool(jax.nn.relu(self.conv(x)))
                x = jax.nn.relu(self.fc1(x.reshape(-1)))
                return self.fc2(x)

        return CNN(eqx.nn.Conv2d(d["cin"], d["filters"], d["k"], dtype=dtype, key=k1),
                   eqx.nn.MaxPool2d(2, 2),
                   eqx.nn.Linear(cnn_flat_size(d), d["hidden"], dtype=dtype, key=k2),
                   eqx.nn.Linear(d["hidden"], d["out"], dtype=dtype, key=k3))
    if case.model == "rnn":
        k1, k2, k3 = jax.random.split(key, 3)

        class RNN(eqx.Module):
            wx: eqx.nn.Linear
            wh: eqx.nn.Linear
            head: eqx.nn.Linear

            def __call__(self, xs):  # xs: (T, D) for one example
                h0 = jnp.zeros((self.wh.in_features,), xs.dtype)

                def body(h, xt):
                    return jnp.tanh(self.wx(xt) + self.wh(h)), None

                h, _ = jax.lax.scan(body, h0, xs)
                return self.head(h)

        return RNN(eqx.nn.Linear(d["D"], d["H"], dtype=dtype, key=k1),
                   eqx.nn.Linear(d["H"], d["H"], use_bias=False, dtype=dtype, key=k2),
                   eqx.nn.Linear(d["H"], d["out"], dtype=dtype, key=k3))
    if case.model == "lstm":
        k1, k2 = jax.random.split(key)

        class LSTM(eqx.Module):
            cell: eqx.nn.LSTMCell
            head: eqx.nn.Linear

            def __call__(self, xs):  # xs: (T, D) for one example
                h0 = jnp.zeros((self.cell.hidden_size,), xs.dtype)

                def body(carry, xt):
                    return self.cell(xt, carry), None

                (h, _), _ = jax.lax.scan(body, (h0, h0), xs)
                return self.head(h)

        return LSTM(eqx.nn.LSTMCell(d["D"], d["H"], dtype=dtype, key=k1),
                    eqx.nn.Linear(d["H"], d["out"], dtype=dtype, key=k2))
    raise ValueError(case.model)


def build(case: Case) -> JaxBuild:
    import equinox as eqx
    import optax

    dtype = jnp.dtype(case.dtype)
    model = make_model(case, jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_array)
    opt = optax.adam(1e-3)
    # The RNN and LSTM are written per example (T, D); vmap over the batch axis 1 of (T, N, D).
    in_axis = 1 if case.model in RECURRENT else 0

    def loss(p, batch):
        x, y = batch
        m = eqx.combine(p, static)
        logits = jax.vmap(m, in_axes=in_axis)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def prepare(x, y):
        if case.model == "cnn":  # NHWC -> NCHW, Equinox's layout
            x = np.moveaxis(x, -1, -3)
        return jnp.asarray(x, dtype), jnp.asarray(y)

    return optax_protocol_build(loss, params, opt, eqx.apply_updates, prepare)
