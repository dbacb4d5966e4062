"""Attention training step: funcnet's blockwise rule vs autodiff of the same math vs jax.nn.

One step is ``jax.grad`` of a scalar loss of the attention output with respect to ``q``,
``k`` and ``v`` (forward + backward), ``B = 1``, ``--heads`` heads of ``--head-dim``,
causal, for each sequence length ``T = S``:

* ``funcnet``: :func:`funcnet.ops.dot_product_attention` (online softmax over key blocks,
  backward recomputes the probabilities from the saved row statistics);
* ``autodiff``: ``jax.grad`` of its plain twin ``funcnet.ops.reference``
  (``softmax(q k^T * scale) v`` written out, which keeps the ``T x S`` probabilities);
* ``jax.nn``: ``jax.nn.dot_product_attention`` (``implementation=None``: XLA), plus
  ``implementation="cudnn"`` on a GPU;
* ``funcnet window`` / ``jax.nn window``: sliding-window attention of ``--window`` keys
  (``window=W``; ``local_window_size=(W - 1, 0)``), compared with each other (funcnet
  skips the keys outside the window: ``O(T W)``; jax.nn's XLA path masks a ``T x S``).
* ``funcnet window dropout`` / ``autodiff window dropout``: the same window with dropout
  0.1 on the probabilities (jax.nn has none), funcnet's rule (each query block draws its
  rows' window masks, forward and backward) against autodiff of its twin (one ``T x S``
  mask), compared with each other.
* ``funcnet alibi`` / ``funcnet alibi bias`` / ``jax.nn alibi`` (``--alibi``, on by
  default): ALiBi with the paper's slopes, as funcnet's ``alibi_slopes=`` (computed per key
  block), as a ``(1, N, T, S)`` ``bias=`` (what a model without the option passes) and as
  ``jax.nn``'s ``bias=``, compared with each other.
* ``funcnet soft cap`` / ``autodiff soft cap`` (``--soft-cap c``, 50 by default: Gemma 2's):
  the logits soft-capped to ``c tanh(x / c)`` (``logit_soft_cap=c``; jax.nn has none),
  funcnet's rule (the cap recomputed per key block) against autodiff of its twin, compared
  with each other; ``... traced``: the cap as data (a learnable cap, a ``vmap`` sweep),
  whose gradient ``dL/dc`` the step computes too.
* ``funcnet t5`` / ``funcnet t5 bias`` / ``autodiff t5`` / ``jax.nn t5`` (``--t5``): T5's
  causal relative-position bias (32 buckets, max distance 128) from a learned ``(32, N)``
  table, as funcnet's ``bias_fn=`` (gathered per block, the table the only residual), as
  a ``(1, N, T, S)`` ``bias=`` gathered first (what ``nn.MultiHeadAttention`` passed
  before ``bias_fn``), through the twin and through ``jax.nn``'s ``bias=``; the table is
  tied to ``q`` so that the step takes its gradient too. Compared with each other.
* ``funcnet packed`` / ``funcnet packed mask`` / ``autodiff packed`` / ``jax.nn packed``
  (``--packed``): 4 sequences of ``T / 4`` packed in a row, causal, as funcnet's
  ``mask_fn=`` over ``(1, T)`` segment ids (per block, the ids the only residual), as a
  ``(1, 1, T, S)`` boolean ``mask`` (the caller's array kept), through the twin and through
  ``jax.nn``'s ``mask=``. Compared with each other.

Per case and variant: median time of a step (the variants are sampled round-robin, the
order rotating, as ``benchmarks/run.py`` does), the bytes saved for the backward pass
(``funcnet.nn.memory.residual_bytes``, arguments excluded), XLA's compiled temp bytes, and
the ratios to the best JAX alternative. A variant whose residuals would exceed
``--mem-limit-gb`` is recorded as skipped, not run.

Usage::

    python -m benchmarks.attention --quick          # tiny T, seconds (smoke test)
    python -m benchmarks.attention                  # T = 512 ... 8192 (quiet machine)
    python -m benchmarks.attention --render benchmarks/results/cpu/attention.json

Writes ``attention.json`` and ``attention.md`` to ``benchmarks/results/<platform>/``
(``<platform>-quick`` with ``--quick``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

FULL_T = (512, 1024, 2048, 4096, 8192)
QUICK_T = (128, 256)
MEMORY_TARGET_T, MEMORY_TARGET_RATIO, TIME_TARGET_RATIO = 1024, 4.0, 1.2


def group(variant: str) -> str:
    """The variants compared with each other: ``''``, ``'window dropout'``, ``'window'``,
    ``'alibi'``, ``'soft cap'``, ``'t5'`` or ``'packed'``."""
    return next((g for g in ("window dropout", "window", "alibi", "soft cap", "t5", "packed")
                 if g in variant), "")


def variants(platform: str, dtype: str, window: int = 0, alibi: bool = False,
             soft_cap: float = 0.0, t5: bool = False, packed: bool = False) -> dict:
    import jax
    import jax.numpy as jnp

    from funcnet import ops
    from funcnet.nn.position_bias import alibi_slopes

    out = {
        "funcnet": lambda q, k, v: ops.dot_product_attention(q, k, v, causal=True),
        "autodiff": lambda q, k, v: ops.reference.dot_product_attention(q, k, v, causal=True),
        "jax.nn": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True),
    }
    if window:
        out["funcnet window"] = lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True, window=window)
        out["jax.nn window"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, local_window_size=(window - 1, 0))
        drop = dict(causal=True, window=window, dropout_rate=0.1,
                    dropout_key=jax.random.PRNGKey(0))
        out["funcnet window dropout"] = lambda q, k, v: ops.dot_product_attention(
            q, k, v, **drop)
        out["autodiff window dropout"] = lambda q, k, v: ops.reference.dot_product_attention(
            q, k, v, **drop)
    if alibi:
        def bias(q):   # -m_n |i - j|, (1, N, T, S) in float32
            t, n = q.shape[1], q.shape[2]
            dist = jnp.abs(jnp.arange(t)[:, None] - jnp.arange(t)[None, :]).astype(jnp.float32)
            return -(jnp.asarray(alibi_slopes(n), jnp.float32)[:, None, None] * dist)[None]
        out["funcnet alibi"] = lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True,
            alibi_slopes=jnp.asarray(alibi_slopes(q.shape[2]), jnp.float32))
        out["funcnet alibi bias"] = lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True, bias=bias(q))
        out["jax.nn alibi"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, bias=bias(q).astype(q.dtype))
    if soft_cap:
        out["funcnet soft cap"] = lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True, logit_soft_cap=soft_cap)
        out["autodiff soft cap"] = lambda q, k, v: ops.reference.dot_product_attention(
            q, k, v, causal=True, logit_soft_cap=soft_cap)

        def traced(q):   # the cap as data: tied to q by 0 * q[0, 0, 0, 0], so that the
            return soft_cap + 0.0 * q[0, 0, 0, 0].astype(jnp.float32)   # step takes dL/dc
        out["funcnet soft cap traced"] = lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True, logit_soft_cap=traced(q))
        out["autodiff soft cap traced"] = lambda q, k, v: ops.reference.dot_product_attention(
            q, k, v, causal=True, logit_soft_cap=traced(q))
    if t5:
        out.update(_t5_variants())
    if packed:
        out.update(_packed_variants())
    if platform == "gpu" and dtype in ("float16", "bfloat16"):   # cuDNN's dtypes
        out["jax.nn cudnn"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, implementation="cudnn")
    return out


def _t5_variants() -> dict:
    """T5's causal bias (32 buckets, max distance 128) four ways (module docstring)."""
    import jax
    import jax.numpy as jnp

    from funcnet import ops
    from funcnet.nn import position_bias

    fn = position_bias.t5_bias_fn(position_bias.check("t5", "t5", (32, 128), True))

    def table(q):   # a fixed (32, N) table tied to q by 0 * q[0, 0, 0, 0]: dL/dtable too
        n = q.shape[2]
        base = jnp.cos(jnp.arange(32 * n, dtype=jnp.float32)).reshape(32, n)
        return base + 0.0 * q[0, 0, 0, 0].astype(jnp.float32)

    def dense(q):   # (1, N, T, T)
        pos = jnp.arange(q.shape[1], dtype=jnp.int32)
        return fn(table(q), pos, pos)[None]

    return {
        "funcnet t5": lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True, bias_fn=fn, bias_params=table(q)),
        "funcnet t5 bias": lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True, bias=dense(q)),
        "autodiff t5": lambda q, k, v: ops.reference.dot_product_attention(
            q, k, v, causal=True, bias=dense(q)),
        "jax.nn t5": lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, bias=dense(q).astype(q.dtype)),
    }


