"""Sliding-window attention on a mesh of 2 devices equals one device (float64, 1e-12),
values and gradients: ``dot_product_attention(window=W)`` under ``jax.shard_map`` (default
``check_vma=True``) with the batch split, the heads split, the queries split over
replicated keys/values, and the batch split with ALiBi's slopes, a bias, a traced soft cap
or a ``bias_fn``'s table replicated (the cap and the table on the blockwise pass too), and
``mask_fn``'s segment ids split with the batch; under
``jax.jit`` on a mesh with ``Explicit`` axes (batch split; with dropout too);
``MultiHeadAttention(window=W)`` under ``jax.jit`` with the batch split on an ``Explicit``
mesh (data parallel) and with its projections split by heads (Megatron). The scans over
query blocks carry ``dk``/``dv`` typed like the sharded inputs.

Part of the 8-device suite (tests/parallel/test_fake_devices.py runs it with 8 fake CPU
devices; the cases use 2 of them)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m pytest tests/parallel/devices/test_attention_window_mesh.py
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from funcnet import nn, ops
from funcnet.gradcheck import assert_close
from tests.nn._models import numpy_init, randn
from tests.ops.test_attention_bias_fn import t5_bias
from tests.ops.test_attention_mask_fn import same_segment

RTOL = 1e-12
B, T, NH, KH, H, W = 4, 24, 4, 2, 4, 5        # 3 query blocks of 8: the scans run
LENGTHS = np.array([24, 17, 9, 24])
MASK = jnp.asarray(np.arange(T)[None, :] < LENGTHS[:, None])[:, None, None, :]   # (B,1,1,S)
OP = {"causal": dict(causal=True, window=W, block_size=8),
      "symmetric": dict(window=W, block_size=8)}
# dropout under jit on a mesh (one global computation: the masks of one device); under
# shard_map each device would draw its own shard's masks
DROPOUT = {"causal_dropout": dict(OP["causal"], dropout_rate=0.3,
                                  dropout_key=jax.random.PRNGKey(8)),
           "symmetric_dropout": dict(OP["symmetric"], dropout_rate=0.3,
                                     dropout_key=jax.random.PRNGKey(8))}
CASES = {**OP, **DROPOUT}


def _mesh(explicit=False):
    kind = jax.sharding.AxisType.Explicit if explicit else jax.sharding.AxisType.Auto
    return jax.make_mesh((2,), ("d",), axis_types=(kind,), devices=jax.devices()[:2])


def _qkv():
    return randn((B, T, NH, H), 1), randn((B, T, KH, H), 2), randn((B, T, KH, H), 3)


def _value_and_vjp(f, cot):
    """``(f(q, k, v), the vjp of cot)``."""
    def run(q, k, v):
        out, pull = jax.vjp(f, q, k, v)
        return out, pull(cot)
    return run


@functools.lru_cache(maxsize=None)
def _one_device(case, shared=False):
    """The unsharded op's value and vjp (the judge), on one device; ``shared``: one
    sequence of keys/values ``(1, S, K, H)`` for every query sequence (broadcast, so its
    gradient is the sum over them)."""
    kw = CASES[case]

    def f(q, k, v, m):
        if shared:
            k, v = (jnp.broadcast_to(a, q.shape[:1] + a.shape[1:]) for a in (k, v))
        return ops.dot_product_attention(q, k, v, m, **kw)
    return jax.jit(lambda q, k, v, m, cot: _value_and_vjp(
        lambda q, k, v: f(q, k, v, m), cot)(q, k, v))


# in_specs of q, k, v and the mask: the batch split; the heads split (q's query heads and
# k/v's key/value heads: each device keeps whole GQA groups); the queries split over
# replicated keys/values (a shared memory: their gradients are summed over the devices)
SPLITS = {"batch": (P("d"),) * 4, "heads": (P(None, None, "d"),) * 3 + (P(),),
          "queries": (P("d"), P(), P(), P())}


@pytest.mark.parametrize("case", list(OP))
@pytest.mark.parametrize("split", list(SPLITS))
def test_windowed_op_under_shard_map_equals_one_device(case, split):
    kw, specs = OP[case], SPLITS[split]
    q, k, v = _qkv()
    mask = MASK
    if split == "queries":      # one device per query sequence, one key/value sequence
        q, k, v, mask = q[:2], k[:1], v[:1], MASK[1:2]
    cot = randn(q.shape, 4)
    sharded = jax.shard_map(lambda q, k, v, m: ops.dot_product_attention(q, k, v, m, **kw),
                            mesh=_mesh(), in_specs=specs, out_specs=specs[0])
    run = jax.jit(lambda q, k, v, m, cot: _value_and_vjp(
        lambda q, k, v: sharded(q, k, v, m), cot)(q, k, v))
    got = run(q, k, v, mask, cot)
    want = _one_device(case, split == "queries")(q, k, v, mask, cot)
    assert_close(got, want, RTOL, f"{case} {split}")
    dk = np.asarray(got[1][1])
    row, length = (0, 17) if split == "queries" else (2, 9)      # a padded key sequence
    assert not np.any(dk[row, length:]) and np.all(np.abs(dk[:, :9]).max(axis=(1, 2, 3)) > 0)


REPLICATED = {   # id: (the op's keyword, the windowed or the blockwise pass)
    "alibi_slopes": ("alibi_slopes", OP["symmetric"]), "bias": ("bias", OP["symmetric"]),
    "traced_cap": ("logit_soft_cap", OP["symmetric"]),
    "traced_cap_blockwise": ("logit_soft_cap", dict(causal=True, block_size=8)),
    "bias_fn": ("bias_params", dict(OP["symmetric"], bias_fn=t5_bias)),
    "bias_fn_blockwise": ("bias_params", dict(causal=True, block_size=8, bias_fn=t5_bias))}


@pytest.mark.parametrize("case", list(REPLICATED))
def test_windowed_replicated_logit_arguments_under_shard_map_equal_one_device(case):
    """ALiBi's slopes, a ``(1, N, T, S)`` bias (T5's, LongT5's local attention), a traced
    soft cap or a ``bias_fn``'s table (T5's, gathered per block), replicated, the batch
    split: their gradient is summed over the devices (its cotangent takes their type; the
    bias's is added back per query block in the scan's carry, the cap's and the table's
    summed in it) and equals one device's."""
    kind, kw = REPLICATED[case]
    q, k, v = _qkv()
    extra = {"alibi_slopes": jnp.asarray([0.5, 0.25, 0.125, 0.0625]),
             "bias": randn((1, NH, T, T), 6), "logit_soft_cap": jnp.asarray(0.7),
             "bias_params": randn((8, NH), 7)}[kind]

    def op(q, k, v, m, a):
        return ops.dot_product_attention(q, k, v, m, **{kind: a}, **kw)
    sharded = jax.shard_map(op, mesh=_mesh(), in_specs=(P("d"),) * 4 + (P(),),
                            out_specs=P("d"))

    def grads(f):
        return jax.jit(jax.grad(lambda q, k, v, a: jnp.sum(jnp.sin(f(q, k, v, MASK, a))),
                                (0, 1, 2, 3)))(q, k, v, extra)
    got, want = grads(sharded), grads(op)
    assert_close(got, want, RTOL, f"q, k, v, {kind}")
    assert float(jnp.max(jnp.abs(want[3]))) > 0


