"""funcnet's hand-written backward rules against autodiff of the same maths, op by op.

For each op (``layer_norm``, ``rms_norm``, ``rnn``, ``lstm``, ``gru``, ``gelu``,
``rotary_embedding`` (queries ``(N, T, H, Dh)`` at positions ``0 .. T-1``), ``group_norm``
(images ``(N, H, W, C)``, ``G`` groups), ``conv2d_depthwise`` (a ConvNeXt block's 7x7
depthwise ``conv2d``, ``groups = C``) and ``conv2d_dilated`` (a 3x3 ``C -> C`` ``conv2d``
with dilation 2), both ``'SAME'`` on images ``(N, H, W, C)``, ``resize2d`` (bilinear
upsampling of those images by 2; its twin is ``jax.image.resize``), ``conv_transpose2d``
(a decoder's learned 2x upsampling, ``(N, H, W, Cin) -> (N, 2H, 2W, Cout)``, 4x4, stride
2, padding 1), ``poly_loss_cross_entropy`` (PolyLoss on ``(N, C)`` logits with
probability labels, ``epsilon = 2``), ``ntxent`` (SimCLR's loss on ``(N, D)``
embeddings, two views per label, ``temperature = 0.1``), ``triplet_margin_loss``
(``(N, F)`` anchors, positives and negatives, the 2-norm), ``mish`` (``(N, F)``) and
``glu`` (``(N, 2F) -> (N, F)``), ``sparsemax`` (``(N, C)`` scores), ``dice_loss`` (soft
Dice of ``(N, H, W, C)`` logits and one-hot targets);
``rnn_lengths``, ``lstm_lengths`` and ``gru_lengths`` are the recurrences over a padded
batch, lengths drawn in ``[T/2, T]``; ``rnn`` returns its final state too) one
training-step-like program is timed:
``jax.jit(jax.value_and_grad(loss))`` with ``loss = <ct, op(args)>`` (a fixed random
cotangent, so every output, the final carry of the recurrences included, gets a
gradient), differentiated with respect to every floating argument. ``funcnet`` runs
:mod:`funcnet.ops` (``jax.custom_vjp``); ``autodiff`` runs the twin of the same name in
:mod:`funcnet.ops.reference` (same forward maths, differentiated by JAX). Both are
checked to agree before anything is timed.

Columns: time per call (median and IQR over ``--repeats`` samples, taken round-robin
after a warm-up so both see the same machine load), the bytes the backward pass keeps
(``funcnet.nn.memory.residual_bytes(op, *args, include_arguments=False)``: residuals
that are not the op's own inputs; an output kept for the backward pass counts), and
XLA's temp buffer size of the compiled fwd+bwd program (``compiled.memory_analysis()``).

Usage::

    python -m benchmarks.ops_vs_autodiff            # full sizes -> benchmarks/results/<platform>/
    python -m benchmarks.ops_vs_autodiff --quick    # tiny sizes, a few seconds, -> a temp dir
    python -m benchmarks.ops_vs_autodiff --ops lstm,gru --repeats 50 --out /tmp/x

Writes ``ops_vs_autodiff.json`` and ``ops_vs_autodiff.md`` (device and library versions
in both) to ``--out``.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from funcnet import nn, ops  # noqa: E402
from funcnet.ops import reference  # noqa: E402

OPS = ("layer_norm", "rms_norm", "rnn", "lstm", "gru", "rnn_lengths", "lstm_lengths",
       "gru_lengths", "gelu", "rotary_embedding", "group_norm", "conv2d_depthwise",
       "conv2d_dilated", "resize2d", "conv_transpose2d", "poly_loss_cross_entropy",
       "ntxent", "triplet_margin_loss", "mish", "glu", "sparsemax", "dice_loss")
PADDED = "_lengths"    # suffix: the same op with ``lengths=`` (a padded batch)
# conv2d rows on images sizes["conv"] (N, H, W, C), C -> C channels, 'SAME' padding:
# name -> (kernel size, dilation, depthwise (groups = C) or dense (groups = 1))
CONVS = {"conv2d_depthwise": (7, 1, True), "conv2d_dilated": (3, 2, False)}
UPSAMPLE = dict(stride=2, padding=1)    # conv_transpose2d, 4x4, on sizes["upsample"]

# sizes per profile: (N, F) for the elementwise/normalisation ops, (T, N, D, H) for RNNs,
# (N, T, H, Dh) for the rotary embedding, (N, H, W, C, G) for group norm,
# (N, H, W, Cin, Cout) for the transposed convolution, (N, D) for the contrastive loss
SIZES = {
    "quick": {"rows": (64, 128), "rnn": (8, 4, 16, 32), "heads": (2, 16, 2, 8),
              "image": (2, 8, 8, 32, 8), "conv": (2, 8, 8, 8), "upsample": (2, 7, 7, 8, 4),
              "contrastive": (32, 16)},
    "cpu": {"rows": (4096, 1024), "rnn": (50, 64, 128, 256), "heads": (8, 512, 8, 128),
            "image": (8, 32, 32, 256, 32), "conv": (8, 56, 56, 96),
            "upsample": (8, 28, 28, 64, 32), "contrastive": (1024, 128)},
    "full": {"rows": (16384, 4096), "rnn": (100, 256, 512, 1024),
             "heads": (16, 2048, 16, 128), "image": (32, 64, 64, 256, 32),
             "conv": (32, 56, 56, 96), "upsample": (32, 56, 56, 128, 64),
             "contrastive": (4096, 256)},
}


def implementations(name: str, sizes: dict) -> dict:
    """``{"funcnet": op, "autodiff": twin}``; a ``*_lengths`` name binds ``lengths``."""
    base = name.removesuffix(PADDED)
    if base in CONVS:
        _, dilation, depthwise = CONVS[base]
        kw = dict(padding="SAME", dilation=dilation, groups=sizes["conv"][-1] if depthwise else 1)
        return {"funcnet": functools.partial(ops.conv2d, **kw),
                "autodiff": functools.partial(reference.conv2d, **kw)}
    if base == "resize2d":    # a decoder's x2 bilinear upsampling
        size = (2 * sizes["conv"][1], 2 * sizes["conv"][2])
        return {"funcnet": functools.partial(ops.resize2d, size=size, method="linear"),
                "autodiff": functools.partial(reference.resize2d, size=size, method="linear")}
    impls = {"funcnet": getattr(ops, base), "autodiff": getattr(reference, base)}
    if base == "conv_transpose2d":
        impls = {k: functools.partial(f, **UPSAMPLE) for k, f in impls.items()}
    if base == "rnn":   # the final state too, as the gated ops return it
        impls = {k: functools.partial(f, return_carry=True) for k, f in impls.items()}
    if base == "ntxent":    # the labels are fixed: two views of each of N/2 images
        views = jnp.arange(sizes["contrastive"][0], dtype=jnp.int32) // 2
        impls = {k: functools.partial(f, labels=views, temperature=0.1)
                 for k, f in impls.items()}
    if base == "group_norm":
        impls = {k: functools.partial(f, num_groups=sizes["image"][-1])
                 for k, f in impls.items()}
    if base != name:
        t, b = sizes["rnn"][:2]
        lengths = jnp.asarray(np.random.default_rng(2).integers(t // 2, t + 1, b), jnp.int32)
        impls = {k: functools.partial(f, lengths=lengths) for k, f in impls.items()}
    return impls


def make_args(name: str, sizes: dict, dtype):
    """The op's positional arguments (random, fixed seed) and a description."""
    rng = np.random.default_rng(0)
    if name.endswith(PADDED):
        args, desc = make_args(name.removesuffix(PADDED), sizes, dtype)
        return args, f"{desc}, lengths in [T/2, T]"

    def r(*shape, scale=1.0):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    n, f = sizes["rows"]
    t, b, d, h = sizes["rnn"]
    if name == "layer_norm":
        return (r(n, f), r(f), r(f)), f"x ({n}, {f}), gamma, beta"
    if name == "rms_norm":
        return (r(n, f), r(f)), f"x ({n}, {f}), gamma"
    if name == "group_norm":
        *shape, g = sizes["image"]
        return (r(*shape), r(shape[-1]), r(shape[-1])), f"x {tuple(shape)}, G={g}, gamma, beta"
    if name == "gelu":
        return (r(n, f),), f"x ({n}, {f}), tanh form"
    if name == "mish":
        return (r(n, f),), f"x ({n}, {f})"
    if name == "dice_loss":
        shape = sizes["conv"]
        labels = rng.integers(0, shape[-1], shape[:-1])
        return ((r(*shape), jnp.asarray(np.eye(shape[-1])[labels], dtype)),
                f"logits {shape}, one-hot targets")
    if name == "sparsemax":
        return (r(n, f, scale=3.0),), f"scores ({n}, C={f})"
    if name == "glu":
        return (r(n, 2 * f),), f"x ({n}, {2 * f}) -> ({n}, {f})"
    if name == "triplet_margin_loss":
        return (r(n, f), r(n, f), r(n, f)), f"anchors, positives, negatives ({n}, {f}), p=2"
    if name == "ntxent":
        m, dim = sizes["contrastive"]
        return (r(m, dim),), f"embeddings ({m}, {dim}), 2 views per label, temperature 0.1"
    if name == "poly_loss_cross_entropy":
        return ((r(n, f, scale=3.0), jax.nn.softmax(r(n, f), axis=-1)),
                f"logits ({n}, C={f}), probability labels, epsilon 2")
    if name in CONVS:
        (k, dilation, depthwise), shape = CONVS[name], sizes["conv"]
        cg = 1 if depthwise else shape[-1]
        return ((r(*shape), r(k, k, cg, shape[-1], scale=(k * k * cg) ** -0.5), r(shape[-1])),
                f"x {shape}, {k}x{k}, " + ("groups=C" if depthwise else f"dilation {dilation}"))
    if name == "resize2d":
        return (r(*sizes["conv"]),), f"x {sizes['conv']}, bilinear x2 (jax.image.resize)"
    if name == "conv_transpose2d":
        n_, h_, w_, cin, cout = sizes["upsample"]
        return ((r(n_, h_, w_, cin), r(4, 4, cout, cin, scale=(4 * cin) ** -0.5), r(cout)),
                f"x {(n_, h_, w_, cin)} -> {cout}, 4x4, stride 2, padding 1")
    if name == "rotary_embedding":
        shape = sizes["heads"]
        return (r(*shape),), f"x {shape}, positions 0 .. T-1"
    w = d ** -0.5
    if name == "rnn":
        return ((r(t, b, d), r(b, h), r(d, h, scale=w), r(h, h, scale=h ** -0.5), r(h)),
                f"T={t}, N={b}, D={d}, H={h}")
    if name == "lstm":
        return ((r(t, b, d), r(b, h), r(b, h), r(d, 4 * h, scale=w), r(h, 4 * h, scale=h ** -0.5),
                 r(4 * h)), f"T={t}, N={b}, D={d}, H={h}")
    if name == "gru":
        return ((r(t, b, d), r(b, h), r(d, 3 * h, scale=w), r(h, 3 * h, scale=h ** -0.5),
                 r(3 * h), r(3 * h)), f"T={t}, N={b}, D={d}, H={h}")
    raise ValueError(f"unknown op {name!r}; choose from {', '.join(OPS)}")


