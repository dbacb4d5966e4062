"""save/restore round trips: dtypes bit-exact, nested trees, NamedTuples, PRNG keys."""
import collections
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import fileformat
from funcnet.checkpoint import tree as treemod


class AdamLikeState(NamedTuple):
    count: jax.Array
    mu: dict
    nu: dict


def bits(x) -> tuple:
    """dtype, shape and raw bytes: equal iff bit-exact (NaN payloads and -0.0 included)."""
    x = np.asarray(x)
    return x.dtype, x.shape, x.tobytes()


def random_bits(shape, dtype, seed=0):
    """Arbitrary bit patterns (NaNs, infs, -0.0, subnormals) of a floating/int dtype."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.random.default_rng(seed).integers(0, 2, shape).astype(bool)
    raw = np.random.default_rng(seed).integers(0, 256, int(np.prod(shape)) * dtype.itemsize,
                                               dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


DTYPES = [np.float32, np.float64, ml_dtypes.bfloat16, np.float16, np.int32, np.uint32,
          np.int64, np.int8, np.uint8, np.bool_, np.complex64, ml_dtypes.float8_e4m3fn]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (1,), (3, 5), (2, 0, 3)])
def test_bit_exact_numpy_leaves(tmp_path, dtype, shape):
    x = random_bits(shape, dtype)
    checkpoint.save(tmp_path / "c.npz", {"x": x})
    step, out = checkpoint.restore(tmp_path / "c.npz")
    assert step is None
    out = out["x"]
    assert isinstance(out, np.ndarray)
    assert bits(out) == bits(x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.int32,
                                   jnp.uint32, jnp.bool_], ids=lambda d: np.dtype(d).name)
def test_bit_exact_jax_leaves_with_like(tmp_path, dtype):
    x = jnp.asarray(random_bits((4, 3), dtype, seed=1))
    scalar = jnp.asarray(random_bits((), dtype, seed=2))
    tree = {"x": x, "scalar": scalar}
    checkpoint.save(tmp_path / "c.npz", tree)
    out = checkpoint.restore(tmp_path / "c.npz", like=tree)[1]
    assert isinstance(out["x"], jax.Array) and out["scalar"].shape == ()
    assert bits(out["x"]) == bits(x) and bits(out["scalar"]) == bits(scalar)


def test_float_special_values_and_byte_order(tmp_path):
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 5e-324, 1.0])
    big_endian = np.arange(4, dtype=">i4")
    checkpoint.save(tmp_path / "c.npz", [x, big_endian])
    out = checkpoint.restore(tmp_path / "c.npz")[1]
    assert bits(out[0]) == bits(x)
    np.testing.assert_array_equal(out[1], big_endian)
    assert out[1].dtype.isnative and out[1].dtype == np.int32
    checkpoint.save(tmp_path / "s.npz", {"nan": float("nan"), "inf": -float("inf"), "z": -0.0})
    scalars = checkpoint.restore(tmp_path / "s.npz")[1]
    assert np.isnan(scalars["nan"]) and scalars["inf"] == -np.inf
    assert np.signbit(scalars["z"]) and type(scalars["z"]) is float


def nested_tree():
    return {
        "params": {"dense_1": {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)},
                   "dense_0": {"w": np.arange(6.0).reshape(2, 3)}},
        "bn_state": ({"mean": np.zeros(3), "var": np.ones(3)}, ()),
        "layers": [None, (np.int32(7), [1, 2.5, True, "relu"]), {}],
        "step": 123,
        "lr": 0.001,
        "flag": False,
    }


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if isinstance(x, (int, float, bool, str)):
            assert type(x) is type(y) and x == y
        else:
            assert bits(x) == bits(y)


def test_nested_containers_round_trip(tmp_path):
    tree = nested_tree()
    checkpoint.save(tmp_path / "c.npz", tree, step=4)
    step, out = checkpoint.restore(tmp_path / "c.npz")
    assert step == 4
    assert_same(out, tree)
    assert list(out["params"]) == ["dense_1", "dense_0"]  # key order kept
    assert type(out["bn_state"]) is tuple and type(out["layers"]) is list
    assert type(out["layers"][1][1][2]) is bool and out["layers"][1][1][3] == "relu"


def test_restore_with_like_rebuilds_like_types_and_order(tmp_path):
    tree = nested_tree()
    checkpoint.save(tmp_path / "c.npz", tree)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
                        if isinstance(x, (np.ndarray, np.generic)) else x, tree)
    like["params"] = {"dense_0": like["params"]["dense_0"], "dense_1": like["params"]["dense_1"]}
    out = checkpoint.restore(tmp_path / "c.npz", like=like)[1]
    assert list(out["params"]) == ["dense_0", "dense_1"]
    assert isinstance(out["params"]["dense_0"]["w"], jax.Array)
    assert_same(jax.tree.map(np.asarray, out["params"]), tree["params"])
    assert out["step"] == 123 and out["layers"][1][1] == [1, 2.5, True, "relu"]


def adam_state():
    return AdamLikeState(count=jnp.asarray(3, jnp.int32),
                         mu={"w": jnp.full((2, 2), 0.5)}, nu={"w": jnp.full((2, 2), 0.25)})


def test_namedtuple_unknown_becomes_faithful_standin(tmp_path, monkeypatch):
    monkeypatch.setattr(treemod, "_REGISTRY", {})
    checkpoint.save(tmp_path / "c.npz", {"opt": adam_state()})
    out = checkpoint.restore(tmp_path / "c.npz")[1]["opt"]
    assert type(out) is not AdamLikeState
    assert type(out).__name__ == "AdamLikeState" and out._fields == AdamLikeState._fields
    assert type(out).__module__ == treemod.STANDIN_MODULE
    assert int(out.count) == 3 and float(out.mu["w"][0, 0]) == 0.5
    # the stand-in keeps the original name when saved again
    checkpoint.save(tmp_path / "d.npz", out)
    again = checkpoint.restore(tmp_path / "d.npz", namedtuple_types=[AdamLikeState])[1]
    assert type(again) is AdamLikeState


def test_namedtuple_registered_or_explicit(tmp_path, monkeypatch):
    monkeypatch.setattr(treemod, "_REGISTRY", {})
    checkpoint.save(tmp_path / "c.npz", [adam_state()])
    assert type(checkpoint.restore(tmp_path / "c.npz",
                                   namedtuple_types=[AdamLikeState])[1][0]) is AdamLikeState
    assert checkpoint.register_namedtuple(AdamLikeState) is AdamLikeState
    out = checkpoint.restore(tmp_path / "c.npz")[1][0]
    assert type(out) is AdamLikeState
    assert jax.tree.structure(out) == jax.tree.structure(adam_state())


def test_namedtuple_with_changed_fields_is_not_forced(tmp_path, monkeypatch):
    Old = collections.namedtuple("AdamLikeState", ["count", "mu"])
    Old.__module__, Old.__qualname__ = AdamLikeState.__module__, AdamLikeState.__qualname__
    monkeypatch.setattr(treemod, "_REGISTRY", {})
    checkpoint.register_namedtuple(AdamLikeState)
    checkpoint.save(tmp_path / "c.npz", Old(1, 2))
    out = checkpoint.restore(tmp_path / "c.npz")[1]
    assert type(out) is not AdamLikeState and out._fields == ("count", "mu")


def test_namedtuple_from_like(tmp_path):
    state = adam_state()
    checkpoint.save(tmp_path / "c.npz", {"opt": state, "step": 2})
    out = checkpoint.restore(tmp_path / "c.npz", like={"opt": state, "step": 0})[1]
    assert type(out["opt"]) is AdamLikeState and out["step"] == 2
    np.testing.assert_array_equal(out["opt"].nu["w"], state.nu["w"])


def test_register_rejects_non_namedtuple():
    with pytest.raises(TypeError, match="expected a NamedTuple class"):
        checkpoint.register_namedtuple(tuple)
    with pytest.raises(TypeError, match="restore: namedtuple_types must hold NamedTuple "
                                        "classes"):
        checkpoint.restore("unused.npz", namedtuple_types=[dict])


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_prng_keys(tmp_path, impl):
    typed = jax.random.split(jax.random.key(3, impl=impl), 4)
    raw = jax.random.PRNGKey(5)
    tree = {"typed": typed, "one": jax.random.key(9, impl=impl), "raw": raw}
    checkpoint.save(tmp_path / "c.npz", tree)
    for _, out in (checkpoint.restore(tmp_path / "c.npz"),
                   checkpoint.restore(tmp_path / "c.npz", like=tree)):
        assert out["typed"].dtype == typed.dtype and out["typed"].shape == (4,)
        assert bits(jax.random.key_data(out["typed"])) == bits(jax.random.key_data(typed))
        assert out["raw"].dtype == np.uint32 and bits(out["raw"]) == bits(raw)
        assert out["one"].dtype == tree["one"].dtype
        assert bits(jax.random.key_data(out["one"])) == bits(jax.random.key_data(tree["one"]))


def test_like_shardings_are_used(tmp_path):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[-1])
    like = {"a": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=sharding),
            "b": jax.device_put(jnp.zeros(3, jnp.int32), sharding),
            "c": np.zeros((), np.float64)}
    checkpoint.save(tmp_path / "c.npz", {"a": np.ones(2, np.float32),
                                         "b": np.arange(3, dtype=np.int32),
                                         "c": np.float64(2.0)})
    out = checkpoint.restore(tmp_path / "c.npz", like=like)[1]
    assert out["a"].sharding == sharding and out["b"].sharding == sharding
    assert isinstance(out["c"], jax.Array) and float(out["c"]) == 2.0


def test_save_creates_parents_and_overwrites(tmp_path):
    path = tmp_path / "a" / "b" / "c.npz"
    assert checkpoint.save(path, {"v": np.ones(1)}) == path
    checkpoint.save(path, {"v": np.zeros(1)})
    assert checkpoint.restore(path)[1]["v"][0] == 0.0
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.npz"]


@pytest.mark.parametrize("length", [200, 230, 255])
def test_an_abandoned_temporary_of_a_long_name_is_removed_by_the_next_save(tmp_path, length):
    """A writer that died mid-save leaves ``.<name>.tmp-...``, with a long name cut to fit
    and marked with its hash: the next save of that name removes it, and a save of
    another long name with the same start leaves it alone."""
    for stem in ("m" * (length - 4), "é" * ((length - 4) // 2)):
        path = tmp_path / (stem + ".npz")
        other = tmp_path / (stem[:-1] + "x.npz")
        orphans = [tmp_path / fileformat._temp_name(p.name) for p in (path, other)]
        old = time.time() - fileformat.STALE_AFTER_S - 60
        for orphan in orphans:
            orphan.write_bytes(b"half a checkpoint")
            os.utime(orphan, (old, old))
            assert len(os.fsencode(orphan.name)) <= fileformat.NAME_MAX
        checkpoint.save(path, {"w": np.arange(3.0)})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [path.name, orphans[1].name])
        checkpoint.save(other, {"w": np.arange(3.0)})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name])
        path.unlink()
        other.unlink()


@pytest.mark.parametrize("length", [230, 255])
def test_a_file_name_up_to_the_os_limit_saves(tmp_path, length):
    """The temporary's name, ``.<name>.tmp-...``, is cut to fit 255 bytes, so any name the
    file system accepts can be saved (multi-byte characters are not cut in two)."""
    for stem in ("m" * (length - 4), "é" * ((length - 4) // 2)):
        path = tmp_path / (stem + ".npz")
        checkpoint.save(path, {"w": np.arange(3.0)})
        np.testing.assert_array_equal(checkpoint.restore(path)[1]["w"], np.arange(3.0))
        assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
        path.unlink()
