"""Benchmark funcnet against plain JAX, Flax, Equinox and PyTorch: one entry point.

Usage::

    python -m benchmarks.run --sizes cpu --out benchmarks/results/cpu
    python -m benchmarks.run --quick                      # smoke test, tiny sizes
    python benchmarks/run.py --cases small_mlp,cnn_b100 --libs funcnet,jax,torch

Writes ``results.json`` and ``results.md`` to ``--out``. See ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.cases import ALL_CASES, Case, make_batches, make_cases  # noqa: E402
from benchmarks.libs import LIBRARIES, load  # noqa: E402
from benchmarks.torch_worker import Worker, case_fields  # noqa: E402

JAX_LIBS = ("funcnet", "jax", "flax", "equinox")
SLOW_STEP_S = 1.0  # an entry slower than this per step gets only MIN_SLOW_SAMPLES samples
MIN_SLOW_SAMPLES = 3


class Entry:
    """One (library, mode) of a case: compiled, warmed up, sampled by the runner."""

    def __init__(self, library: str, mode: str):
        self.library, self.mode = library, mode
        self.samples: list[float] = []
        self.error: str | None = None
        self.compile_s: float | None = None
        self.memory: dict | None = None
        self.residual_bytes: int | None = None
        self.device_peak_bytes: int | None = None
        self.losses: list[float] = []
        self.n_inner = 1
        self.max_samples: int | None = None
        self.extra: dict = {}

    def sample(self) -> float:
        raise NotImplementedError

    def set_inner(self, n: int):
        self.n_inner = n

    def row(self) -> dict:
        return {"library": self.library, "mode": self.mode, "error": self.error,
                "time": common.summarize(self.samples), "steps_per_sample": self.n_inner,
                "compile_s": self.compile_s, "memory": self.memory,
                "residual_bytes": self.residual_bytes,
                "device_peak_bytes_running": self.device_peak_bytes,
                "loss_first": self.losses[0] if self.losses else None,
                "loss_last": self.losses[-1] if self.losses else None, **self.extra}


class JaxEntry(Entry):
    def __init__(self, library, mode, case: Case, residuals: bool):
        super().__init__(library, mode)
        import jax
        from jax import lax

        from funcnet import nn

        mod = load(library)
        b = mod.build(case)
        self.state = common.copy_tree(b.state)  # donation never sees one buffer twice
        x, y = make_batches(case, 1, seed=1)
        batch = b.prepare(x[0], y[0])
        if residuals:
            self.residual_bytes = nn.residual_bytes(b.loss, b.params, batch,
                                                    include_arguments=False)
        if mode == "step":
            fn, self.args, self.steps = jax.jit(b.step, donate_argnums=0), batch, 1
        else:
            xs, ys = make_batches(case, case.scan_length, seed=2)
            fn = jax.jit(lambda s, bs: lax.scan(b.step, s, bs), donate_argnums=0)
            self.args, self.steps = b.prepare(xs, ys), case.scan_length
        t0 = time.perf_counter()
        self.fn = fn.lower(self.state, self.args).compile()
        self.compile_s = time.perf_counter() - t0
        self.memory = common.compiled_memory(self.fn)
        self._jax = jax

    def _run(self, n: int):
        loss = None
        for _ in range(n):
            self.state, loss = self.fn(self.state, self.args)
        self._jax.block_until_ready((self.state, loss))
        return loss

    def sample(self) -> float:
        t0 = time.perf_counter()
        loss = self._run(self.n_inner)
        dt = (time.perf_counter() - t0) / (self.n_inner * self.steps)
        self.losses.append(float(np.ravel(np.asarray(loss, np.float32))[-1]))
        return dt


class TorchEntry(Entry):
    """A PyTorch entry whose steps run in a worker process (see ``torch_worker``)."""

    def __init__(self, library, mode, case: Case, residuals: bool, worker):
        super().__init__(library, mode)
        self.w = worker
        info = worker.call("build", case=case_fields(case), mode=mode, residuals=residuals)
        self.compile_s, self.residual_bytes = info["compile_s"], info["residual_bytes"]
        self.extra["torch_device"] = info["device"]
        if info.get("peak_bytes"):  # CUDA: torch.cuda.max_memory_allocated of this entry
            self.memory = {"total": info["peak_bytes"], "peak": info["peak_bytes"],
                           "source": "torch.cuda.max_memory_allocated"}
            self.device_peak_bytes = info["peak_bytes"]
        self.steps = 1

    def _run(self, n: int):
        self.w.call("run", mode=self.mode, n=n)

    def set_inner(self, n: int):
        self.n_inner = n
        self.w.call("set_inner", mode=self.mode, n=n)

    def sample(self) -> float:
        dt, loss = self.w.call("sample", mode=self.mode)
        self.losses.append(loss)
        return dt


def make_entries(case: Case, libs: list[str], scan: bool, log, worker,
                 torch_modes=("eager", "compile")) -> list[Entry]:
    entries: list[Entry] = []
    for lib in libs:
        if lib in JAX_LIBS:
            modes = ["step", "scan"] if scan else ["step"]
        else:
            modes = list(torch_modes)
        for i, mode in enumerate(modes):
            t0 = time.perf_counter()
            try:
                if lib in JAX_LIBS:
                    e = JaxEntry(lib, mode, case, residuals=(i == 0))
                else:
                    e = TorchEntry(lib, mode, case, residuals=(i == 0), worker=worker)
            except Exception as exc:  # noqa: BLE001 - record and go on with the others
                e = Entry(lib, mode)
                e.error = common.error_text(exc)
                log(f"  {lib}/{mode}: build failed: {e.error}")
                log("".join(traceback.format_exception(exc))[-2000:], verbose=True)
            else:
                log(f"  {lib}/{mode}: built in {time.perf_counter() - t0:.1f} s"
                    f" (compile {common._fmt(e.compile_s, '.2f')} s)")
            entries.append(e)
    return entries


def warm_up(e: Entry, sample_s: float, repeats: int, log) -> None:
    """Two untimed calls, then pick n_inner so one sample takes about ``sample_s``."""
    try:
        e._run(1)
        t = common.timed(lambda: e._run(1)) / e.steps
        e.set_inner(1 if e.steps > 1 else int(min(200, max(1, sample_s // max(t, 1e-7)))))
        if t > SLOW_STEP_S:
            e.max_samples = min(repeats, MIN_SLOW_SAMPLES)
            e.extra["note"] = (f"{t:.1f} s/step: only {e.max_samples} samples")
    except Exception as exc:  # noqa: BLE001
        e.error = common.error_text(exc)
        log(f"  {e.library}/{e.mode}: warm-up failed: {e.error}")


def measure(entries: list[Entry], case: Case, budget_s: float, max_repeats: int, log) -> None:
    live = [e for e in entries if e.error is None]
    t0 = time.perf_counter()
    r = 0
    rng = np.random.default_rng(0)
    while live:
        # A random order each round (seeded): an entry measured right after PyTorch's
        # worker competes with its spinning OpenMP threads; a fixed rotation put the same
        # entry (funcnet/step, after torch/compile) there in every round.
        order = [live[i] for i in rng.permutation(len(live))]
        for e in order:
            try:
                e.samples.append(e.sample())
            except Exception as exc:  # noqa: BLE001
                e.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                log(f"  {e.library}/{e.mode}: failed while timing: {e.error}")
        r += 1
        live = [e for e in live if e.error is None
                and (e.max_samples is None or len(e.samples) < e.max_samples)]
        if r >= max_repeats or (r >= case.repeats and time.perf_counter() - t0 > budget_s):
            break
    stats = common.device_memory_stats()
    if stats:  # JAX's process-wide running peak (PyTorch entries record their own)
        for e in entries:
            if isinstance(e, JaxEntry):
                e.device_peak_bytes = stats.get("peak_bytes_in_use")


def add_ratios(rows: list[dict], case: Case, peaks: dict) -> None:
    ok = [r for r in rows if not r["error"] and r["time"]["n"]]
    peers = [r for r in ok if r["library"] != "funcnet"]
    peak = peaks.get(case.dtype, {}).get("tflops")
    for r in ok:
        med = r["time"]["median_s"]
        r["gflops"] = case.flops / med / 1e9
        r["pct_peak"] = 100 * case.flops / med / 1e12 / peak if peak else None
        same = [p["time"]["median_s"] for p in peers if _mode_class(p) == _mode_class(r)]
        r["ratio_same_mode"] = med / min(same) if same else None
        r["ratio_best_peer"] = med / min(p["time"]["median_s"] for p in peers) if peers else None


def _mode_class(r: dict) -> str:
    return "scan" if r["mode"] == "scan" else "step"


def best(rows, pred):
    cands = [r for r in rows if pred(r) and not r["error"] and r["time"]["n"]]
    return min(cands, key=lambda r: r["time"]["median_s"]) if cands else None


JAX_PEERS = ("jax", "flax", "equinox")


def _is_fn(r):
    return r["library"] == "funcnet"


def _is_peer(r):
    return r["library"] != "funcnet"


def _is_jax_peer(r):
    return r["library"] in JAX_PEERS


def _time_target(c, goal, fn_pred, peer_pred, what):
    """funcnet's best row (``fn_pred``) / the best peer row (``peer_pred``) <= ``goal``."""
    fn, peer = best(c["rows"], fn_pred), best(c["rows"], peer_pred)
    if fn is None or peer is None:
        return None, f"{c['name']} ({what}): not evaluated (funcnet or peers missing)", {}
    ratio = fn["time"]["median_s"] / peer["time"]["median_s"]
    text = (f"{c['name']} ({what}): funcnet/{fn['mode']} {fn['time']['median_s'] * 1e3:.3f} "
            f"ms vs {peer['library']}/{peer['mode']} {peer['time']['median_s'] * 1e3:.3f} ms: "
            f"ratio {ratio:.2f}, target ≤ {goal}")
    return ratio <= goal, text, {"ratio": ratio, "goal_ratio": goal,
                                 "funcnet": f"{fn['library']}/{fn['mode']}",
                                 "peer": f"{peer['library']}/{peer['mode']}"}


