"""Damaged, forged and foreign files raise CheckpointError(damaged=True), fast, and never
half-load, allocate what the file claims, unpickle or import anything."""
import io
import json
import os
import sys
import time
import zipfile

import jax
import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import CheckpointError
from funcnet.checkpoint import tree as treemod
from tests.checkpoint._helpers import members, rewrite_header, same, write_raw


def small_tree():
    return {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "count": np.int32(7),
            "key": jax.random.key(1), "step": 3, "names": ("a", None)}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, small_tree(), step=3, metadata={"run": "a"})
    return path


def refused(path, match, reader=checkpoint.restore):
    with pytest.raises(CheckpointError, match=match) as info:
        reader(path)
    assert info.value.damaged is True and str(path) in str(info.value)


@pytest.mark.parametrize("keep_bytes", [0, 3, 30, 200, -200, -22, -1])
def test_truncated_file(saved, keep_bytes):
    saved.write_bytes(saved.read_bytes()[:keep_bytes])
    refused(saved, "truncated|corrupt|not a")


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
            assert str(saved) in str(err) and err.damaged
            detected.append(i)
            continue
        assert out[0] == expected[0] and same(out[1], expected[1]), f"byte {i} flipped"
    assert len(detected) > 0.5 * len(range(0, len(original), 3))
    # flips inside the leaf data and the JSON header are always caught
    for i in (data_start, data_start + 25, original.index(b'"format"') + 2):
        damaged = bytearray(original)
        damaged[i] ^= 0x01
        saved.write_bytes(bytes(damaged))
        refused(saved, "corrupt")


def test_checksum_catches_consistent_rewrite(tmp_path):
    """A leaf replaced by a valid array (zip CRCs fine) fails the SHA-256 check."""
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.zeros(3)})
    found = members(path)
    found["leaf_0"] = np.ones(3)
    np.savez(path, **found)
    refused(path, "checksum mismatch: the file is corrupted")


UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)
    return 0


class Evil:
    def __reduce__(self):
        return (_mark_unpickled, ())


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    header = json.dumps({"format": "funcnet.checkpoint", "version": 1, "step": None,
                         "num_leaves": 1, "tree": {"type": "array", "leaf": 0,
                                                   "dtype": "float64", "shape": [1]}}).encode()
    np.savez(path, tree=np.frombuffer(header, np.uint8),
             leaf_0=np.array([Evil()], dtype=object), sha256=np.zeros(32, np.uint8))
    refused(path, r"evil.npz: member leaf_0.npy holds an object array, which would need "
                  r"pickle; refused")
    assert UNPICKLED == []


def test_crafted_names_are_never_imported_or_called(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(treemod, "_REGISTRY", {})
    description = {"type": "list", "items": [
        {"type": "namedtuple", "name": "os.system", "fields": ["cmd"],
         "items": [{"type": "str", "value": "echo pwned"}]},
        {"type": "namedtuple", "name": "funcnet_evil_module_xyz.sub.Payload", "fields": ["x"],
         "items": [{"type": "none"}]},
    ]}
    path = tmp_path / "crafted.npz"
    write_raw(path, description, [])
    out = checkpoint.restore(path)[1]
    assert calls == []
    assert "funcnet_evil_module_xyz" not in sys.modules
    assert type(out[0]).__name__ == "system" and out[0].cmd == "echo pwned"
    assert type(out[0]).__module__ == treemod.STANDIN_MODULE
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
    ({"type": "list", "items": [{"type": "array", "leaf": 1, "dtype": "float64", "shape": [1]},
                                {"type": "array", "leaf": 0, "dtype": "float64", "shape": [1]}]},
     [np.zeros(1), np.zeros(1)], "leaf 1 out of order"),
])
def test_malformed_descriptions(tmp_path, description, leaves, match):
    """Files with a correct checksum but a description that lies are refused."""
    path = tmp_path / "bad.npz"
    write_raw(path, description, leaves)
    refused(path, match)


def test_deeply_nested_description(tmp_path):
    path = tmp_path / "deep.npz"
    node = {"type": "none"}
    for _ in range(5000):
        node = {"type": "list", "items": [node]}
    sys_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(sys_limit, 20000))  # so that json.dumps can write it
    try:
        write_raw(path, node, [])
    finally:
        sys.setrecursionlimit(sys_limit)
    refused(path, "nested too deeply")


@pytest.mark.parametrize("changes, match", [
    (dict(version=2), "unsupported checkpoint format version 2"),
    (dict(format="other"), "not a funcnet checkpoint: header format is 'other'"),
    (dict(num_leaves=9), r"archive members do not match the header \(num_leaves=9\)"),
    (dict(num_leaves=3.0), r"num_leaves=3.0"),
    (dict(step=-4), r"malformed header: step -4"),
    (dict(metadata=[1]), r"malformed header: metadata \[1\]"),
])
def test_header_checks(saved, changes, match):
    rewrite_header(saved, **changes)
    refused(saved, match)
    refused(saved, match, reader=checkpoint.metadata)


@pytest.mark.parametrize("num_leaves", [10**8, 1e8])
def test_forged_leaf_count_is_refused_fast(tmp_path, num_leaves):
    """Issue 13 item 7: a 648-byte file claiming 1e8 leaves took minutes to refuse."""
    path = tmp_path / "forged.npz"
    write_raw(path, {"type": "none"}, [], num_leaves=num_leaves)
    assert path.stat().st_size < 1000
    start = time.perf_counter()
    refused(path, "archive members do not match the header")
    assert time.perf_counter() - start < 0.5  # the old reader took minutes


def test_forged_shapes_are_refused_before_allocating(tmp_path):
    """A description claiming a huge leaf, and an npy member header claiming 8 TB."""
    path = tmp_path / "huge.npz"
    write_raw(path, {"type": "array", "leaf": 0, "dtype": "float64", "shape": [10**12]},
              [np.zeros(2)])
    refused(path, r"description says float64 \(1000000000000,\)")
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        member, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    member.write(np.zeros(2).tobytes())
    found = members(path)
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("tree", "sha256"):
            buffer = io.BytesIO()
            np.save(buffer, found[name])
            archive.writestr(f"{name}.npy", buffer.getvalue())
        archive.writestr("leaf_0.npy", member.getvalue())
    start = time.perf_counter()
    refused(path, r"member leaf_0.npy declares float64 \(1000000000000,\) but holds 16 bytes")
    assert time.perf_counter() - start < 0.5  # the old reader took minutes


def test_compressed_members_are_refused(saved):
    found = members(saved)
    np.savez_compressed(saved, **found)
    refused(saved, "compressed or larger than the file")


def test_foreign_files(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    refused(tmp_path / "plain.npy", "plain.npy: not a checkpoint")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    refused(tmp_path / "other.npz", "other.npz: not a funcnet checkpoint")
    with pytest.raises(FileNotFoundError, match="restore: no checkpoint file"):
        checkpoint.restore(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="metadata: no checkpoint file"):
        checkpoint.metadata(tmp_path / "missing.npz")


def test_uses_allow_pickle_false(saved, monkeypatch):
    seen = []
    real_load = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    checkpoint.restore(saved)
    checkpoint.metadata(saved)
    assert seen == [False, False]


def test_metadata_reads_the_header_only(saved):
    """metadata() does not read the leaves: a corrupted leaf still gives the header."""
    found = members(saved)
    found["leaf_0"] = found["leaf_0"] + 1
    np.savez(saved, **found)
    assert checkpoint.metadata(saved) == {"run": "a"}
    refused(saved, "checksum mismatch")
