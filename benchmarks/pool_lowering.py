"""max_pool2d's two forward lowerings on the reshape path, shape by shape.

When ``stride == window`` and there is no padding, ``funcnet.ops.max_pool2d``'s forward
rule takes ``(y, argmax)`` one of two ways: ``blocks`` (the windows transposed last, one
argmax, a take) or ``slices`` (one elementwise pass over the ``KH*KW`` strided slices).
Both feed the same backward rule. ``ops.pool.reshape_lowering`` picks one per platform.
This times, for each shape, the program a training step runs for the pool,
``jax.jit(lambda x, dy: (y, dx))`` with the rule's forward and backward, with each
lowering, interleaved round-robin after a warm-up; the two agree bit for bit before
anything is timed. The shapes are the book CNN's pool at batch 100 to 4096, 8 to 512 channels (a
VGG block's, a ResNet stage's, deeper stages') and 3x3 windows.

Usage::

    python -m benchmarks.pool_lowering            # -> benchmarks/results/<platform>/
    python -m benchmarks.pool_lowering --quick    # tiny sizes, a few seconds, -> a temp dir

Writes ``pool_lowering.json`` and ``pool_lowering.md`` (device and library versions in
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
from funcnet.ops import pool  # noqa: E402

# name: (N, H, W, C, window)
SHAPES = {
    "book CNN, batch 100": (100, 24, 24, 30, 2),
    "book CNN, batch 1024": (1024, 24, 24, 30, 2),
    "book CNN, batch 4096": (4096, 24, 24, 30, 2),
    "8 channels (100, 24, 24, 8)": (100, 24, 24, 8, 2),
    "24 channels (100, 24, 24, 24)": (100, 24, 24, 24, 2),
    "64 channels (100, 24, 24, 64)": (100, 24, 24, 64, 2),
    "VGG block (32, 64, 64, 64)": (32, 64, 64, 64, 2),
    "ResNet stage (64, 56, 56, 64)": (64, 56, 56, 64, 2),
    "deep stage (32, 28, 28, 128)": (32, 28, 28, 128, 2),
    "deep stage (16, 28, 28, 512)": (16, 28, 28, 512, 2),
    "3x3 window (100, 24, 24, 30)": (100, 24, 24, 30, 3),
    "3x3 window (64, 48, 48, 32)": (64, 48, 48, 32, 3),
}
QUICK = {k: (2,) + v[1:] for k, v in list(SHAPES.items())[:2]}
VERSUS = ("blocks", "slices", "chosen")   # the two lowerings, and the key of the choice


def _program(lower, geom):
    def step(x, dy):
        y, idx = lower(x, geom)
        return y, pool._max_pool2d_bwd(geom, idx, dy)[0]
    return jax.jit(step)


def bench_shape(name, shape, rounds: int, sample_s: float) -> dict:
    n, h, w, c, k = shape
    keys = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(keys[0], (n, h, w, c), jnp.float32)
    geom = pool.check_pool_args("max_pool2d", x, k, None, 0)
    dy = jax.random.normal(keys[1], (n, h // k, w // k, c), jnp.float32)
    fns = {name_: _program(lower, geom) for name_, lower in pool.RESHAPE_LOWERINGS.items()}
    outs = {name_: jax.block_until_ready(f(x, dy)) for name_, f in fns.items()}
    for a, b in zip(*(jax.tree_util.tree_leaves(o) for o in outs.values())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    times = common.interleaved(fns, (x, dy), rounds, sample_s)
    chosen = pool.reshape_lowering(jax.default_backend())
    return {"name": name, "shape": dict(zip(("N", "H", "W", "C", "window"), shape)),
            "elements": int(x.size), **common.versus(times, *VERSUS[:2], chosen, VERSUS[2])}


def markdown(res: dict) -> str:
    lines = common.header_lines(
        "max_pool2d forward lowerings (reshape path)", res,
        "program: jit((x, dy) -> (y, dx)) with the rule's forward and backward, float32; "
        f"median of {res['rounds']} interleaved samples per lowering",
        "`chosen` is the lowering `max_pool2d` compiles on this platform "
        "(`ops.pool.reshape_lowering`)")
    lines += ["| shape | N, H, W, C, window | elements | blocks ms | slices ms "
              "| blocks / slices | chosen | chosen / fastest |",
              "|---|---|---:|---:|---:|---:|---|---:|"]
    for c in res["cases"]:
        s = c["shape"]
        lines.append(
            f"| {c['name']} | {s['N']}, {s['H']}, {s['W']}, {s['C']}, {s['window']} | "
            f"{c['elements'] / 1e6:.1f} M | " + common.versus_cells(c, *VERSUS))
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    return common.run_shapes("pool_lowering", __doc__, argv, SHAPES, QUICK, bench_shape,
                             markdown, VERSUS)


if __name__ == "__main__":
    main()
