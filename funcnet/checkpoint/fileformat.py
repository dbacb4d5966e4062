"""One checkpoint file: ``save`` / ``restore`` / ``metadata``, atomic, verified, no pickle.

The file is an uncompressed ``.npz`` (zip) archive with the members

- ``tree``: the JSON header (UTF-8 bytes as a uint8 array): ``{"format":
  "funcnet.checkpoint", "version": 1, "step": int | null, "num_leaves": k, "tree": ...,
  "metadata": {...}}`` (the tree description is documented in
  :mod:`funcnet.checkpoint.tree`; files without ``metadata`` read as ``{}``);
- ``leaf_0`` ... ``leaf_{k-1}``: the array leaves in traversal order;
- ``sha256``: SHA-256 (32 bytes as uint8) of the header and every leaf's dtype, shape and
  bytes.

Invariant: a file is either absent, the previous complete file, or the new complete file.
Writes go to a temporary ``.<name>.tmp-<writer>-<pid>-<random>`` (a long ``name`` cut to fit
255 bytes and marked with its hash: :func:`temp_key`) in the same directory,
which is flushed, fsynced and renamed over the target with ``os.replace`` (atomic on POSIX
and Windows); the directory is fsynced afterwards. A writer killed at any moment leaves
the previous file and at worst a hidden temporary, which a later save removes (see
:func:`remove_stale_temporaries` for when a temporary counts as abandoned).

Reading checks, before allocating anything, that the archive holds exactly the members the
header names, uncompressed, with sizes that add up within the file and agree with each
member's declared dtype and shape (a forged header or member is refused at once, never by
allocating or looping over its claims); then it loads the members with
``np.load(allow_pickle=False)`` and verifies the SHA-256 before anything is returned.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from funcnet import _checks
from funcnet.checkpoint.tree import (FREE, CheckpointError, build, encode,
                                     known_namedtuples)

FORMAT = "funcnet.checkpoint"
VERSION = 1
HEADER_MEMBER = "tree"
CHECKSUM_MEMBER = "sha256"
ZIP_MAGIC = b"PK\x03\x04"
STALE_AFTER_S = 24 * 3600
TEMP_PATTERN = re.compile(
    r"^\.(?P<target>.+)\.tmp-(?:(?P<writer>[0-9a-f]{12})-)?(?P<pid>\d+)-[0-9a-f]+$")


def _writer_tag() -> str:
    """12 hex digits naming this machine, boot and PID namespace: a temporary with this
    tag was written by a process whose pid ``os.kill`` can check from here."""
    parts = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:  # not Linux: the host name alone
            parts.append("")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


WRITER_TAG = _writer_tag()


# --------------------------------------------------------------------------- writing
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


def check_metadata(fn: str, metadata) -> dict:
    """``metadata`` as a plain JSON dict (``None`` -> ``{}``): dicts with string keys,
    lists/tuples (stored as lists), str, int, finite float, bool and None.

    Raises:
      TypeError: naming the path, for any other type or a non-string key.
      ValueError: naming the path, for NaN or an infinity.
    """
    def go(x, path: str):
        if x is None or isinstance(x, bool):
            return x
        if isinstance(x, (str, int)):  # subclasses (enums, ...) as the plain type
            return str(x) if isinstance(x, str) else int(x)
        if isinstance(x, float):
            if not math.isfinite(x):
                raise ValueError(f"{fn}: metadata{path} is {x}, expected a finite float "
                                 f"(JSON has no NaN or infinity)")
            return float(x)
        if isinstance(x, dict):
            bad = [k for k in x if not isinstance(k, str)]
            if bad:
                raise TypeError(f"{fn}: metadata{path} has a non-string key {bad[0]!r}, "
                                f"expected str keys (JSON)")
            return {k: go(v, f"{path}[{k!r}]") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [go(v, f"{path}[{i}]") for i, v in enumerate(x)]
        raise TypeError(f"{fn}: metadata{path} has type {type(x).__name__}, expected JSON "
                        f"values (dict with str keys, list, str, int, float, bool, None)")

    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"{fn}: metadata must be a dict, got {type(metadata).__name__}")
    return go(metadata, "")


def check_path(fn: str, name: str, path) -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: {name} must be a str or os.PathLike, got "
                        f"{type(path).__name__} {path!r:.60}")
    if str(path) == "":
        raise ValueError(f"{fn}: {name} is empty, expected a path")
    return Path(path)


NAME_MAX = 255     # bytes in one file name (Linux, macOS, Windows)


_TAIL_MAX = len(".tmp-") + 12 + 1 + 10 + 1 + 8   # writer tag, pid (<= 10 digits), random


def temp_key(name: str) -> str:
    """The target a temporary's name ``.<key>.tmp-<writer>-<pid>-<random>`` carries for a
    file named ``name``: ``name`` itself, or, where that name could pass :data:`NAME_MAX`
    bytes, ``name`` cut to fit (multi-byte characters are not cut in two) and ``~`` with 8
    hex digits of its SHA-256, so that :func:`remove_stale_temporaries` still knows whose
    temporary it is (a target name of 220-255 bytes can still be saved)."""
    room = NAME_MAX - 1 - _TAIL_MAX
    if len(os.fsencode(name)) <= room:
        return name
    digest = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    while len(os.fsencode(name)) > room - len(digest):
        name = name[:-1]
    return name + digest


def _temp_name(name: str) -> str:
    return f".{temp_key(name)}.tmp-{WRITER_TAG}-{os.getpid()}-{secrets.token_hex(4)}"


def write(path: Path, tree, *, step: int | None, metadata: dict) -> None:
    """Encodes ``tree`` and writes it atomically to ``path`` (parents are created)."""
    description, leaves = encode(tree)
    header = json.dumps({"format": FORMAT, "version": VERSION, "step": step,
                         "num_leaves": len(leaves), "tree": description,
                         "metadata": metadata}, separators=(",", ":")).encode()
    members = {HEADER_MEMBER: np.frombuffer(header, np.uint8)}
    members.update({f"leaf_{i}": leaf for i, leaf in enumerate(leaves)})
    members[CHECKSUM_MEMBER] = _digest(header, leaves)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(_temp_name(path.name))
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


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by another user
        return True
    return True


def remove_stale_temporaries(directory: Path, target: Callable[[str], Any]) -> list[Path]:
    """Deletes the abandoned temporaries of writes to files named ``t`` with ``target(t)``.

    A temporary is abandoned when its writer is known to be dead (same writer tag, i.e.
    same machine, boot and PID namespace, and ``os.kill(pid, 0)`` finds no such process)
    or when it has not been modified for :data:`STALE_AFTER_S` seconds (writers on other
    hosts of a shared file system, or whose liveness cannot be checked). A live writer's
    temporary is never touched, so several processes may save into one directory.

    Returns:
      The paths removed.
    """
    removed, now = [], time.time()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = TEMP_PATTERN.match(entry.name)
        if not m or not target(m["target"]):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        dead = m["writer"] == WRITER_TAG and not _alive(int(m["pid"]))
        if stat.S_ISREG(info.st_mode) and (dead or now - info.st_mtime > STALE_AFTER_S):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


# --------------------------------------------------------------------------- reading
def _npy_layout(archive, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """The shape and dtype a member declares, checked against its size: nothing larger
    than the member is ever allocated, and object (pickled) arrays are refused."""
    with archive.zip.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"member {info.filename} has npy version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"member {info.filename} holds an object array, which would "
                              f"need pickle; refused")
    if offset + math.prod(shape) * dtype.itemsize != info.file_size:
        raise CheckpointError(f"member {info.filename} declares {dtype} {shape} but holds "
                              f"{info.file_size - offset} bytes of data")
    return shape, dtype


def _load(archive, info: zipfile.ZipInfo) -> np.ndarray:
    _npy_layout(archive, info)
    return archive[info.filename[:-len(".npy")]]


def _header(archive, size: int) -> tuple[dict, bytes, dict]:
    """Checks the archive's layout and reads the header: ``(header, bytes, infos)``."""
    listed = archive.zip.infolist()
    infos = {info.filename: info for info in listed}
    count = len(listed) - 2
    expected = [f"{m}.npy" for m in (HEADER_MEMBER, CHECKSUM_MEMBER)]
    if count < 0 or sorted(infos) != sorted(expected + [f"leaf_{i}.npy" for i in range(count)]):
        raise CheckpointError(f"not a funcnet checkpoint: the members are not {expected} and "
                              f"leaf_<i> (found {sorted(infos)[:5]!r:.200})")
    if (any(i.compress_type != zipfile.ZIP_STORED for i in infos.values())
            or sum(i.file_size for i in infos.values()) > size):
        raise CheckpointError("archive members are compressed or larger than the file")
    raw = _load(archive, infos[f"{HEADER_MEMBER}.npy"])
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
                              f"{header.get('version')!r:.50}; this funcnet reads version "
                              f"{VERSION}")
    if header.get("num_leaves") != count or type(header.get("num_leaves")) is not int:
        raise CheckpointError(f"archive members do not match the header (num_leaves="
                              f"{header.get('num_leaves')!r:.50}): the archive holds "
                              f"{count} leaves")
    step = header.get("step")
    if step is not None and (type(step) is not int or step < 0):
        raise CheckpointError(f"malformed header: step {step!r:.50}")
    header.setdefault("metadata", {})
    if not isinstance(header["metadata"], dict):
        raise CheckpointError(f"malformed header: metadata {header['metadata']!r:.50}")
    return header, header_bytes, infos