def step_fn(op):
    """``jit(value_and_grad(<ct, op(*args)>))`` over every argument."""
    def loss(args, ct):
        out = op(*args)
        return sum(jnp.vdot(c, o) for c, o in zip(jax.tree_util.tree_leaves(ct),
                                                    jax.tree_util.tree_leaves(out)))
    return jax.jit(jax.value_and_grad(loss))


def bench_op(name: str, sizes: dict, dtype, repeats: int, sample_s: float) -> dict:
    args, desc = make_args(name, sizes, dtype)
    impls = implementations(name, sizes)
    out_struct = jax.eval_shape(impls["funcnet"], *args)
    rng = np.random.default_rng(1)
    ct = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), out_struct)
    rows, calls, inner = {}, {}, {}
    for lib, op in impls.items():
        fn = step_fn(op)
        t0 = time.perf_counter()
        compiled = fn.lower(args, ct).compile()
        compile_s = time.perf_counter() - t0
        calls[lib] = functools.partial(fn, args, ct)
        jax.block_until_ready(calls[lib]())                    # warm-up
        one = common.time_calls(calls[lib], 1)
        inner[lib] = max(1, int(sample_s / max(one, 1e-9)))
        mem = common.compiled_memory(compiled) or {}
        rows[lib] = {"library": lib, "compile_s": compile_s, "samples": [],
                     "residual_bytes": nn.residual_bytes(op, *args, include_arguments=False),
                     "temp_bytes": mem.get("temp"), "steps_per_sample": inner[lib]}
    # same numbers before timing
    (l_f, g_f), (l_a, g_a) = (calls[k]() for k in ("funcnet", "autodiff"))
    tol = 1e-3 if jnp.dtype(dtype).itemsize >= 4 else 5e-2
    np.testing.assert_allclose(np.float64(l_f), np.float64(l_a), rtol=tol)
    for a, b in zip(jax.tree_util.tree_leaves(g_f), jax.tree_util.tree_leaves(g_a)):
        scale = float(jnp.max(jnp.abs(b.astype(jnp.float32)))) or 1.0
        err = float(jnp.max(jnp.abs((a - b).astype(jnp.float32))))
        assert err <= tol * scale, f"{name}: gradients differ by {err:.3g} (scale {scale:.3g})"
    for i in range(repeats):                                  # round-robin, rotating order
        for lib in common.rotated(list(calls), i):
            rows[lib]["samples"].append(common.time_calls(calls[lib], inner[lib]))
    for row in rows.values():
        row["time"] = common.summarize(row.pop("samples"))
    f, a = rows["funcnet"], rows["autodiff"]
    return {"op": name, "args": desc, "dtype": jnp.dtype(dtype).name,
            "rows": [f, a],
            "time_ratio": f["time"]["median_s"] / a["time"]["median_s"],
            "residual_ratio": (a["residual_bytes"] / f["residual_bytes"]
                               if f["residual_bytes"] else None)}


