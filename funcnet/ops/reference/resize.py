"""Plain-JAX twin of :func:`funcnet.ops.resize2d`: ``jax.image.resize`` without
antialiasing, differentiated by JAX. Same name, signature, checks and numbers."""
from __future__ import annotations

import jax

from funcnet.ops.resize import check_resize_args


def resize2d(x, size, method="linear"):
    """Reference resize; see :func:`funcnet.ops.resize2d`."""
    size, method = check_resize_args("resize2d", x, size, method)
    if tuple(x.shape[1:3]) == size:
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method, antialias=False)
