"""The checkpoint file: an uncompressed ``.npz`` written atomically, read without pickle.

Members of the archive:

- ``tree``: the JSON header (UTF-8 bytes as a uint8 array): ``{"format":
  "funcnet.checkpoint", "version": 1, "step": int | null, "num_leaves": k, "tree": ...}``
  (see :mod:`funcnet.checkpoint.codec` for the tree description);
- ``leaf_0`` ... ``leaf_{k-1}``: the array leaves in traversal order;
- ``sha256``: SHA-256 (32 bytes as uint8) of the header and every leaf's dtype, shape and
  bytes, so that any change to the data is detected before anything is returned.

Writes go to a temporary file ``.<name>.tmp-<pid>-<random>`` in the same directory, which
is flushed, fsynced and then renamed over the target with ``os.replace`` (atomic on POSIX
and Windows); the directory is fsynced afterwards. A writer killed at any moment leaves
the previous file intact and at worst a stray temporary file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

import numpy as np

from funcnet.checkpoint.errors import CheckpointError

FORMAT = "funcnet.checkpoint"
VERSION = 1
HEADER_MEMBER = "tree"
CHECKSUM_MEMBER = "sha256"
ZIP_MAGIC = b"PK\x03\x04"
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.tmp-\d+-[0-9a-f]+$")


def _digest(header: bytes, leaves: list[np.ndarray]) -> np.ndarray:
    sha = hashlib.sha256()
    sha.update(len(header).to_bytes(8, "little"))
    sha.update(header)
    for leaf in leaves:
        sha.update(f"{leaf.dtype.str}{leaf.shape}".encode())
        sha.update(np.ascontiguousarray(leaf).reshape(-1).view(np.uint8))
    return np.frombuffer(sha.digest(), np.uint8)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path: Path, tree_description: dict, leaves: list[np.ndarray], *,
               step: int | None) -> None:
    """Atomically writes a checkpoint file (see the module docstring)."""
    header = json.dumps({"format": FORMAT, "version": VERSION, "step": step,
                         "num_leaves": len(leaves), "tree": tree_description},
                        separators=(",", ":")).encode()
    members = {HEADER_MEMBER: np.frombuffer(header, np.uint8)}
    members.update({f"leaf_{i}": leaf for i, leaf in enumerate(leaves)})
    members[CHECKSUM_MEMBER] = _digest(header, leaves)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _read_verified(path: Path) -> tuple[dict, list[np.ndarray]]:
    with path.open("rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise CheckpointError("not a checkpoint: the file does not start like a .npz "
                                  "(zip) archive")
    with np.load(path, allow_pickle=False) as archive:
        if HEADER_MEMBER not in archive.files or CHECKSUM_MEMBER not in archive.files:
            raise CheckpointError(f"not a funcnet checkpoint: missing the {HEADER_MEMBER!r} "
                                  f"or {CHECKSUM_MEMBER!r} member (found {archive.files[:5]})")
        raw = archive[HEADER_MEMBER]
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError(f"header member has dtype {raw.dtype} and shape {raw.shape}, "
                                  f"expected uint8 bytes")
        header_bytes = raw.tobytes()
        header = json.loads(header_bytes.decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            found = header.get("format") if isinstance(header, dict) else header
            raise CheckpointError(f"not a funcnet checkpoint: header format is {found!r:.100}")
        if header.get("version") != VERSION:
            raise CheckpointError(f"unsupported checkpoint format version "
                                  f"{header.get('version')!r}; this funcnet reads version "
                                  f"{VERSION}")
        count = header.get("num_leaves")
        expected = {HEADER_MEMBER, CHECKSUM_MEMBER}
        if type(count) is int and count >= 0:
            expected |= {f"leaf_{i}" for i in range(count)}
        if set(archive.files) != expected:
            raise CheckpointError(f"archive members do not match the header (num_leaves="
                                  f"{count!r}): found {len(archive.files)} members")
        leaves = [archive[f"leaf_{i}"] for i in range(count)]
        checksum = archive[CHECKSUM_MEMBER]
    if not np.array_equal(checksum, _digest(header_bytes, leaves)):
        raise CheckpointError("checksum mismatch: the file is corrupted")
    return header, leaves


def read_file(path: Path) -> tuple[dict, list[np.ndarray]]:
    """Reads and verifies a checkpoint file: ``(header, leaves)``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      CheckpointError: naming ``path``, when the file is not a funcnet checkpoint, is
        truncated or corrupted (any zip, npy, JSON or checksum failure), holds object
        arrays (pickle is never allowed), or has an unsupported version.
    """
    if not path.exists():
        raise FileNotFoundError(f"restore: no checkpoint file {path}")
    try:
        return _read_verified(path)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:  # noqa: BLE001 - any parse failure means a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint, the file is truncated or "
                              f"corrupted ({type(err).__name__}: {err})") from None


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Deletes the temporary files that killed writers left in ``directory``.

    Assumes a single writer per directory (call it only between this process's saves).

    Returns:
      The paths removed.
    """
    removed = []
    for entry in directory.iterdir():
        if TEMP_PATTERN.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
