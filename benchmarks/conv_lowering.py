"""conv2d's two backward lowerings, shape by shape, and the one ``impl='auto'`` takes.

``funcnet.ops.conv2d`` has two hand-written backward rules: ``'xla'`` (XLA's transposed and
weight-gradient convolutions) and ``'im2col'`` (the patch matrix and matmuls, col2im).
``impl='auto'`` takes ``ops.conv.auto_lowering``'s backward for the platform and the
kernel (on CUDA short patch rows also get a forward without convolution, not timed here:
``cnn_lowering_probe.py``). For each layer shape below this times one training-step-like program,
``jax.jit(jax.grad(lambda x, w: sum(conv2d(x, w, ...) ** 2), (0, 1)))`` (forward, ``dx``
and ``dW``), with each lowering, interleaved round-robin after a warm-up; the two agree
before anything is timed. The shapes are the layers of the book CNN, a ResNet (stem,
3x3 stages, 1x1 projections), a ResNeXt-style grouped conv, a depthwise conv and a dilated
one.

Usage::

    python -m benchmarks.conv_lowering            # -> benchmarks/results/<platform>/
    python -m benchmarks.conv_lowering --quick    # tiny sizes, a few seconds, -> a temp dir

Writes ``conv_lowering.json`` and ``conv_lowering.md`` (device and library versions in
both) to ``--out``.
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from funcnet import ops  # noqa: E402
from funcnet.ops.conv import auto_lowering, default_platform  # noqa: E402

# name: (N, H, Cin, Cout, kernel, stride, dilation, groups)
SHAPES = {
    "book CNN conv (1 -> 30, 5x5)": (100, 28, 1, 30, 5, 1, 1, 1),
    "RGB stem (3 -> 64, 7x7, stride 2)": (32, 64, 3, 64, 7, 2, 1, 1),
    "small RGB conv (3 -> 16, 3x3)": (64, 32, 3, 16, 3, 1, 1, 1),
    "ResNet 3x3 (16 -> 16)": (64, 32, 16, 16, 3, 1, 1, 1),
    "ResNet 3x3 (16 -> 32, stride 2)": (64, 32, 16, 32, 3, 2, 1, 1),
    "ResNet 3x3 (64 -> 64)": (32, 32, 64, 64, 3, 1, 1, 1),
    "ResNet 3x3 (128 -> 128)": (32, 16, 128, 128, 3, 1, 1, 1),
    "ResNet 1x1 projection (64 -> 64)": (32, 32, 64, 64, 1, 1, 1, 1),
    "dilated 3x3 (32 -> 32, d = 2)": (32, 32, 32, 32, 3, 1, 2, 1),
    "grouped 3x3 (64 -> 64, 4 groups)": (32, 32, 64, 64, 3, 1, 1, 4),
    "depthwise 3x3 (64 channels)": (32, 32, 64, 64, 3, 1, 1, 64),
}
QUICK = {k: (2, 8) + v[2:] for k, v in list(SHAPES.items())[:4]}
VERSUS = ("im2col", "xla", "auto")     # the two lowerings, and the key of auto's choice


def _program(impl, stride, dilation, groups, k):
    def loss(x, w):
        return jnp.sum(ops.conv2d(x, w, stride=stride, padding=dilation * (k // 2),
                                  dilation=dilation, groups=groups, impl=impl) ** 2)
    return jax.jit(jax.grad(loss, (0, 1)))


def bench_shape(name, shape, rounds: int, sample_s: float) -> dict:
    n, h, cin, cout, k, stride, dilation, groups = shape
    keys = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(keys[0], (n, h, h, cin), jnp.float32)
    w = 0.1 * jax.random.normal(keys[1], (k, k, cin // groups, cout), jnp.float32)
    fns = {impl: _program(impl, stride, dilation, groups, k) for impl in ("im2col", "xla")}
    outs = {impl: jax.block_until_ready(f(x, w)) for impl, f in fns.items()}
    for a, b in zip(*(jax.tree_util.tree_leaves(o) for o in outs.values())):
        scale = float(np.max(np.abs(np.asarray(b))))      # float32 sums of ~1e4 terms
        # off CPU the default precision takes TF32 passes (10-bit mantissa): the two
        # lowerings' sums differ by up to ~1e-3 of the scale (1.2e-4 seen on an H200)
        atol = (1e-4 if jax.default_backend() == "cpu" else 3e-3) * scale
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=atol)
    times = common.interleaved(fns, (x, w), rounds, sample_s)
    auto = auto_lowering(default_platform(), w.shape, groups)[1]
    return {"name": name, "shape": dict(zip(("N", "H", "Cin", "Cout", "kernel", "stride",
                                             "dilation", "groups"), shape)),
            **common.versus(times, *VERSUS[:2], auto, VERSUS[2])}


def markdown(res: dict) -> str:
    lines = common.header_lines(
        "conv2d backward lowerings", res,
        "program: jit(grad(sum(conv2d(x, w) ** 2), (x, w))), float32, 'SAME'-style padding; "
        f"median of {res['rounds']} interleaved samples per lowering",
        "`auto` is the backward `impl='auto'` compiles on this platform "
        "(`ops.conv.auto_lowering`)")
    lines += ["| layer | N, H, Cin→Cout, k, stride, dilation, groups | im2col ms | xla ms "
              "| im2col / xla | auto | auto / fastest |",
              "|---|---|---:|---:|---:|---|---:|"]
    for c in res["cases"]:
        s = c["shape"]
        lines.append(
            f"| {c['name']} | {s['N']}, {s['H']}, {s['Cin']}→{s['Cout']}, {s['kernel']}, "
            f"{s['stride']}, {s['dilation']}, {s['groups']} | "
            + common.versus_cells(c, *VERSUS))
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    return common.run_shapes("conv_lowering", __doc__, argv, SHAPES, QUICK, bench_shape,
                             markdown, VERSUS)


if __name__ == "__main__":
    main()