@pytest.mark.parametrize("case", ["causal", "symmetric", "blockwise"])
def test_segment_ids_split_with_the_batch_under_shard_map_equal_one_device(case):
    """Packed sequences: ``mask_fn``'s segment ids ``(B, T)`` split with the batch (each
    device reads its sequences' ids per block) give one device's values and gradients."""
    kw = dict(causal=True, block_size=8) if case == "blockwise" else OP[case]
    q, k, v = _qkv()
    seg = jnp.asarray(np.sort(np.random.default_rng(5).integers(0, 3, (B, T)), axis=1))

    def op(q, k, v, m, seg):
        return ops.dot_product_attention(q, k, v, m, mask_fn=same_segment, mask_params=seg,
                                         **kw)
    sharded = jax.shard_map(op, mesh=_mesh(), in_specs=(P("d"),) * 5, out_specs=P("d"))
    cot = randn(q.shape, 4)

    def run(f):
        return jax.jit(lambda q, k, v, m, seg: _value_and_vjp(
            lambda q, k, v: f(q, k, v, m, seg), cot)(q, k, v))(q, k, v, MASK, seg)
    got, want = run(sharded), run(op)
    assert_close(got, want, RTOL, f"segments {case}")
    assert not np.allclose(want[0], run(lambda q, k, v, m, seg: ops.dot_product_attention(
        q, k, v, m, **kw))[0])


