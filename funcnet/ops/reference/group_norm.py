"""Plain-JAX twin of :func:`funcnet.ops.group_norm`: the same forward maths and checks,
differentiated by JAX (no ``custom_vjp``)."""
from __future__ import annotations

from funcnet.ops.group_norm import check_group_norm_args, group_norm_forward

__all__ = ["group_norm"]


def group_norm(x, gamma, beta, num_groups: int, eps: float = 1e-5):
    """Reference group norm: ``(x - mean) / sqrt(var + eps) * gamma + beta`` per group."""
    num_groups, eps = check_group_norm_args("group_norm", x, gamma, beta, num_groups, eps)
    return group_norm_forward(x, gamma, beta, num_groups, eps)[0]
