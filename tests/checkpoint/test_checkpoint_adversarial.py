"""Bad arguments to every checkpoint entry point, as one table: the error type (TypeError
for a wrong type, ValueError for a wrong value), a message naming the function and the
argument, raised before anything is written (issue 13 items 6, 7, 11)."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import checkpoint
from funcnet.checkpoint import CheckpointManager


class Point(NamedTuple):
    x: float


def file_save(tree=None, **kwargs):
    return lambda d: checkpoint.save(d / "c.npz", {"w": np.zeros(2)} if tree is None else tree,
                                     **kwargs)


def manager(**kwargs):
    return lambda d: CheckpointManager(d / "run", **kwargs)


def manager_call(method, *args, **kwargs):
    def call(d):
        m = CheckpointManager(d / "run")
        m.save(1, {"w": np.zeros(2)})
        return getattr(m, method)(*args, **kwargs)
    return call


def traced_save(what):
    """``checkpoint.save`` called inside ``jax.jit`` with a traced leaf/metadata/step."""
    def call(d):
        def f(x):
            kwargs = {"tree": {"x": x}, "metadata": None, "step": None}
            kwargs[what] = {"x": x} if what != "step" else x
            checkpoint.save(d / "c.npz", **kwargs)
            return x
        return jax.jit(f)(jnp.ones((), jnp.int32))
    return call


CASES = [
    # step
    ("save_step_negative", file_save(step=-1), ValueError, r"save: step must be >= 0, got -1"),
    ("save_step_float", file_save(step=1.5), TypeError, r"save: step must be an int, got float"),
    ("save_step_bool", file_save(step=True), TypeError, r"save: step must be an int, got bool"),
    ("save_step_str", file_save(step="3"), TypeError, r"save: step must be an int, got str"),
    ("manager_save_step_none", lambda d: CheckpointManager(d).save(None, {}), TypeError,
     r"CheckpointManager.save: step must be an int, got NoneType"),
    ("manager_save_step_negative", lambda d: CheckpointManager(d).save(-3, {}), ValueError,
     r"CheckpointManager.save: step must be >= 0, got -3"),
    ("manager_restore_step_negative", manager_call("restore", -1), ValueError,
     r"CheckpointManager.restore: step must be >= 0, got -1"),
    ("manager_restore_step_str", manager_call("restore", "latest"), TypeError,
     r"CheckpointManager.restore: step must be an int, got str"),
    ("manager_metadata_step_float", manager_call("metadata", 1.0), TypeError,
     r"CheckpointManager.metadata: step must be an int, got float"),
    ("manager_delete_step_negative", manager_call("delete", -2), ValueError,
     r"CheckpointManager.delete: step must be >= 0"),
    # keep and directory (refused at construction, issue 13 item 11)
    ("keep_zero", manager(keep=0), ValueError, r"CheckpointManager: keep must be >= 1, got 0"),
    ("keep_negative", manager(keep=-1), ValueError, r"keep must be >= 1, got -1"),
    ("keep_float", manager(keep=2.5), TypeError, r"CheckpointManager: keep must be an int, "
                                                 r"got float 2.5"),
    ("keep_str", manager(keep="3"), TypeError, r"keep must be an int, got str"),
    ("keep_bool", manager(keep=True), TypeError, r"keep must be an int, got bool"),
    ("directory_int", lambda d: CheckpointManager(123), TypeError,
     r"CheckpointManager: directory must be a str or os.PathLike, got int"),
    ("directory_none", lambda d: CheckpointManager(None), TypeError,
     r"directory must be a str or os.PathLike, got NoneType"),
    ("directory_bytes", lambda d: CheckpointManager(b"run"), TypeError,
     r"directory must be a str or os.PathLike, got bytes"),
    ("directory_empty", lambda d: CheckpointManager(""), ValueError,
     r"CheckpointManager: directory is empty"),
    ("directory_is_a_file", lambda d: CheckpointManager(checkpoint.save(d / "f.npz", {})),
     ValueError, r"CheckpointManager: directory .*f.npz exists and is not a directory"),
    # no silent file-vs-directory switch
    ("save_into_directory", lambda d: checkpoint.save(d, {}), ValueError,
     r"save: path .* is a directory, expected a file \(use CheckpointManager"),
    ("restore_directory", lambda d: checkpoint.restore(d), ValueError,
     r"restore: path .* is a directory, expected a file"),
    ("metadata_directory", lambda d: checkpoint.metadata(d), ValueError,
     r"metadata: path .* is a directory"),
    ("save_path_int", lambda d: checkpoint.save(7, {}), TypeError,
     r"save: path must be a str or os.PathLike, got int"),
    ("restore_path_none", lambda d: checkpoint.restore(None), TypeError,
     r"restore: path must be a str or os.PathLike, got NoneType"),
    # unsupported trees
    ("leaf_object", file_save({"a": [{"b": object()}]}), TypeError,
     r"save: a\[0\]\['b'\] has unsupported type object"),
    ("leaf_set", file_save({"s": {1, 2}}), TypeError, r"save: s has unsupported type set"),
    ("leaf_bytes", file_save({"s": b"raw"}), TypeError, r"save: s has unsupported type bytes"),
    ("leaf_string_array", file_save({"a": np.array(["x"])}), TypeError,
     r"save: a has unsupported dtype <U1"),
    ("leaf_object_array", file_save({"a": np.array([None], dtype=object)}), TypeError,
     r"save: a has unsupported dtype object"),
    ("dict_int_key", file_save({1: np.zeros(2)}), TypeError,
     r"save: dict at <root> has a non-string key 1"),
    ("dict_tuple_key", file_save({"p": {("a", 1): 0}}), TypeError,
     r"save: dict at p has a non-string key \('a', 1\)"),
    # traced values (under jax.jit)
    ("traced_leaf", traced_save("tree"), TypeError, r"save: x is a traced value"),
    ("traced_metadata", traced_save("metadata"), TypeError,
     r"save: metadata\['x'\] has type .*Tracer, expected JSON values"),
    ("traced_step", traced_save("step"), TypeError, r"save: step must be an int, got .*Tracer"),
    # metadata: small JSON dicts with finite floats
    ("metadata_list", file_save(metadata=[1, 2]), TypeError,
     r"save: metadata must be a dict, got list"),
    ("metadata_object", file_save(metadata={"a": object()}), TypeError,
     r"save: metadata\['a'\] has type object, expected JSON values"),
    ("metadata_numpy_int", file_save(metadata={"a": [np.int64(1)]}), TypeError,
     r"metadata\['a'\]\[0\] has type int64"),
    ("metadata_array", file_save(metadata={"a": np.zeros(2)}), TypeError,
     r"metadata\['a'\] has type ndarray"),
    ("metadata_set", file_save(metadata={"a": {"b": {1}}}), TypeError,
     r"metadata\['a'\]\['b'\] has type set"),
    ("metadata_int_key", file_save(metadata={"h": {1: "x"}}), TypeError,
     r"save: metadata\['h'\] has a non-string key 1"),
    ("metadata_nan", file_save(metadata={"loss": float("nan")}), ValueError,
     r"save: metadata\['loss'\] is nan, expected a finite float"),
    ("metadata_inf_in_list", file_save(metadata={"loss": [0.5, -float("inf")]}), ValueError,
     r"metadata\['loss'\]\[1\] is -inf"),
    ("manager_metadata_nan", lambda d: CheckpointManager(d).save(
        1, {}, metadata={"x": np.float64("nan")}), ValueError,
     r"CheckpointManager.save: metadata\['x'\] is nan"),
    # restore arguments
    ("namedtuple_types_not_classes", lambda d: checkpoint.restore(
        d / "c.npz", namedtuple_types=[dict]), TypeError,
     r"restore: namedtuple_types must hold NamedTuple classes, got <class 'dict'>"),
    ("namedtuple_types_a_class", manager_call("restore", namedtuple_types=Point), TypeError,
     r"CheckpointManager.restore: namedtuple_types must be an iterable of NamedTuple"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_refused(tmp_path, call, error, match):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(error, match=match) as info:
        call(tmp_path)
    assert type(info.value) is error  # not a CheckpointError: the file is not at fault
    after = sorted(p.name for p in tmp_path.rglob("*") if p.name not in ("run", "f.npz"))
    assert [n for n in after if n not in before and not n.startswith("ckpt_")] == []


def test_metadata_round_trips_as_json(tmp_path):
    """What is accepted comes back equal (tuples as lists, float subclasses as float)."""
    meta = {"run": "abc", "history": {"loss": [0.5, 0.25], "epoch": (1, 2)},
            "lr": np.float64(0.1), "done": False, "note": None, "nested": [{"a": [True]}]}
    checkpoint.save(tmp_path / "c.npz", {}, metadata=meta)
    back = checkpoint.metadata(tmp_path / "c.npz")
    assert back == {**meta, "history": {"loss": [0.5, 0.25], "epoch": [1, 2]}, "lr": 0.1}
    assert type(back["lr"]) is float
