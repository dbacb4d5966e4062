"""Saving one tree to one file and loading it back, with or without ``like``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from funcnet.checkpoint.codec import decode, encode
from funcnet.checkpoint.errors import CheckpointError
from funcnet.checkpoint.fileio import read_file, write_file
from funcnet.checkpoint.matching import match


def check_step(fn: str, step, *, required: bool = False) -> int | None:
    """``step`` as a non-negative int (``None`` allowed unless ``required``)."""
    if step is None and not required:
        return None
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"{fn}: step must be a non-negative int, got {step!r}")
    return int(step)


def save_file(path: Path, tree, step: int | None) -> None:
    """Encodes ``tree`` and writes it atomically to ``path`` (parents are created)."""
    description, leaves = encode(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, description, leaves, step=step)


def load_file(path: Path, like=None,
              namedtuple_types: Iterable[type] = ()) -> tuple[int | None, Any]:
    """Reads, verifies and rebuilds the tree in ``path``: ``(step, tree)``."""
    header, leaves = read_file(path)
    try:
        step = header.get("step")
        if step is not None and (type(step) is not int or step < 0):
            raise CheckpointError(f"malformed header: step {step!r}")
        if like is None:
            return step, decode(header.get("tree"), leaves, namedtuple_types)
        return step, match(header.get("tree"), leaves, like)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
