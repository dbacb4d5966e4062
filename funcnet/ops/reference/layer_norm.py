"""Plain-JAX twins of :func:`funcnet.ops.layer_norm` and :func:`funcnet.ops.rms_norm`.

The same forward maths and checks, differentiated by JAX (no ``custom_vjp``).
"""
from __future__ import annotations

from funcnet.ops.layer_norm import check_norm_args, layer_norm_forward, rms_norm_forward

__all__ = ["layer_norm", "rms_norm"]


def layer_norm(x, gamma, beta, eps: float = 1e-5):
    """Reference layer norm: ``(x - mean) / sqrt(var + eps) * gamma + beta`` per row."""
    eps = check_norm_args("layer_norm", x, gamma, beta, eps)
    return layer_norm_forward(x, gamma, beta, eps)[0]


def rms_norm(x, gamma, eps: float = 1e-6):
    """Reference RMS norm: ``x / sqrt(mean(x^2) + eps) * gamma`` per row."""
    eps = check_norm_args("rms_norm", x, gamma, None, eps)
    return rms_norm_forward(x, gamma, eps)[0]