def read(path: Path, *, leaves: bool = True) -> tuple[dict, list[np.ndarray]]:
    """Reads a checkpoint file: ``(header, leaves)``, verified by SHA-256 when ``leaves``;
    with ``leaves=False`` only the header member (zip CRC-32 checked) and no leaves.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      CheckpointError: naming ``path`` (``damaged=True``), when the file is not a funcnet
        checkpoint, is truncated, corrupted or forged (any zip, npy, JSON, size or
        checksum failure), holds object arrays, or has an unsupported version.
    """
    try:
        with path.open("rb") as f:  # ours to close, even when np.load fails
            if f.read(4) != ZIP_MAGIC:
                raise CheckpointError("not a checkpoint: the file does not start like a "
                                      ".npz (zip) archive")
            f.seek(0)
            with np.load(f, allow_pickle=False) as archive:
                header, header_bytes, infos = _header(archive, os.fstat(f.fileno()).st_size)
                if not leaves:
                    return header, []
                stored = [_load(archive, infos[f"leaf_{i}.npy"])
                          for i in range(header["num_leaves"])]
                checksum = _load(archive, infos[f"{CHECKSUM_MEMBER}.npy"])
        if not np.array_equal(checksum, _digest(header_bytes, stored)):
            raise CheckpointError("checksum mismatch: the file is corrupted")
        return header, stored
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except RecursionError:
        raise CheckpointError(f"{path}: malformed header: nested too deeply") from None
    except Exception as err:  # noqa: BLE001 - any parse failure means a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint, the file is truncated or "
                              f"corrupted ({type(err).__name__}: {err})"[:2000]) from None


