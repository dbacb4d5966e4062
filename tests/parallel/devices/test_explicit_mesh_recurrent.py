"""``rnn``, ``lstm``, ``gru``, ``embedding``, and ``affine``/``matmul`` on time-major rows
(ops and plain-JAX twins) and the recurrent and embedding layers
under ``jax.set_mesh`` of a mesh with ``Explicit`` axes (``jax.make_mesh``'s default from
JAX 0.9 on): a batch split over ``"data"``, replicated weights, inputs split on their
features and an embedding table split on its features or its rows over ``"model"``.

``jax.grad`` equals one device's (float64, rtol 1e-10) and every gradient comes back on
its input's sharding. Each of these failed before (``funcnet/ops/_mesh.py``):

- the ops' ``(T, N, D) -> (T*N, D)`` reshapes (input projection, backward matmuls, and
  ``affine``/``matmul``'s weight gradient, a Dense after a time-major layer) of a batch
  split over ``N``: "This reshape is not supported";
- a replicated initial carry (the layers' zeros) for a batch-split loop, ops and twins:
  "scan body function carry input and carry output must have equal types";
- the embedding's gather, op and twin: "Use ``.at[...].get(out_sharding=)``";
- a cotangent of another layout than its input (``dxs`` of features split over
  ``"model"``): "Custom VJP bwd rule must produce an output with the same type".
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from funcnet import nn, ops
from funcnet.gradcheck import assert_close
from funcnet.ops._mesh import gather_sharding, split_like
from funcnet.ops._arrays import as_rows

RTOL = 1e-10
T, N, D, H, V, F, L = 3, 8, 4, 2, 8, 4, 3
EXPLICIT = jax.sharding.AxisType.Explicit


def _n(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape)


_LENGTHS = np.array([3, 0, 1, 2, 3, 3, 2, 1])
_IDS = np.random.default_rng(9).integers(0, V, (N, L)).astype(np.int32)

# name -> (call(*args), args, specs); the floating args are differentiated. Replicated
# lengths: split ones would split the carries through nan_carry already (the layers' test
# splits them).
CASES = {
    "rnn": (lambda xs, h0, wx, wh, b, lengths: ops.rnn(xs, h0, wx, wh, b, lengths,
                                                        return_carry=True),
            (_n(1, T, N, D), _n(2, N, H), _n(3, D, H), _n(4, H, H), _n(5, H), _LENGTHS),
            (P(None, "data"), P(), P(), P(), P(), P())),
    "lstm": (ops.lstm,
             (_n(6, T, N, D), _n(7, N, H), _n(8, N, H), _n(9, D, 4 * H), _n(10, H, 4 * H),
              _n(11, 4 * H)),
             (P(None, "data", "model"), P("data"), P(), P(), P(), P())),
    "gru": (ops.gru,
            (_n(12, T, N, D), _n(13, N, H), _n(14, D, 3 * H), _n(15, H, 3 * H),
             _n(16, 3 * H), _n(17, 3 * H), _LENGTHS),
            (P(None, "data"), P(), P(), P(), P(), P(), P())),
    "embedding": (ops.embedding, (_IDS, _n(18, V, F)), (P("data"), P(None, "model"))),
    "embedding_time_major": (ops.embedding, (_IDS.T, _n(19, V, F)),
                             (P(None, "data"), P("model", None))),
    # a Dense after a time-major recurrent layer: rows (T, N) with N split
    "affine_time_major": (ops.affine, (_n(20, T, N, D), _n(21, D, H), _n(22, H)),
                          (P(None, "data"), P(), P())),
    "matmul_time_major": (ops.matmul, (_n(23, T, N, D), _n(24, D, 4)),
                          (P(None, "data"), P())),
}


def _floats(args):
    return [i for i, a in enumerate(args) if np.issubdtype(np.asarray(a).dtype, np.floating)]


def _weighted_sum(tree):
    """A scalar with a different cotangent for every output element."""
    return sum(jnp.sum(a * jnp.cos(jnp.arange(a.size, dtype=a.dtype).reshape(a.shape)))
               for a in jax.tree_util.tree_leaves(tree))


def _value_and_grads(all_args):
    """Every case's weighted output and its gradient with respect to its floating args."""
    out = {}
    for name, (call, _, _) in CASES.items():
        args = all_args[name]
        floats = _floats(CASES[name][1])

        def loss(fs, call=call, args=args, floats=floats):
            full = list(args)
            for i, a in zip(floats, fs):
                full[i] = a
            return _weighted_sum(call(*full))

        out[name] = jax.value_and_grad(loss)([args[i] for i in floats])
    return out


