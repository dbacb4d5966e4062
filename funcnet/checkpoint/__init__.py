"""Checkpoints: save and restore pytrees without pickle, atomically, verified.

- :func:`save` / :func:`restore`: one pytree (params, batch-norm state, optimizer
  NamedTuple states, the step, PRNG keys) to one ``.npz`` file holding the array leaves
  plus a JSON description of the tree and a SHA-256 checksum. See
  :mod:`funcnet.checkpoint.fileio` for the file format.
- :func:`save_step`, :func:`latest_step`, :func:`restore_latest`, :func:`restore_step`,
  :func:`all_steps` and :class:`CheckpointManager`: a directory of ``ckpt_<step>.npz``
  files keeping the newest ``keep``.
- :func:`register_namedtuple`: NamedTuple classes to rebuild by name when restoring
  without ``like`` (e.g. optimizer states).
- :class:`CheckpointError`: a truncated, corrupted or mismatched file (a ``ValueError``).

Example::

    from funcnet import checkpoint
    checkpoint.save("run/model.npz", {"params": params, "opt_state": opt_state}, step=10)
    state = checkpoint.restore("run/model.npz", like={"params": params,
                                                       "opt_state": opt_state})
"""
from funcnet.checkpoint.api import restore, save
from funcnet.checkpoint.errors import CheckpointError
from funcnet.checkpoint.manager import (CheckpointManager, all_steps, checkpoint_path,
                                        latest_step, restore_latest, restore_step, save_step)
from funcnet.checkpoint.registry import register_namedtuple

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "all_steps",
    "checkpoint_path",
    "latest_step",
    "register_namedtuple",
    "restore",
    "restore_latest",
    "restore_step",
    "save",
    "save_step",
]
