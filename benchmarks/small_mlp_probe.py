"""Why is Equinox's small-MLP step faster than funcnet's on XLA:CPU? Variants, one process.

The 784-100-100-10 MLP at batch 100 with Adam (``cases.small_mlp``), built as:

- ``funcnet``, ``jax``, ``flax``, ``equinox``: the runner's builds (``benchmarks/libs``);
- ``replica``: funcnet's maths written out as in ``funcnet.ops.affine`` (a ``custom_vjp``
  with ``dx = g w^T``, ``dw = x^T g``, ``db = sum g``; ``w`` stored ``(in, out)``) with
  ``funcnet.ops.relu``, ``funcnet.ops.softmax_cross_entropy`` and ``funcnet.optim.adam``:
  the control, it must time like ``funcnet``;
- ``replica-oi``: the same rules with ``w`` stored ``(out, in)`` (Equinox's layout: forward
  ``x w^T``, ``dx = g w``, ``dw = g^T x``);
- ``replica-wb``: params as ``(w, b)`` tuples (Equinox's leaf order; funcnet's dicts
  flatten ``b`` first);
- ``replica-optax-adam``, ``replica-optax-ce``: ``optax.adam`` / optax's cross-entropy in
  place of funcnet's;
- ``replica-dwt``: ``dw`` computed as ``(g^T x)^T`` behind a barrier (the other output
  orientation of the same Eigen product, then a transpose);
- ``replica-rev``: the layers' params stored last layer first (the optimizer's and the
  output tuple's order reversed);
- ``replica-dep``: each new weight after the first layer made to depend on that layer's
  ``dx`` (``dw + 0 * dx[0, 0]``), so that XLA needs no copy of the old weight in the loop;
- ``replica-ynn`` and ``funcnet-ynn`` (the replica, and funcnet itself with its affine rule
  patched in this process only): the candidate weight gradient of :func:`weight_grad_cpu`;
- ``replica-xt0`` / ``replica-xt``: the first layer's (every layer's) residual is ``x^T``,
  made in the forward pass, so that ``dw = x^T g`` is a row-major (YNN) product.

Every variant is compiled first; then they are sampled round-robin (the order rotates
every round), in ``lax.scan`` mode (one call runs ``--length`` steps) and per-step mode
(``--calls`` dispatched steps and one wait). Reported: median and 10th percentile of the
per-step time and the ratios to ``funcnet`` (the 10th percentile is the better estimate
of the unloaded machine when others share it), and the process CPU time per step (all
threads: the work done, plus the XLA pool's spinning, whatever the load).

``--profile`` adds one interleaved pass under ``jax.profiler`` and reads the XLA:CPU thunk
events of the scan's loop body: per step, the thunks' durations summed ("busy"), the time
none runs ("idle"), the thunks that start after an idle gap, and the slowest thunks'
median durations. ``--graph NAME`` prints
the end of the loop body's thunk dependency graph of one variant (XLA's
``ThunkExecutor`` log: dependencies after transitive reduction, priorities).

Usage::

    python -m benchmarks.small_mlp_probe          # -> results/<platform>/small_mlp_probe.*
    python -m benchmarks.small_mlp_probe --profile --rounds 80
    python -m benchmarks.small_mlp_probe --graph funcnet
    python -m benchmarks.small_mlp_probe --case wide_mlp_f32 --variants funcnet,funcnet-ynn
    python -m benchmarks.small_mlp_probe --quick               # smoke test
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.cases import make_batches, make_cases  # noqa: E402
from benchmarks.libs import load, optax_protocol_build  # noqa: E402

DEFAULT = ("funcnet", "funcnet-ynn", "replica", "replica-ynn", "replica-oi", "replica-wb",
           "replica-optax-adam", "replica-optax-ce", "jax", "flax", "equinox")


# ---------------------------------------------------------------------------- variants
def _affine(layout: str):
    """funcnet's affine rule (``layout="io"``: ``w (in, out)``) or Equinox's layout."""
    import jax

    def prim(x, w, b):
        if layout in ("io-fwt", "io-oiemu"):  # x w computed as an NT product against w^T
            return x @ jax.lax.optimization_barrier(w.T).T + b
        return (x @ w.T if layout == "oi" else x @ w) + b

    f = jax.custom_vjp(prim)

    def fwd(x, w, b):
        if layout == "io-wt":  # keep w^T (materialised) for dx: the loop's w is read early
            return prim(x, w, b), (x, jax.lax.optimization_barrier(w.T))
        if layout == "io-xt":  # keep x^T (materialised in the forward) for dw = x^T g (NN)
            return prim(x, w, b), (jax.lax.optimization_barrier(x.T), w)
        return prim(x, w, b), (x, w)

    def bwd(res, g):
        x, w = res
        if layout == "oi":
            return g @ w, g.T @ x, g.sum(0)
        if layout in ("io-dwt", "io-oiemu"):  # dw computed (out, in), transposed after a barrier
            return g @ w.T, jax.lax.optimization_barrier(g.T @ x).T, g.sum(0)
        if layout == "io-ynn":  # the candidate: dw^T = (g^T) x, then transposed
            return g @ w.T, weight_grad_cpu(x, g), g.sum(0)
        if layout == "io-wt":
            return g @ w, x.T @ g, g.sum(0)
        if layout == "io-xt":  # x holds x^T: a row-major NN product (YNN on XLA:CPU)
            return g @ w.T, x @ g, g.sum(0)
        if layout == "io-split":  # dw as two half-batch products: two thunks, two threads
            n = x.shape[0] // 2
            return g @ w.T, x[:n].T @ g[:n] + x[n:].T @ g[n:], g.sum(0)
        if layout == "io-dep":  # dw made to depend on dx (a 0 * dx[0, 0] term): the new w
            dx = g @ w.T        # is then ordered after dx's read of the old w, no copy
            return dx, x.T @ g + 0.0 * dx[0, 0], g.sum(0)
        return g @ w.T, x.T @ g, g.sum(0)

    f.defvjp(fwd, bwd)
    return f


def replica(case, layout="io", order=None, adam="funcnet", ce="funcnet", first=None,
            reverse=False, emit_reversed=False, oi_layers=None):
    """funcnet's maths written out; ``first``: another rule for the first layer (whose
    ``dx`` is not computed); ``reverse``: the layers' params stored last layer first;
    ``emit_reversed``: the optimizer traced last leaf first; ``oi_layers``: the layers
    (0-based) whose weights are stored ``(out, in)``, Equinox's layout."""
    import jax
    import optax

    from funcnet import ops, optim

    base = load("funcnet").build(case)
    dense = [dict(p) for p in base.params if isinstance(p, dict) and "w" in p]
    if layout == "oi":
        dense = [{"w": jax.numpy.asarray(p["w"]).T.copy(), "b": p["b"]} for p in dense]
    rules = [_affine(first or layout)] + [_affine(layout)] * (len(dense) - 1)
    if oi_layers is not None:
        dense = [{"w": jax.numpy.asarray(p["w"]).T.copy(), "b": p["b"]} if i in oi_layers
                 else p for i, p in enumerate(dense)]
        rules = [_affine("oi" if i in oi_layers else "io") for i in range(len(dense))]
    if order is None:
        params, wb = dense, (lambda p: (p["w"], p["b"]))
    else:
        params = [tuple(p[k] for k in order) for p in dense]
        wb = (lambda p: tuple(dict(zip(order, p))[k] for k in ("w", "b")))

    if reverse:
        params = params[::-1]

    def loss(p, batch):
        x, y = batch
        p = p[::-1] if reverse else p
        for affine, layer in zip(rules, p[:-1]):
            x = ops.relu(affine(x, *wb(layer)))
        logits = rules[-1](x, *wb(p[-1]))
        if ce == "funcnet":
            return ops.softmax_cross_entropy(logits, y)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt, apply = ((optim.adam(1e-3), optim.apply_updates) if adam == "funcnet"
                  else (optax.adam(1e-3), optax.apply_updates))
    if emit_reversed:
        opt, apply = _emit_reversed(opt, apply)
    return optax_protocol_build(loss, params, opt, apply, base.prepare)