def _packed_variants() -> dict:
    """4 causal sequences packed in a row, four ways (module docstring)."""
    import jax
    import jax.numpy as jnp

    from funcnet import ops

    def segments(q):   # (1, T): ids 0..3, T / 4 positions each
        return (jnp.arange(q.shape[1], dtype=jnp.int32) * 4 // q.shape[1])[None]

    def same(seg, rows, cols):
        return seg[:, rows][:, None, :, None] == seg[:, cols][:, None, None, :]

    def dense(q):   # (1, 1, T, T) bool
        pos = jnp.arange(q.shape[1], dtype=jnp.int32)
        return same(segments(q), pos, pos)

    return {
        "funcnet packed": lambda q, k, v: ops.dot_product_attention(
            q, k, v, causal=True, mask_fn=same, mask_params=segments(q)),
        "funcnet packed mask": lambda q, k, v: ops.dot_product_attention(
            q, k, v, dense(q), causal=True),
        "autodiff packed": lambda q, k, v: ops.reference.dot_product_attention(
            q, k, v, dense(q), causal=True),
        "jax.nn packed": lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, mask=dense(q), is_causal=True),
    }


class Entry:
    """One (T, variant): residual bytes by tracing, then compiled and sampled."""

    def __init__(self, name, attn, t, args, mem_limit, log):
        import jax
        import jax.numpy as jnp

        from funcnet import nn

        self.name, self.samples, self.error, self.skipped = name, [], None, None
        self.compile_s = self.memory = None
        self.n_inner = 1

        def loss(qkv, _):
            return jnp.sum(attn(*qkv).astype(jnp.float32) ** 2)

        self.residual_bytes = nn.residual_bytes(loss, args, (), include_arguments=False)
        if self.residual_bytes > mem_limit:
            self.skipped = (f"residuals {self.residual_bytes / 2 ** 30:.1f} GiB > "
                            f"--mem-limit-gb {mem_limit / 2 ** 30:.1f}")
            log(f"  T={t} {name}: skipped ({self.skipped})")
            return
        step = jax.jit(jax.grad(lambda *qkv: loss(qkv, None), argnums=(0, 1, 2)))
        try:
            t0 = time.perf_counter()
            self.fn = step.lower(*args).compile()
            self.compile_s = time.perf_counter() - t0
            self.memory = common.compiled_memory(self.fn)
            self.args = args
        except Exception as exc:  # noqa: BLE001 - out of memory, unsupported (cudnn)
            self.error = common.error_text(exc)
            log(f"  T={t} {name}: failed: {self.error}")

    def run(self, n: int) -> float:
        """Seconds per step of ``n`` steps and one wait."""
        return common.time_calls(lambda: self.fn(*self.args), n)

    def sample(self) -> float:
        return self.run(self.n_inner)

    @property
    def live(self) -> bool:
        return self.error is None and self.skipped is None

    def row(self) -> dict:
        return {"variant": self.name, "error": self.error, "skipped": self.skipped,
                "time": common.summarize(self.samples), "steps_per_sample": self.n_inner,
                "compile_s": self.compile_s, "memory": self.memory,
                "residual_bytes": self.residual_bytes}


