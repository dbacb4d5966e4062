"""Cached autoregressive decoding: funcnet's ``decode=True`` attention vs Flax's vs plain JAX.

One causal self-attention layer (``--heads`` heads of ``--head-dim``, ``D = heads *
head_dim`` features, batch ``--batch``) with a key/value cache of ``--max-length``
positions, float32, three ways:

* ``funcnet``: ``nn.MultiHeadAttention(heads, causal=True, decode=True)``, its cache in
  the layer's state (the op's blockwise rule; what a query sees is a function of the
  positions, no ``t x L`` mask);
* ``flax``: ``flax.linen.MultiHeadDotProductAttention(num_heads=heads, decode=True)``, its
  cache in the ``"cache"`` collection (one token per call: Flax's cache takes no longer
  chunk, so its prefill is a ``lax.scan`` of single tokens);
* ``jax``: a hand-written plain-JAX cache (``dynamic_update_slice`` of the new keys and
  values, then ``softmax(q k^T / sqrt(d) + mask) v`` over all ``L`` cached positions with
  a ``t x L`` causal mask of absolute positions).

With ``--position-bias alibi`` or ``t5`` the layer adds that bias (``position_bias=``;
T5's 32 buckets up to distance 128 from the layer's learned table): funcnet computes it
per key block from the positions, plain JAX adds the dense ``(1, heads, t, L)`` bias of the
same formula; Flax's layer has neither, so it is left out.

The programs are compiled with ``jax.jit`` and agree (float32: 2e-5 on the prefill, 2e-4
on the generated tokens) before anything is timed. Per case:

* ``prefill``: the prompt's ``--prompt`` tokens into an empty cache (funcnet and plain JAX
  one chunk; Flax token by token);
* ``generate``: ``--tokens`` single-token steps in one ``lax.scan``, each output fed back
  as the next input, from a cache holding the prompt (per token).

Usage::

    python -m benchmarks.decode             # -> benchmarks/results/<platform>/decode.*
    python -m benchmarks.decode --quick     # tiny sizes (smoke test), -> a temp dir
    python -m benchmarks.decode --position-bias t5    # -> decode_t5.* (alibi: decode_alibi.*)

Writes ``decode.json`` and ``decode.md`` (device and library versions in both).
"""
from __future__ import annotations

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

FULL = {"batch": 8, "heads": 4, "head_dim": 64, "max_length": 1024, "prompt": 512,
        "tokens": 64}
QUICK = {"batch": 2, "heads": 2, "head_dim": 8, "max_length": 32, "prompt": 16, "tokens": 4}
LIBS = ("funcnet", "flax", "jax")


def _funcnet(cfg, x_full):
    from funcnet import nn

    layer = nn.MultiHeadAttention(cfg["heads"], causal=True, decode=True,
                                  position_bias=cfg["position_bias"])
    _, params, cache = layer.init(jax.random.PRNGKey(0), x_full.shape)

    def apply(params, cache, x):
        return layer.apply(params, cache, x)
    return params, cache, apply