def _emit_reversed(opt, apply):
    """The same optimizer with its per-leaf ops traced last leaf first (storage unchanged)."""
    import jax

    def rev(tree):
        leaves, tdef = jax.tree.flatten(tree)
        return leaves[::-1], tdef

    def unrev(leaves, tdef):
        return jax.tree.unflatten(tdef, leaves[::-1])

    class Opt:
        def init(self, params):
            return opt.init(rev(params)[0])

        def update(self, grads, state, params=None):
            g, tdef = rev(grads)
            u, state = opt.update(g, state, None if params is None else rev(params)[0])
            return unrev(u, tdef), state

    def apply2(params, updates):
        p, tdef = rev(params)
        return unrev(apply(p, rev(updates)[0]), tdef)

    return Opt(), apply2


VARIANTS = {
    "replica": lambda c: replica(c),
    "replica-oi": lambda c: replica(c, layout="oi"),
    "replica-wb": lambda c: replica(c, order=("w", "b")),
    "replica-oi-wb": lambda c: replica(c, layout="oi", order=("w", "b")),
    "replica-dwt": lambda c: replica(c, layout="io-dwt"),
    "replica-ynn": lambda c: replica(c, layout="io-ynn"),
    "replica-optax-adam": lambda c: replica(c, adam="optax"),
    "replica-optax-ce": lambda c: replica(c, ce="optax"),
    "replica-rev": lambda c: replica(c, reverse=True),
    "replica-dep": lambda c: replica(c, layout="io-dep", first="io"),
    "replica-wt": lambda c: replica(c, layout="io-wt", first="io"),
    "replica-oi0": lambda c: replica(c, oi_layers=(0,)),
    "replica-oi1": lambda c: replica(c, oi_layers=(1,)),
    "replica-oi2": lambda c: replica(c, oi_layers=(2,)),
    "replica-dwt0": lambda c: replica(c, first="io-dwt"),
    "replica-fwt0": lambda c: replica(c, first="io-fwt"),
    "replica-oiemu0": lambda c: replica(c, first="io-oiemu"),
    "replica-emitrev": lambda c: replica(c, emit_reversed=True),
    "replica-split": lambda c: replica(c, first="io-split"),
    "replica-xt0": lambda c: replica(c, first="io-xt"),
    "replica-xt": lambda c: replica(c, layout="io-xt"),
}


