"""Per-call host cost of a training step: funcnet's against a hand-written ``jax.jit`` step.

The model is tiny (``Dense(16) -> ReLU -> Dense(4)`` on 8 features, batch 8), so the
device time of a step is a few microseconds and what is measured is the cost of calling
it: argument flattening, donation, dispatch. Entries, sampled round-robin in one process
(the order rotates every round, so all see the same machine load):

- ``make_train_step``: ``funcnet.train.make_train_step(model, optim.adam(1e-3))``.
- ``jit(train_step)``: ``jax.jit(funcnet.train.train_step(model, opt), donate_argnums=(0, 1,
  2))``, the same pure step jitted by hand: the difference to ``make_train_step`` is what
  the factory adds per call.
- ``plain jax``: a hand-written plain-JAX step of the same model (dict params, the Adam
  formula written out, the same outputs: params, opt state, loss and accuracy) under
  ``jax.jit`` with donation: the issue's "plain jax.jit step".

One sample is ``n`` back-to-back calls and one wait for the last result; its time / n is
one per-call time. The median over the samples and the ratio to ``plain jax`` are
reported. Then ``cProfile`` runs the funcnet step ``n`` times and lists the Python
functions it spends time in (none but the ``jit`` call itself when the step has no Python
wrapper).

``fit``'s per-step path (``fit(..., scan=False)``: a loop of jitted steps fed by a
prefetch thread) is timed the same way from ``history["epoch_time"]`` (epochs after the
first) against a hand-written loop that gathers the same host batches and calls a jitted
step (``jit(train_step)``, or fit's own guarded step: the difference between the two loops
is the device cost of the non-finite guard, the rest is fit's Python), and one epoch of it
is profiled.

Usage::

    python -m benchmarks.dispatch                # -> benchmarks/results/<platform>/dispatch.*
    python -m benchmarks.dispatch --quick        # smoke test (CI), results/<platform>-quick/
"""
from __future__ import annotations

import cProfile
import io
import os
import pstats
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

D_IN, HIDDEN, CLASSES, BATCH = 8, 16, 4, 8
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


# ------------------------------------------------------------------------- the steps
def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D_IN), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=(n,)).astype(np.int32)
    return x, y


def funcnet_model():
    from funcnet import nn

    return nn.serial(nn.Dense(HIDDEN), nn.ReLU(), nn.Dense(CLASSES))


def funcnet_entries():
    """``{name: (call, carry)}``: ``call(carry, x, y, key) -> carry`` for funcnet's steps."""
    import jax

    from funcnet import optim, train

    model, opt = funcnet_model(), optim.adam(LR)

    def fresh():
        _, params, state = model.init(jax.random.PRNGKey(0), (BATCH, D_IN))
        return common.copy_tree((params, state, opt.init(params)))

    made = train.make_train_step(model, opt)
    by_hand = jax.jit(train.train_step(model, opt), donate_argnums=(0, 1, 2))

    def caller(step):
        def call(carry, x, y, key):
            p, s, o, m = step(*carry, x, y, key)
            return (p, s, o), m
        return call

    return {"make_train_step": (caller(made), fresh()),
            "jit(train_step)": (caller(by_hand), fresh())}


