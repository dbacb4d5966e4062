"""Data parallelism on one host and on many: pmap, jit with shardings, shard_map.

funcnet fits JAX's own parallel runtime rather than replacing it. There is ONE training
step, :func:`funcnet.train.train_step` (loss, gradient, ``lax.pmean`` over a named axis
when one is given, optimizer update, metrics, accumulation); this package only maps it:

- :func:`pmap_train_step`: ``jax.pmap`` over local devices, with :func:`replicate`,
  :func:`shard_batch` and :func:`unreplicate` for the ``(devices, ...)`` layout;
- :func:`shard_map_train_step`: ``jax.shard_map`` over a :func:`make_mesh` mesh;
- :func:`sharded_train_step`: ``jax.jit`` of the global-batch step with
  ``NamedSharding`` s (XLA partitions it).

``funcnet.train.fit(..., mesh=make_mesh())`` trains data-parallel the same way without a
hand-written loop. Sync batch norm: ``nn.BatchNorm(axis_name="batch")`` under
``pmap(axis_name="batch")`` (or the mesh axis under ``shard_map``) normalises with the
statistics of the global batch. Several processes: :func:`initialize`,
:func:`process_batch`, :func:`global_batch` and :func:`put_replicated` feed the mesh
steps. See ``docs/parallel.md``.
"""
from funcnet.parallel.devices import (make_mesh, put_replicated, replicate, shard_batch,
                                      to_host, unreplicate)
from funcnet.parallel.multihost import global_batch, initialize, process_batch
from funcnet.parallel.pmap import pmap_train_step
from funcnet.parallel.sharded import shard_map_train_step, sharded_train_step

__all__ = [
    "global_batch", "initialize", "make_mesh", "pmap_train_step", "process_batch",
    "put_replicated", "replicate", "shard_batch", "shard_map_train_step",
    "sharded_train_step", "to_host", "unreplicate",
]
