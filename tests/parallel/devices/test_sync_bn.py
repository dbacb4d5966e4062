"""Sync batch norm on 8 devices equals batch norm over the global batch, forward and
backward, under pmap and under shard_map (float64, rtol 1e-10)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from funcnet import nn, ops, parallel
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R

D, RTOL = 8, 1e-10
LAYER = nn.BatchNorm(0.9, axis_name="i", dtype=jnp.float64)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * D, 3, 3, 4)) * 2.0 + 1.0       # global batch, NHWC
    gamma, beta = rng.normal(size=(4,)), rng.normal(size=(4,))
    cts = (rng.normal(size=x.shape), rng.normal(size=(4,)), rng.normal(size=(4,)))
    state = {"mean": rng.normal(size=(4,)), "var": rng.uniform(0.5, 2.0, size=(4,))}
    return x, gamma, beta, cts, state


def _global_reference(x, gamma, beta, cts, state):
    (y, mean, var), vjp = jax.vjp(lambda *a: R.batch_norm(*a), x, gamma, beta)
    dx, dgamma, dbeta = vjp(cts)
    new_state = {"mean": 0.9 * state["mean"] + 0.1 * mean,
                 "var": 0.9 * state["var"] + 0.1 * var}
    return (y, mean, var), (dx, dgamma, dbeta), new_state


def per_device(x, gamma, beta, ct_y, ct_mean, ct_var, state):
    """One device's block: sync BN forward, its VJP, and the layer's new running stats.

    Each device's objective carries 1/D of the cotangents of the (shared) statistics, so
    the sum over devices is the global objective; dgamma/dbeta are per-device parts of
    the global sums.
    """
    f = lambda *a: ops.batch_norm(*a, axis_name="i")  # noqa: E731
    (y, mean, var), vjp = jax.vjp(f, x, gamma, beta)
    dx, dgamma, dbeta = vjp((ct_y, ct_mean / D, ct_var / D))
    _, new_state = LAYER.apply({"gamma": gamma, "beta": beta}, state, x, train=True)
    return y, mean[None], var[None], dx, dgamma[None], dbeta[None], new_state


def _check(y, mean, var, dx, dgamma, dbeta, new_state):
    x, gamma, beta, cts, state = _data()
    (y_ref, m_ref, v_ref), (dx_ref, dg_ref, db_ref), s_ref = _global_reference(
        x, gamma, beta, cts, state)
    assert_close(y.reshape(x.shape), y_ref, RTOL, "y")
    for d in range(D):                                      # every device: global stats
        assert_close((mean.reshape(D, 4)[d], var.reshape(D, 4)[d]), (m_ref, v_ref), RTOL,
                     f"stats on device {d}")
        assert_close(jax.tree_util.tree_map(lambda a: a.reshape(-1, 4)[d], new_state), s_ref,
                     RTOL, f"running stats on device {d}")
    assert_close(dx.reshape(x.shape), dx_ref, RTOL, "dx")
    assert_close((dgamma.reshape(D, 4).sum(0), dbeta.reshape(D, 4).sum(0)), (dg_ref, db_ref),
                 RTOL, "dgamma, dbeta summed over devices")
    # Not a vacuous check: per-device statistics (no sync) differ from the global ones.
    local = np.mean(x.reshape(D, 2, 3, 3, 4)[0], axis=(0, 1, 2))
    assert not np.allclose(local, m_ref)


def test_sync_batch_norm_under_pmap():
    x, gamma, beta, (ct_y, ct_m, ct_v), state = _data()
    split = lambda a: a.reshape((D, -1) + a.shape[1:])  # noqa: E731
    out = jax.pmap(per_device, axis_name="i", in_axes=(0, None, None, 0, None, None, None))(
        split(x), gamma, beta, split(ct_y), ct_m, ct_v, state)
    _check(*out)


def test_sync_batch_norm_under_shard_map():
    x, gamma, beta, (ct_y, ct_m, ct_v), state = _data()
    mesh = parallel.make_mesh(axis_name="i")
    mapped = jax.jit(jax.shard_map(
        per_device, mesh=mesh, in_specs=(P("i"), P(), P(), P("i"), P(), P(), P()),
        out_specs=(P("i"),) * 6 + (P(),), check_vma=False))
    y, mean, var, dx, dgamma, dbeta, new_state = mapped(x, gamma, beta, ct_y, ct_m, ct_v,
                                                        state)
    # out_specs P() returns device 0's running stats; tile them for _check's per-device loop
    new_state = jax.tree_util.tree_map(lambda a: jnp.tile(a, D), new_state)
    _check(y, mean, var, dx, dgamma, dbeta, new_state)
