"""Reader for the idx files of MNIST (and Fashion-MNIST, EMNIST, which share the format).

An idx file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
dimensions as big-endian uint32, then the values in C order, big-endian. The dtype codes
are 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. Files may
be gzipped; gzip is detected by its magic bytes ``1f 8b``, whatever the file's suffix.

Reference: Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of handwritten
digits", http://yann.lecun.com/exdb/mnist/ (file format section).
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from funcnet import _checks
from funcnet.data._common import to_images

IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
MNIST_PREFIXES = {"train": "train", "test": "t10k"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic."""
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"read_idx: {path}: corrupt or truncated gzip data ({err})") from err


def _parse_header(path: Path, head: bytes, size: int) -> tuple[np.dtype, tuple, int]:
    """``(dtype, dims, header_bytes)`` of an idx file of ``size`` bytes starting with ``head``."""
    if size < 4:
        raise ValueError(
            f"read_idx: {path}: file has {size} bytes, too short for the 4-byte idx "
            f"magic number")
    if head[0] != 0 or head[1] != 0:
        raise ValueError(
            f"read_idx: {path}: bad magic number {head[:4].hex(' ')}, expected "
            f"'00 00 <dtype code> <ndim>' (is this an idx file?)")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"read_idx: {path}: unsupported dtype code 0x{code:02X}, expected one of {known}")
    if ndim == 0:
        raise ValueError(f"read_idx: {path}: header says 0 dimensions, expected at least 1")
    header = 4 + 4 * ndim
    if size < header:
        raise ValueError(
            f"read_idx: {path}: truncated header: {ndim} dimensions need {header} bytes, "
            f"file has {size}")
    dims = tuple(int(d) for d in np.frombuffer(head, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=object)) * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise ValueError(
            f"read_idx: {path}: file {what}: header says shape {dims} of {dtype.name} "
            f"({expected} bytes with the header), file has {size} bytes")
    return dtype, dims, header


def read_idx(path: str | os.PathLike, *, mmap: bool = False) -> np.ndarray:
    """Reads one idx file (plain or gzipped) into a NumPy array.

    Args:
      path: the file, e.g. ``train-images-idx3-ubyte`` or ``t10k-labels-idx1-ubyte.gz``.
      mmap: return a read-only ``np.memmap`` of the file instead of reading it (only
        single-byte dtypes, uint8/int8 as in MNIST, and uncompressed files): rows are read
        from disk when indexed, so the file may be larger than memory.

    Returns:
      An array of shape ``dims`` (from the header) in native byte order, with the dtype
      given by the header (``uint8`` for MNIST images and labels); writeable unless
      ``mmap``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: naming the file, when the gzip stream is corrupt, the magic number is bad,
        the dtype code is unknown, the file is shorter than its header says (truncated) or
        longer (trailing bytes); with ``mmap``, a gzipped file or a multi-byte dtype.
      TypeError: ``mmap`` is not a bool.
    """
    mmap = _checks.static_bool("read_idx", "mmap", mmap)
    path = Path(path)
    if mmap:
        with open(path, "rb") as f:
            head = f.read(4 + 4 * 255)
        if head[:2] == GZIP_MAGIC:
            raise ValueError(f"read_idx: {path} is gzipped; mmap=True needs the uncompressed "
                             f"file (gunzip it once)")
        dtype, dims, header = _parse_header(path, head, path.stat().st_size)
        if dtype.itemsize != 1:
            raise ValueError(f"read_idx: {path}: mmap=True supports single-byte dtypes, the "
                             f"file holds {dtype.name}")
        return np.memmap(path, dtype=dtype, mode="r", offset=header, shape=dims)
    data = _read_bytes(path)
    dtype, dims, header = _parse_header(path, data, len(data))
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