def load(path: Path, like, known: dict[str, type]) -> tuple[int | None, Any]:
    """Reads, verifies and rebuilds the tree in ``path``: ``(step, tree)``."""
    header, leaves = read(path)
    try:
        return header["step"], build(header.get("tree"), leaves, like, known)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}", damaged=err.damaged) from None
    except RecursionError:
        raise CheckpointError(f"{path}: malformed tree description: nested too deeply") from None


def _file_path(fn: str, path, *, exists: bool = False) -> Path:
    """``path`` checked to name a file, not a directory (and, with ``exists``, a file that
    is there: ``FileNotFoundError`` otherwise)."""
    path = check_path(fn, "path", path)
    if path.is_dir():
        raise ValueError(f"{fn}: path {path} is a directory, expected a file (use "
                         f"CheckpointManager({str(path)!r}) for a directory of steps)")
    if exists and not path.exists():
        raise FileNotFoundError(f"{fn}: no checkpoint file {path}")
    return path


# ------------------------------------------------------------------- public: one file
def save(path: str | os.PathLike, tree, *, step: int | None = None,
         metadata: dict | None = None) -> Path:
    """Saves a pytree to one checkpoint file, atomically and without pickle.

    ``tree`` may nest dicts (string keys; their order is kept), lists, tuples, NamedTuples
    (e.g. optimizer states), ``None``, Python ``int``/``float``/``bool``/``str`` values
    and arrays (NumPy or ``jax.Array``, any shape including 0-d) of dtype bool,
    (u)int8..64, float16/32/64, complex64/128, bfloat16 and the other ``ml_dtypes`` types,
    plus raw ``uint32`` PRNG keys and typed keys (``jax.random.key``). Values are stored
    bit-exactly. The write is atomic (see the module docstring); abandoned temporaries of
    earlier writes to ``path`` are removed afterwards.

    Args:
      path: the file to write (parent directories are created). A directory is refused:
        use :class:`funcnet.checkpoint.CheckpointManager` for a directory of steps.
      tree: the pytree.
      step: an optional non-negative int recorded in the file.
      metadata: an optional small JSON dict stored in the header (read back cheaply with
        :func:`metadata`): str keys; values dicts, lists, str, int, finite float, bool,
        None (tuples come back as lists).

    Returns:
      The path written.

    Raises:
      TypeError: ``path`` not a str/PathLike; ``step`` not an int; naming the path in the
        tree, an unsupported node or dtype, a non-string dict key or a traced value;
        naming the path in ``metadata``, a non-JSON value.
      ValueError: ``path`` is a directory; ``step`` < 0; NaN or infinity in ``metadata``.
    """
    fn = "save"
    path = _file_path(fn, path)
    step = None if step is None else _checks.static_int(fn, "step", step, minimum=0)
    write(path, tree, step=step, metadata=check_metadata(fn, metadata))
    remove_stale_temporaries(path.parent, lambda target: target == temp_key(path.name))
    return path