def plain_jax_entry():
    """A hand-written plain-JAX step of the same model, jitted with donation."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {"w1": jax.random.normal(k1, (D_IN, HIDDEN)) * np.sqrt(2 / D_IN),
              "b1": jnp.zeros((HIDDEN,)),
              "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) * np.sqrt(2 / HIDDEN),
              "b2": jnp.zeros((CLASSES,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt_state = {"count": jnp.zeros((), jnp.int32), "mu": zeros, "nu": zeros}

    def loss(p, x, y):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)), logits

    def step(p, o, x, y, key):
        del key
        (value, logits), g = jax.value_and_grad(loss, has_aux=True)(p, x, y)
        count = o["count"] + 1
        mu = jax.tree.map(lambda m, gi: B1 * m + (1 - B1) * gi, o["mu"], g)
        nu = jax.tree.map(lambda v, gi: B2 * v + (1 - B2) * gi * gi, o["nu"], g)
        t = count.astype(jnp.float32)
        c1, c2 = 1 - B1 ** t, 1 - B2 ** t
        p = jax.tree.map(lambda w, m, v: w - LR * (m / c1) / (jnp.sqrt(v / c2) + EPS),
                         p, mu, nu)
        acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
        return p, {"count": count, "mu": mu, "nu": nu}, {"loss": value, "accuracy": acc}

    jitted = jax.jit(step, donate_argnums=(0, 1))

    def call(carry, x, y, key):
        p, o, m = jitted(*carry, x, y, key)
        return (p, o), m

    return call, common.copy_tree((params, opt_state))


# ------------------------------------------------------------------------- timing
class Caller:
    """One entry: ``n`` back-to-back calls, then one wait."""

    def __init__(self, name, call, carry, args):
        self.name, self.call, self.carry, self.args = name, call, carry, args
        self.samples: list[float] = []

    def run(self, n: int) -> float:
        import jax

        call, carry, args = self.call, self.carry, self.args
        t0 = time.perf_counter()
        for _ in range(n):
            carry, m = call(carry, *args)
        jax.block_until_ready((carry, m))
        dt = time.perf_counter() - t0
        self.carry = carry
        return dt / n


def interleave(entries: list[Caller], rounds: int, n: int) -> None:
    for e in entries:  # compile and warm up
        e.run(2)
        e.run(n)
    for r in range(rounds):
        for e in common.rotated(entries, r):
            e.samples.append(e.run(n))


def profile(fn, top: int = 14, sort: str = "tottime") -> dict:
    """cProfile of ``fn()``: wall seconds and the ``top`` functions by ``sort`` time."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append({"function": f"{os.path.basename(file)}:{line}({func})"
                     if line else func, "calls": nc, "tottime_s": tt, "cumtime_s": ct})
    rows.sort(key=lambda r: -r["tottime_s" if sort == "tottime" else "cumtime_s"])
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats(sort).print_stats(top)
    return {"wall_s": wall, "top": rows[:top], "text": text.getvalue()}


# ------------------------------------------------------------------------- fit
def fit_per_step(steps_per_epoch: int, epochs: int, rounds: int) -> dict:
    """``fit(scan=False)`` (with and without its prefetch thread) against a hand-written
    loop over the same host batches; µs per step from the epochs after the first."""
    import jax

    from funcnet import optim, train

    model, opt = funcnet_model(), optim.adam(LR)
    n = steps_per_epoch * BATCH
    x, y = _data(n, seed=1)
    _, params, state = model.init(jax.random.PRNGKey(0), (BATCH, D_IN))

    def run_fit(e, prefetch):
        *_, hist = train.fit(model, params, state, opt, (x, y), e, batch_size=BATCH, key=0,
                             scan=False, progress=False, prefetch=prefetch)
        return hist["epoch_time"]

    step = jax.jit(train.train_step(model, opt), donate_argnums=(0, 1, 2))
    # fit's own compiled step (internal): the train step plus the non-finite guard and
    # the step counters, so that the loop below separates fit's Python from the guard
    from funcnet.ops import softmax_cross_entropy
    from funcnet.train.epochs import compiled
    guarded = compiled(model, opt, softmax_cross_entropy, None, None, None, None)[1]
    key = jax.random.PRNGKey(0)

    def run_loop(e, fits_step=False):
        carry = common.copy_tree((params, state, opt.init(params)))
        if fits_step:
            carry += (jax.numpy.zeros((2,), jax.numpy.int32),)
        rng = np.random.default_rng(0)
        t_epochs = []
        for _ in range(e):
            t0 = time.perf_counter()
            perm = rng.permutation(n)
            losses = []
            for i in range(steps_per_epoch):
                idx = perm[i * BATCH:(i + 1) * BATCH]
                if fits_step:
                    carry, m = guarded(*carry, x[idx], y[idx], key)
                else:
                    *carry, m = step(*carry, x[idx], y[idx], key)
                losses.append(m["loss"])
            float(np.mean(jax.device_get(losses)))
            t_epochs.append(time.perf_counter() - t0)
        return t_epochs

    runs = {"fit (prefetch=2, thread)": lambda e: run_fit(e, 2),
            "fit (default: no thread on CPU)": lambda e: run_fit(e, 0),
            "hand-written loop, fit's guarded step": lambda e: run_loop(e, True),
            "hand-written loop": run_loop}
    out = {"steps_per_epoch": steps_per_epoch, "epochs": epochs, "rows": []}
    samples = {k: [] for k in runs}
    try:
        for f in runs.values():  # compile, warm up
            f(1)
        names = list(runs)
        for r in range(rounds):
            for k in common.rotated(names, r):
                samples[k] += [t / steps_per_epoch for t in runs[k](epochs)[1:]]
        base = statistics.median(samples["hand-written loop"])
        for k, v in samples.items():
            out["rows"].append({"entry": k, "us_per_step": statistics.median(v) * 1e6,
                                "n": len(v), "ratio_loop": statistics.median(v) / base})
        out["fit_profile"] = profile(lambda: run_fit(2, 2), sort="cumulative")
        out["fit_profile"]["note"] = f"2 epochs of {steps_per_epoch} steps, compiled"
    except Exception as exc:  # noqa: BLE001 - the API may move; record, don't crash
        out["error"] = common.error_text(exc)
    return out