def _ops_and_twins(all_args):
    got = _value_and_grads(all_args)
    with ops.reference_mode():
        return got, _value_and_grads(all_args)


def _mesh(shape):
    names = ("data", "model")[:len(shape)]
    return jax.make_mesh(shape, names, axis_types=(EXPLICIT,) * len(shape))


def test_ops_and_twins_under_set_mesh_of_an_explicit_mesh():
    """A ("data": 2, "model": 4) mesh (the layers' test runs on ("data": 8,))."""
    mesh = _mesh((2, 4))
    want = jax.jit(_value_and_grads)({name: c[1] for name, c in CASES.items()})
    with jax.set_mesh(mesh):
        placed = {name: [jax.device_put(a, NamedSharding(mesh, s))
                         for a, s in zip(args, specs)]
                  for name, (_, args, specs) in CASES.items()}
        got, twin = jax.jit(_ops_and_twins)(placed)
    for name in CASES:
        assert_close(got[name], want[name], RTOL, f"{name} on an Explicit mesh")
        assert_close(twin[name], want[name], RTOL, f"{name}'s twin on an Explicit mesh")
        for label, result in (("op", got), ("twin", twin)):
            inputs = [placed[name][i] for i in _floats(CASES[name][1])]
            for i, (g, a) in enumerate(zip(result[name][1], inputs)):
                assert g.sharding.is_equivalent_to(a.sharding, g.ndim), (
                    name, label, i, g.sharding.spec, a.sharding.spec)


def test_nothing_is_added_outside_an_explicit_mesh():
    """No mesh: the programs have no reshard and no sharded type. An ``Auto`` mesh and
    ``shard_map``: the helpers return their arguments (JAX itself adds reshards to a
    ``jnp.where`` under ``set_mesh`` of an ``Auto`` mesh). The ``Explicit`` mesh: the
    replicated carry is resharded."""
    args = {name: c[1] for name, c in CASES.items()}
    text = str(jax.make_jaxpr(_ops_and_twins)(args))
    assert "reshard" not in text and "@" not in text

    def helpers(xs, h, table, ids):
        assert split_like(h, xs) is h and gather_sharding(table, ids) is None
        assert as_rows(xs).ndim == 2
        return xs

    auto = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    helper_args = (args["rnn"][0], args["rnn"][1], args["embedding"][1], _IDS)
    with jax.set_mesh(auto):
        jax.make_jaxpr(helpers)(*helper_args)
    jax.make_jaxpr(jax.shard_map(helpers, mesh=auto, in_specs=(P(None, "data"), P("data"),
                                                               P(), P("data")),
                                 out_specs=P(None, "data")))(*helper_args)
    mesh = _mesh((8,))
    with jax.set_mesh(mesh):
        placed = jax.device_put(args["rnn"], tuple(NamedSharding(mesh, s)
                                                   for s in CASES["rnn"][2]))
        assert "reshard" in str(jax.make_jaxpr(_value_and_grads)({**args, "rnn": placed}))


def test_layers_under_set_mesh_of_an_explicit_mesh():
    """Embedding -> time-major -> Bidirectional(LSTM, GRU) on padded sequences -> RNN on
    a ("data": 8,) mesh: ``jax.grad`` with the layers' own zero carries."""
    emb, bi, rnn = nn.Embedding(V, F), nn.Bidirectional(nn.LSTM(H), nn.GRU(H)), nn.RNN(H)
    k = jax.random.split(jax.random.key(0), 3)
    _, p_emb, s_emb = emb.init(k[0], (N, L))
    _, p_bi, s_bi = bi.init(k[1], ((L, N, F), None, (N,)))
    _, p_rnn, s_rnn = rnn.init(k[2], (L, N, 2 * H))
    params = {"emb": p_emb, "bi": p_bi, "rnn": p_rnn}

    def loss(p, ids, lengths):
        xs = jnp.swapaxes(emb.apply(p["emb"], s_emb, ids)[0], 0, 1)
        hs = bi.apply(p["bi"], s_bi, (xs, None, lengths))[0]
        return _weighted_sum(rnn.apply(p["rnn"], s_rnn, hs)[0])

    grad = jax.jit(jax.grad(loss))
    want = grad(params, _IDS, _LENGTHS)
    mesh = _mesh((8,))
    with jax.set_mesh(mesh):
        placed = jax.device_put(params, NamedSharding(mesh, P()))
        got = grad(placed, *jax.device_put((_IDS, _LENGTHS), NamedSharding(mesh, P("data"))))
    assert_close(got, want, RTOL, "layers on an Explicit mesh")
    for g, p in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(placed)):
        assert g.sharding.is_equivalent_to(p.sharding, g.ndim)
