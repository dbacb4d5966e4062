"""Plain-JAX twin of :func:`funcnet.ops.rotary_embedding` (no ``custom_vjp``).

The same forward maths and checks, differentiated by JAX.
"""
from __future__ import annotations

import jax.numpy as jnp

from funcnet.ops.rotary import check_rotary_args, rotary_forward

__all__ = ["rotary_embedding"]


def rotary_embedding(x, positions=None, *, base: float = 10000.0, rotary_dim=None,
                     interleaved: bool = False):
    """Reference RoPE: ``x cos(p theta) + R(x) sin(p theta)`` on the first ``rotary_dim``
    features of ``(..., T, H, Dh)``."""
    plan = check_rotary_args("rotary_embedding", x, positions, base, rotary_dim, interleaved)
    return rotary_forward(x, None if positions is None else jnp.asarray(positions), plan)