def _mode(m):
    return (lambda r: r["mode"] == "scan") if m == "scan" else (lambda r: r["mode"] != "scan")


def _wide_mlp_target(c):
    """Accelerator target: funcnet's TFLOP/s >= the best peer's and >= 90% of the peak."""
    fn, peer = best(c["rows"], _is_fn), best(c["rows"], _is_peer)
    if fn is None or peer is None or fn.get("pct_peak") is None:
        return [(None, f"{c['name']}: not evaluated (funcnet, peers or peak missing)", {})]
    ratio = peer["time"]["median_s"] / fn["time"]["median_s"]  # TFLOP/s ratio
    pct = fn["pct_peak"]
    return [(ratio >= 1.0, f"{c['name']} (accelerator): funcnet/{fn['mode']} "
             f"{fn['gflops'] / 1e3:.1f} TFLOP/s vs {peer['library']}/{peer['mode']} "
             f"{peer['gflops'] / 1e3:.1f} TFLOP/s: × {ratio:.2f}, target ≥ 1.0",
             {"ratio": ratio, "goal_ratio": 1.0}),
            (pct >= 90.0, f"{c['name']} (accelerator): funcnet {pct:.0f}% of the measured "
             f"matmul peak, target ≥ 90%", {"pct_peak": pct, "goal_pct": 90.0})]


