"""restore(like=...) rejects every kind of mismatch, naming the first differing path."""
import collections
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import CheckpointError


class MomentumState(NamedTuple):
    count: jax.Array
    trace: dict


class OtherState(NamedTuple):
    count: jax.Array
    trace: dict


def saved_tree():
    return {
        "params": {"dense_0": {"w": np.zeros((784, 100), np.float32),
                               "b": np.zeros(100, np.float32)}},
        "opt": MomentumState(np.int32(0), {"w": np.zeros(3)}),
        "layers": [None, (1, 2.0)],
        "key": jax.random.key(0),
    }


def edit(path_fn):
    tree = saved_tree()
    path_fn(tree)
    return tree


@pytest.mark.parametrize("change, match", [
    (lambda t: t["params"]["dense_0"].update(w=np.zeros((784, 50), np.float32)),
     r"params\['dense_0'\]\['w'\]: file has shape \(784, 100\), like has \(784, 50\)"),
    (lambda t: t["params"]["dense_0"].update(b=jax.ShapeDtypeStruct((100,), jnp.float64)),
     r"params\['dense_0'\]\['b'\]: file has dtype float32, like has float64"),
    (lambda t: t["params"].update(dense_1={}),
     r"params: file has keys \['dense_0'\], like has \['dense_0', 'dense_1'\]"),
    (lambda t: t.pop("key"),
     r"<root>: file has keys \['key', 'layers', 'opt', 'params'\], like has \['layers'"),
    (lambda t: t.update(opt=OtherState(np.int32(0), {"w": np.zeros(3)})),
     r"opt: file has NamedTuple MomentumState\('count', 'trace'\), like has NamedTuple "
     r"OtherState"),
    (lambda t: t.update(opt=(np.int32(0), {"w": np.zeros(3)})),
     r"opt: file has NamedTuple MomentumState.*, like has a tuple of length 2"),
    (lambda t: t.update(opt=MomentumState(np.int64(0), {"w": np.zeros(3)})),
     r"opt.count: file has dtype int32, like has int64"),
    (lambda t: t.update(layers=[None, (1, 2.0), None]),
     r"layers: file has a list of length 2, like has a list of length 3"),
    (lambda t: t.update(layers=(None, (1, 2.0))),
     r"layers: file has a list, like has a tuple of length 2"),
    (lambda t: t.update(layers=[np.zeros(()), (1, 2.0)]),
     r"layers\[0\]: file has None, like has an array of shape \(\)"),
    (lambda t: t.update(layers=[None, (1.0, 2.0)]),
     r"layers\[1\]\[0\]: file has an int, like has a float"),
    (lambda t: t.update(key=jax.random.key(0, impl="rbg")),
     r"key: file has dtype key<fry>, like has key<rbg>"),
    (lambda t: t.update(key=jax.random.PRNGKey(0)),
     r"key: file has shape \(\), like has \(2,\)"),
    (lambda t: t["opt"].trace.update(w={"deeper": np.zeros(3)}),
     r"opt.trace\['w'\]: file has an array of shape \(3,\), like has a dict"),
])
def test_mismatch_names_first_path(tmp_path, change, match):
    path = tmp_path / "c.npz"
    checkpoint.save(path, saved_tree())
    with pytest.raises(CheckpointError, match=match) as info:
        checkpoint.restore(path, like=edit(change))
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.damaged is False


def test_matching_like_restores(tmp_path):
    checkpoint.save(tmp_path / "c.npz", saved_tree())
    step, out = checkpoint.restore(tmp_path / "c.npz", like=saved_tree())
    assert step is None
    assert out["params"]["dense_0"]["w"].shape == (784, 100)
    assert type(out["opt"]) is MomentumState and out["layers"] == [None, (1, 2.0)]


def test_dict_subclasses_of_like_come_back_as_themselves(tmp_path):
    """An OrderedDict or defaultdict in ``like`` is one in the result (keys in like's order,
    the factory kept), so the restored tree has like's tree structure."""
    like = {"o": collections.OrderedDict(z=np.ones(2), a=np.zeros(3)),
            "d": collections.defaultdict(list, {"w": np.full(2, 3.0)})}
    checkpoint.save(tmp_path / "c.npz", like)
    _, out = checkpoint.restore(tmp_path / "c.npz", like=like)
    assert type(out) is dict and type(out["o"]) is collections.OrderedDict
    assert list(out["o"]) == ["z", "a"]
    assert type(out["d"]) is collections.defaultdict and out["d"].default_factory is list
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(like)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(out),
                                                    jax.tree_util.tree_leaves(like)))


def test_like_with_unsupported_node(tmp_path):
    checkpoint.save(tmp_path / "c.npz", {"a": 1})
    with pytest.raises(TypeError, match="like has unsupported type object at a"):
        checkpoint.restore(tmp_path / "c.npz", like={"a": object()})


def test_a_typed_key_of_like_takes_its_raw_key_data_and_nothing_else(tmp_path):
    """A state that held a raw ``uint32[2]`` key when it was saved (funcnet's
    ``noisy_sgd`` before it kept a typed key, as optax's does) restores into a template
    with a typed key, the same key; data that is not that key's stays a mismatch."""
    raw = jax.random.key_data(jax.random.key(7))
    checkpoint.save(tmp_path / "c.npz", {"key": raw, "other": np.zeros(3, np.uint32)})
    like = {"key": jax.random.key(0), "other": jax.random.key(0)}
    with pytest.raises(CheckpointError, match=r"other: file has shape \(3,\), like has \(\)"):
        checkpoint.restore(tmp_path / "c.npz", like=like)
    _, out = checkpoint.restore(tmp_path / "c.npz", like={**like, "other": np.zeros(3, np.uint32)})
    assert out["key"].dtype == jax.random.key(0).dtype
    np.testing.assert_array_equal(jax.random.key_data(out["key"]), raw)
    with pytest.raises(CheckpointError, match=r"key: file has shape \(2,\), like has \(\)"):
        checkpoint.restore(tmp_path / "c.npz", like={"key": jax.random.key(0, impl="rbg"),
                                                     "other": np.zeros(3, np.uint32)})


def test_a_non_native_byte_order_leaf_of_like_restores(tmp_path):
    """``save`` stores a big-endian array (``np.frombuffer`` of a file format) in native
    order; the same tree as ``like`` restores it rather than calling it a dtype mismatch."""
    tree = {"w": np.frombuffer(np.array([1.5, -2.0, 3.25], ">f4").tobytes(), ">f4")}
    path = checkpoint.save(tmp_path / "c.npz", tree)
    out = checkpoint.restore(path, like=tree)[1]["w"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.5, -2.0, 3.25])
    with pytest.raises(CheckpointError, match="file has dtype float32, like has >f8"):
        checkpoint.restore(path, like={"w": np.zeros(3, ">f8")})