def weight_grad_cpu(x2, g2):
    """``dW = x^T g`` computed as ``(g^T x)^T`` with ``g^T`` materialised: on XLA:CPU the
    product then has a row-major left operand (its YNN/XNNPACK matmul) instead of a left
    operand contracted on its first axis (Eigen); the barriers keep XLA from folding the
    transposes back into the dot."""
    import jax

    gt = jax.lax.optimization_barrier(g2.T)
    return jax.lax.optimization_barrier(gt @ x2).T


def _patched_affine_bwd(res, g):
    """funcnet's affine backward with :func:`weight_grad_cpu` on CPU (the candidate)."""
    import jax

    x, w = res
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    dw = jax.lax.platform_dependent(x2, g2, cpu=weight_grad_cpu,
                                    default=lambda a, b: a.T @ b)
    return g @ w.T, dw, g2.sum(0)


def build(name: str, case):
    if name in VARIANTS:
        return VARIANTS[name](case)
    return load(name).build(case)


def _compile_patched(fn):
    """Run ``fn()`` (build + compile) with funcnet's affine rule replaced by the candidate.

    Private funcnet internals (``funcnet.ops.linear._affine``): a probe, not library code;
    the rule is restored afterwards (compiled executables keep what they traced).
    """
    from funcnet.ops import _mesh, linear

    _mesh.defvjp(linear._affine, linear._affine_fwd, _patched_affine_bwd)
    try:
        return fn()
    finally:
        _mesh.defvjp(linear._affine, linear._affine_fwd, linear._affine_bwd)


def _fn_name(name: str) -> str:
    return "probe_" + re.sub(r"\W", "_", name)