def _flax(cfg, x_full, params_from):
    import flax.linen as fnn

    layer = fnn.MultiHeadDotProductAttention(num_heads=cfg["heads"], decode=True)
    variables = layer.init(jax.random.PRNGKey(0), x_full)
    d, h = x_full.shape[-1], cfg["heads"]
    w = params_from   # funcnet's (D, D) projections, reshaped to Flax's per-head kernels
    params = {"query": {"kernel": w["wq"].reshape(d, h, -1), "bias": w["bq"].reshape(h, -1)},
              "key": {"kernel": w["wk"].reshape(d, h, -1), "bias": w["bk"].reshape(h, -1)},
              "value": {"kernel": w["wv"].reshape(d, h, -1), "bias": w["bv"].reshape(h, -1)},
              "out": {"kernel": w["wo"].reshape(h, -1, d), "bias": w["bo"]}}
    cache = variables["cache"]

    def token(params, cache, x):     # x (B, 1, D)
        y, out = layer.apply({"params": params, "cache": cache}, x, mutable=["cache"])
        return y, out["cache"]

    def apply(params, cache, x):     # a chunk: one token at a time
        def body(c, xt):
            y, c = token(params, c, xt[:, None])
            return c, y[:, 0]
        cache, ys = jax.lax.scan(body, cache, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(ys, 0, 1), cache
    return params, cache, apply


def _plain(cfg, x_full, params_from):
    from funcnet.nn import position_bias

    b, L, d = x_full.shape
    h = cfg["heads"]
    spec = position_bias.check("plain JAX", cfg["position_bias"], (32, 128), causal=True)
    hd = d // h
    cache = {"k": jnp.zeros((b, L, h, hd), x_full.dtype),
             "v": jnp.zeros((b, L, h, hd), x_full.dtype), "index": jnp.zeros((), jnp.int32)}

    def apply(p, cache, x):
        t = x.shape[1]
        q, k, v = ((x @ p[f"w{n}"] + p[f"b{n}"]).reshape(b, t, h, hd) for n in "qkv")
        i = cache["index"]
        ks = jax.lax.dynamic_update_slice(cache["k"], k, (0, i, 0, 0))
        vs = jax.lax.dynamic_update_slice(cache["v"], v, (0, i, 0, 0))
        logits = jnp.einsum("bthd,bshd->bhts", q, ks) / np.sqrt(hd).astype(np.float32)
        if spec:     # the dense (1, heads, t, L) bias the layer built before decoding
            logits = logits + position_bias.bias(spec, p.get("rel_bias"), i + jnp.arange(t),
                                                 jnp.arange(L), h, jnp.float32)
        visible = jnp.arange(L)[None, :] <= (i + jnp.arange(t))[:, None]
        probs = jax.nn.softmax(jnp.where(visible, logits, -jnp.inf), axis=-1)
        y = jnp.einsum("bhts,bshd->bthd", probs, vs).reshape(b, t, d)
        return y @ p["wo"] + p["bo"], {"k": ks, "v": vs, "index": i + t}
    return params_from, cache, apply


def _programs(apply):
    """``prefill(params, cache, prompt)`` and ``generate(params, cache, x0, n)`` (the
    outputs of ``n`` single-token steps, each output the next input), jitted."""
    prefill = jax.jit(apply)

    @functools.partial(jax.jit, static_argnums=3)
    def generate(params, cache, x0, n):
        def body(carry, _):
            c, x = carry
            y, c = apply(params, c, x)
            return (c, y), y[:, 0]
        (_, _), ys = jax.lax.scan(body, (cache, x0), None, length=n)
        return jnp.swapaxes(ys, 0, 1)
    return prefill, generate


def bench(cfg: dict, rounds: int, sample_s: float, log) -> dict:
    b, d = cfg["batch"], cfg["heads"] * cfg["head_dim"]
    kx = jax.random.split(jax.random.PRNGKey(1), 2)
    x_full = jax.random.normal(kx[0], (b, cfg["max_length"], d), jnp.float32)
    prompt = x_full[:, :cfg["prompt"]]
    x0 = jax.random.normal(kx[1], (b, 1, d), jnp.float32)
    fparams, fcache, fapply = _funcnet(cfg, x_full)
    libs = {"funcnet": (fparams, fcache, fapply)}
    try:
        if not cfg["position_bias"]:
            libs["flax"] = _flax(cfg, x_full, fparams)
    except ImportError as exc:
        log(f"flax skipped: {exc}")
    libs["jax"] = _plain(cfg, x_full, fparams)
    prefill_fns, generate_fns, outs, memory = {}, {}, {}, {}
    for name, (params, cache, apply) in libs.items():
        prefill, generate = _programs(apply)   # each compiled once, timed and measured
        prefill = prefill.lower(params, cache, prompt).compile()
        y, filled = prefill(params, cache, prompt)
        generate = generate.lower(params, filled, x0, cfg["tokens"]).compile()
        outs[name] = (np.asarray(y), np.asarray(generate(params, filled, x0)))
        prefill_fns[name] = functools.partial(prefill, params, cache, prompt)
        generate_fns[name] = functools.partial(generate, params, filled, x0)
        memory[name] = {"prefill": common.compiled_memory(prefill),
                        "generate": common.compiled_memory(generate)}
    for name, (y, ys) in outs.items():   # the same tokens before anything is timed
        np.testing.assert_allclose(y, outs["funcnet"][0], rtol=2e-5, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(ys, outs["funcnet"][1], rtol=2e-4, atol=2e-4,
                                   err_msg=name)
    res = {"config": cfg, "libs": list(libs), "memory": memory}
    for what, fns, per in (("prefill", prefill_fns, 1), ("generate", generate_fns,
                                                           cfg["tokens"])):
        times = common.interleaved(fns, (), rounds, sample_s)
        best_peer = min((times[k]["median_s"] for k in times if k != "funcnet"),
                        default=float("nan"))
        res[what] = {"times": times, "per": per,
                     "funcnet_over_best_peer": times["funcnet"]["median_s"] / best_peer}
        log(f"{what:8s} " + "  ".join(f"{k} {v['median_s'] / per * 1e3:.3f} ms"
                                       for k, v in times.items())
            + f"  funcnet / best peer {res[what]['funcnet_over_best_peer']:.2f}")
    return res


def markdown(res: dict) -> str:
    c = res["case"]
    cfg = c["config"]
    lines = common.header_lines(
        "Cached autoregressive decoding (one causal self-attention layer)", res,
        f"batch {cfg['batch']}, {cfg['heads']} heads of {cfg['head_dim']}, cache of "
        f"{cfg['max_length']} positions, float32, position bias "
        f"{cfg['position_bias'] or 'none'}; prompt {cfg['prompt']} tokens; "
        f"generate: {cfg['tokens']} single-token steps in one `lax.scan` (time per token); "
        f"median of {res['rounds']} interleaved samples",
        "Flax's cache takes one token per call: its prefill is a scan of single tokens")
    lines += ["| stage | " + " | ".join(f"{k} ms" for k in c["libs"])
              + " | funcnet / best peer | " + " | ".join(f"{k} temp MiB" for k in c["libs"])
              + " |", "|---|" + "---:|" * (2 * len(c["libs"]) + 1)]
    for what in ("prefill", "generate"):
        r = c[what]
        mem = [c["memory"][k][what] for k in c["libs"]]
        lines.append(
            f"| {what} | " + " | ".join(f"{r['times'][k]['median_s'] / r['per'] * 1e3:.3f}"
                                        for k in c["libs"])
            + f" | {r['funcnet_over_best_peer']:.2f} | "
            + " | ".join(common._mb(m["temp"] if m else None, ".2f") for m in mem)
            + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = common.script_parser(__doc__, "tiny sizes, 3 rounds (smoke test)", rounds_default=15)
    p.add_argument("--position-bias", choices=("none", "alibi", "t5"), default="none",
                   help="the layer's position_bias (Flax's layer has none: left out)")
    a = p.parse_args(argv)
    kind = None if a.position_bias == "none" else a.position_bias
    stem = "decode" if kind is None else f"decode_{kind}"
    platform = jax.devices()[0].platform
    rounds = a.rounds or (3 if a.quick else 15)
    out = a.out or (os.path.join(tempfile.gettempdir(), "funcnet-decode-quick")
                    if a.quick else common.results_dir(platform, quick=False))
    sample_s = 0.005 if a.quick else 0.2
    t0 = time.perf_counter()
    res = {"rounds": rounds, "command": common.command("decode", argv),
           "env": common.environment()}
    res["case"] = bench({**(QUICK if a.quick else FULL), "position_bias": kind}, rounds,
                        sample_s, lambda m: print(m, flush=True))
    res["wall_s"] = time.perf_counter() - t0
    common.write_results(out, stem, res, markdown(res))
    return res


if __name__ == "__main__":
    main()