def measure_case(t, args_ns, platform, log) -> dict:
    import jax
    import jax.numpy as jnp

    shape = (1, t, args_ns.heads, args_ns.head_dim)
    keys = jax.random.split(jax.random.PRNGKey(t), 3)
    args = tuple(jax.random.normal(k, shape, jnp.float32).astype(args_ns.dtype) for k in keys)
    limit = int(args_ns.mem_limit_gb * 2 ** 30)
    entries = [Entry(n, f, t, args, limit, log)
               for n, f in variants(platform, args_ns.dtype, args_ns.window,
                                    args_ns.alibi, args_ns.soft_cap, args_ns.t5,
                                    args_ns.packed).items()]
    live = [e for e in entries if e.live]
    for e in list(live):
        try:
            e.run(1)
            dt = e.run(1)
            e.n_inner = int(min(100, max(1, args_ns.sample_ms / 1e3 // max(dt, 1e-6))))
        except Exception as exc:  # noqa: BLE001
            e.error = common.error_text(exc)
            live.remove(e)
    t0, r = time.perf_counter(), 0
    while live and r < args_ns.max_repeats and (
            r < args_ns.repeats or time.perf_counter() - t0 < args_ns.budget):
        for e in common.rotated(live, r):
            e.samples.append(e.sample())
        r += 1
    rows = [e.row() for e in entries]
    ok = [x for x in rows if x["time"]["n"]]
    for x in ok:   # windowed, ALiBi, soft-cap, T5, packed variants: within their group
        others = [y["time"]["median_s"] for y in ok if not y["variant"].startswith("funcnet")
                  and group(y["variant"]) == group(x["variant"])]
        x["ratio_best_jax"] = x["time"]["median_s"] / min(others) if others else None
    fn = next((x for x in rows if x["variant"] == "funcnet"), None)
    for x in rows:
        x["residual_ratio_to_funcnet"] = (x["residual_bytes"] / fn["residual_bytes"]
                                          if fn and fn["residual_bytes"] else None)
        if x["time"]["n"]:
            log(f"  T={t:5d} {x['variant']:>23} {x['time']['median_s'] * 1e3:10.2f} ms  "
                f"resid {x['residual_bytes'] / 2 ** 20:9.2f} MiB  x best JAX "
                f"{common._fmt(x.get('ratio_best_jax'), '.2f')}")
    return {"T": t, "S": t, "shape": list(shape), "rows": rows}


def targets(cases) -> list[dict]:
    """Issue 15: residuals >= 4x smaller than autodiff at T = 1024 and linear in T; time
    within 1.2x of the best JAX alternative."""
    out = []

    def row(case, name):
        return next((x for x in case["rows"] if x["variant"] == name), None)

    at = next((c for c in cases if c["T"] == MEMORY_TARGET_T), None)
    if at is not None:
        ratio = row(at, "autodiff")["residual_ratio_to_funcnet"]
        out.append({"target": "memory", "met": ratio >= MEMORY_TARGET_RATIO, "ratio": ratio,
                    "text": f"residuals at T={MEMORY_TARGET_T}: autodiff / funcnet = "
                            f"{ratio:.0f}x (target >= {MEMORY_TARGET_RATIO:g}x): "
                            f"{'MET' if ratio >= MEMORY_TARGET_RATIO else 'MISSED'}"})
    per_t = [row(c, "funcnet")["residual_bytes"] / c["T"] for c in cases]
    linear = max(per_t) == min(per_t)
    out.append({"target": "linear", "met": linear, "bytes_per_token": per_t,
                "text": "funcnet residual bytes per token: "
                        + ", ".join(f"T={c['T']}: {b:,.0f}" for c, b in zip(cases, per_t))
                        + f" ({'constant: linear in T' if linear else 'NOT constant'})"})
    for c in cases:
        fn = row(c, "funcnet")
        ratio = fn.get("ratio_best_jax") if fn else None
        met = ratio is not None and ratio <= TIME_TARGET_RATIO
        out.append({"target": f"time T={c['T']}", "met": met if ratio else None,
                    "ratio": ratio,
                    "text": f"time at T={c['T']}: funcnet / best JAX alternative = "
                            f"{common._fmt(ratio, '.2f')} (target <= {TIME_TARGET_RATIO}): "
                            + ("not measured" if ratio is None else
                               "MET" if met else "MISSED")})
    return out


def markdown(res: dict) -> str:
    lines = common.header_lines(
        "Attention training step", res, f"profile `{res['profile']}`",
        f"step: grad of sum(attention(q, k, v)^2) w.r.t. q, k, v; causal; B=1, heads "
        f"{res['heads']}, head_dim {res['head_dim']}, {res['dtype']}, T = S"
        + (f"; 'window' variants: W = {res['window']}, compared with each other (and the "
           "'window dropout' ones, rate 0.1)" if res.get("window") else "")
        + ("; 'alibi' variants (slopes per key block, a (1, N, T, S) bias, jax.nn's bias) "
           "compared with each other" if res.get("alibi") else "")
        + (f"; 'soft cap' variants: logit_soft_cap = {res['soft_cap']:g}, compared with each "
           "other" if res.get("soft_cap") else "")
        + ("; 't5' variants (T5's causal bias from a (32, N) table: per block with bias_fn, "
           "a (1, N, T, S) bias, the twin, jax.nn's bias; the table's gradient too) compared "
           "with each other" if res.get("t5") else "")
        + ("; 'packed' variants (4 causal sequences packed in a row: mask_fn over segment "
           "ids, a (1, 1, T, S) mask, the twin, jax.nn's mask) compared with each other"
           if res.get("packed") else ""))
    lines += ["| T | variant | median ms | IQR ms | n | resid MiB | resid × funcnet | "
              "XLA temp MiB | compile s | × best JAX alternative |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in res["cases"]:
        for x in c["rows"]:
            t = x["time"]
            note = x["error"] or x["skipped"]
            lines.append(
                f"| {c['T']} | {x['variant']} | "
                + (f"{note[:70]} | | |" if note else
                   f"{t['median_s'] * 1e3:.2f} | {(t['q3_s'] - t['q1_s']) * 1e3:.2f} | {t['n']} |")
                + f" {common._mb(x['residual_bytes'])}"
                f" | {common._fmt(x['residual_ratio_to_funcnet'], '.1f')}"
                f" | {common._mb((x['memory'] or {}).get('temp'))}"
                f" | {common._fmt(x['compile_s'], '.2f')}"
                f" | {common._fmt(x.get('ratio_best_jax'), '.2f')} |")
    lines += ["", "## Targets (issue 15)", ""] + [f"- {g['text']}" for g in res["targets"]]
    return "\n".join(lines) + "\n"


def write(res: dict, out_dir: str) -> None:
    common.write_results(out_dir, "attention", res, markdown(res), announce=False)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"T in {QUICK_T}, 3 samples")
    p.add_argument("--T", default=None, help="comma-separated sequence lengths")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--window", type=int, default=128,
                   help="sliding window of the 'window' variants (0: none)")
    p.add_argument("--alibi", action=argparse.BooleanOptionalAction, default=True,
                   help="the 'alibi' variants (--no-alibi: none)")
    p.add_argument("--soft-cap", type=float, default=50.0,
                   help="logit soft cap of the 'soft cap' variants (0: none)")
    p.add_argument("--t5", action=argparse.BooleanOptionalAction, default=False,
                   help="the 't5' variants (T5's relative-position bias)")
    p.add_argument("--packed", action=argparse.BooleanOptionalAction, default=False,
                   help="the 'packed' variants (segment ids of packed sequences)")
    p.add_argument("--repeats", type=int, default=None, help="minimum samples per variant")
    p.add_argument("--max-repeats", type=int, default=50)
    p.add_argument("--budget", type=float, default=None,
                   help="timing seconds per T beyond --repeats (default 30 on CPU, 3 on an "
                        "accelerator, 0 with --quick)")
    p.add_argument("--sample-ms", type=float, default=50.0)
    p.add_argument("--mem-limit-gb", type=float, default=None,
                   help="skip a variant whose residuals exceed this (default: RAM / 4)")
    p.add_argument("--out", default=None)
    p.add_argument("--render", default=None, metavar="ATTENTION_JSON")
    a = p.parse_args(argv)
    if a.render:
        with open(a.render) as f:
            res = json.load(f)
        write(res, os.path.dirname(a.render))
        return res
    import jax

    t_start = time.perf_counter()
    platform = jax.devices()[0].platform
    sizes = tuple(int(x) for x in a.T.split(",")) if a.T else (QUICK_T if a.quick else FULL_T)
    a.repeats = a.repeats or (3 if a.quick else 10)
    if a.budget is None:
        a.budget = 0.0 if a.quick else (30.0 if platform == "cpu" else 3.0)
    if a.mem_limit_gb is None:
        a.mem_limit_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4 / 2 ** 30
    out_dir = a.out or common.results_dir(platform, a.quick)
    env = {**common.environment(),
           "env_vars": {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS")}}
    print(f"device: {env['device']}; T = {sizes}", flush=True)
    res = {"profile": "quick" if a.quick else "full", "heads": a.heads, "window": a.window,
           "alibi": a.alibi, "soft_cap": a.soft_cap, "t5": a.t5,
           "packed": a.packed,
           "head_dim": a.head_dim, "dtype": a.dtype, "env": env, "cases": [],
           "command": common.command("attention", argv)}
    for t in sizes:   # written after every T: a run cut short keeps what it measured
        res["cases"].append(measure_case(t, a, platform, lambda m: print(m, flush=True)))
        res["targets"] = targets(res["cases"])
        res["wall_s"] = time.perf_counter() - t_start
        write(res, out_dir)
    for g in res["targets"]:
        print(g["text"], flush=True)
    return res


if __name__ == "__main__":
    main()
