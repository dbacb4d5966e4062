"""Shared benchmark machinery: timing, device peak, memory, versions, JSON/Markdown output.

Timing protocol (see README): every library of a case is compiled and warmed up first,
then the libraries are sampled round by round, in a random (seeded) order each round, so
that all of them see the same machine load (``benchmarks.run``; the smaller scripts rotate
the order, :func:`rotated`). One sample is ``n_inner`` back-to-back steps dispatched
from Python (per-step mode) or one ``lax.scan`` call of ``scan_length`` steps (scan mode),
followed by a wait for the device; its time divided by the number of steps is one
per-step time. We report the median and the interquartile range over the samples.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np


# ----------------------------------------------------------------------------- timing
def summarize(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and min of per-step times (seconds)."""
    if not samples:
        return {"median_s": math.nan, "q1_s": math.nan, "q3_s": math.nan, "min_s": math.nan,
                "n": 0}
    xs = sorted(samples)
    if len(xs) >= 4:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1, q3 = xs[0], xs[-1]
    return {"median_s": statistics.median(xs), "q1_s": q1, "q3_s": q3, "min_s": xs[0],
            "n": len(xs)}


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_calls(fn: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``n`` back-to-back ``fn()`` calls and one wait for the last result."""
    import jax

    t0 = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def rotated(items: list, r: int) -> list:
    """Round ``r``'s order of a round-robin whose order rotates by one every round."""
    k = r % len(items)
    return items[k:] + items[:k]


def interleaved(fns: dict, args: tuple, rounds: int, sample_s: float) -> dict:
    """``{name: summarize(...)}`` of the compiled ``fns`` called on ``args``: each sample
    is as many back-to-back calls as fill ``sample_s`` (from one timed warm call), the
    functions sampled round-robin in an order that rotates every round."""
    import jax

    calls = {k: max(1, int(sample_s / max(timed(lambda f=f: jax.block_until_ready(f(*args))),
                                          1e-6))) for k, f in fns.items()}
    samples = {k: [] for k in fns}
    for r in range(rounds):
        for k in rotated(list(fns), r):
            samples[k].append(time_calls(lambda f=fns[k]: f(*args), calls[k]))
    return {k: summarize(v) for k, v in samples.items()}


def versus(times: dict, a: str, b: str, chosen: str, chosen_key: str) -> dict:
    """Two lowerings ``a`` and ``b`` timed by :func:`interleaved`, and the one the library
    compiles (``chosen``, recorded under ``chosen_key``): ``{times, <chosen_key>, fastest,
    <a>_over_<b>, <chosen_key>_over_fastest}``."""
    best = min(times, key=lambda k: times[k]["median_s"])
    return {"times": times, chosen_key: chosen, "fastest": best,
            f"{a}_over_{b}": times[a]["median_s"] / times[b]["median_s"],
            f"{chosen_key}_over_fastest": times[chosen]["median_s"] / times[best]["median_s"]}


def versus_cells(case: dict, a: str, b: str, chosen_key: str) -> str:
    """The Markdown cells ``a ms | b ms | a / b | chosen | chosen / fastest |`` of a
    :func:`versus` case."""
    t = case["times"]
    return (f"{t[a]['median_s'] * 1e3:.2f} | {t[b]['median_s'] * 1e3:.2f} | "
            f"{case[f'{a}_over_{b}']:.2f} | {case[chosen_key]} | "
            f"{case[f'{chosen_key}_over_fastest']:.2f} |")


def run_shapes(stem: str, doc: str, argv, shapes: dict, quick_shapes: dict, bench_shape,
               markdown_fn, versus_keys: tuple[str, str, str]) -> dict:
    """The driver of a per-shape script (``conv_lowering``, ``pool_lowering``): parse
    ``--quick/--rounds/--out``, run ``bench_shape(name, shape, rounds, sample_s)`` per
    shape (a :func:`versus` case of ``versus_keys = (a, b, chosen_key)``), print its
    ratios, and write ``<stem>.json``/``.md`` after every shape (a run cut short keeps
    what it measured)."""
    import tempfile

    import jax

    p = script_parser(doc, "tiny sizes, 3 rounds (smoke test)", rounds_default=9)
    a = p.parse_args(argv)
    platform = jax.devices()[0].platform
    rounds = a.rounds or (3 if a.quick else 9)
    out = a.out or (os.path.join(tempfile.gettempdir(), f"funcnet-{stem}-quick")
                    if a.quick else results_dir(platform, quick=False))
    # a GPU's samples are steady: 50 ms ones keep every shape inside the device check's
    # stage (200 ms ones took 4 s per shape on an H200)
    sample_s = 0.005 if a.quick else (0.2 if platform == "cpu" else 0.05)
    t0 = time.perf_counter()
    shapes = quick_shapes if a.quick else shapes
    res = {"rounds": rounds, "cases": [], "command": command(stem, argv),
           "env": environment()}
    for name, shape in shapes.items():
        res["cases"].append(bench_shape(name, shape, rounds, sample_s))
        c, (a_, b_, k) = res["cases"][-1], versus_keys
        print(f"{name:36s} {a_}/{b_} {c[f'{a_}_over_{b_}']:.2f}  {k}={c[k]:6s} "
              f"{k}/fastest {c[f'{k}_over_fastest']:.2f}", flush=True)
        res["wall_s"] = time.perf_counter() - t0
        write_results(out, stem, res, markdown_fn(res), announce=name == list(shapes)[-1])
    return res


def copy_tree(tree):
    """Distinct buffers for every leaf (donation refuses a buffer passed twice)."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


def error_text(exc: BaseException, limit: int = 300) -> str:
    """``"<Type>: <first line of the message>"``, at most ``limit`` characters, for a row."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:limit]


# ----------------------------------------------------------------------------- device
def jax_device_info() -> dict[str, Any]:
    import jax

    dev = jax.devices()[0]
    info = {"platform": dev.platform, "device_kind": dev.device_kind,
            "device_count": jax.device_count()}
    info["memory_stats_available"] = device_memory_stats() is not None
    return info


def device_memory_stats() -> dict | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without the call
        return None
    return stats or None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_info() -> dict[str, Any]:
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}


