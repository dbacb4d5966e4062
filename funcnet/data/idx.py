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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one idx file (plain or gzipped) into a NumPy array.

    Args:
      path: the file, e.g. ``train-images-idx3-ubyte`` or ``t10k-labels-idx1-ubyte.gz``.

    Returns:
      A writeable array of shape ``dims`` (from the header) in native byte order, with the
      dtype given by the header (``uint8`` for MNIST images and labels).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: naming the file, when the gzip stream is corrupt, the magic number is bad,
        the dtype code is unknown, the file is shorter than its header says (truncated) or
        longer (trailing bytes).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"read_idx: {path}: file has {len(data)} bytes, too short for the 4-byte idx "
            f"magic number")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"read_idx: {path}: bad magic number {data[:4].hex(' ')}, expected "
            f"'00 00 <dtype code> <ndim>' (is this an idx file?)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"read_idx: {path}: unsupported dtype code 0x{code:02X}, expected one of {known}")
    if ndim == 0:
        raise ValueError(f"read_idx: {path}: header says 0 dimensions, expected at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"read_idx: {path}: truncated header: {ndim} dimensions need {header} bytes, "
            f"file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=object)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"read_idx: {path}: file {what}: header says shape {dims} of {dtype.name} "
            f"({expected} bytes with the header), file has {len(data)} bytes")
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


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
               normalize: bool = True, dtype=np.float32,
               num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
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

    Returns:
      ``(images, labels)``: images ``(N, 28, 28, 1)`` for MNIST (or ``(N, 784)``) of
      ``dtype`` in ``[0, 1]``, and labels ``(N,)`` int32.

    Raises:
      FileNotFoundError: a file is missing (the message lists the names tried).
      ValueError: ``split`` is unknown; or, naming the file, one is not a valid idx file
        (see :func:`read_idx`), images are not uint8 ``(N, H, W)``, labels are not uint8
        ``(N,)``, the counts differ or a label is out of range.
    """
    if split not in MNIST_PREFIXES:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    image_path = _find(directory, MNIST_PREFIXES[split], "images")
    label_path = _find(directory, MNIST_PREFIXES[split], "labels")
    raw, labels = read_idx(image_path), read_idx(label_path)
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
    images = to_images(raw, 255, flatten=flatten, normalize=normalize, dtype=dtype)
    return images, labels.astype(np.int32)