class Variant:
    """A variant compiled in scan mode (``length`` steps per call) and per-step mode."""

    def __init__(self, name: str, case, length: int):
        if name == "funcnet-ynn":  # funcnet itself, with the candidate weight gradient
            _compile_patched(lambda: self._init(name, "funcnet", case, length))
        else:
            self._init(name, name, case, length)

    def _init(self, name: str, lib: str, case, length: int):
        import jax
        from jax import lax

        self.name = name
        b = build(lib, case)
        fresh = lambda: common.copy_tree(b.state)  # noqa: E731
        xs, ys = make_batches(case, length, seed=2)
        self.scan_args = b.prepare(xs, ys)
        x, y = make_batches(case, 1, seed=1)
        self.step_args = b.prepare(x[0], y[0])

        def scan(state, batches):
            return lax.scan(b.step, state, batches)

        scan.__name__ = _fn_name(name)  # the HLO module's name in profiles
        self.scan = jax.jit(scan, donate_argnums=0).lower(fresh(), self.scan_args).compile()
        self.step = jax.jit(b.step, donate_argnums=0).lower(fresh(),
                                                            self.step_args).compile()
        self.scan_state, self.step_state = fresh(), fresh()
        self.length = length
        self.samples = {"scan": [], "step": []}
        self.cpu = {"scan": [], "step": []}  # process CPU time (all threads) per step
        self.loss = None

    def run_scan(self) -> float:
        import jax

        t0, c0 = time.perf_counter(), time.process_time()
        self.scan_state, losses = self.scan(self.scan_state, self.scan_args)
        jax.block_until_ready(losses)
        self.cpu["scan"].append((time.process_time() - c0) / self.length)
        self.loss = float(losses[-1])
        return (time.perf_counter() - t0) / self.length

    def run_steps(self, n: int) -> float:
        import jax

        t0, c0 = time.perf_counter(), time.process_time()
        state, step, args = self.step_state, self.step, self.step_args
        for _ in range(n):
            state, loss = step(state, args)
        jax.block_until_ready(loss)
        self.cpu["step"].append((time.process_time() - c0) / n)
        self.step_state = state
        return (time.perf_counter() - t0) / n


def interleave(vs: list[Variant], rounds: int, calls: int, modes) -> None:
    for v in vs:  # warm up
        v.run_scan()
        v.run_steps(2)
        v.cpu = {"scan": [], "step": []}
    for r in range(rounds):
        for v in common.rotated(vs, r):
            if "scan" in modes:
                v.samples["scan"].append(v.run_scan())
            if "step" in modes:
                v.samples["step"].append(v.run_steps(calls))


def _q10(xs):
    return statistics.quantiles(xs, n=10)[0] if len(xs) >= 10 else min(xs)


# ---------------------------------------------------------------------------- profile
def thunk_profile(vs: list[Variant], rounds: int) -> dict:
    """Busy and idle time per loop iteration of each variant's scan, from XLA:CPU's thunk
    trace events (``jax.profiler``, Perfetto JSON)."""
    import jax

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for r in range(rounds):
                for v in common.rotated(vs, r):
                    v.run_scan()
        paths = sorted(glob.glob(os.path.join(d, "**", "*perfetto_trace.json.gz"),
                                 recursive=True))
        if not paths:
            return {"error": "no perfetto trace written"}
        with gzip.open(paths[-1]) as f:
            ev = json.load(f)
    events = ev["traceEvents"] if isinstance(ev, dict) else ev
    by_mod = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "hlo_module" in e.get("args", {}):
            by_mod[e["args"]["hlo_module"]].append(e)
    out = {}
    for v in vs:
        mods = [m for m in by_mod if m.endswith(_fn_name(v.name))]
        if not mods:
            continue
        es = sorted((e for e in by_mod[mods[0]] if not e["name"].startswith("while")),
                    key=lambda e: e["ts"])
        # one loop iteration starts with the dynamic slice of the stacked batches
        its, cur = [], []
        for e in es:
            end = max((x["ts"] + x["dur"] for x in cur), default=e["ts"])
            if cur and (e["name"].startswith("dynamic-slice") or e["ts"] - end > 1000):
                its.append(cur)  # a new iteration, or the next call (a gap of > 1 ms)
                cur = []
            cur.append(e)
        its = [it for it in its[2:] if len(it) > 20]
        busy, idle, gaps = [], [], collections.defaultdict(list)
        durations = collections.defaultdict(list)
        for it in its:
            iv = sorted(it, key=lambda x: x["ts"])
            for x in iv:
                durations[x["name"]].append(x["dur"])
            t0, end = iv[0]["ts"], iv[0]["ts"] + iv[0]["dur"]
            covered, cs = 0.0, t0
            for x in iv[1:]:
                if x["ts"] > end + 0.5:
                    gaps[x["name"]].append(x["ts"] - end)
                if x["ts"] > end:
                    covered += end - cs
                    cs = x["ts"]
                end = max(end, x["ts"] + x["dur"])
            covered += end - cs
            busy.append(sum(x["dur"] for x in iv))
            idle.append((end - t0) - covered)
        n = max(len(its), 1)
        top = sorted(gaps.items(), key=lambda kv: -sum(kv[1]))[:3]
        out[v.name] = {"iterations": len(its),
                       "busy_us_median": statistics.median(busy) if busy else None,
                       "idle_us_median": statistics.median(idle) if idle else None,
                       "gaps": [{"before": k, "us_per_step": sum(g) / n,
                                 "median_us": statistics.median(g)} for k, g in top],
                       "thunk_us_median": dict(sorted(
                           ((k, statistics.median(d)) for k, d in durations.items()),
                           key=lambda kv: -kv[1])[:8])}
    return out