def restore(path: str | os.PathLike, like=None, *,
            namedtuple_types: Iterable[type] = ()) -> tuple[int | None, Any]:
    """Restores a pytree saved by :func:`save`, verifying the whole file first.

    Nothing in the file is ever executed or imported (see :mod:`funcnet.checkpoint.tree`).

    Without ``like``, the tree is rebuilt from the file's own description: dicts (in saved
    key order), lists, tuples, ``None``, Python scalars, NumPy array leaves (exact dtype)
    and ``jax.Array`` typed keys. A NamedTuple is rebuilt as its real class only if that
    class is *known*: registered with :func:`register_namedtuple` or listed in
    ``namedtuple_types`` under the same qualified name (``module.QualName``) with the same
    fields. Otherwise it becomes a stand-in: a ``collections.namedtuple`` with the same
    name and fields, whose ``__module__`` is ``funcnet.checkpoint.standin``.

    With ``like`` (a pytree of arrays, ``jax.ShapeDtypeStruct``s, Python scalars and
    ``None``), the file must have the same structure, NamedTuple names and fields, dict
    keys, and every leaf the same shape and dtype. The result takes ``like``'s container
    types (its NamedTuple classes, its dict key order) and its leaves are ``jax.Array``s
    on the sharding of the matching ``like`` leaf if it has one (else on the default
    device); Python scalars come back as the file's values.

    Args:
      path: a checkpoint file (a directory is refused: use ``CheckpointManager``).
      like: optional target structure, as above.
      namedtuple_types: extra NamedTuple classes to rebuild by name without ``like``.

    Returns:
      ``(step, tree)``: the step recorded by :func:`save` (``None`` if none) and the tree.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: naming the file. ``damaged=True`` when it is truncated, corrupted
        (checksum), forged, holds object arrays, is not a funcnet checkpoint or has
        another format version; ``damaged=False`` when it does not match ``like`` (naming
        the first differing path, e.g. ``params['dense_0']['w']: file has shape (784,
        100), like has (784, 50)``).
      TypeError: ``path`` not a str/PathLike, ``like`` holds an unsupported node type, or
        ``namedtuple_types`` a non-NamedTuple.
      ValueError: ``path`` is a directory.
    """
    fn = "restore"
    known = known_namedtuples(fn, namedtuple_types)
    path = _file_path(fn, path, exists=True)
    return load(path, FREE if like is None else like, known)


def metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` dict saved in a file's header, reading the header only (cheap).

    The header's zip CRC-32 and its fields are checked; the leaves and the SHA-256 are not
    read (:func:`restore` verifies those).

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: the file is not a readable funcnet checkpoint header.
      TypeError / ValueError: as for :func:`restore`'s ``path``.
    """
    path = _file_path("metadata", path, exists=True)
    return read(path, leaves=False)[0]["metadata"]