def markdown(results: dict) -> str:
    lines = common.header_lines(
        "funcnet ops vs autodiff of the same maths", results,
        f"profile `{results['profile']}`, dtype {results['dtype']}",
        "one call = `jit(value_and_grad(<ct, op(args)>))` over every argument; resid = "
        "bytes kept for the backward pass beyond the op's inputs; temp = XLA's temp buffers "
        "of the compiled fwd+bwd")
    lines += ["| op | sizes | impl | median ms | IQR ms | n | resid MiB | temp MiB | "
              "compile s | time × autodiff | autodiff resid × funcnet |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case in results["cases"]:
        for r in case["rows"]:
            t = r["time"]
            mine = r["library"] == "funcnet"
            time_x = f"{case['time_ratio']:.2f}" if mine else ""
            resid_x = (f"{case['residual_ratio']:.2f}" if case["residual_ratio"]
                       else "∞ (keeps inputs only)") if mine else ""
            lines.append(
                f"| {case['op']} | {case['args']} | {r['library']} | {t['median_s'] * 1e3:.3f} "
                f"| {(t['q3_s'] - t['q1_s']) * 1e3:.3f} | {t['n']} "
                f"| {common._mb(r['residual_bytes'], '.3f')} "
                f"| {common._mb(r['temp_bytes'], '.3f')} | {r['compile_s']:.2f} | {time_x} "
                f"| {resid_x} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 3 repeats (smoke test)")
    p.add_argument("--sizes", choices=sorted(SIZES), default=None,
                   help="default: quick with --quick, cpu on a CPU backend, full elsewhere")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {OPS}")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=None, help="samples per impl (default 31, "
                   "3 with --quick)")
    p.add_argument("--sample-ms", type=float, default=None,
                   help="target length of one sample (default 50 ms, 5 ms with --quick)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/"
                   "<platform>/, or a temp folder with --quick)")
    a = p.parse_args(argv)
    platform = jax.devices()[0].platform
    profile = a.sizes or ("quick" if a.quick else ("cpu" if platform == "cpu" else "full"))
    # an accelerator's samples are steady: 11 of 20 ms keep all 15 ops inside the device
    # check's stage (31 of 50 ms took 8 s per op on an H200)
    repeats = a.repeats or (3 if a.quick else (31 if platform == "cpu" else 11))
    sample_s = (a.sample_ms or (5.0 if a.quick else (50.0 if platform == "cpu" else 20.0))) / 1e3
    out = a.out or (os.path.join(tempfile.gettempdir(), "funcnet-ops-vs-autodiff-quick")
                    if a.quick else common.results_dir(platform, quick=False))
    names = [n.strip() for n in a.ops.split(",") if n.strip()]
    t0 = time.perf_counter()
    results = {"profile": profile, "dtype": a.dtype, "cases": [],
               "command": common.command("ops_vs_autodiff", argv), "env": common.environment()}
    for name in names:    # written after every op: a run cut short keeps what it measured
        results["cases"].append(bench_op(name, SIZES[profile], jnp.dtype(a.dtype), repeats,
                                         sample_s))
        c = results["cases"][-1]
        print(f"{name:10s} {c['args']:32s} funcnet/autodiff time {c['time_ratio']:.2f}x, "
              f"residuals {c['rows'][0]['residual_bytes']:,} B vs "
              f"{c['rows'][1]['residual_bytes']:,} B", flush=True)
        results["wall_s"] = time.perf_counter() - t0
        common.write_results(out, "ops_vs_autodiff", results, markdown(results),
                             announce=name == names[-1])
    return results


if __name__ == "__main__":
    main()
