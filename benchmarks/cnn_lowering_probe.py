"""Which lowering of the book CNN's first convolution is fastest, as whole Adam steps.

The CNN gap left on an H200 (funcnet 2.36 ms against Equinox's 1.95 ms per step at batch
4096, ``results/gpu/device_check.md``) sits in the first layer, a 5x5 convolution of one
input channel into 30: ``cnn_probe`` measured cuDNN's forward at 0.50 ms and its ``dW`` at
0.78 ms, where the layer's output (283 MB) takes ~0.06 ms to write once. A patch row of 25
is too short for a matmul engine; this probe times candidate lowerings of that layer inside
the whole step (value and gradient of the loss, then ``funcnet.optim.adam``), beside
Equinox, Flax and plain JAX built by ``benchmarks.libs`` and timed the same way, in one
process:

- forward: ``xla`` (cuDNN), ``slices`` (the sum over the ``KH*KW*Cin`` window offsets of a
  strided slice of ``x`` times a row of ``W``: one elementwise loop), ``im2col`` (the
  slices concatenated into patches, one matmul), ``nchw`` (cuDNN on transposed operands);
- ``dW``: ``xla`` (``_dw_xla``), ``im2col`` (``_dw_im2col``: one matmul over
  ``N*OH*OW``), ``splitK<g>`` (the same matmul batched over ``g`` slices of the batch,
  then summed), ``offsets`` (one reduction per window offset of ``slice * dy``),
  ``offsets1`` (all offsets' products in one reduction);
- the pool: funcnet's ``max_pool2d`` or ``reduce_window`` (autodiff), to see its share.

Then the device's kernels per step for a few variants (``jax.profiler`` trace, read back
with ``jax.profiler.ProfileData``). Usage::

    python -m benchmarks.cnn_lowering_probe --out DIR            # batch 4096 (accelerator)
    python -m benchmarks.cnn_lowering_probe --batch 32 --quick    # CPU smoke test

Writes ``cnn_lowering_probe.json`` to ``--out`` after every row.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import tempfile
import time
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import funcnet.ops as F
from benchmarks import common
from benchmarks import conv_cnn as C
from benchmarks.cases import make_batches, make_cases
from benchmarks.libs import load
from funcnet import optim
from funcnet.ops import _window
from funcnet.ops import conv as CV

GEOM = dict(stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1)


def _slices(x, w):
    kh, kw = w.shape[:2]
    return _window.window_slices(x, (kh, kw), (1, 1),
                                 (x.shape[1] - kh + 1, x.shape[2] - kw + 1))


def fwd_xla(x, w):
    return CV._conv_forward(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)


def fwd_slices(x, w):
    kh, kw, cin, cout = w.shape
    wf = w.reshape(kh * kw, cin, cout)
    s = _slices(x, w)
    return sum(s[k][..., c:c + 1] * wf[k, c] for k in range(kh * kw) for c in range(cin))


def fwd_im2col(x, w):
    p = jnp.concatenate(_slices(x, w), axis=-1)
    return lax.dot_general(p, w.reshape(-1, w.shape[-1]), (((3,), (0,)), ((), ())))


def fwd_nchw(x, w):
    y = lax.conv_general_dilated(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (1, 1),
                                 "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y.transpose(0, 2, 3, 1)


def dw_xla(x, w, dy):
    return CV._dw_xla(x, w, dy, **GEOM)


def dw_im2col(x, w, dy):
    return CV._dw_im2col(x, w, dy, **GEOM)


def dw_splitk(g):
    def dw(x, w, dy):
        n, oh, ow, cout = dy.shape
        if n % g:
            return dw_im2col(x, w, dy)
        p = jnp.stack(_slices(x, w), axis=0)                    # (KK, N, OH, OW, Cin)
        p = p.reshape(p.shape[0], g, n // g, oh, ow, p.shape[-1])
        part = lax.dot_general(p, dy.reshape(g, n // g, oh, ow, cout),
                               (((2, 3, 4), (1, 2, 3)), ((1,), (0,))))  # (g, KK, Cin, Cout)
        return jnp.sum(part, axis=0).reshape(w.shape)
    return dw


def dw_offsets(x, w, dy):
    return jnp.stack([jnp.sum(s[..., :, None] * dy[..., None, :], axis=(0, 1, 2))
                      for s in _slices(x, w)]).reshape(w.shape)


FWDS = {"xla": fwd_xla, "slices": fwd_slices, "im2col": fwd_im2col, "nchw": fwd_nchw}
def dw_offsets1(x, w, dy):
    """All offsets in one reduction of ``(KK, N, OH, OW, Cin, Cout)`` products."""
    p = jnp.stack(_slices(x, w), axis=0)
    return jnp.sum(p[..., :, None] * dy[None, ..., None, :], axis=(1, 2, 3)).reshape(w.shape)


DWS = {"xla": dw_xla, "im2col": dw_im2col, "splitK32": dw_splitk(32),
       "splitK256": dw_splitk(256), "offsets": dw_offsets, "offsets1": dw_offsets1}


def conv_candidate(fwd, dw):
    """``fwd(x, w) + b`` with ``dW`` by ``dw`` (``dx`` XLA's, dead in the CNN: x is data)."""
    @jax.custom_vjp
    def conv(x, w, b):
        return fwd(x, w) + b

    def conv_fwd(x, w, b):
        return fwd(x, w) + b, (x, w)

    def conv_bwd(res, dy):
        x, w = res
        return (CV._dx_xla(x.shape[1:3], w, dy, **GEOM), dw(x, w, dy),
                jnp.sum(dy, axis=(0, 1, 2)))

    conv.defvjp(conv_fwd, conv_bwd)
    return conv


def funcnet_ops_step(conv, pool):
    """The book CNN on funcnet's ops with the given first layer and pool; funcnet's Adam."""
    opt = optim.adam(1e-3)

    def loss(p, batch):
        x, y = batch
        h = pool(F.relu(conv(x, p["w1"], p["b1"])))
        h = F.relu(F.affine(h.reshape(h.shape[0], -1), p["w2"], p["b2"]))
        return F.softmax_cross_entropy(F.affine(h, p["w3"], p["b3"]), y)

    def step(state, batch):
        p, s = state
        value, g = jax.value_and_grad(loss)(p, batch)
        u, s = opt.update(g, s, p)
        return (optim.apply_updates(p, u), s), value

    p = C.init_params(jax.random.PRNGKey(0))
    return step, (p, opt.init(p)), loss


class Timed:
    """A jitted, donated step with its state and batch; ``run(n)`` returns seconds/step."""

    def __init__(self, step, state, batch):
        self.fn = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
        self.state, self.batch = common.copy_tree(state), batch
        self.memory = (common.compiled_memory(self.fn) or {}).get("total")
        self.loss = None

    def run(self, n):
        t0 = time.perf_counter()
        for _ in range(n):
            self.state, self.loss = self.fn(self.state, self.batch)
        jax.block_until_ready((self.state, self.loss))
        return (time.perf_counter() - t0) / n


def kernel_table(t: Timed, steps: int = 3, top: int = 10) -> dict:
    """Device (or, on CPU, host XLA) events per step from a profiler trace, by line."""
    d = tempfile.mkdtemp()
    with jax.profiler.trace(d):
        t.run(steps)
    out = {}
    try:
        prof = jax.profiler.ProfileData.from_file(
            glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0])
        for plane in prof.planes:
            if not (plane.name.startswith("/device:") or plane.name == "/host:CPU"):
                continue
            for line in plane.lines:
                if line.name == "python":
                    continue
                agg = defaultdict(float)
                for ev in line.events:
                    agg[ev.name] += ev.duration_ns / 1e6 / steps
                if agg:
                    rows = sorted(agg.items(), key=lambda kv: -kv[1])
                    out[f"{plane.name} | {line.name}"] = {
                        "total_ms": sum(agg.values()),
                        "top": [[k[:120], v] for k, v in rows[:top]]}
    except Exception as exc:  # noqa: BLE001 - a trace is a bonus, the timings are the point
        out["error"] = common.error_text(exc)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", tempfile.gettempdir()))
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed sample")
    ap.add_argument("--quick", action="store_true", help="two forwards, three dWs")
    ap.add_argument("--budget", type=float, default=200.0, help="seconds for building")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "cnn_lowering_probe.json")
    res = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
           "batch": a.batch, "versions": common.library_versions(), "ms_per_step": {},
           "memory_mib": {}, "compile_s": {}, "kernels": {}}
    case = dataclasses.replace(make_cases("full")["cnn_large"], batch=a.batch)
    x, y = make_batches(case, 1, seed=1)
    t_start = time.perf_counter()
    entries: dict[str, Timed] = {}

    def add(name, make):
        if time.perf_counter() - t_start > a.budget:
            print(f"{name}: skipped (build budget spent)", flush=True)
            return
        t0 = time.perf_counter()
        try:
            entries[name] = make()
        except Exception as exc:  # noqa: BLE001
            res["ms_per_step"][name] = common.error_text(exc)
            print(f"{name}: failed: {res['ms_per_step'][name]}", flush=True)
            return
        res["compile_s"][name] = time.perf_counter() - t0
        res["memory_mib"][name] = (entries[name].memory or 0) / 2 ** 20

    for lib in ("equinox", "jax", "flax", "funcnet"):
        def make(lib=lib):
            b = load(lib).build(case)
            return Timed(b.step, b.state, b.prepare(x[0], y[0]))
        add(f"lib {lib}", make)
    batch = (jnp.asarray(x[0]), jnp.asarray(y[0]))
    fwds = ("xla", "slices") if a.quick else tuple(FWDS)
    dws = ("xla", "im2col", "splitK32") if a.quick else tuple(DWS)
    ref = None
    for fn in fwds:
        for dn in dws:
            name = f"fwd {fn} dW {dn}"
            step, state, loss = funcnet_ops_step(conv_candidate(FWDS[fn], DWS[dn]),
                                                 lambda h: F.max_pool2d(h, 2))
            add(name, lambda: Timed(step, state, batch))
            # the same gradient as the plain autodiff (one check per variant, float32)
            g = jax.jit(jax.grad(loss))(state[0], batch)
            ref = ref or jax.jit(jax.grad(lambda p, b: C.loss_plain(p, *b)))(state[0], batch)
            res.setdefault("max_rel_grad_err", {})[name] = float(max(
                jnp.max(jnp.abs(g[k] - ref[k])) / (jnp.max(jnp.abs(ref[k])) + 1e-30)
                for k in ref))
    step, state, _ = funcnet_ops_step(conv_candidate(fwd_xla, dw_xla), C.xla_pool)
    add("fwd xla dW xla, reduce_window pool", lambda: Timed(step, state, batch))
    step, state, _ = funcnet_ops_step(conv_candidate(fwd_slices, dw_im2col), C.xla_pool)
    add("fwd slices dW im2col, reduce_window pool", lambda: Timed(step, state, batch))
    print(f"built {len(entries)} in {time.perf_counter() - t_start:.1f} s", flush=True)
    samples = defaultdict(list)
    for t in entries.values():
        t.run(2)
    rng = np.random.default_rng(0)
    names = list(entries)
    for r in range(a.rounds):
        for i in rng.permutation(len(names)):
            samples[names[i]].append(entries[names[i]].run(a.steps))
        for k, v in samples.items():
            res["ms_per_step"][k] = float(np.median(v) * 1e3)
        common.write_json(path, res)
    best = min((v, k) for k, v in res["ms_per_step"].items()
               if isinstance(v, float) and not k.startswith("lib"))
    def order(k):
        v = res["ms_per_step"][k]
        return (not isinstance(v, float), v if isinstance(v, float) else 0.0)
    for k in sorted(res["ms_per_step"], key=order):
        print(f"{k:45s} {res['ms_per_step'][k]}  {res['memory_mib'].get(k, 0):8.1f} MiB"
              f"  grad err {res.get('max_rel_grad_err', {}).get(k, '')}", flush=True)
    for name in ("lib equinox", "lib funcnet", best[1]):
        if name in entries:
            res["kernels"][name] = kernel_table(entries[name])
            common.write_json(path, res)
    for name, tab in res["kernels"].items():
        print(f"== kernels per step: {name}")
        for line, v in tab.items():
            if isinstance(v, dict):
                print(f"  {line}: {v['total_ms']:.3f} ms")
                for k, ms in v["top"]:
                    print(f"      {ms:8.3f}  {k}")
    common.write_json(path, res)
    return res


if __name__ == "__main__":
    main()
