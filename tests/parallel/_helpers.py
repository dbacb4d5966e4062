"""Models, data and an independent single-device reference for the funcnet.parallel tests.

The reference (:func:`reference_step`) is written out here with ``jax.value_and_grad``
and the optimizer, without funcnet.parallel: data-parallel training must reproduce it on
the global batch.
"""
import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import data, nn, ops, optim

ROOT = Path(__file__).resolve().parents[2]
F64 = jnp.float64
GLOBAL_BATCH = 16


@functools.lru_cache(maxsize=None)
def bn_mlp(axis_name=None, dtype=F64):
    """dense -> ReLU -> sync BN -> dense on 8x8x1 digits (BN after the ReLU: every param
    has a true gradient, so Adam does not amplify round-off in a zero gradient).

    Dense layers compile much faster than convolutions on CPU; the convolution and pooling
    rules are checked under pmap/shard_map in devices/test_mapped_vjps.py.
    """
    return nn.serial(nn.Flatten(), nn.Dense(16, dtype=dtype), nn.ReLU(),
                     nn.BatchNorm(0.9, axis_name=axis_name, dtype=dtype),
                     nn.Dense(10, dtype=dtype))


@functools.lru_cache(maxsize=None)
def dropout_mlp(dtype=F64):
    return nn.serial(nn.Flatten(), nn.Dense(16, dtype=dtype), nn.ReLU(), nn.Dropout(0.5),
                     nn.Dense(10, dtype=dtype))


def digits(n=GLOBAL_BATCH, offset=0, dtype=np.float64):
    """``n`` digits ``(n, 8, 8, 1)`` (standardised a little) and int32 labels ``(n,)``."""
    x, y = data.load_digits(dtype=np.float64)
    x = (x[offset:offset + n] - 0.3) * 2.0
    return x.astype(dtype), y[offset:offset + n]


def init(model, seed=0, shape=(-1, 8, 8, 1)):
    return jax.jit(model.init, static_argnums=1)(jax.random.PRNGKey(seed), shape)[1:]


@functools.lru_cache(maxsize=None)
def reference_step(model, opt):
    """Jitted plain training step on one device: the ground truth."""
    def step(params, state, opt_state, x, y, key=None):
        def objective(p):
            logits, new_state = model.apply(p, state, x, key=key, train=True)
            return ops.softmax_cross_entropy(logits, y), new_state
        (loss, state), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), state, opt_state, loss
    return jax.jit(step)


def mesh_2d():
    """8 devices as a ("data": 2, "model": 4) mesh."""
    return jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))


def laid_out(params, mesh, style):
    """``(params placed, their shardings)``: bn_mlp's params split Megatron-style over
    "model" (tp) or row-wise over both axes (fsdp); the batch-norm params of the tp layout
    follow the hidden units."""
    def S(*spec):
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))

    if style == "tp":
        specs = ((), {"w": S(None, "model"), "b": S("model")}, (),
                 {"gamma": S("model"), "beta": S("model")}, {"w": S("model", None), "b": S()})
    else:
        specs = ((), {"w": S(("data", "model"), None), "b": S()}, (),
                 {"gamma": S(("data", "model")), "beta": S()},
                 {"w": S(("data", "model"), None), "b": S()})
    return jax.tree_util.tree_map(jax.device_put, params, specs), specs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with_devices(n: int) -> dict:
    """os.environ with XLA forced to ``n`` host devices (set before jax is imported).

    Default XLA flags otherwise: the subprocesses compile what users compile.
    """
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    return dict(os.environ, XLA_FLAGS=" ".join(
        flags + [f"--xla_force_host_platform_device_count={n}"]))


def run_python(args, *, devices: int, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs ``python *args`` in the repo root with ``devices`` fake CPU devices."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env_with_devices(devices),
                          capture_output=True, text=True, timeout=timeout, **kwargs)