class MappedImages:
    """Images in a memory-mapped idx file, converted row by row when indexed.

    Behaves like the array :func:`load_mnist` returns without ``mmap`` (same ``shape``,
    ``dtype`` and values) for what a batch loader needs: ``len``, ``shape``, ``dtype``,
    ``ndim`` and row indexing ``images[idx]`` (an int array or a slice), which reads and
    converts only those rows. ``np.asarray(images)`` converts everything (loads the file).
    Made by :func:`load_mnist` (``mmap=True``), whose ``flatten``, ``normalize`` and
    ``dtype`` it takes (``TypeError`` for a non-bool flag or a non-floating dtype).
    """

    def __init__(self, raw: np.ndarray, max_value: float, *, flatten: bool, normalize: bool,
                 dtype):
        flatten = _checks.static_bool("MappedImages", "flatten", flatten)
        normalize = _checks.static_bool("MappedImages", "normalize", normalize)
        self._raw, self._max = raw, max_value
        self._flatten, self._normalize = flatten, normalize
        self.dtype = np.dtype(dtype)
        # converting no rows checks dtype now (not at the first batch) and gives the row shape
        self.shape = (raw.shape[0],) + self._convert(raw[:0]).shape[1:]
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _convert(self, rows: np.ndarray) -> np.ndarray:
        return to_images(np.asarray(rows), self._max, flatten=self._flatten,
                         normalize=self._normalize, dtype=self.dtype)

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            return self._convert(self._raw[[idx]])[0]
        return self._convert(self._raw[idx])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._convert(self._raw)
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"MappedImages(shape={self.shape}, dtype={self.dtype.name})"


def _find(directory: Path, prefix: str, kind: str) -> Path:
    """The first existing file among the usual names of one MNIST file."""
    ndim = 3 if kind == "images" else 1
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    names = [stem + suffix for stem in stems for suffix in ("", ".gz")]
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"load_mnist: no {kind} file in {directory}; looked for {', '.join(names)}")


def load_mnist(directory: str | os.PathLike, *, split: str = "train", flatten: bool = False,
               normalize: bool = True, dtype=np.float32, num_classes: int = 10,
               mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Loads MNIST (or a data set in the same format) from its idx files.

    Looks in ``directory`` for ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte``
    (``split="train"``) or ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``
    (``split="test"``), each optionally gzipped (``.gz``) or spelled ``-images.idx3-ubyte``.
    Nothing is downloaded.

    Args:
      directory: folder holding the idx files.
      split: ``"train"`` or ``"test"``.
      flatten: return images as ``(N, H*W)`` rows instead of NHWC ``(N, H, W, 1)``.
      normalize: scale pixels 0..255 to ``[0, 1]`` (divide by 255).
      dtype: floating NumPy dtype of the images.
      num_classes: labels must lie in ``0..num_classes-1``.
      mmap: memory-map the (uncompressed) image file instead of reading it: ``images``
        is then a :class:`MappedImages` that reads and converts only the rows it is
        indexed with, for :class:`funcnet.data.Loader` and ``fit``'s per-step path on
        data sets larger than memory. The labels are read.

    Returns:
      ``(images, labels)``: images ``(N, 28, 28, 1)`` for MNIST (or ``(N, 784)``) of
      ``dtype`` in ``[0, 1]`` (a :class:`MappedImages` with ``mmap``), and labels
      ``(N,)`` int32.

    Raises:
      FileNotFoundError: a file is missing (the message lists the names tried).
      ValueError: ``split`` is unknown; or, naming the file, one is not a valid idx file
        (see :func:`read_idx`), images are not uint8 ``(N, H, W)``, labels are not uint8
        ``(N,)``, the counts differ or a label is out of range.
      TypeError: ``flatten``, ``normalize`` or ``mmap`` is not a bool, or ``dtype`` is not
        floating.
    """
    fn = "load_mnist"
    flatten = _checks.static_bool(fn, "flatten", flatten)
    normalize = _checks.static_bool(fn, "normalize", normalize)
    mmap = _checks.static_bool(fn, "mmap", mmap)
    if split not in MNIST_PREFIXES:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    image_path = _find(directory, MNIST_PREFIXES[split], "images")
    label_path = _find(directory, MNIST_PREFIXES[split], "labels")
    raw, labels = read_idx(image_path, mmap=mmap), read_idx(label_path)
    if raw.ndim != 3 or raw.dtype != np.uint8:
        raise ValueError(
            f"load_mnist: {image_path}: expected uint8 images of shape (N, H, W), found "
            f"{raw.dtype} with shape {raw.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"load_mnist: {label_path}: expected uint8 labels of shape (N,), found "
            f"{labels.dtype} with shape {labels.shape}")
    if raw.shape[0] != labels.shape[0]:
        raise ValueError(
            f"load_mnist: {image_path} holds {raw.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels")
    if labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"load_mnist: {label_path}: labels must lie in 0..{num_classes - 1}, found "
            f"{int(labels.max())}")
    if mmap:
        images = MappedImages(raw, 255, flatten=flatten, normalize=normalize, dtype=dtype)
    else:
        images = to_images(raw, 255, flatten=flatten, normalize=normalize, dtype=dtype)
    return images, labels.astype(np.int32)