@pytest.mark.parametrize("case", ["causal", *DROPOUT])
def test_windowed_op_on_an_explicit_mesh_equals_one_device(case):
    """jit on a mesh with Explicit axes, the batch split: the dk/dv carry of the backward
    scan takes k's sharding; gradients keep their inputs' shardings; dropout draws the
    masks of one device."""
    mesh = _mesh(explicit=True)
    q, k, v = _qkv()
    cot = randn(q.shape, 5)
    put = lambda a: jax.device_put(a, NamedSharding(mesh, P("d")))  # noqa: E731
    kw = CASES[case]
    with jax.set_mesh(mesh):
        got = jax.jit(lambda q, k, v, m, cot: _value_and_vjp(
            lambda q, k, v: ops.dot_product_attention(q, k, v, m, **kw), cot)(q, k, v))(
                put(q), put(k), put(v), put(MASK), put(cot))
    assert_close(got, _one_device(case)(q, k, v, MASK, cot), RTOL, "explicit mesh")
    for g, a in zip(got[1], (q, k, v)):
        assert g.sharding.is_equivalent_to(put(a).sharding, g.ndim)


def test_windowed_multi_head_attention_data_and_head_parallel_equals_one_device():
    """MultiHeadAttention(window, GQA, causal) with a key-padding mask: params replicated
    and the batch split on a mesh with Explicit axes (data parallel), and x replicated
    with the projections split by heads (wq, wk, wv by columns, wo by rows); values and
    gradients (params, x)."""
    layer = nn.MultiHeadAttention(NH, num_kv_heads=KH, qkv_features=16, causal=True,
                                  window=W)
    _, params, _ = numpy_init(layer, ((-1, T, 8), (-1, 1, 1, T)), seed=6)
    x = randn((B, T, 8), 7)

    def value_and_grad(p, x, m):
        f = lambda p, x: jnp.sum(jnp.sin(layer.apply(p, (), (x, m))[0]))  # noqa: E731
        return jax.value_and_grad(f, (0, 1))(p, x)

    def put(mesh, a, *spec):
        return jax.device_put(a, NamedSharding(mesh, P(*spec)))
    want = jax.jit(value_and_grad)(params, x, MASK)
    explicit = _mesh(explicit=True)
    with jax.set_mesh(explicit):
        data = jax.jit(value_and_grad)(jax.tree_util.tree_map(functools.partial(
            put, explicit), params), put(explicit, x, "d"), put(explicit, MASK, "d"))
    mesh = _mesh()
    heads = {"wq": (None, "d"), "wk": (None, "d"), "wv": (None, "d"), "wo": ("d", None),
             "bq": ("d",), "bk": ("d",), "bv": ("d",), "bo": ()}
    by_heads = {name: put(mesh, a, *heads[name]) for name, a in params.items()}
    model = jax.jit(value_and_grad)(by_heads, put(mesh, x), put(mesh, MASK))
    for got, what in ((data, "data parallel"), (model, "head parallel")):
        # q.bk is the same in every logit of a row: its gradient is round-off (~1e-15)
        assert max(float(jnp.abs(g[1][0]["bk"]).max()) for g in (got, want)) < 1e-13
        assert_close(_no_bk(got), _no_bk(want), RTOL, what)
    assert float(jnp.abs(want[1][1]).max()) > 0
    assert model[1][0]["wq"].sharding.is_equivalent_to(by_heads["wq"].sharding, 2)


def _no_bk(value_and_grads):
    value, (g, gx) = value_and_grads
    return value, ({k: a for k, a in g.items() if k != "bk"}, gx)
