"""``CheckpointManager``: a directory of ``ckpt_<step>.npz`` files, the newest ``keep`` kept.

Invariants:

- A new checkpoint is written atomically (see :mod:`funcnet.checkpoint.fileformat`)
  before any older one is deleted, so a crash at any point leaves at least the previous
  checkpoints, and never a visible partial file.
- ``restore()`` and ``metadata()`` without a step return the newest *readable*
  checkpoint: a damaged newest file is skipped with a warning naming it and its error
  (that is what ``keep`` > 1 is for). An explicit step never falls back, and a file that
  does not match ``like`` is an error, never a reason to fall back.
- Several processes may save into one directory: a save removes only the temporaries of
  writers known to be dead (or untouched for a day), and rotation tolerates files that
  another process deleted first. Which steps survive then depends on the interleaving;
  every surviving file is complete.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

from funcnet import _checks
from funcnet.checkpoint.fileformat import (check_metadata, check_path, load, read,
                                           remove_stale_temporaries, write)
from funcnet.checkpoint.tree import FREE, CheckpointError, known_namedtuples

NAME_PATTERN = re.compile(r"^ckpt_(\d+)\.npz$")


class CheckpointManager:
    """A directory of checkpoints, one file per step, keeping the newest ``keep``.

    Example::

        manager = CheckpointManager("runs/mnist", keep=3)
        manager.save(step, {"params": params, "opt_state": opt_state, "key": key},
                     metadata={"run": fingerprint})
        if manager.latest_step() is not None:
            step, state = manager.restore(like=state)
            info = manager.metadata(step)

    Args:
      directory: a str or ``os.PathLike``; created by the first save.
      keep: how many checkpoints to keep (the highest steps), an int >= 1, or ``None``
        to keep all. The one just written is never deleted, even if older steps are
        higher (e.g. after restarting from an earlier step).

    Raises:
      TypeError: ``directory`` is not a str/PathLike, or ``keep`` not an int (or None).
      ValueError: ``keep`` < 1, or ``directory`` exists and is not a directory.
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3):
        fn = "CheckpointManager"
        self._directory = check_path(fn, "directory", directory)
        if self._directory.exists() and not self._directory.is_dir():
            raise ValueError(f"{fn}: directory {self._directory} exists and is not a "
                             f"directory")
        self._keep = None if keep is None else _checks.static_int(fn, "keep", keep, minimum=1)

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def keep(self) -> int | None:
        return self._keep

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self._directory)!r}, keep={self._keep})"

    def _listing(self) -> dict[int, Path]:
        """``{step: path}`` of the checkpoint files present, ascending (not verified)."""
        try:
            entries = list(os.scandir(self._directory))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        found = {int(m.group(1)): Path(e.path) for e in entries
                 if (m := NAME_PATTERN.match(e.name)) and e.is_file()}
        return dict(sorted(found.items()))

    def all_steps(self) -> list[int]:
        """The steps present, ascending (empty if the directory does not exist)."""
        return list(self._listing())

    def latest_step(self) -> int | None:
        """The highest step present, or ``None``. Not verified: ``restore()`` may fall
        back to an older step if this one is damaged, and returns the step it restored."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree, *, metadata: dict | None = None) -> Path:
        """Saves ``tree`` as ``directory/ckpt_<step>.npz`` and prunes to the newest ``keep``.

        Saving an existing step replaces it atomically. See :func:`funcnet.checkpoint.save`
        for what ``tree`` and ``metadata`` may hold.

        Returns:
          The path written.

        Raises:
          TypeError / ValueError: a bad ``step`` (not an int / < 0), ``tree`` or
            ``metadata`` (as for :func:`funcnet.checkpoint.save`).
        """
        fn = "CheckpointManager.save"
        step = _checks.static_int(fn, "step", step, minimum=0)
        metadata = check_metadata(fn, metadata)
        path = self._directory / f"ckpt_{step:06d}.npz"
        write(path, tree, step=step, metadata=metadata)
        remove_stale_temporaries(self._directory, NAME_PATTERN.match)
        if self._keep is not None:
            steps = self._listing()
            retained = set(list(steps)[-self._keep:]) | {step}
            for old, old_path in steps.items():
                if old not in retained:
                    old_path.unlink(missing_ok=True)  # another writer may have deleted it
        return path

    def restore(self, step: int | None = None, like=None, *,
                namedtuple_types: Iterable[type] = ()) -> tuple[int, Any]:
        """Restores one step, by default the newest readable one: ``(step, tree)``.

        See :func:`funcnet.checkpoint.restore` for ``like`` and ``namedtuple_types``.

        Raises:
          FileNotFoundError: no checkpoint in the directory (or none for ``step``).
          CheckpointError: ``damaged=False``: the file does not match ``like`` (never a
            reason to fall back). ``damaged=True``: the explicit ``step`` is damaged, or
            with ``step=None`` every checkpoint is.
          TypeError / ValueError: bad ``step``, ``like`` or ``namedtuple_types``.
        """
        fn = "CheckpointManager.restore"
        known = known_namedtuples(fn, namedtuple_types)
        like = FREE if like is None else like
        return self._first_readable(fn, step, lambda path: load(path, like, known))

    def metadata(self, step: int | None = None) -> dict:
        """The ``metadata`` saved with a step (by default the newest readable header).

        Reads only the header (cheap: the leaves and their SHA-256 are not read). Falls
        back like :meth:`restore`; for the metadata belonging to a restored tree, pass the
        step that :meth:`restore` returned.

        Raises:
          FileNotFoundError / CheckpointError / TypeError / ValueError: as :meth:`restore`.
        """
        def header(path: Path):
            h = read(path, leaves=False)[0]
            return h["step"], h["metadata"]
        return self._first_readable("CheckpointManager.metadata", step, header)[1]

    def delete(self, step: int) -> None:
        """Deletes the checkpoint of ``step``.

        Raises:
          FileNotFoundError: there is none.
          TypeError / ValueError: bad ``step``.
        """
        fn = "CheckpointManager.delete"
        self._path(fn, _checks.static_int(fn, "step", step, minimum=0)).unlink()

    def clear(self) -> list[int]:
        """Deletes every checkpoint of the directory; returns the steps deleted."""
        steps = self._listing()
        for path in steps.values():
            path.unlink(missing_ok=True)
        return list(steps)

    def _path(self, fn: str, step: int) -> Path:
        steps = self._listing()
        if step not in steps:
            raise FileNotFoundError(f"{fn}: no checkpoint for step {step} in "
                                    f"{self._directory} (steps there: {list(steps)})")
        return steps[step]

    def _first_readable(self, fn: str, step, read_one: Callable[[Path], tuple[Any, Any]]):
        """``(step, value)`` of ``read_one`` on ``step``'s file, or with ``step=None`` on the
        newest file that is not damaged (warning about each damaged one skipped)."""
        def checked(s: int, path: Path):
            file_step, value = read_one(path)
            if file_step != s:
                raise CheckpointError(f"{path}: file name says step {s} but the file "
                                      f"records step {file_step}")
            return s, value

        if step is not None:
            step = _checks.static_int(fn, "step", step, minimum=0)
            return checked(step, self._path(fn, step))
        steps, damaged = self._listing(), []
        if not steps:
            raise FileNotFoundError(f"{fn}: no checkpoint (ckpt_<step>.npz) in "
                                    f"{self._directory}")
        for s in reversed(steps):
            try:
                return checked(s, steps[s])
            except FileNotFoundError:  # rotated away by another writer meanwhile
                continue
            except CheckpointError as err:
                if not err.damaged:
                    raise
                damaged.append(str(err))
                warnings.warn(f"{fn}: skipping damaged checkpoint {err}; trying the next "
                              f"older one", RuntimeWarning, stacklevel=3)
        if not damaged:
            raise FileNotFoundError(f"{fn}: no checkpoint left in {self._directory}")
        raise CheckpointError(f"{fn}: no readable checkpoint in {self._directory}; "
                              f"{len(damaged)} damaged: " + "; ".join(damaged))
