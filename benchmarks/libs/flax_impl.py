"""Flax (linen) modules trained with optax.adam; the functional Flax API, jitted with jax.jit."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.cases import RECURRENT, Case
from benchmarks.libs import JaxBuild, optax_protocol_build

NAME = "flax"


def versions() -> dict[str, str]:
    import flax
    import optax

    return {"flax": flax.__version__, "optax": optax.__version__}


def make_model(case: Case):
    import flax.linen as nn

    dtype = jnp.dtype(case.dtype)
    d = case.dims
    dense = lambda n: nn.Dense(n, dtype=dtype, param_dtype=dtype)  # noqa: E731

    if case.model == "mlp":
        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x):
                for h in d["hidden"]:
                    x = nn.relu(dense(h)(x))
                return dense(d["out"])(x)
        return MLP()
    if case.model == "cnn":
        class CNN(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.Conv(d["filters"], (d["k"], d["k"]), padding="VALID",
                            dtype=dtype, param_dtype=dtype)(x)
                x = nn.relu(x)
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                x = x.reshape(x.shape[0], -1)
                x = nn.relu(dense(d["hidden"])(x))
                return dense(d["out"])(x)
        return CNN()
    if case.model in RECURRENT:
        cell_cls = nn.SimpleCell if case.model == "rnn" else nn.OptimizedLSTMCell

        class RNN(nn.Module):
            @nn.compact
            def __call__(self, x):
                cell = cell_cls(d["H"], dtype=dtype, param_dtype=dtype)
                carry = nn.RNN(cell, time_major=True, return_carry=True)(x)[0]
                h = carry if case.model == "rnn" else carry[1]  # an LSTM's carry is (c, h)
                return dense(d["out"])(h)
        return RNN()
    raise ValueError(case.model)


def build(case: Case) -> JaxBuild:
    import optax

    dtype = jnp.dtype(case.dtype)
    model = make_model(case)
    from benchmarks.cases import input_shape

    params = jax.jit(model.init)(jax.random.PRNGKey(0),
                                 jnp.zeros(input_shape(case), dtype))["params"]
    opt = optax.adam(1e-3)

    def loss(p, batch):
        x, y = batch
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def prepare(x, y):
        return jnp.asarray(x, dtype), jnp.asarray(y)

    return optax_protocol_build(loss, params, opt, optax.apply_updates, prepare)
