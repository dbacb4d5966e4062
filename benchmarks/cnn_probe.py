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

    python -m benchmarks.cnn_probe --out DIR                  # batch 4096 (an accelerator)
    python -m benchmarks.cnn_probe --batch 64 --out /tmp      # a CPU smoke test

Writes ``cnn_probe.json`` (median ms per entry) and ``hlo_plain.txt``/``hlo_auto.txt`` to
``--out`` (default ``$OUT`` or the temp folder). H200 results:
``benchmarks/results/gpu/cnn_probe.{json,log}``.
"""
import argparse
import os
import tempfile

import jax
import jax.numpy as jnp

import funcnet.ops as F
from benchmarks import common
from benchmarks import conv_cnn as C
from funcnet.ops import conv as CV
from funcnet.ops.conv import conv2d
from funcnet.ops.pool import max_pool2d

GEOM = dict(stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1)


def funcnet_conv(x, w):
    return conv2d(x, w)


def funcnet_pool(h):
    return max_pool2d(h, 2)


def hybrid(conv, pool, act):
    """The book CNN with the given conv, pool and activation (funcnet's dense layers and
    cross-entropy)."""
    def loss(p, x, y):
        h = pool(act(conv(x, p["w1"]) + p["b1"])).reshape(x.shape[0], -1)
        h = act(F.affine(h, p["w2"], p["b2"]))
        return F.softmax_cross_entropy(F.affine(h, p["w3"], p["b3"]), y)
    return loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", tempfile.gettempdir()))
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    res = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
           "batch": a.batch}

    def tm(name, f, args):
        """Median ms of ``jit(f)(*args)`` (``conv_cnn.time_fn``); the compiled ``f``."""
        f = jax.jit(f)
        first = common.timed(lambda: jax.block_until_ready(f(*args)))
        res[name] = C.time_fn(f, args, a.repeats, warmup=3)[0]
        print(f"{name:55s} {res[name]:8.3f} ms  (first call {first:.2f} s)", flush=True)
        return f

    k = jax.random.split(jax.random.PRNGKey(0), 6)
    p = C.init_params(k[0])
    x = jax.random.normal(k[1], (a.batch, 28, 28, 1), jnp.float32)
    y = jax.random.randint(k[2], (a.batch,), 0, 10)
    w = p["w1"]
    h = jax.random.normal(k[3], (a.batch, 24, 24, 30), jnp.float32)
    dy = jax.random.normal(k[4], (a.batch, 24, 24, 30), jnp.float32)
    # the whole loss and gradient
    for name, loss in [("plain", C.loss_plain), ("funcnet auto", C.loss_funcnet("auto")),
                       ("funcnet xla", C.loss_funcnet("xla")),
                       ("funcnet im2col", C.loss_funcnet("im2col"))]:
        f = tm("cnn v&g " + name, jax.value_and_grad(loss), (p, x, y))
        if name in ("plain", "funcnet auto"):
            with open(os.path.join(a.out, f"hlo_{name.split()[-1]}.txt"), "w") as fh:
                fh.write(f.lower(p, x, y).compile().as_text())
    for name, layers in [("fconv ppool frelu", (funcnet_conv, C.xla_pool, F.relu)),
                         ("pconv fpool frelu", (C.xla_conv, funcnet_pool, F.relu)),
                         ("fconv fpool prelu", (funcnet_conv, funcnet_pool, jax.nn.relu)),
                         ("pconv ppool prelu", (C.xla_conv, C.xla_pool, jax.nn.relu))]:
        tm("cnn v&g hybrid " + name, jax.value_and_grad(hybrid(*layers)), (p, x, y))
    # the forward alone
    tm("cnn fwd plain", C.loss_plain, (p, x, y))
    tm("cnn fwd funcnet", C.loss_funcnet("auto"), (p, x, y))
    # the conv's backward lowerings
    tm("dW jax vjp", lambda w, x, dy: jax.vjp(lambda w: C.xla_conv(x, w), w)[1](dy)[0],
       (w, x, dy))
    tm("dW funcnet _dw_xla", lambda w, x, dy: CV._dw_xla(x, w, dy, **GEOM), (w, x, dy))
    tm("dW funcnet _dw_im2col", lambda w, x, dy: CV._dw_im2col(x, w, dy, **GEOM), (w, x, dy))
    tm("dx jax vjp", lambda w, x, dy: jax.vjp(lambda x: C.xla_conv(x, w), x)[1](dy)[0],
       (w, x, dy))
    tm("dx funcnet _dx_xla", lambda w, x, dy: CV._dx_xla((28, 28), w, dy, **GEOM), (w, x, dy))
    tm("dx funcnet _dx_im2col", lambda w, x, dy: CV._dx_im2col((28, 28), w, dy, **GEOM),
       (w, x, dy))
    tm("conv fwd xla", C.xla_conv, (x, w))
    # per layer, value and gradient
    for name, (plain, ours, argnums) in C.component_variants().items():
        data = (w, h) if name.startswith("max_pool") else (w, x)
        tm(f"comp {name} plain", jax.value_and_grad(plain, argnums), data)
        tm(f"comp {name} funcnet", jax.value_and_grad(ours, argnums), data)
    hp = jax.random.normal(k[5], (a.batch, 4320), jnp.float32)
    for lib, relu in (("plain", jax.nn.relu), ("funcnet", F.relu)):
        tm(f"relu v&g {lib}", jax.grad(lambda h: jnp.sum(relu(h + p["b1"]) ** 2)), (h,))
    tm("affine v&g plain", jax.grad(
        lambda w2, hp: jnp.sum(jax.nn.relu(hp @ w2 + p["b2"]) ** 2), (0, 1)), (p["w2"], hp))
    tm("affine v&g funcnet", jax.grad(
        lambda w2, hp: jnp.sum(F.relu(F.affine(hp, w2, p["b2"])) ** 2), (0, 1)), (p["w2"], hp))
    common.write_json(os.path.join(a.out, "cnn_probe.json"), res)
    return res


if __name__ == "__main__":
    main()
