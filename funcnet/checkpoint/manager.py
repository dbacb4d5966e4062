"""Checkpoint directories: ``ckpt_<step>.npz`` files, the newest ``keep`` kept.

A new checkpoint is written atomically (see :mod:`funcnet.checkpoint.fileio`) before any
older one is deleted, so a crash at any point leaves at least the previous checkpoints.
Stray temporary files of killed writers are ignored when listing and removed by the next
save. One writer per directory is assumed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from funcnet.checkpoint.core import check_step, load_file, save_file
from funcnet.checkpoint.errors import CheckpointError
from funcnet.checkpoint.fileio import remove_stale_temporaries

NAME_PATTERN = re.compile(r"^ckpt_(\d+)\.npz$")


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """The file name a step is saved under: ``directory/ckpt_000123.npz``."""
    return Path(directory) / f"ckpt_{check_step('checkpoint_path', step, required=True):06d}.npz"


def _listing(directory: Path) -> dict[int, Path]:
    if not directory.is_dir():
        return {}
    found = {}
    for entry in directory.iterdir():
        m = NAME_PATTERN.match(entry.name)
        if m and entry.is_file():
            found[int(m.group(1))] = entry
    return dict(sorted(found.items()))


def all_steps(directory: str | os.PathLike) -> list[int]:
    """The steps saved in ``directory``, ascending (empty if it does not exist)."""
    return list(_listing(Path(directory)))


def latest_step(directory: str | os.PathLike) -> int | None:
    """The highest saved step in ``directory``, or ``None`` if there is none."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def save_step(directory: str | os.PathLike, step: int, tree, *,
              keep: int | None = None) -> Path:
    """Saves ``tree`` as ``directory/ckpt_<step>.npz`` and prunes to the newest ``keep``.

    Args:
      directory: created if missing.
      step: non-negative int; saving an existing step replaces it atomically.
      tree: the pytree to save (see :func:`funcnet.checkpoint.save`).
      keep: how many checkpoints to keep (the highest steps); ``None`` keeps all. The one
        just written is never deleted, even if older steps are higher.

    Returns:
      The path written.

    Raises:
      ValueError: bad ``step`` or ``keep``.
      TypeError: ``tree`` holds an unsupported node (see :func:`funcnet.checkpoint.save`).
    """
    step = check_step("save_step", step, required=True)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"save_step: keep must be a positive int or None, got {keep!r}")
    directory = Path(directory)
    path = checkpoint_path(directory, step)
    save_file(path, tree, step)
    remove_stale_temporaries(directory)
    if keep is not None:
        steps = _listing(directory)
        retained = set(list(steps)[-keep:]) | {step}
        for old, old_path in steps.items():
            if old not in retained:
                old_path.unlink(missing_ok=True)
    return path


def restore_step(directory: str | os.PathLike, step: int | None = None, like=None, *,
                 namedtuple_types: Iterable[type] = ()) -> tuple[int, Any]:
    """Restores one step of ``directory`` (the latest if ``step`` is ``None``).

    Returns:
      ``(step, tree)``; see :func:`funcnet.checkpoint.restore` for ``like`` and
      ``namedtuple_types``.

    Raises:
      FileNotFoundError: the directory holds no checkpoint (for that step).
      CheckpointError: the file is damaged or mismatched, or its recorded step differs
        from its name.
    """
    directory = Path(directory)
    steps = _listing(directory)
    if step is None:
        if not steps:
            raise FileNotFoundError(f"restore: no checkpoint (ckpt_<step>.npz) in {directory}")
        step = list(steps)[-1]
    if step not in steps:
        raise FileNotFoundError(f"restore: no checkpoint for step {step} in {directory} "
                                f"(steps there: {list(steps)})")
    file_step, tree = load_file(steps[step], like, namedtuple_types)
    if file_step != step:
        raise CheckpointError(f"{steps[step]}: file name says step {step} but the file "
                              f"records step {file_step}")
    return step, tree


def restore_latest(directory: str | os.PathLike, like=None, *,
                   namedtuple_types: Iterable[type] = ()) -> tuple[int, Any]:
    """Restores the highest step saved in ``directory``: ``(step, tree)``.

    Raises:
      FileNotFoundError: ``directory`` holds no checkpoint.
      CheckpointError: the latest file is damaged or mismatched (older ones are not tried
        silently: restore them explicitly with :func:`restore_step`).
    """
    return restore_step(directory, None, like, namedtuple_types=namedtuple_types)


class CheckpointManager:
    """The directory functions bound to one ``directory`` and one ``keep``.

    Example::

        manager = CheckpointManager("runs/mnist", keep=3)
        manager.save(step, {"params": params, "opt_state": opt_state, "key": key})
        if manager.latest_step() is not None:
            step, state = manager.restore(like=state)
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3):
        self.directory = Path(directory)
        self.keep = keep

    def save(self, step: int, tree) -> Path:
        """:func:`save_step` into this directory with this ``keep``."""
        return save_step(self.directory, step, tree, keep=self.keep)

    def restore(self, step: int | None = None, like=None, *,
                namedtuple_types: Iterable[type] = ()) -> tuple[int, Any]:
        """:func:`restore_step`: ``(step, tree)``, the latest step by default."""
        return restore_step(self.directory, step, like, namedtuple_types=namedtuple_types)

    def latest_step(self) -> int | None:
        return latest_step(self.directory)

    def all_steps(self) -> list[int]:
        return all_steps(self.directory)

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self.directory)!r}, keep={self.keep})"
