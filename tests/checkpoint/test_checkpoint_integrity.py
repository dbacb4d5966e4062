"""Damaged, crafted and foreign files raise CheckpointError and never half-load or execute."""
import json
import os
import sys

import jax
import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import CheckpointError, fileio, registry


def small_tree():
    return {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "count": np.int32(7),
            "key": jax.random.key(1), "step": 3, "names": ("a", None)}


def same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b) or len(la) != len(lb):
        return False
    to_np = lambda x: (np.asarray(jax.random.key_data(x))  # noqa: E731
                       if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)
                       else np.asarray(x))
    return all(to_np(x).tobytes() == to_np(y).tobytes() for x, y in zip(la, lb))


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, small_tree(), step=3)
    return path


@pytest.mark.parametrize("keep_bytes", [0, 3, 30, 200, -200, -22, -1])
def test_truncated_file(saved, keep_bytes):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep_bytes])
    with pytest.raises(CheckpointError, match=rf"{saved.name}.*(truncated|corrupt|not a)"):
        checkpoint.restore(saved)


def test_every_byte_flip_is_detected_or_harmless(saved):
    """Flipping any single byte either raises CheckpointError or (for zip metadata such as
    timestamps) restores the exact original: never a silently different tree."""
    original = saved.read_bytes()
    expected = checkpoint.restore(saved)
    leaf = np.arange(12, dtype=np.float32).tobytes()
    data_start = original.index(leaf)
    detected = []
    for i in range(0, len(original), 3):
        damaged = bytearray(original)
        damaged[i] ^= 0xFF
        saved.write_bytes(bytes(damaged))
        try:
            out = checkpoint.restore(saved)
        except CheckpointError as err:
            assert str(saved) in str(err)
            detected.append(i)
            continue
        assert same(out, expected), f"byte {i} flipped and restore returned other data"
    assert len(detected) > 0.5 * len(range(0, len(original), 3))
    # flips inside the leaf data and the JSON header are always caught
    for i in (data_start, data_start + 25, original.index(b'"format"') + 2):
        damaged = bytearray(original)
        damaged[i] ^= 0x01
        saved.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match="corrupt"):
            checkpoint.restore(saved)


def test_checksum_catches_consistent_rewrite(tmp_path):
    """A leaf replaced by a valid array (zip CRCs fine) fails the SHA-256 check."""
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.zeros(3)})
    with np.load(path, allow_pickle=False) as archive:
        members = {k: archive[k] for k in archive.files}
    members["leaf_0"] = np.ones(3)
    np.savez(path, **members)
    with pytest.raises(CheckpointError, match="checksum mismatch: the file is corrupted"):
        checkpoint.restore(path)


UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)
    return 0


class Evil:
    def __reduce__(self):
        return (_mark_unpickled, ())


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    header = json.dumps({"format": fileio.FORMAT, "version": 1, "step": None, "num_leaves": 1,
                         "tree": {"type": "array", "leaf": 0, "dtype": "float64",
                                  "shape": [1]}}).encode()
    np.savez(path, tree=np.frombuffer(header, np.uint8),
             leaf_0=np.array([Evil()], dtype=object), sha256=np.zeros(32, np.uint8))
    with pytest.raises(CheckpointError, match=r"evil.npz.*(allow_pickle|pickled|Object arrays)"):
        checkpoint.restore(path)
    assert UNPICKLED == []


def test_crafted_names_are_never_imported_or_called(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(registry, "_REGISTRY", {})
    description = {"type": "list", "items": [
        {"type": "namedtuple", "name": "os.system", "fields": ["cmd"],
         "items": [{"type": "str", "value": "echo pwned"}]},
        {"type": "namedtuple", "name": "funcnet_evil_module_xyz.sub.Payload", "fields": ["x"],
         "items": [{"type": "none"}]},
    ]}
    path = tmp_path / "crafted.npz"
    fileio.write_file(path, description, [], step=None)
    out = checkpoint.restore(path)
    assert calls == []
    assert "funcnet_evil_module_xyz" not in sys.modules
    assert type(out[0]).__name__ == "system" and out[0].cmd == "echo pwned"
    assert type(out[0]).__module__ == registry.STANDIN_MODULE
    assert type(out[1]).__name__ == "Payload"


@pytest.mark.parametrize("description, leaves, match", [
    ({"type": "array", "leaf": 0, "dtype": "object", "shape": [1]}, [np.zeros(1)],
     "description says object"),
    ({"type": "array", "leaf": 0, "dtype": "float32", "shape": [2]}, [np.zeros(1, np.float32)],
     r"description says float32 \(2,\), stored leaf is float32 \(1,\)"),
    ({"type": "key", "leaf": 0, "impl": "os.system", "shape": []}, [np.zeros(2, np.uint32)],
     "malformed PRNG key at <root>: impl 'os.system'"),
    ({"type": "module", "name": "os"}, [], "unknown node type 'module'"),
    ({"type": "dict", "keys": ["a", "a"], "values": [{"type": "none"}] * 2}, [],
     "do not match 2 children"),
    ({"type": "namedtuple", "name": "x.Bad", "fields": ["_private"],
      "items": [{"type": "none"}]}, [], "invalid NamedTuple 'x.Bad'"),
    ({"type": "none"}, [np.zeros(1)], "uses 0 of the 1 stored leaves"),
    ({"type": "int", "value": "7"}, [], "expected 'value' of type int"),
])
def test_malformed_descriptions(tmp_path, description, leaves, match):
    path = tmp_path / "bad.npz"
    fileio.write_file(path, description, leaves, step=None)
    with pytest.raises(CheckpointError, match=match):
        checkpoint.restore(path)


def rewrite_header(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        members = {k: archive[k] for k in archive.files}
    header = json.loads(members["tree"].tobytes())
    header.update(changes)
    members["tree"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **members)


@pytest.mark.parametrize("changes, match", [
    (dict(version=2), "unsupported checkpoint format version 2"),
    (dict(format="other"), "not a funcnet checkpoint: header format is 'other'"),
    (dict(num_leaves=9), r"archive members do not match the header \(num_leaves=9\)"),
])
def test_header_checks(saved, changes, match):
    rewrite_header(saved, **changes)
    with pytest.raises(CheckpointError, match=match):
        checkpoint.restore(saved)


def test_foreign_files(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="plain.npy: not a checkpoint"):
        checkpoint.restore(tmp_path / "plain.npy")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="other.npz: not a funcnet checkpoint"):
        checkpoint.restore(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        checkpoint.restore(tmp_path / "missing.npz")


def test_uses_allow_pickle_false(saved, monkeypatch):
    seen = []
    real_load = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    checkpoint.restore(saved)
    assert seen == [False]
