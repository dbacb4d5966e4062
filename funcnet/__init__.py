"""funcnet: a functional deep-learning library on JAX.

A model is data (a pytree of arrays) plus pure functions. Every differentiable primitive
in :mod:`funcnet.ops` carries a hand-written ``jax.custom_vjp`` backward rule; layers in
:mod:`funcnet.nn` are ``(init, apply)`` pairs; optimizers in :mod:`funcnet.optim` are pure
state transitions with optax's protocol.
"""
from funcnet import ops  # noqa: F401

__version__ = "0.1.0"