def matmul_peak(dtype: str, n: int, repeats: int = 10) -> dict[str, float]:
    """Measured peak: median time of a jitted ``(n, n) @ (n, n)`` in ``dtype``, in TFLOP/s."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    ts = [timed(lambda: f(a, a).block_until_ready()) for _ in range(repeats)]
    return {"n": n, "median_s": statistics.median(ts),
            "tflops": 2.0 * n ** 3 / statistics.median(ts) / 1e12}


def torch_matmul_peak(dtype: str, n: int, repeats: int = 5) -> dict[str, float] | None:
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, device=dev).to(getattr(torch, dtype))
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    a @ a
    sync()

    def one():
        a @ a
        sync()

    ts = [timed(one) for _ in range(repeats)]
    return {"n": n, "median_s": statistics.median(ts),
            "tflops": 2.0 * n ** 3 / statistics.median(ts) / 1e12}


# ----------------------------------------------------------------------------- memory
def compiled_memory(compiled) -> dict[str, int] | None:
    """XLA's compiled memory analysis: argument + output + temp - alias bytes."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    out = {k: int(getattr(m, k + "_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "temp", "alias", "generated_code")}
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    peak = getattr(m, "peak_memory_in_bytes", None)
    if peak:
        out["peak"] = int(peak)
    return out


# ----------------------------------------------------------------------------- versions
def library_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (imports nothing, so no torch threads start)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("jax", "jaxlib", "numpy", "funcnet", "flax", "equinox", "optax", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ----------------------------------------------------------------------------- output
def environment() -> dict[str, Any]:
    """``{"device", "host", "versions"}``: what every results file records."""
    return {"device": jax_device_info(), "host": host_info(), "versions": library_versions()}


def results_dir(platform: str, quick: bool) -> str:
    """The default output folder: ``benchmarks/results/<platform>[-quick]``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                        platform + ("-quick" if quick else ""))


def script_parser(doc: str, quick_help: str, rounds_default: int | None = None):
    """The ``argparse`` parser of a benchmark script: ``--quick``, ``--out`` (default
    :func:`results_dir`) and, with ``rounds_default``, ``--rounds``."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    if rounds_default is not None:
        p.add_argument("--rounds", type=int, default=None,
                       help=f"interleaved rounds (default {rounds_default})")
    p.add_argument("--out", default=None,
                   help="output folder (default benchmarks/results/<platform>[-quick])")
    return p


def command(module: str, argv: list[str] | None) -> str:
    """The command line a results file records: ``python -m benchmarks.<module> <args>``."""
    return f"python -m benchmarks.{module} " + " ".join(
        sys.argv[1:] if argv is None else argv)


def write_results(out_dir: str, stem: str, results: dict, markdown_text: str,
                  announce: bool = True) -> None:
    """``<out_dir>/<stem>.json`` and ``<stem>.md``; prints where they went if ``announce``."""
    write_json(os.path.join(out_dir, stem + ".json"), results)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(markdown_text)
    if announce:
        print(f"wrote {out_dir}/{stem}.json and .md in {results.get('wall_s', 0):.0f} s",
              flush=True)


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def _fmt(x, spec: str, none: str = "–") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def _mb(x, spec: str = ".2f") -> str:
    return _fmt(None if x is None else x / 2 ** 20, spec)


def host_text(env: dict) -> str:
    """``date (UTC): ...; host CPU: ... (N cores)`` of an ``environment()``."""
    h = env["host"]
    return f"date (UTC): {h['date_utc']}; host CPU: {h['cpu_model']} ({h['cpu_count']} cores)"


def header_lines(title: str, res: dict, *details: str) -> list[str]:
    """The head of a results Markdown file: ``# title — device``, host and versions, the
    ``details`` lines, then the command and wall time of ``res``."""
    env = res["env"]
    return [f"# {title} — {env['device']['device_kind']} ({env['device']['platform']})\n",
            f"- {host_text(env)}; versions: {versions_text(env)}",
            *(f"- {d}" for d in details),
            f"- command: `{res['command']}`; wall time {res['wall_s']:.0f} s\n"]


def versions_text(env: dict) -> str:
    """``jax 0.x, jaxlib 0.x, ...``: the installed versions of an ``environment()``."""
    return ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)


