"""Round 4's optimizers on 8 devices: Muon with tensor-parallel kernels (``P(None,
"model")`` then ``P("model", None)`` on a ("data": 2, "model": 4) mesh) equals one device
(float64, rtol 1e-10) and its momentum keeps the kernels' layouts: the Newton-Schulz
products ``X X^T`` of a split matrix are left to the compiler's partitioner, nothing is
gathered by hand. Also a ``fit(mesh=)`` resume.
"""
import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from funcnet import checkpoint, nn, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import digits, init, mesh_2d

RTOL = 1e-10
MODEL = nn.serial(nn.Flatten(), nn.Dense(16, dtype=jnp.float64), nn.ReLU(),
                  nn.Dense(10, dtype=jnp.float64))
X, Y = digits(16)
OPT = optim.muon(1e-2, weight_decay=1e-3, adam_learning_rate=1e-3)


def _tp(mesh):
    S = lambda *spec: NamedSharding(mesh, P(*spec))  # noqa: E731
    return ((), {"w": S(None, "model"), "b": S("model")}, (),
            {"w": S("model", None), "b": S()})


@functools.lru_cache(maxsize=None)
def _one_device():
    step = jax.jit(train.train_step(MODEL, OPT))
    params, state = init(MODEL)
    return step(*step(params, state, OPT.init(params), X, Y)[:3], X, Y)


def test_muon_sharded_train_step_with_tensor_parallel_kernels():
    mesh = mesh_2d()
    params, state = init(MODEL)
    specs = _tp(mesh)
    sharded = jax.device_put(params, specs)
    step = parallel.sharded_train_step(MODEL, OPT, mesh=mesh, axis_name="data")
    xg, yg = jax.device_put((X, Y), NamedSharding(mesh, P("data")))
    out = step(sharded, state, OPT.init(sharded), xg, yg)
    out = step(*out[:3], xg, yg)
    assert_close(out[:3], _one_device()[:3], RTOL, "muon tp")
    want = [s.spec for s in jax.tree_util.tree_leaves(specs)]
    assert [a.sharding.spec for a in jax.tree_util.tree_leaves(out[0])] == want
    groups = out[2].inner_states
    mu = groups["muon"].inner_state[0].mu       # kernels only (biases: MaskedNode)
    assert [mu[1]["w"].sharding.spec, mu[3]["w"].sharding.spec] == [want[1], want[3]]
    adam = groups["adam"].inner_state[0]        # biases only
    assert [adam.mu[1]["b"].sharding.spec, adam.nu[3]["b"].sharding.spec] == [want[0],
                                                                              want[2]]


def test_muon_fit_on_a_mesh_resumes_like_one_device(tmp_path):
    mesh = mesh_2d()
    params, state = init(MODEL)
    x, y = digits(64)
    fit = dict(batch_size=16, key=3, progress=False)
    single = train.fit(MODEL, params, state, OPT, (x, y), 2, **fit)
    sharded = jax.device_put(params, _tp(mesh))
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MODEL, sharded, state, OPT, (x, y), 1, mesh=mesh, checkpoint=manager, **fit)
    out = train.fit(MODEL, sharded, state, OPT, (x, y), 2, mesh=mesh, checkpoint=manager,
                    **fit)
    assert_close(parallel.to_host(out[:3]), single[:3], RTOL, "fit tp muon")
    assert out[3]["learning_rate"] == single[3]["learning_rate"] == [1e-2, 1e-2]
    mu = out[2].inner_states["muon"].inner_state[0].mu
    assert mu[1]["w"].sharding.spec == P(None, "model")     # also after the resume