def transfer_costs(rounds: int, calls: int) -> list[dict]:
    """Host cost of putting one ``(x, y)`` batch of the tiny model on the device, by path.

    ``fit``'s per-step path calls ``jax.device_put((x, y))`` per batch on an accelerator
    (in its prefetch thread); on one CPU device it hands the NumPy arrays to the jitted
    step, which accepts them directly in its C++ dispatch path.
    """
    import jax

    x, y = _data(BATCH)
    f = jax.jit(lambda a, b: (a.sum(), b.sum()))
    xd, yd = jax.device_put((x, y))
    paths = {"jax.device_put((x, y))": lambda: jax.device_put((x, y)),
             "jit(x, y), NumPy arguments": lambda: f(x, y),
             "jit(x, y), device arguments": lambda: f(xd, yd),
             "jit(*device_put((x, y)))": lambda: f(*jax.device_put((x, y)))}
    samples = {k: [] for k in paths}
    for fn in paths.values():
        jax.block_until_ready(fn())
    names = list(paths)
    for r in range(rounds):
        for k in common.rotated(names, r):
            samples[k].append(common.time_calls(paths[k], calls))
    return [{"path": k, "median_us": statistics.median(v) * 1e6} for k, v in samples.items()]


# ------------------------------------------------------------------------- output
def markdown(res: dict) -> str:
    lines = common.header_lines(
        "Per-call dispatch cost of a training step", res,
        f"model: Dense({HIDDEN}) -> ReLU -> Dense({CLASSES}) on {D_IN} features, batch "
        f"{BATCH}, Adam; {res['calls_per_sample']} calls per sample, {res['rounds']} "
        f"interleaved rounds")
    lines += ["| entry | median µs/call | IQR µs | n | × plain jax | × jit(train_step) |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['entry']} | {r['median_us']:.1f} | {r['iqr_us']:.1f} | {r['n']} | "
                     f"{r['ratio_plain']:.2f} | {r['ratio_jit']:.2f} |")
    f = res.get("fit") or {}
    lines.append("\n## `fit`'s per-step path\n")
    if "error" in f:
        lines.append(f"error: {f['error']}")
    elif f:
        lines.append(f"{f['steps_per_epoch']} steps per epoch, µs per step from the epochs "
                     f"after the first; the hand-written loop gathers the same host batches "
                     f"and calls `jax.jit(train_step(...))` with donation, or fit's own "
                     f"compiled step (the train step, the non-finite guard and the step "
                     f"counters): fit against that loop is fit's Python per step, that loop "
                     f"against the plain one is the guard's cost.\n")
        lines.append("| entry | median µs/step | n | × hand-written loop |")
        lines.append("|---|---:|---:|---:|")
        for r in f["rows"]:
            lines.append(f"| {r['entry']} | {r['us_per_step']:.1f} | {r['n']} | "
                         f"{r['ratio_loop']:.2f} |")
    if res.get("transfer"):
        lines.append("\n## Host cost of one batch transfer\n")
        lines.append("| path | median µs |")
        lines.append("|---|---:|")
        for r in res["transfer"]:
            lines.append(f"| `{r['path']}` | {r['median_us']:.1f} |")
    for title, prof in (("`make_train_step` calls", res.get("step_profile")),
                        ("`fit(scan=False)`, 2 epochs, by cumulative time",
                         f.get("fit_profile"))):
        if not prof:
            continue
        lines.append(f"\n## cProfile: {title} ({prof['wall_s'] * 1e3:.0f} ms under the "
                     f"profiler)\n")
        lines.append("| function | calls | tottime ms | cumtime ms |")
        lines.append("|---|---:|---:|---:|")
        for row in prof["top"]:
            lines.append(f"| `{row['function']}` | {row['calls']} | "
                         f"{row['tottime_s'] * 1e3:.2f} | {row['cumtime_s'] * 1e3:.2f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = common.script_parser(__doc__, "few rounds (smoke test)", rounds_default=40)
    p.add_argument("--calls", type=int, default=None, help="calls per sample (default 200)")
    p.add_argument("--no-fit", action="store_true", help="skip fit's per-step path")
    args = p.parse_args(argv)
    import jax

    t_start = time.perf_counter()
    rounds = args.rounds or (3 if args.quick else 40)
    calls = args.calls or (20 if args.quick else 200)
    platform = jax.devices()[0].platform
    out_dir = args.out or common.results_dir(platform, args.quick)
    x, y = _data(BATCH)
    xd, yd, key = jax.numpy.asarray(x), jax.numpy.asarray(y), jax.random.PRNGKey(1)
    fn_entries = funcnet_entries()
    plain_call, plain_carry = plain_jax_entry()
    entries = [Caller(name, call, carry, (xd, yd, key))
               for name, (call, carry) in fn_entries.items()]
    entries.append(Caller("plain jax", plain_call, plain_carry, (xd, yd, key)))
    interleave(entries, rounds, calls)
    stats = {e.name: common.summarize(e.samples) for e in entries}
    med = {name: q["median_s"] for name, q in stats.items()}
    rows = []
    for e in entries:
        q = stats[e.name]
        rows.append({"entry": e.name, "median_us": med[e.name] * 1e6,
                     "iqr_us": (q["q3_s"] - q["q1_s"]) * 1e6, "n": q["n"],
                     "ratio_plain": med[e.name] / med["plain jax"],
                     "ratio_jit": med[e.name] / med["jit(train_step)"]})
        print(f"{e.name:>16}: {med[e.name] * 1e6:8.1f} µs/call  × plain jax "
              f"{rows[-1]['ratio_plain']:.2f}", flush=True)
    funcnet_entry = entries[0]
    step_profile = profile(lambda: funcnet_entry.run(calls * (1 if args.quick else 5)))
    fit = None
    if not args.no_fit:
        fit = fit_per_step(steps_per_epoch=20 if args.quick else 100,
                           epochs=2 if args.quick else 4, rounds=1 if args.quick else 10)
        if "error" in fit:
            print(f"fit per-step path: {fit['error']}")
        for r in fit.get("rows", []):
            print(f"{r['entry']:>38}: {r['us_per_step']:8.1f} µs/step  × hand-written loop "
                  f"{r['ratio_loop']:.2f}")
    transfer = transfer_costs(rounds, calls)
    for r in transfer:
        print(f"{r['path']:>30}: {r['median_us']:8.1f} µs")
    res = {"env": common.environment(), "rounds": rounds, "calls_per_sample": calls, "rows": rows,
           "step_profile": step_profile, "fit": fit, "transfer": transfer,
           "command": common.command("dispatch", argv),
           "wall_s": time.perf_counter() - t_start}
    common.write_results(out_dir, "dispatch", res, markdown(res))
    return res


if __name__ == "__main__":
    main()
