"""``save`` and ``restore``: one pytree to one file, or into a checkpoint directory."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from funcnet.checkpoint.core import check_step, load_file, save_file
from funcnet.checkpoint.manager import restore_latest, save_step


def save(path: str | os.PathLike, tree, *, step: int | None = None,
         keep: int | None = None) -> Path:
    """Saves a pytree to a checkpoint file, atomically and without pickle.

    ``tree`` may nest dicts (string keys; their order is kept), lists, tuples, NamedTuples
    (e.g. optimizer states), ``None``, Python ``int``/``float``/``bool``/``str`` values
    (e.g. the step) and arrays (NumPy or ``jax.Array``, any shape including 0-d) of dtype
    bool, (u)int8..64, float16/32/64, complex64/128, bfloat16 and the other ``ml_dtypes``
    types, plus raw ``uint32`` PRNG keys and typed keys (``jax.random.key``). Values are
    stored bit-exactly. The file is written to a temporary file in the same directory,
    fsynced and renamed over ``path``, so a crash never leaves a half-written ``path``.

    Args:
      path: the file to write (parent directories are created); or an existing
        directory, in which case this is ``save_step(path, step, tree, keep=keep)``.
      tree: the pytree.
      step: an optional non-negative int recorded in the file (required for a directory).
      keep: for a directory only, how many checkpoints to keep (see :func:`save_step`).

    Returns:
      The path written.

    Raises:
      TypeError: naming the path in the tree, for an unsupported node or dtype, a
        non-string dict key or a traced value.
      ValueError: bad ``step``; ``keep`` for a file; no ``step`` for a directory.
    """
    path = Path(path)
    if path.is_dir():
        if step is None:
            raise ValueError(f"save: {path} is a directory; pass step= to save "
                             f"ckpt_<step>.npz in it")
        return save_step(path, step, tree, keep=keep)
    if keep is not None:
        raise ValueError(f"save: keep={keep!r} applies only when path is a directory, and "
                         f"{path} is not one (use save_step or CheckpointManager)")
    save_file(path, tree, check_step("save", step))
    return path


def restore(path: str | os.PathLike, like=None, *,
            namedtuple_types: Iterable[type] = ()) -> Any:
    """Restores a pytree saved by :func:`save`, verifying the whole file first.

    Nothing in the file is ever executed or imported: the archive is read with
    ``np.load(..., allow_pickle=False)``, the tree description is plain JSON, and dtypes and
    PRNG implementations come from fixed tables.

    Without ``like``, the tree is rebuilt from the file's own description: dicts (in saved
    key order), lists, tuples, ``None``, Python scalars, NumPy array leaves (exact dtype)
    and ``jax.Array`` typed keys. A NamedTuple is rebuilt as its real class only if that
    class is *known*: registered with :func:`register_namedtuple` or listed in
    ``namedtuple_types`` under the same qualified name (``module.QualName``) with the same
    fields. Otherwise it becomes a stand-in: a ``collections.namedtuple`` with the same
    name and fields, whose ``__module__`` is ``funcnet.checkpoint.standin`` (it behaves
    like the original as a tuple and by field name, but is a different pytree type).

    With ``like`` (a pytree of arrays, ``jax.ShapeDtypeStruct``s, Python scalars and
    ``None``), the file must have the same structure, the same NamedTuple names and
    fields, the same dict keys, and every leaf the same shape and dtype. The result takes
    ``like``'s container types (its NamedTuple classes, its dict key order) and its leaves
    are ``jax.Array``s on the sharding of the matching ``like`` leaf if it has one (else on
    the default device); Python scalars come back as the file's values.

    Args:
      path: a checkpoint file, or a directory (its latest ``ckpt_<step>.npz`` is restored).
      like: optional target structure, as above.
      namedtuple_types: extra NamedTuple classes to rebuild by name without ``like``.

    Returns:
      The tree.

    Raises:
      FileNotFoundError: no such file (or no checkpoint in the directory).
      CheckpointError: naming the file, when it is truncated, corrupted (checksum), holds
        object arrays, is not a funcnet checkpoint or has another format version; or when
        it does not match ``like`` (naming the first differing path, e.g.
        ``params['dense_0']['w']: file has shape (784, 100), like has (784, 50)``).
      TypeError: ``like`` holds an unsupported node type, or ``namedtuple_types`` a
        non-NamedTuple.
    """
    path = Path(path)
    if path.is_dir():
        return restore_latest(path, like, namedtuple_types=namedtuple_types)[1]
    return load_file(path, like, namedtuple_types)[1]
