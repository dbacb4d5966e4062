"""Plain-JAX twin of :func:`funcnet.ops.embedding`: ``jnp.take`` differentiated by JAX."""
from __future__ import annotations

from funcnet.ops.embedding import check_embedding_args, embedding_forward

__all__ = ["embedding"]


def embedding(ids, table):
    """Reference lookup ``table[ids]`` (NaN rows for ids outside ``[0, V)`` under jit)."""
    return embedding_forward(*check_embedding_args("embedding", ids, table))
