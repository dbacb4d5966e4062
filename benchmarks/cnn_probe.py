"""Where the book CNN's step time goes at batch 4096: funcnet against plain autodiff.

The probe that found, on an H200, that funcnet's ``max_pool2d`` forward (windows
transposed last, an argmax, a gather) made the whole CNN 2x plain JAX's time; run it with
the device check's conditions (``XLA_PYTHON_CLIENT_MEM_FRACTION=0.6``) in one process:

- the loss's value and gradient: plain JAX, funcnet with each conv backward lowering, and
  hybrids that swap one layer (conv, pool, relu) between funcnet and plain JAX;
- the forward alone; the conv's ``dW`` and ``dx`` lowerings against ``jax.vjp`` of
  ``lax.conv_general_dilated``; per layer (conv, pool, relu, affine) value and gradient;
- the optimized HLO of the plain and funcnet ``auto`` programs (``hlo_*.txt``).

Usage::

    python -m benchmarks.cnn_probe --out DIR          # batch 4096 (an accelerator)
    PB=64 python -m benchmarks.cnn_probe --out /tmp   # a CPU smoke test

Writes ``cnn_probe.json`` (median ms per entry) and ``hlo_plain.txt``/``hlo_auto.txt`` to
``--out`` (default ``$OUT`` or the temp folder). H200 results:
``benchmarks/results/gpu/cnn_probe.{json,log}``.
"""
import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import conv_cnn as C
import funcnet.ops as F
from funcnet.ops import conv as CV
from funcnet.ops.conv import conv2d
from funcnet.ops.pool import max_pool2d

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--out", default=os.environ.get("OUT", tempfile.gettempdir()))
OUT = ap.parse_args().out
res = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__}
def tm(name, f, args, reps=20):
    f = jax.jit(f)
    t0 = time.perf_counter(); jax.block_until_ready(f(*args)); c = time.perf_counter() - t0
    for _ in range(3): jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); jax.block_until_ready(f(*args)); ts.append(time.perf_counter() - t0)
    m = float(np.median(ts) * 1e3); res[name] = m
    print(f"{name:55s} {m:8.3f} ms  (first call {c:.2f} s)", flush=True)
    return f

B = int(os.environ.get("PB", 4096))
k = jax.random.split(jax.random.PRNGKey(0), 6)
p = C.init_params(k[0])
x = jax.random.normal(k[1], (B, 28, 28, 1), jnp.float32)
y = jax.random.randint(k[2], (B,), 0, 10)
w = p["w1"]
h = jax.random.normal(k[3], (B, 24, 24, 30), jnp.float32)
dy = jax.random.normal(k[4], (B, 24, 24, 30), jnp.float32)
# whole loss
for name, fn in [("plain", C.loss_plain), ("funcnet auto", C.loss_funcnet("auto")),
                 ("funcnet xla", C.loss_funcnet("xla")), ("funcnet im2col", C.loss_funcnet("im2col"))]:
    f = tm("cnn v&g " + name, jax.value_and_grad(fn), (p, x, y))
    if name in ("plain", "funcnet auto"):
        open(f"{OUT}/hlo_{name.split()[-1]}.txt", "w").write(f.lower(p, x, y).compile().as_text())
def hybrid(conv_f, pool_f, act):
    def loss(p, x, y):
        h = act(conv_f(x, p["w1"]) + p["b1"])
        h = pool_f(h).reshape(x.shape[0], -1)
        h = act(F.affine(h, p["w2"], p["b2"]))
        return F.softmax_cross_entropy(F.affine(h, p["w3"], p["b3"]), y)
    return loss
ppool = lambda h: lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
fconv = lambda x, w: conv2d(x, w, None, 1, 0)
for name, args in [("fconv ppool frelu", (fconv, ppool, F.relu)), ("pconv fpool frelu", (None, max_pool2d, F.relu)),
                   ("fconv fpool prelu", (fconv, lambda h: max_pool2d(h, 2), jax.nn.relu)),
                   ("pconv ppool prelu", (None, ppool, jax.nn.relu))]:
    cf, pf, act = args
    cf = cf or (lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    pf = (lambda h: max_pool2d(h, 2)) if pf is max_pool2d else pf
    tm("cnn v&g hybrid " + name, jax.value_and_grad(hybrid(cf, pf, act)), (p, x, y))
# forward only
tm("cnn fwd plain", C.loss_plain, (p, x, y))
tm("cnn fwd funcnet", C.loss_funcnet("auto"), (p, x, y))
dn = ("NHWC", "HWIO", "NHWC")
xconv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)
geom = dict(stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1)
# dW alternatives
tm("dW jax vjp", lambda w, x, dy: jax.vjp(lambda w: xconv(x, w), w)[1](dy)[0], (w, x, dy))
tm("dW funcnet _dw_xla", lambda w, x, dy: CV._dw_xla(x, w, dy, **geom), (w, x, dy))
tm("dW funcnet _dw_im2col", lambda w, x, dy: CV._dw_im2col(x, w, dy, **geom), (w, x, dy))
tm("dx jax vjp", lambda w, x, dy: jax.vjp(lambda x: xconv(x, w), x)[1](dy)[0], (w, x, dy))
tm("dx funcnet _dx_xla", lambda w, x, dy: CV._dx_xla((28, 28), w, dy, **geom), (w, x, dy))
tm("dx funcnet _dx_im2col", lambda w, x, dy: CV._dx_im2col((28, 28), w, dy, **geom), (w, x, dy))
tm("conv fwd xla", xconv, (x, w))
# components (value_and_grad), plain vs funcnet
for name, (plain, ours, argn) in C.component_variants().items():
    data = (w, h) if name.startswith("max_pool") else (w, x)
    tm(f"comp {name} plain", jax.value_and_grad(plain, argn), data)
    tm(f"comp {name} funcnet", jax.value_and_grad(ours, argn), data)
hp = jax.random.normal(k[5], (B, 4320), jnp.float32)
tm("relu v&g plain", jax.grad(lambda h: jnp.sum(jax.nn.relu(h + p["b1"]) ** 2)), (h,))
tm("relu v&g funcnet", jax.grad(lambda h: jnp.sum(F.relu(h + p["b1"]) ** 2)), (h,))
tm("affine v&g plain", jax.grad(lambda w2, hp: jnp.sum(jax.nn.relu(hp @ w2 + p["b2"]) ** 2), (0, 1)), (p["w2"], hp))
tm("affine v&g funcnet", jax.grad(lambda w2, hp: jnp.sum(F.relu(F.affine(hp, w2, p["b2"])) ** 2), (0, 1)), (p["w2"], hp))
json.dump(res, open(f"{OUT}/probe.json", "w"), indent=1)