def markdown(results: dict) -> str:
    """The results as Markdown: header, one row per case x library, targets."""
    env, lines = results["env"], []
    lines.append(f"# funcnet benchmarks — {env['device']['device_kind']} "
                 f"({env['device']['platform']})\n")
    lines.append(f"- {host_text(env)}; profile `{results['profile']}`")
    lines.append(f"- versions: {versions_text(env)}")
    for dt, p in env.get("peak", {}).items():
        tp = env.get("torch_peak", {}).get(dt)
        tp_s = f"; torch {tp['tflops'] * 1e3:.1f} GFLOP/s" if tp else ""
        lines.append(f"- measured matmul peak {dt} ({p['n']}²): JAX "
                     f"{p['tflops'] * 1e3:.1f} GFLOP/s{tp_s}")
    lines.append(f"- memory column: {results['memory_note']}")
    partial = "" if results.get("complete", True) else (
        " — **partial: the run stopped before its last case**")
    lines.append(f"- command: `{results['command']}`; wall time {results['wall_s']:.0f} s"
                 f"{partial}\n")
    lines.append("| case | library | mode | median ms/step | IQR ms | n | GFLOP/s | % peak | "
                 "mem MB | resid MB | compile s | × best peer (same mode) | × best peer |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in results["cases"]:
        for r in case["rows"]:
            t = r["time"]
            if r.get("error"):
                lines.append(f"| {case['name']} | {r['library']} | {r['mode']} | error: "
                             f"{r['error'][:80]} |  |  |  |  |  |  |  |  |  |")
                continue
            lines.append(
                f"| {case['name']} | {r['library']} | {r['mode']}"
                f" | {_fmt(t['median_s'] * 1e3, '.3f')}"
                f" | {_fmt((t['q3_s'] - t['q1_s']) * 1e3, '.3f')} | {t['n']}"
                f" | {_fmt(r.get('gflops'), '.1f')} | {_fmt(r.get('pct_peak'), '.0f')}"
                f" | {_mb((r.get('memory') or {}).get('total'))} | {_mb(r.get('residual_bytes'))}"
                f" | {_fmt(r.get('compile_s'), '.2f')} | {_fmt(r.get('ratio_same_mode'), '.2f')}"
                f" | {_fmt(r.get('ratio_best_peer'), '.2f')} |")
    lines.append("")
    lines.append("## Case sizes\n")
    for case in results["cases"]:
        c = case["case"]
        lines.append(f"- `{c['name']}`: {c['model']} {c['dims']}, batch {c['batch']}, "
                     f"{c['dtype']}, scan length {c['scan_length']}, "
                     f"{c['flops_per_step'] / 1e9:.3f} GFLOP/step"
                     + (f" — {c['note']}" if c["note"] else ""))
    lines.append("\n## Targets\n")
    if not results.get("targets"):
        lines.append("(none evaluated: funcnet or the peers were not measured)")
    for tgt in results.get("targets", []):
        lines.append(f"- {tgt['text']}")
    lines.append("")
    return "\n".join(lines)