def _memory_target(c, goal):
    """funcnet's compiled step memory / the best JAX peer's <= ``goal``."""
    def mem(r):
        return (r.get("memory") or {}).get("total")
    fn = [r for r in c["rows"] if _is_fn(r) and not r["error"] and mem(r)]
    peers = [r for r in c["rows"] if _is_jax_peer(r) and not r["error"] and mem(r)]
    if not fn or not peers:
        return None, f"{c['name']} (memory): not evaluated", {}
    f, p = min(fn, key=mem), min(peers, key=mem)
    ratio = mem(f) / mem(p)
    return ratio <= goal, (f"{c['name']} (memory): funcnet/{f['mode']} {mem(f) / 2 ** 20:.1f} "
                           f"MiB vs {p['library']}/{p['mode']} {mem(p) / 2 ** 20:.1f} MiB "
                           f"(compiled memory): ratio {ratio:.2f}, target ≤ {goal}"), {
        "ratio": ratio, "goal_ratio": goal}


def targets(cases_out: list[dict]) -> list[dict]:
    """The issues' targets for the cases of this run, as ratios to the peers of the run.

    Issue 17: small MLP ≤ 1.0 × the best peer in each mode (per step, and inside
    ``lax.scan``); on an accelerator, the wide bf16 MLP ≥ 1.0 × the best peer's TFLOP/s and
    ≥ 90% of the measured matmul peak, the book CNN at batch 4096 (``cnn_large``) ≤ 0.9 ×
    the best peer's time and ≤ 0.8 × the best JAX peer's compiled memory. Issue 9: book
    CNN at batch 100 ≤ 0.5 × the best JAX peer.
    """
    out = []
    for c in cases_out:
        checks = []
        if c["name"] == "small_mlp":
            for m in ("step", "scan"):
                sel = _mode(m)
                checks.append(_time_target(c, 1.0, lambda r, s=sel: _is_fn(r) and s(r),
                                           lambda r, s=sel: _is_peer(r) and s(r),
                                           f"{m}, best peer of the same mode"))
        elif c["name"] == "cnn_b100":
            checks.append(_time_target(c, 0.5, _is_fn, _is_jax_peer, "best JAX peer"))
        elif c["name"] == "cnn_large":
            checks.append(_time_target(c, 0.9, _is_fn, _is_peer, "best peer"))
            checks.append(_memory_target(c, 0.8))
        elif c["name"] == "wide_mlp_bf16":
            checks.extend(_wide_mlp_target(c))
        for met, text, extra in checks:
            if met is not None:
                text += ": MET" if met else ": MISSED"
            out.append({"case": c["name"], "met": met, "text": text, **extra})
    return out


