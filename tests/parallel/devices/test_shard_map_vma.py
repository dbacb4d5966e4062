"""funcnet ops inside a user's ``jax.shard_map`` with its default ``check_vma=True``.

Each device holds a shard of the data and a replicated copy of the weights (and of other
replicated inputs: attention memory, soft labels, targets). The gradient of a replicated
input is then the sum over devices, which JAX's autodiff inserts and each backward rule
must match (``funcnet/ops/_mesh.py``). Judge: the same program in ``reference_mode``
(plain-JAX twins, autodiff), float64, rtol 1e-10.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from funcnet import ops, parallel
from funcnet.gradcheck import assert_close
from funcnet.ops._mesh import match_varying, varying_axes

D = 8
RTOL = 1e-10


def _n(seed, shape):
    return np.random.default_rng(seed).normal(size=shape)


def _ids(seed, shape, high):
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.int32)


def _probs(seed, shape):
    p = np.random.default_rng(seed).uniform(0.05, 1.0, shape)
    return p / p.sum(-1, keepdims=True)


# name -> (op, split args (each device gets a block of the leading axis), replicated args,
#          extra keyword arguments); the op is called as op(*split, *replicated, **kw)
CASES = {
    "matmul": (ops.matmul, [_n(0, (D * 4, 3))], [_n(1, (3, 2))], {}),
    "affine": (ops.affine, [_n(2, (D * 4, 3))], [_n(3, (3, 2)), _n(4, (2,))], {}),
    "conv2d": (ops.conv2d, [_n(5, (D * 2, 5, 5, 2))], [_n(6, (3, 3, 2, 3)), _n(7, (3,))],
               {"padding": 1}),
    "layer_norm": (ops.layer_norm, [_n(8, (D * 4, 3))], [_n(9, (3,)), _n(10, (3,))], {}),
    "rms_norm": (ops.rms_norm, [_n(11, (D * 4, 3))], [_n(12, (3,))], {}),
    "group_norm": (ops.group_norm, [_n(71, (D * 2, 3, 4))], [_n(72, (4,)), _n(73, (4,))],
                   {"num_groups": 2}),
    "batch_norm": (ops.batch_norm, [_n(13, (D * 4, 3))], [_n(14, (3,)), _n(15, (3,))], {}),
    "batch_norm_sync": (ops.batch_norm, [_n(16, (D * 4, 3))], [_n(17, (3,)), _n(18, (3,))],
                        {"axis_name": "i"}),
    "embedding": (ops.embedding, [_ids(19, (D * 4,), 6)], [_n(20, (6, 3))], {}),
    "rnn": (ops.rnn, [_n(21, (D * 2, 2, 3))],
            [_n(22, (2, 4)), _n(23, (3, 4)), _n(24, (4, 4)), _n(25, (4,))], {}),
    "lstm": (ops.lstm, [_n(26, (D * 2, 2, 3))],
             [_n(27, (2, 4)), _n(28, (2, 4)), _n(29, (3, 16)), _n(30, (4, 16)),
              _n(31, (16,))], {}),
    "gru": (ops.gru, [_n(32, (D * 2, 2, 3))],
            [_n(33, (2, 4)), _n(34, (3, 12)), _n(35, (4, 12)), _n(36, (12,)),
             _n(37, (12,))], {}),
    "attention": (ops.dot_product_attention, [_n(38, (D, 3, 2, 4))],
                  [_n(39, (1, 5, 2, 4)), _n(40, (1, 5, 2, 4))], {}),
    "attention_blocks": (ops.dot_product_attention, [_n(51, (D, 3, 2, 4))],
                         [_n(52, (1, 5, 2, 4)), _n(53, (1, 5, 2, 4))],
                         {"block_size": 2, "causal": True}),
    "lstm_padded": (ops.lstm, [_n(54, (D * 2, 2, 3))],
                    [_n(55, (2, 4)), _n(56, (2, 4)), _n(57, (3, 16)), _n(58, (4, 16)),
                     _n(59, (16,))], {"lengths": np.array([2, 1])}),
    "gru_padded": (ops.gru, [_n(60, (D * 2, 2, 3))],
                   [_n(61, (2, 4)), _n(62, (3, 12)), _n(63, (4, 12)), _n(64, (12,)),
                    _n(65, (12,))], {"lengths": np.array([0, 2])}),
    "rnn_padded": (ops.rnn, [_n(66, (D * 2, 2, 3))],
                   [_n(67, (2, 4)), _n(68, (3, 4)), _n(69, (4, 4)), _n(70, (4,))],
                   {"lengths": np.array([1, 2]), "return_carry": True}),
    "softmax_cross_entropy": (ops.softmax_cross_entropy, [_n(41, (D * 4, 5))],
                              [_probs(42, (4, 5))], {}),
    "cross_entropy": (ops.cross_entropy, [_probs(43, (D * 4, 5))], [_probs(44, (4, 5))], {}),
    "mean_squared_error": (ops.mean_squared_error, [_n(45, (D * 4, 3))], [_n(46, (4, 3))],
                           {}),
    "sigmoid_binary_cross_entropy": (ops.sigmoid_binary_cross_entropy, [_n(47, (D * 4, 3))],
                                     [_probs(48, (4, 3))], {}),
    "binary_cross_entropy": (ops.binary_cross_entropy, [_probs(49, (D * 4, 3))],
                             [_probs(50, (4, 3))], {}),
}


def _weighted_sum(tree):
    """A scalar with a different cotangent for every output element."""
    leaves = [a for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype,
                                                                            jnp.floating)]
    return sum(jnp.sum(a * jnp.cos(jnp.arange(a.size, dtype=a.dtype).reshape(a.shape)))
               for a in leaves)


def _grads(split, rep):
    """Per device: the mean over devices of every case's weighted output, and its gradient
    with respect to every float input (split and replicated)."""
    out = {}
    for name, (op, _, _, kw) in CASES.items():
        s, r = split[name], rep[name]
        floats = [i for i, a in enumerate(s) if jnp.issubdtype(a.dtype, jnp.floating)]

        def loss(fs, rs, op=op, kw=kw, s=s, floats=floats):
            args = list(s)
            for i, a in zip(floats, fs):
                args[i] = a
            return jax.lax.pmean(_weighted_sum(op(*args, *rs, **kw)), "i")

        value, (g_split, g_rep) = jax.value_and_grad(loss, argnums=(0, 1))(
            [s[i] for i in floats], r)
        out[name] = (value, g_split, g_rep)
    return out


_OUT = {name: (P(), P("i"), P()) for name in CASES}  # value, split grads, replicated grads


@pytest.fixture(scope="module")
def both():
    split = {n: c[1] for n, c in CASES.items()}
    rep = {n: c[2] for n, c in CASES.items()}
    mesh = parallel.make_mesh(axis_name="i")
    mapped = jax.jit(jax.shard_map(_grads, mesh=mesh, in_specs=(P("i"), P()),
                                   out_specs=_OUT))  # check_vma=True: JAX's default
    got = mapped(split, rep)
    with ops.reference_mode():
        want = jax.jit(jax.shard_map(_grads, mesh=mesh, in_specs=(P("i"), P()),
                                     out_specs=_OUT))(split, rep)
    return got, want


@pytest.mark.parametrize("name", list(CASES))
def test_grads_of_replicated_inputs_under_shard_map_with_check_vma(both, name):
    got, want = both
    assert_close(got[name], want[name], RTOL, f"{name} under shard_map(check_vma=True)")
    # the replicated inputs' gradients are the sum over the devices, not one device's
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(got[name][2]))


def test_match_varying_sums_and_broadcasts_to_the_inputs_axes():
    mesh = parallel.make_mesh(axis_name="i")

    def per_device(x):
        summed = match_varying(x, frozenset())            # varying -> summed over devices
        spread = match_varying(jnp.ones(2), frozenset({"i"}))  # replicated -> varying
        assert varying_axes(x) == {"i"}
        assert varying_axes(summed) == frozenset() and varying_axes(spread) == {"i"}
        return summed, spread

    summed, spread = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("i"),
                                           out_specs=(P(), P("i"))))(jnp.arange(D * 2.0))
    np.testing.assert_array_equal(summed, np.arange(D * 2.0).reshape(D, 2).sum(0))
    np.testing.assert_array_equal(spread, np.ones(D * 2))


def test_no_collective_is_added_outside_shard_map():
    f = jax.grad(lambda w, x: ops.affine(x, w, w[0]).sum())
    text = str(jax.make_jaxpr(f)(jnp.ones((3, 3)), jnp.ones((4, 3))))
    assert "psum" not in text and "pvary" not in text and "pcast" not in text


def test_weight_gradients_on_a_mesh_with_explicit_axes():
    """``jax.make_mesh``'s ``Explicit`` axes: a weight gradient contracts the sharded batch
    axis, so it needs an ``out_sharding`` (the weight's, as JAX's own transpose gives), and
    a loop's carry must have the sharding of the queries it accumulates."""
    mesh = jax.make_mesh((D,), ("i",), axis_types=(jax.sharding.AxisType.Explicit,))

    def put(a, *spec):
        return jax.device_put(a, jax.sharding.NamedSharding(mesh, P(*spec)))

    x, img = put(_n(80, (D * 2, 3)), "i"), put(_n(81, (D, 5, 5, 2)), "i")
    q = put(_n(86, (D, 3, 2, 4)), "i")
    params = {"w": put(_n(82, (3, 2))), "b": put(_n(83, (2,))),
              "k": put(_n(84, (3, 3, 2, 4))), "kb": put(_n(85, (4,))),
              "kv": put(_n(87, (D, 5, 2, 4)), "i")}

    def loss(p):
        conv = [ops.conv2d(img, p["k"], p["kb"], padding=1, impl=i) for i in ("xla", "im2col")]
        attention = [ops.dot_product_attention(q, p["kv"], p["kv"], block_size=b, causal=True)
                     for b in (None, 2)]  # one key block, and a loop over three
        return _weighted_sum((ops.matmul(x, p["w"]), ops.affine(x, p["w"], p["b"]), conv,
                              attention))

    with jax.set_mesh(mesh):
        got = jax.jit(jax.grad(loss))(params)
        with ops.reference_mode():
            want = jax.jit(jax.grad(loss))(params)
    assert_close(got, want, RTOL, "weight gradients on an Explicit mesh")
    for g, p in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)):
        assert g.sharding.is_equivalent_to(p.sharding, g.ndim)
