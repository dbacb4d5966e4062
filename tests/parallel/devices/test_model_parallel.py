"""Weights split over a ("data": 2, "model": 4) mesh under GSPMD (``jax.jit`` with
``NamedSharding`` s): tensor parallelism (Megatron column/row splits) and FSDP.

- ``sharded_train_step`` keeps a caller's layout in and out (it used to reject any params
  not replicated with "Sharding passed to jit does not match") and equals one device;
- funcnet's ``custom_vjp`` ops give the values and gradients of the unsharded op, and the
  compiled program communicates no more than the op's plain-JAX twin (``reference_mode``)
  partitioned the same way (bytes of all-gather / all-reduce / reduce-scatter /
  all-to-all / collective-permute results in the compiled HLO).

float64; rtol 1e-10 (scale-aware) against the unsharded computation.
"""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from funcnet import ops, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import bn_mlp, digits, init, laid_out, mesh_2d

RTOL = 1e-10
OPT = optim.adam(1e-2, eps=1e-3)


@functools.lru_cache(maxsize=None)
def _reference_step():
    """The one-device step, jitted once for the three layouts (eagerly it compiled each
    primitive on its own)."""
    return jax.jit(train.train_step(bn_mlp(), OPT))


@pytest.mark.parametrize("style", ["tp", "fsdp", "tp_make_mesh"])
def test_sharded_train_step_keeps_the_callers_layout(style):
    """tp_make_mesh: the mesh, params and batch of jax.make_mesh's Explicit axes, which
    failed with ShardingTypeError "Contracting dimensions are sharded"."""
    model = bn_mlp()
    params, state = init(model)
    explicit = (jax.sharding.AxisType.Explicit,) * 2   # make_mesh's default from jax 0.9
    mesh = (jax.make_mesh((2, 4), ("data", "model"), axis_types=explicit)
            if style == "tp_make_mesh" else mesh_2d())
    sharded, specs = laid_out(params, mesh, style[:2] if style != "fsdp" else style)
    step = parallel.sharded_train_step(model, OPT, mesh=mesh, axis_name="data")
    x, y = digits(16)
    xg, yg = jax.device_put((x, y), NamedSharding(mesh, P("data")))
    out = step(sharded, *parallel.put_replicated((state, OPT.init(params)), mesh), xg, yg)
    out = step(*out[:3], xg, yg)                        # the outputs feed the next call
    ref = _reference_step()
    want = ref(*ref(params, state, OPT.init(params), x, y)[:3], x, y)
    assert [a.sharding.spec for a in jax.tree_util.tree_leaves(out[0])] == [
        s.spec for s in jax.tree_util.tree_leaves(specs)]
    assert_close(out[:3], want[:3], RTOL, f"sharded_train_step {style}")
    again = step(*parallel.put_replicated((params, state, OPT.init(params)), mesh), xg, yg)
    assert all(a.sharding.is_fully_replicated for a in jax.tree_util.tree_leaves(again[0]))


_COLLECTIVE = re.compile(r"=\s*(.*?)\s+(all-gather|all-reduce|reduce-scatter|all-to-all|"
                         r"collective-permute)(?:-start)?\(")
_BYTES = {"f64": 8, "f32": 4, "s32": 4, "u32": 4, "pred": 1}


def _collective_bytes(hlo: str) -> int:
    total = 0
    for result, _ in _COLLECTIVE.findall(hlo):
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", result):
            total += _BYTES.get(dtype, 8) * int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


def _r(*shape, seed=[0]):
    seed[0] += 1
    return np.random.default_rng(seed[0]).standard_normal(shape)


# (op, args, specs): the cases where the ops communicate like their twins; see
# docs/parallel.md for the one that does not (the im2col conv2d backward, CPU only)
CASES = {
    "affine_tp": (ops.affine, (_r(4, 8, 16), _r(16, 32), _r(32)),
                  (P("data"), P(None, "model"), P("model"))),
    "affine_fsdp": (ops.affine, (_r(8, 16), _r(16, 32), _r(32)),
                    (P("data"), P("data", "model"), P("model"))),
    "matmul_fsdp_3d": (ops.matmul, (_r(4, 8, 16), _r(16, 32)),
                       (P("data"), P(("data", "model"), None))),
    "layer_norm": (ops.layer_norm, (_r(4, 8, 16), _r(16), _r(16)),
                   (P("data", None, "model"), P("model"), P("model"))),
    "attention": (lambda q, k, v: ops.dot_product_attention(q, k, v, causal=True),
                  (_r(4, 8, 4, 4), _r(4, 8, 4, 4), _r(4, 8, 4, 4)),
                  (P("data", None, "model"),) * 3),
    "softmax_cross_entropy": (ops.softmax_cross_entropy,
                              (_r(8, 16), np.arange(8, dtype=np.int32) % 16),
                              (P("data", "model"), P("data"))),
    "batch_norm": (lambda x, g, b: ops.batch_norm(x, g, b)[0], (_r(8, 4, 4, 8), _r(8), _r(8)),
                   (P("data", None, None, "model"), P("model"), P("model"))),
    "conv2d_xla": (lambda x, w, b: ops.conv2d(x, w, b, padding=1, impl="xla"),
                   (_r(8, 6, 6, 4), _r(3, 3, 4, 8), _r(8)),
                   (P("data"), P(None, None, None, ("data", "model")), P(("data", "model")))),
    "conv2d_groups_dilated_xla": (
        lambda x, w, b: ops.conv2d(x, w, b, padding=2, dilation=2, groups=2, impl="xla"),
        (_r(8, 6, 6, 4), _r(3, 3, 2, 8), _r(8)),
        (P("data"), P(None, None, None, ("data", "model")), P(("data", "model")))),
    "conv2d_depthwise_xla": (lambda x, w, b: ops.conv2d(x, w, b, padding=1, groups=8, impl="xla"),
                             (_r(8, 6, 6, 8), _r(3, 3, 1, 8), _r(8)),
                             (P("data", None, None, "model"), P(None, None, None, "model"),
                              P("model"))),
    "attention_window": (lambda q, k, v: ops.dot_product_attention(q, k, v, window=3),
                         (_r(4, 16, 4, 4), _r(4, 16, 4, 4), _r(4, 16, 4, 4)),
                         (P("data", None, "model"),) * 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ops_under_tensor_parallel_shardings(name):
    f, args, specs = CASES[name]
    mesh = mesh_2d()
    shardings = tuple(NamedSharding(mesh, s) for s in specs)
    floats = [i for i, a in enumerate(args) if np.issubdtype(np.asarray(a).dtype, np.floating)]
    cot = _r(*jax.eval_shape(f, *args).shape)

    def value_and_vjp(fun):
        def run(*a):
            out, pull = jax.vjp(fun, *a)
            grads = pull(jnp.asarray(cot, out.dtype))
            return out, tuple(grads[i] for i in floats)
        return run

    def twin(*a):
        with ops.reference_mode():
            return f(*a)

    want = jax.jit(value_and_vjp(f))(*args)
    placed = jax.device_put(args, shardings)
    sent = {}
    for label, fun in (("funcnet", f), ("twin", twin)):
        jitted = jax.jit(value_and_vjp(fun),
                         out_shardings=(None, tuple(shardings[i] for i in floats)))
        got = jitted(*placed)
        assert_close(got, want, RTOL, f"{name} {label}")
        assert all(g.sharding.is_equivalent_to(shardings[i], g.ndim)
                   for g, i in zip(got[1], floats))
        sent[label] = _collective_bytes(jitted.lower(*placed).compile().as_text())
    assert sent["funcnet"] <= sent["twin"], sent
