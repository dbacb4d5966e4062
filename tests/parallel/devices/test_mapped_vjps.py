"""Custom VJPs equal ``jax.vjp`` of their ``funcnet.ops.reference`` twins under pmap and
shard_map (8 devices, float64, rtol 1e-10), including synchronised batch norm."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from funcnet import ops, parallel
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R

D = 8
RTOL = 1e-10


def _normal(seed, shape):
    return np.random.default_rng(seed).normal(size=(D,) + shape)


# name -> (op kwargs, per-device shapes of the float args); int labels in LABELS
CASES = {
    "affine": ({}, [(5, 4), (4, 3), (3,)]),
    "conv2d": ({"stride": 1, "padding": 1}, [(2, 5, 5, 2), (3, 3, 2, 3), (3,)]),
    "max_pool2d": ({"window": 2}, [(2, 4, 4, 3)]),
    "softmax_cross_entropy": ({}, [(4, 5)]),
    "batch_norm": ({}, [(6, 3), (3,), (3,)]),
    "batch_norm_sync": ({"axis_name": "i"}, [(2, 3, 3, 3), (3,), (3,)]),
}
LABELS = {"softmax_cross_entropy": (4,)}


def _inputs():
    args, seed = {}, 0
    for name, (_, shapes) in CASES.items():
        floats = []
        for shape in shapes:
            floats.append(_normal(seed, shape))
            seed += 1
        ints = None
        if name in LABELS:
            ints = np.random.default_rng(seed).integers(0, 5, (D,) + LABELS[name]).astype(
                np.int32)
        args[name] = (floats, ints)
    return args


def _op(module, name):
    return getattr(module, "batch_norm" if name == "batch_norm_sync" else name)


def per_device(args, cts):
    """Outputs and VJPs of every op and its twin on one device's inputs (leading axis 1)."""
    out = {}
    for name, (kwargs, _) in CASES.items():
        floats, ints = args[name]
        floats = [a[0] for a in floats]
        ct = jax.tree_util.tree_map(lambda c: c[0], cts[name])
        for module, tag in ((ops, "op"), (R, "ref")):
            fn = _op(module, name)
            if ints is None:
                f = functools.partial(fn, **kwargs)
            else:
                f = functools.partial(lambda *a, **k: fn(*a, ints[0], **k), **kwargs)
            y, vjp = jax.vjp(f, *floats)
            out[(name, tag)] = jax.tree_util.tree_map(lambda a: a[None], (y, vjp(ct)))
    return out


def _cotangents(args):
    cts = {}
    for i, (name, (kwargs, _)) in enumerate(CASES.items()):
        floats, ints = args[name]
        local = jax.eval_shape(lambda *a, n=name, kw=kwargs, li=ints: _op(ops, n)(
            *a, *(() if li is None else (li[0],)), **{k: v for k, v in kw.items()
                                                       if k != "axis_name"}),
            *[a[0] for a in floats])
        cts[name] = jax.tree_util.tree_map(
            lambda s, i=i: np.random.default_rng(100 + i).normal(size=(D,) + s.shape), local)
    return cts


@pytest.fixture(scope="module")
def inputs():
    args = _inputs()
    return args, _cotangents(args)


def _add_device_axis(tree):
    """(D, ...) -> (D, 1, ...): pmap then hands each device the (1, ...) block that
    shard_map hands it from (D, ...) with spec P("i")."""
    return jax.tree_util.tree_map(lambda a: a[:, None], tree)


def _check(out):
    for name in CASES:
        assert_close(out[(name, "op")], out[(name, "ref")], RTOL, f"{name} under the map")


def test_vjps_under_pmap(inputs):
    args, cts = inputs
    out = jax.pmap(per_device, axis_name="i")(_add_device_axis(args), _add_device_axis(cts))
    _check(out)


def test_vjps_under_shard_map(inputs):
    args, cts = inputs
    mesh = parallel.make_mesh(axis_name="i")
    mapped = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("i"), out_specs=P("i"),
                                   check_vma=False))
    _check(mapped(args, cts))