def finalize(results: dict) -> dict:
    """Fill derived fields: a library's residual bytes on all its rows; targets."""
    for c in results["cases"]:
        by_lib = {r["library"]: r["residual_bytes"] for r in c["rows"]
                  if r.get("residual_bytes") is not None}
        for r in c["rows"]:
            if r.get("residual_bytes") is None and r["mode"] != "compile":
                r["residual_bytes"] = by_lib.get(r["library"])
    results["targets"] = targets(results["cases"])
    return results


def render(path: str) -> None:
    """Re-write results.md next to a results.json (e.g. after editing the writer)."""
    import json

    with open(path) as f:
        results = finalize(json.load(f))
    common.write_json(path, results)
    with open(os.path.join(os.path.dirname(path), "results.md"), "w") as f:
        f.write(common.markdown(results))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(ALL_CASES),
                   help=f"comma-separated subset of {','.join(ALL_CASES)}")
    p.add_argument("--libs", default=",".join(LIBRARIES),
                   help="comma-separated subset of " + ",".join(LIBRARIES))
    p.add_argument("--sizes", default=None, choices=["cpu", "full"],
                   help="size profile (default: cpu on a CPU backend, full otherwise)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats (smoke test)")
    p.add_argument("--no-scan", action="store_true", help="skip the lax.scan mode")
    p.add_argument("--scan-cases", default=None,
                   help="comma-separated cases that also run the lax.scan mode (default: all)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per case after the minimum repeats (default 20, "
                        "quick 0)")
    p.add_argument("--max-repeats", type=int, default=200)
    p.add_argument("--sample-ms", type=float, default=30.0,
                   help="target duration of one per-step-mode sample")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/"
                   "<platform>[-quick])")
    p.add_argument("--torch-modes", default="eager,compile",
                   help="PyTorch modes to run: eager, compile (torch.compile)")
    p.add_argument("--omp-passive", action="store_true",
                   help="run PyTorch with OMP_WAIT_POLICY=PASSIVE (its OpenMP threads sleep "
                        "instead of spinning: much faster on an oversubscribed machine, "
                        "recorded in the results)")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON",
                   help="only re-write results.md from an existing results.json")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.render:
        render(args.render)
        return {}

    if args.omp_passive:  # inherited by the PyTorch worker processes
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import jax

    def log(msg, verbose=False):
        if args.verbose or not verbose:
            print(msg, flush=True)

    t_start = time.perf_counter()
    platform = jax.devices()[0].platform
    profile = "quick" if args.quick else (args.sizes or ("cpu" if platform == "cpu" else "full"))
    all_cases = make_cases(profile)
    names = [c for c in args.cases.split(",") if c]
    for n in names:
        if n not in all_cases:
            p.error(f"unknown case {n!r}; choose from {', '.join(ALL_CASES)}")
    budget = args.budget if args.budget is not None else (0.0 if args.quick else 20.0)
    out_dir = args.out or common.results_dir(platform, args.quick)

    libs = []
    for lib in [x for x in args.libs.split(",") if x]:
        if lib not in LIBRARIES:
            p.error(f"unknown library {lib!r}; choose from {', '.join(LIBRARIES)}")
        try:
            load(lib).versions()
            libs.append(lib)
        except Exception as exc:  # noqa: BLE001 - optional peer not installed
            log(f"skipping {lib}: {type(exc).__name__}: {exc}")

    env = {**common.environment(), "peak": {}, "torch_peak": {},
           "env_vars": {k: os.environ.get(k) for k in (
               "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS",
               "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE")}}
    log(f"device: {env['device']}; libraries: {libs}; profile {profile}")
    dtypes = sorted({all_cases[n].dtype for n in names})
    worker = Worker() if "torch" in libs else None
    n_mm = 256 if args.quick else (2048 if platform == "cpu" else 8192)
    for dt in dtypes:
        env["peak"][dt] = common.matmul_peak(dt, n_mm, repeats=3 if args.quick else 10)
        if "torch" in libs:
            w = worker
            try:
                tp = w.call("peak", dtype=dt, n=min(n_mm, 1024) if dt == "bfloat16"
                            and platform == "cpu" else n_mm, repeats=2 if args.quick else 5)
            except RuntimeError as exc:
                log(f"torch matmul peak failed: {exc}")
                tp = None
            if tp:
                env["torch_peak"][dt] = tp
        log(f"matmul peak {dt}: JAX {env['peak'][dt]['tflops'] * 1e3:.1f} GFLOP/s"
            + (f", torch {env['torch_peak'][dt]['tflops'] * 1e3:.1f} GFLOP/s"
               if dt in env["torch_peak"] else ""))

    scan_cases = None if args.scan_cases is None else set(args.scan_cases.split(","))
    command = common.command("run", argv)

    def write(cases_out, complete):
        """results.json/md with the cases done so far (a killed run keeps them); the last
        write logs the targets and where the files went."""
        results = {
            "profile": profile, "env": env, "cases": cases_out, "complete": complete,
            "command": command,
            "memory_note": ("JAX libraries: XLA compiled memory analysis of the jitted step "
                            "(argument + output + temp - aliased bytes; the state is "
                            "donated); PyTorch on CUDA: torch.cuda.max_memory_allocated of "
                            "the entry; resid MB: activation bytes saved for the backward "
                            "pass (jax saved_residuals / torch saved_tensors_hooks, params "
                            "and inputs excluded). Device peak (memory_stats) is recorded in "
                            "the JSON where the backend has it (a running, process-wide "
                            "peak)."),
            "wall_s": time.perf_counter() - t_start,
        }
        finalize(results)
        if complete:
            for t in results["targets"]:
                log(t["text"])
        common.write_results(out_dir, "results", results, common.markdown(results),
                             announce=complete)
        return results

    cases_out = []
    for name in names:
        case = all_cases[name]
        log(f"case {name}: {case.model} {case.dims} batch {case.batch} {case.dtype}")
        t0 = time.perf_counter()
        scan = not args.no_scan and (scan_cases is None or name in scan_cases)
        entries = make_entries(case, libs, scan=scan, log=log, worker=worker,
                               torch_modes=[m for m in args.torch_modes.split(",") if m])
        for e in entries:
            if e.error is None:
                warm_up(e, args.sample_ms / 1e3, case.repeats, log)
        measure(entries, case, budget, args.max_repeats, log)
        rows = [e.row() for e in entries]
        add_ratios(rows, case, env["peak"])
        for r in rows:
            if not r["error"]:
                log(f"  {r['library']:>8}/{r['mode']:<7} {r['time']['median_s'] * 1e3:9.3f} ms"
                    f"  (n={r['time']['n']}, x best peer "
                    f"{common._fmt(r.get('ratio_best_peer'), '.2f')})")
        cases_out.append({"name": name, "case": case.to_json(), "rows": rows,
                          "wall_s": time.perf_counter() - t0})
        del entries
        if worker is not None:
            worker.call("drop")
        write(cases_out, complete=False)
    if worker is not None:
        worker.close()

    return write(cases_out, complete=True)


if __name__ == "__main__":
    main()