# ---------------------------------------------------------------------------- graph
_GRAPH_SNIPPET = r"""
import sys
sys.path.insert(0, {root!r})
import jax
from benchmarks.small_mlp_probe import Variant
from benchmarks.cases import make_cases
v = Variant({name!r}, make_cases("cpu")["small_mlp"], 4)
v.run_scan()
"""


def thunk_graph(name: str, tail: int = 14) -> str:
    """The last ``tail`` thunks of the scan body's ``ThunkExecutor`` graph (XLA's log)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="thunk_executor=6")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _GRAPH_SNIPPET.format(root=root, name=name)],
                          env=env, capture_output=True, text=True, timeout=600)
    blocks, cur = [], None
    for line in proc.stderr.splitlines() + proc.stdout.splitlines():
        if line.strip().startswith("ThunkExecutor: #thunks="):
            cur = []
            blocks.append(cur)
        elif cur is not None and "thunk #" in line:
            cur.append(line.strip())
    body = [b for b in blocks if any("dynamic-slice" in t for t in b)]
    if not body:
        return "no ThunkExecutor graph found (XLA's log format may have changed)"
    rows = []
    for t in max(body, key=len)[-tail:]:
        m = re.search(r"op_name=([^,]+),.*dependencies=\[([^\]]*)\].*priority=(\d+)", t)
        if m:
            rows.append(f"{m.group(1):32s} priority {m.group(3):>3}  after: {m.group(2)}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- main
def markdown(res: dict) -> str:
    env = res["env"]
    c = res["case"]
    lines = [f"# Variants of the `{c['name']}` step on {env['device']['device_kind']} "
             f"({env['device']['platform']})\n",
             f"- case: {c['model']} {c['dims']}, batch {c['batch']}, {c['dtype']}",
             f"- {common.host_text(env)}; load average at start "
             f"{res['loadavg_start']}, at end {res['loadavg_end']}",
             f"- versions: {common.versions_text(env)}",
             f"- {res['rounds']} interleaved rounds; scan: {res['length']} steps per call; "
             f"step: {res['calls']} dispatched steps per sample",
             f"- command: `{res['command']}`; wall time {res['wall_s']:.0f} s\n",
             "| variant | mode | median µs/step | p10 µs/step | × funcnet (median) | "
             "× funcnet (p10) | CPU µs/step | × funcnet (CPU) | loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['variant']} | {r['mode']} | {r['median_us']:.1f} | "
                     f"{r['p10_us']:.1f} | {r['ratio_median']:.3f} | {r['ratio_p10']:.3f} | "
                     f"{r['cpu_us']:.1f} | {r['ratio_cpu']:.3f} | {r['loss']:.4f} |")
    prof = res.get("profile")
    if prof:
        lines += ["\n## XLA:CPU thunks per scan step (jax.profiler)\n",
                  "| variant | busy µs | idle µs | thunks after the largest idle gaps "
                  "(µs per step) |", "|---|---:|---:|---|"]
        for name, p in prof.items():
            if not isinstance(p, dict) or "busy_us_median" not in p:
                continue
            gaps = "; ".join(f"{g['before']} {g['us_per_step']:.1f}" for g in p["gaps"])
            lines.append(f"| {name} | {p['busy_us_median']:.1f} | {p['idle_us_median']:.1f} "
                         f"| {gaps} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(DEFAULT),
                   help="comma-separated; choose from funcnet, jax, flax, equinox, "
                        + ", ".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 60)")
    p.add_argument("--length", type=int, default=50, help="steps per scan call")
    p.add_argument("--calls", type=int, default=50, help="dispatched steps per step sample")
    p.add_argument("--modes", default="scan,step")
    p.add_argument("--profile", action="store_true", help="add the thunk busy/idle profile")
    p.add_argument("--graph", default=None, metavar="VARIANT",
                   help="only print the end of VARIANT's scan-body thunk graph")
    p.add_argument("--case", default="small_mlp",
                   help="a case of the cpu size profile (cases.py); the replicas need an MLP")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None,
                   help="output folder (default benchmarks/results/<platform>[-quick])")
    args = p.parse_args(argv)
    if args.graph:
        print(thunk_graph(args.graph))
        return {}
    import jax

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rounds = args.rounds or (3 if args.quick else 60)
    length = 4 if args.quick else args.length
    calls = 4 if args.quick else args.calls
    modes = set(args.modes.split(","))
    case = make_cases("cpu")[args.case]
    names = [n for n in args.variants.split(",") if n]
    vs = []
    for n in names:
        try:
            vs.append(Variant(n, case, length))
        except Exception as exc:  # noqa: BLE001 - a missing peer: go on with the others
            print(f"skipping {n}: {common.error_text(exc, 200)}"[:200])
    interleave(vs, rounds, calls, modes)
    rows = []
    base = {m: next((v for v in vs if v.name == "funcnet"), vs[0]) for m in modes}
    for v in vs:
        for m in sorted(modes):
            s, b = v.samples[m], base[m].samples[m]
            rows.append({"variant": v.name, "mode": m,
                         "median_us": statistics.median(s) * 1e6, "p10_us": _q10(s) * 1e6,
                         "ratio_median": statistics.median(s) / statistics.median(b),
                         "ratio_p10": _q10(s) / _q10(b), "n": len(s), "loss": v.loss,
                         "cpu_us": statistics.median(v.cpu[m]) * 1e6,
                         "ratio_cpu": statistics.median(v.cpu[m]) / statistics.median(
                             base[m].cpu[m])})
            print(f"{v.name:>20} {m:>4}: median {rows[-1]['median_us']:8.1f} µs  p10 "
                  f"{rows[-1]['p10_us']:8.1f} µs  × funcnet {rows[-1]['ratio_median']:.3f} "
                  f"(p10 {rows[-1]['ratio_p10']:.3f}); CPU {rows[-1]['cpu_us']:7.1f} µs "
                  f"(× {rows[-1]['ratio_cpu']:.3f})", flush=True)
    prof = thunk_profile(vs, max(2, rounds // 4)) if args.profile else None
    if prof:
        for name, pr in prof.items():
            if isinstance(pr, dict) and pr.get("busy_us_median") is not None:
                print(f"{name:>20} thunks: busy {pr['busy_us_median']:.1f} µs, idle "
                      f"{pr['idle_us_median']:.1f} µs per step; gaps before "
                      + ", ".join(f"{g['before']} ({g['us_per_step']:.1f})"
                                  for g in pr["gaps"]))
    platform = jax.devices()[0].platform
    out_dir = args.out or common.results_dir(platform, args.quick)
    stem = "small_mlp_probe" if args.case == "small_mlp" else f"probe_{args.case}"
    res = {"case": case.to_json(), "env": common.environment(), "rounds": rounds,
           "length": length, "calls": calls, "rows": rows, "profile": prof,
           "loadavg_start": load0,
           "loadavg_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
           "command": common.command("small_mlp_probe", argv),
           "wall_s": time.perf_counter() - t_start}
    common.write_results(out_dir, stem, res, markdown(res))
    return res


if __name__ == "__main__":
    main()
