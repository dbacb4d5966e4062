"""funcnet: a functional deep-learning library on JAX.

A model is data (a pytree of arrays) plus pure functions:

- :mod:`funcnet.ops`: primitives, each a ``jax.custom_vjp`` with a hand-written backward
  rule and a plain-JAX twin in :mod:`funcnet.ops.reference`;
- :mod:`funcnet.nn`: layers as ``(init, apply)`` pairs over pytrees, and ``serial``;
- :mod:`funcnet.optim`: optimizers as pure state transitions (optax's protocol);
- :mod:`funcnet.data`: the embedded digits data set, an MNIST idx reader, batching;
- :mod:`funcnet.train`: ``train_step``, ``evaluate`` and ``fit``;
- :mod:`funcnet.parallel`: pmap / sharded data parallelism, sync BN, multi-host;
- :mod:`funcnet.checkpoint`: pickle-free, atomic save/restore of pytrees;
- :mod:`funcnet.gradcheck`: central differences and checks of custom VJPs.
"""
from funcnet import checkpoint, data, gradcheck, nn, ops, optim, parallel, train  # noqa: F401

__version__ = "0.2.0"
__all__ = ["checkpoint", "data", "gradcheck", "nn", "ops", "optim", "parallel", "train"]
