"""Plain-JAX twin of :mod:`funcnet.ops.sinusoidal`."""
from __future__ import annotations

from funcnet.ops.sinusoidal import check_sinusoidal_args, sinusoidal_forward

__all__ = ["sinusoidal_embedding"]


def sinusoidal_embedding(positions, features: int, *, max_period: float = 10000.0,
                         dtype=None):
    """Reference sinusoidal embedding ``[sin(t f), cos(t f)]``."""
    t, features, max_period, dtype = check_sinusoidal_args(positions, features, max_period,
                                                           dtype)
    return sinusoidal_forward(t, features, max_period, dtype)
