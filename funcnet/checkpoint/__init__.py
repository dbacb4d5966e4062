"""Checkpoints: save and restore pytrees without pickle, atomically, verified.

Two entry points, both returning ``(step, tree)`` when restoring:

- :func:`save` / :func:`restore` (and :func:`metadata`): one pytree (params, batch-norm
  state, optimizer NamedTuple states, the step, PRNG keys) to ONE file, an ``.npz``
  holding the array leaves, a JSON description of the tree, an optional JSON
  ``metadata`` dict and a SHA-256 checksum (:mod:`funcnet.checkpoint.fileformat`). A
  directory path is refused, never silently reinterpreted.
- :class:`CheckpointManager`: a directory of ``ckpt_<step>.npz`` files keeping the newest
  ``keep``, restoring the newest readable one (:mod:`funcnet.checkpoint.manager`).

Also :func:`register_namedtuple` (NamedTuple classes to rebuild by name when restoring
without ``like``, e.g. optimizer states) and :class:`CheckpointError` (a ``ValueError``;
``err.damaged`` tells a damaged file from one that does not match ``like``).

Example::

    from funcnet import checkpoint
    checkpoint.save("run/model.npz", {"params": params, "opt_state": opt_state}, step=10)
    step, state = checkpoint.restore("run/model.npz",
                                     like={"params": params, "opt_state": opt_state})
"""
from funcnet.checkpoint.fileformat import metadata, restore, save
from funcnet.checkpoint.manager import CheckpointManager
from funcnet.checkpoint.tree import CheckpointError, register_namedtuple

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "metadata",
    "register_namedtuple",
    "restore",
    "save",
]
