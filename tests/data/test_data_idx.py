"""read_idx / load_mnist on tiny synthetic idx files, plain and gzipped, valid and broken."""
import gzip
import struct

import numpy as np
import pytest

from funcnet.data import MappedImages, load_mnist, read_idx

CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
         np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of ``array``: magic, big-endian uint32 dims, big-endian values."""
    header = bytes([0, 0, CODES[array.dtype], array.ndim])
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data: bytes, *, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def mnist_dir(tmp_path, n=5, *, prefix="train", gz=False, labels=None, hw=(28, 28)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n,) + hw, dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels
    suffix = ".gz" if gz else ""
    write(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), gz=gz)
    write(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gz=gz)
    return images, labels


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    array = (rng.normal(size=(3, 4, 2)) * 50).astype(dtype)
    out = read_idx(write(tmp_path / "a.idx", idx_bytes(array), gz=gz))
    assert out.dtype == dtype and out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, array)


def test_gzip_detected_by_magic_not_suffix(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    # gzipped without a .gz suffix, and plain with a misleading .gz suffix
    np.testing.assert_array_equal(
        read_idx(write(tmp_path / "x-idx2-ubyte", idx_bytes(array), gz=True)), array)
    np.testing.assert_array_equal(
        read_idx(write(tmp_path / "y-idx2-ubyte.gz", idx_bytes(array))), array)


def test_big_endian_dims_and_values(tmp_path):
    data = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (258).to_bytes(4, "big") * 2
    assert read_idx(write(tmp_path / "a", data)).tolist() == [258, 258]


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize("data, match", [
    (b"\x00\x00", "too short"),
    (b"\x01" + GOOD[1:], "bad magic number 01 00 08 02"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "unsupported dtype code 0x07"),
    (GOOD[:3] + b"\x00", "0 dimensions"),
    (GOOD[:9], "truncated header"),
    (GOOD[:-1], r"truncated: header says shape \(3, 4\) of uint8 \(24 bytes"),
    (GOOD + b"\x00", "trailing bytes"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_broken_files(tmp_path, data, match, gz):
    path = write(tmp_path / "broken-idx", data, gz=gz)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(GOOD)[:-6])
    with pytest.raises(ValueError, match="corrupt or truncated gzip.*cut.gz|cut.gz.*gzip"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split, prefix", [("train", "train"), ("test", "t10k")])
def test_load_mnist(tmp_path, gz, split, prefix):
    images, labels = mnist_dir(tmp_path, prefix=prefix, gz=gz)
    x, y = load_mnist(tmp_path, split=split)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (5,) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x[..., 0] * 255, images, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    flat, _ = load_mnist(tmp_path, split=split, flatten=True, normalize=False)
    assert flat.shape == (5, 784)
    np.testing.assert_array_equal(flat, images.reshape(5, -1))


def test_load_mnist_dotted_names(tmp_path):
    images, labels = mnist_dir(tmp_path, n=2)
    (tmp_path / "train-images-idx3-ubyte").rename(tmp_path / "train-images.idx3-ubyte")
    (tmp_path / "train-labels-idx1-ubyte").rename(tmp_path / "train-labels.idx1-ubyte")
    x, y = load_mnist(tmp_path)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_missing_file(tmp_path):
    mnist_dir(tmp_path, prefix="train")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, split="test")


def test_load_mnist_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        load_mnist(tmp_path, split="valid")


def test_load_mnist_count_mismatch(tmp_path):
    mnist_dir(tmp_path, n=4)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="holds 4 images but .*train-labels-idx1-ubyte holds 3"):
        load_mnist(tmp_path)


def test_load_mnist_label_out_of_range(tmp_path):
    mnist_dir(tmp_path, n=3, labels=np.array([1, 10, 2], np.uint8))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: labels must lie in 0..9, "
                                         r"found 10"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_kinds(tmp_path):
    mnist_dir(tmp_path, n=3)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((3, 784), np.uint8)))
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, H, W\), found "
                                         r"uint8 with shape \(3, 784\)"):
        load_mnist(tmp_path)
    mnist_dir(tmp_path, n=3)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(3, np.int32)))
    with pytest.raises(ValueError, match="expected uint8 labels of shape"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("data, match", [
    (GOOD[:3] + b"\x00", "0 dimensions"),
    (GOOD[:-1], r"truncated: header says shape \(3, 4\)"),
    (GOOD + b"\x00", "trailing bytes"),
])
def test_read_idx_mmap_checks_the_header_without_reading(tmp_path, data, match):
    path = write(tmp_path / "broken-idx", data)
    with pytest.raises(ValueError, match=match):
        read_idx(path, mmap=True)


def test_read_idx_mmap_maps_the_file(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    mapped = read_idx(write(tmp_path / "a.idx", idx_bytes(array)), mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, array)
    with pytest.raises(ValueError, match="is gzipped; mmap=True needs the uncompressed"):
        read_idx(write(tmp_path / "b.idx", idx_bytes(array), gz=True), mmap=True)
    wide = np.arange(6, dtype=np.int32).reshape(2, 3)
    with pytest.raises(ValueError, match="mmap=True supports single-byte dtypes"):
        read_idx(write(tmp_path / "c.idx", idx_bytes(wide)), mmap=True)


@pytest.mark.parametrize("flatten", [False, True])
def test_load_mnist_mmap_equals_the_in_memory_arrays(tmp_path, flatten):
    mnist_dir(tmp_path, n=7)
    x, y = load_mnist(tmp_path, flatten=flatten)
    mx, my = load_mnist(tmp_path, flatten=flatten, mmap=True)
    assert (mx.shape, mx.dtype, mx.ndim, len(mx)) == (x.shape, x.dtype, x.ndim, 7)
    np.testing.assert_array_equal(my, y)
    idx = np.array([5, 0, 3])
    np.testing.assert_array_equal(mx[idx], x[idx])
    np.testing.assert_array_equal(mx[2:4], x[2:4])
    np.testing.assert_array_equal(mx[-1], x[-1])
    np.testing.assert_array_equal(np.asarray(mx), x)
    with pytest.raises(TypeError, match="images dtype must be a floating dtype"):
        load_mnist(tmp_path, mmap=True, dtype=np.int32)


@pytest.mark.parametrize("flag", ["flatten", "normalize", "mmap"])
def test_load_mnist_flags_must_be_bools(tmp_path, flag):
    """Checked at the call, before any file is looked for (the directory is empty)."""
    with pytest.raises(TypeError, match=rf"^load_mnist: {flag} must be a bool, got str "
                                        rf"'False'"):
        load_mnist(tmp_path, **{flag: "False"})


def test_read_idx_and_mapped_images_flags_must_be_bools(tmp_path):
    path = write(tmp_path / "a.idx", idx_bytes(np.zeros((2, 3, 3), np.uint8)))
    with pytest.raises(TypeError, match=r"^read_idx: mmap must be a bool, got int 1"):
        read_idx(path, mmap=1)
    raw = read_idx(path, mmap=True)
    for flag in ("flatten", "normalize"):
        kwargs = {"flatten": False, "normalize": True, flag: None}
        with pytest.raises(TypeError, match=rf"^MappedImages: {flag} must be a bool, got "
                                            rf"NoneType None"):
            MappedImages(raw, 255, dtype=np.float32, **kwargs)
