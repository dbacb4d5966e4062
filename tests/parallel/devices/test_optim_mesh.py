"""Round 3's optimizers on 8 devices with params split over a ("data": 2, "model": 4)
mesh (tensor parallel, FSDP): Lion (sign of the momentum), LAMB / LARS (per-leaf norms of
sharded leaves), Adafactor (a factored state whose row / column vectors have other shapes
than the param) equal one device and keep sensible layouts; also under
``shard_map_train_step`` / ``pmap_train_step`` and through a ``fit(mesh=)`` resume.

The model has no batch norm: behind one, a gradient that is 0 up to round-off (1e-17)
comes out with another sign from a sharded sum, and Lion's sign / Adafactor's per-entry
normalisation turn it into a full step (a property of the algorithms, as in optax, not of
the sharding). float64, rtol 1e-10 (scale-aware) against one device.
"""
import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from funcnet import checkpoint, nn, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import digits, init, mesh_2d

RTOL = 1e-10
MODEL = nn.serial(nn.Flatten(), nn.Dense(16, dtype=jnp.float64), nn.ReLU(),
                  nn.Dense(10, dtype=jnp.float64))
X, Y = digits(16)
OPTS = {
    "lion": optim.lion(1e-3),
    "lamb": optim.lamb(1e-2, weight_decay=1e-3),
    "lars": optim.lars(1.0, weight_decay=1e-3),
    # both kernels factored ((64, 16): v_row (16,), v_col (64,)), biases not
    "adafactor": optim.adafactor(1e-2, min_dim_size_to_factor=4, momentum=0.9,
                                 weight_decay_rate=1e-3),
}


def _specs(mesh, style):
    S = lambda *spec: NamedSharding(mesh, P(*spec))  # noqa: E731
    if style == "tp":   # Megatron: column then row split
        return ((), {"w": S(None, "model"), "b": S("model")}, (),
                {"w": S("model", None), "b": S()})
    return ((), {"w": S(("data", "model"), None), "b": S()}, (),
            {"w": S(("data", "model"), None), "b": S()})


@functools.lru_cache(maxsize=None)
def _one_device(name):
    """Two single-device steps of OPTS[name] on (X, Y): the ground truth."""
    opt = OPTS[name]
    step = jax.jit(train.train_step(MODEL, opt))
    params, state = init(MODEL)
    return step(*step(params, state, opt.init(params), X, Y)[:3], X, Y)


def _spec_of(a):
    return a.sharding.spec


@pytest.mark.parametrize("name", list(OPTS))
def test_sharded_train_step_with_tensor_parallel_params(name):
    opt, mesh = OPTS[name], mesh_2d()
    params, state = init(MODEL)
    specs = _specs(mesh, "tp")
    sharded = jax.device_put(params, specs)
    step = parallel.sharded_train_step(MODEL, opt, mesh=mesh, axis_name="data")
    xg, yg = jax.device_put((X, Y), NamedSharding(mesh, P("data")))
    out = step(sharded, state, opt.init(sharded), xg, yg)      # opt.init of sharded params
    out = step(*out[:3], xg, yg)
    assert_close(out[:3], _one_device(name)[:3], RTOL, f"{name} tp")
    want = [s.spec for s in jax.tree_util.tree_leaves(specs)]
    assert [_spec_of(a) for a in jax.tree_util.tree_leaves(out[0])] == want
    inner = out[2][0]
    if name in ("lion", "lamb"):          # ScaleByLionState / ScaleByAdamState mu
        assert [_spec_of(a) for a in jax.tree_util.tree_leaves(inner.mu)] == want
    elif name == "lars":                  # the momentum trace, last in the chain
        assert [_spec_of(a) for a in jax.tree_util.tree_leaves(out[2][-1].trace)] == want
    else:                                 # FactoredState
        b0, b1 = want[0], want[2]
        assert [_spec_of(a) for a in (inner.v[1]["b"], inner.v[3]["b"])] == [b0, b1]
        # each factor split like the axis of its kernel it keeps (v_row: without the
        # largest axis, 0 for both kernels), also through the step; the rest replicated
        w0, w1 = (inner.v_row[1]["w"], inner.v_col[1]["w"]), (inner.v_row[3]["w"],
                                                             inner.v_col[3]["w"])
        assert [a.shape for a in (*w0, *w1)] == [(16,), (64,), (10,), (16,)]
        assert _spec_of(w0[0]) == P("model") and _spec_of(w1[1]) == P("model")
        assert w0[1].sharding.is_fully_replicated and w1[0].sharding.is_fully_replicated


def test_fit_with_fsdp_params_and_adafactor_resumes_like_one_device(tmp_path):
    opt, mesh = OPTS["adafactor"], mesh_2d()
    params, state = init(MODEL)
    x, y = digits(64)
    fit = dict(batch_size=16, key=3, progress=False)
    single = train.fit(MODEL, params, state, opt, (x, y), 2, **fit)
    sharded = jax.device_put(params, _specs(mesh, "fsdp"))
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MODEL, sharded, state, opt, (x, y), 1, mesh=mesh, checkpoint=manager, **fit)
    out = train.fit(MODEL, sharded, state, opt, (x, y), 2, mesh=mesh, checkpoint=manager,
                    **fit)
    assert_close(parallel.to_host(out[:3]), single[:3], RTOL, "fit fsdp adafactor")
    assert out[3]["learning_rate"] == single[3]["learning_rate"] == [1e-2, 1e-2]
    assert _spec_of(out[2][0].v[1]["b"]) == P()      # FSDP bias: replicated, as its param
    assert _spec_of(out[2][0].v_col[1]["w"]) == P(("data", "model"))   # also after a resume
    assert _spec_of(out[0][1]["w"]) == P(("data", "model"), None)


@pytest.mark.parametrize("mapper, name", [("shard_map", "lamb"), ("pmap", "adafactor")])
def test_shard_map_and_pmap_steps(mapper, name):
    """Per-device programs: the norms / factors of the pmean-ed gradients on each replica."""
    opt = OPTS[name]
    params, state = init(MODEL)
    if mapper == "shard_map":
        mesh = parallel.make_mesh()
        step = parallel.shard_map_train_step(MODEL, opt, mesh=mesh)
        batch = jax.device_put((X, Y), NamedSharding(mesh, P("data")))
        carry = parallel.put_replicated((params, state, opt.init(params)), mesh)
    else:
        step = parallel.pmap_train_step(MODEL, opt)
        batch = parallel.shard_batch((X, Y))
        carry = parallel.replicate((params, state, opt.init(params)))
    out = step(*step(*carry, *batch)[:3], *batch)
    got = out[:3] if mapper == "shard_map" else parallel.unreplicate(out[:3])
    assert_close(got, _one_device(name)[:3], RTOL, f"{name} {mapper}")
