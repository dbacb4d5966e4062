"""The accelerator paths, run on the default backend (``benchmarks/device_check.sh``).

On a GPU or TPU these tests run by default; on CPU they are skipped unless
``FUNCNET_ACCELERATOR_TESTS=1`` (the device script's ``--quick`` run sets it, with two
fake CPU devices, so the script is tested end to end where no accelerator is lent).
Checked on whatever ``jax.devices()`` is:

- ``conv2d(impl="auto")``: ``lax.platform_dependent`` compiles the lowerings this
  platform should use (``ops.conv.auto_lowering``: on a CUDA GPU a short patch row's
  forward without convolution and the im2col backward, on CPU ``cpu_backward``'s), and
  every lowering gives the reference twin's gradient;
- mixed precision: ``compute_dtype=bfloat16`` runs the model's matmuls and convolutions in
  bfloat16 and keeps float32 params, optimizer state and loss;
- donation: ``make_train_step`` deletes the donated params and returns its results on
  the device;
- data parallelism on every device: ``pmap_train_step``, ``sharded_train_step`` and
  ``shard_map_train_step`` take the single-device step of the global batch.

float32 throughout (the suite enables x64), compared at ``highest`` matmul precision so
TF32 on NVIDIA GPUs does not blur the comparisons.
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, parallel, train
from funcnet.ops import conv

BACKEND = jax.default_backend()
pytestmark = pytest.mark.skipif(
    BACKEND == "cpu" and os.environ.get("FUNCNET_ACCELERATOR_TESTS") != "1",
    reason="accelerator paths: run on a GPU/TPU, or set FUNCNET_ACCELERATOR_TESTS=1")

F32 = jnp.float32
highest = functools.partial(jax.default_matmul_precision, "highest")


def _cnn():
    return nn.serial(nn.Conv2D(4, 3, dtype=F32), nn.ReLU(), nn.Flatten(),
                     nn.Dense(3, dtype=F32))


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 6, 6, 2)).astype(np.float32),
            rng.integers(0, 3, size=(n,)).astype(np.int32))


def _close(a, b, rtol=1e-4, atol=1e-6):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v, np.float64),
                                   rtol=rtol, atol=atol)


def _conv_grad(impl):
    def loss(x, w, b, cot):
        return jnp.sum(ops.conv2d(x, w, b, stride=2, padding=1, impl=impl) * cot)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _convolutions(hlo: str) -> int:
    """Convolutions in a compiled program (XLA:CPU's ops, cuDNN's calls on a GPU)."""
    return hlo.count(" convolution(") + hlo.count("__cudnn$conv")


def test_conv2d_auto_compiles_this_platforms_lowering_and_all_lowerings_agree():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 9, 9, 2)), F32)
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 5)), F32)
    b = jnp.asarray(rng.standard_normal((5,)), F32)
    cot = jnp.asarray(rng.standard_normal((3, 5, 5, 5)), F32)
    with highest():
        want = jax.grad(lambda x, w, b: jnp.sum(ops.reference.conv2d(
            x, w, b, stride=2, padding=1) * cot), argnums=(0, 1, 2))(x, w, b)
        counts = {}
        for impl in ("auto", "xla", "im2col"):
            g = _conv_grad(impl)
            got = g(x, w, b, cot)
            _close(got, want)
            assert all(a.dtype == F32 for a in got)
            counts[impl] = _convolutions(g.lower(x, w, b, cot).compile().as_text())
    fwd, bwd = conv.auto_lowering(conv.default_platform(), w.shape, 1)
    # im2col's backward has no convolution, so its count is the forward's (XLA:CPU may
    # rewrite a small one as a dot: 0); XLA's backward adds its dx and dW convolutions
    assert counts["xla"] > counts["im2col"], counts
    assert counts["auto"] == ((counts["im2col"] if fwd == "xla" else 0)
                              + (counts["xla"] - counts["im2col"] if bwd == "xla" else 0)), \
        (fwd, bwd, counts)


def test_bf16_compute_keeps_float32_state_and_tracks_the_float32_step():
    model, opt = _cnn(), optim.adam(1e-2)
    x, y = _batch(8)
    _, params, state = model.init(jax.random.PRNGKey(0), x.shape)
    pure = train.train_step(model, opt, compute_dtype=jnp.bfloat16)
    lowered = jax.jit(pure).lower(params, state, opt.init(params), x, y)
    assert "bf16" in lowered.as_text()          # the model runs in bfloat16
    step16 = train.make_train_step(model, opt, compute_dtype=jnp.bfloat16, donate=False)
    step32 = train.make_train_step(model, opt, donate=False)
    with highest():
        p16, _, o16, m16 = step16(params, state, opt.init(params), x, y)
        _, _, _, m32 = step32(params, state, opt.init(params), x, y)
    for leaf in jax.tree_util.tree_leaves((p16, o16)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == F32
            assert bool(jnp.all(jnp.isfinite(leaf)))
    assert m16["loss"].dtype == F32
    np.testing.assert_allclose(float(m16["loss"]), float(m32["loss"]), rtol=5e-2)
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(p16), jax.tree_util.tree_leaves(params))]
    assert max(moved) > 0


def test_make_train_step_donates_and_stays_on_the_device():
    model, opt = _cnn(), optim.adam(1e-3)
    x, y = _batch(8)
    _, params, state = model.init(jax.random.PRNGKey(0), x.shape)
    params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)
    opt_state = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), opt.init(params))
    step = train.make_train_step(model, opt)
    new_p, _, new_o, metrics = step(params, state, opt_state, x, y)
    assert all(a.is_deleted() for a in jax.tree_util.tree_leaves(params))
    device = jax.devices()[0]
    for leaf in jax.tree_util.tree_leaves((new_p, new_o, metrics)):
        assert leaf.devices() == {device}
    new_p, _, _, metrics2 = step(new_p, state, new_o, x, y)   # the results feed the next call
    assert float(metrics2["loss"]) < float(metrics["loss"]) + 1.0


def test_pmap_sharded_and_shard_map_steps_use_every_device_and_match_one_device():
    model, opt = _cnn(), optim.sgd(0.1)
    devices = jax.device_count()
    x, y = _batch(4 * devices, seed=2)
    _, params, state = model.init(jax.random.PRNGKey(0), x.shape)
    opt_state = opt.init(params)
    key = jax.random.PRNGKey(3)   # no dropout: the key changes nothing, every step takes one
    with highest():
        want, _, _, m_want = train.make_train_step(model, opt, donate=False)(
            params, state, opt_state, x, y, key)

        step = parallel.pmap_train_step(model, opt)
        rp, rs, ro = parallel.replicate((params, state, opt_state))
        xs, ys = parallel.shard_batch((x, y))
        got, _, _, m = step(rp, rs, ro, xs, ys, key)
        assert len(jax.tree_util.tree_leaves(got)[0].devices()) == jax.local_device_count()
        _close(parallel.unreplicate(got), want)
        _close(m["loss"][0], m_want["loss"])

        mesh = parallel.make_mesh()
        assert mesh.size == devices
        for make in (parallel.sharded_train_step, parallel.shard_map_train_step):
            got, _, _, m = make(model, opt, mesh=mesh)(params, state, opt_state, x, y, key)
            _close(got, want)
            _close(m["loss"], m_want["loss"])
