"""What ``fit``'s non-finite guard costs inside its epoch ``lax.scan``.

Every step of ``fit`` checks that its loss and new params and state are finite and keeps
the previous ones otherwise (a reduction per leaf and a select, ``funcnet/train/epochs.py``).
This script compiles ``fit``'s own epoch scan twice for the same model, data and key: as
``fit`` runs it, and with the check and the select removed (``finite_leaves`` returning
``True`` and the select returning the new values, patched in this process only while
tracing), then times the two interleaved in one process (the order alternates every
round), so that both see the same machine load. Models: the ``small_mlp`` and ``cnn_b100``
cases of ``benchmarks.cases`` built with ``funcnet.nn`` (batch 100, Adam).

Usage::

    python -m benchmarks.fit_guard            # -> benchmarks/results/<platform>/fit_guard.*
    python -m benchmarks.fit_guard --quick    # smoke test
"""
from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.cases import input_shape, make_batches, make_cases  # noqa: E402


def epoch_scans(model, opt, case, args) -> dict:
    """``{"guarded", "unguarded"}``: ``fit``'s epoch scan for ``model``, compiled ahead of
    time for ``args`` as ``fit`` runs it and with the guard removed."""
    import jax.numpy as jnp

    from funcnet import ops
    from funcnet.train import epochs

    original = (epochs.finite_leaves, epochs._tree_map)
    unguarded = (lambda pairs: jnp.array(True), lambda f, new, old: new)
    scans = {}
    try:
        for name, (check, select) in (("guarded", original), ("unguarded", unguarded)):
            epochs.compiled.cache_clear()
            epochs.finite_leaves, epochs._tree_map = check, select
            scan = epochs.compiled(model, opt, ops.softmax_cross_entropy, None, None,
                                   case.batch, None)[0]
            scans[name] = scan.lower(*args).compile()   # traced now, while patched
    finally:
        epochs.finite_leaves, epochs._tree_map = original
        epochs.compiled.cache_clear()
    return scans


def measure(case, steps: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.libs.funcnet_impl import make_model
    from funcnet import optim

    model, opt = make_model(case), optim.adam(1e-3)
    _, params, state = model.init(jax.random.PRNGKey(0), input_shape(case))
    xs, ys = make_batches(case, steps, seed=3)
    x = jnp.asarray(xs.reshape((-1,) + xs.shape[2:]), case.dtype)
    y = jnp.asarray(ys.reshape((-1,) + ys.shape[2:]))
    key = jax.random.PRNGKey(0)
    fresh = lambda: common.copy_tree((params, state, opt.init(params)))  # noqa: E731
    scans = epoch_scans(model, opt, case, (*fresh(), x, y, key, jnp.int32(0)))
    carry = {n: fresh() for n in scans}
    samples = {n: [] for n in scans}

    def run(name, epoch):
        (p, s, o, _), metrics = scans[name](*carry[name], x, y, key, jnp.int32(epoch))
        jax.block_until_ready(metrics)
        carry[name] = (p, s, o)

    for name in scans:      # warm up
        run(name, 0)
    for r in range(rounds):
        for name in (list(scans) if r % 2 else list(scans)[::-1]):
            samples[name].append(common.timed(lambda: run(name, r + 1)) / steps)
    stats = {n: common.summarize(v) for n, v in samples.items()}
    ratio = stats["guarded"]["median_s"] / stats["unguarded"]["median_s"]
    print(f"{case.name}: guarded {stats['guarded']['median_s'] * 1e3:.3f} ms/step, unguarded "
          f"{stats['unguarded']['median_s'] * 1e3:.3f} ms/step: x {ratio:.3f}", flush=True)
    return {"case": case.name, "batch": case.batch, "steps_per_epoch": steps,
            "stats": stats, "ratio": ratio}


def markdown(res: dict) -> str:
    lines = common.header_lines(
        "Cost of fit's non-finite guard", res,
        f"fit's epoch scan, guarded (as fit runs it) and with the check and select removed, "
        f"compiled ahead of time and timed interleaved, {res['rounds']} rounds")
    lines += ["| case | batch | steps per epoch | guarded ms/step | unguarded ms/step | "
              "× unguarded |", "|---|---:|---:|---:|---:|---:|"]
    for r in res["cases"]:
        g, u = r["stats"]["guarded"], r["stats"]["unguarded"]
        lines.append(f"| {r['case']} | {r['batch']} | {r['steps_per_epoch']} | "
                     f"{g['median_s'] * 1e3:.3f} | {u['median_s'] * 1e3:.3f} | "
                     f"{r['ratio']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = common.script_parser(__doc__, "tiny sizes, few rounds (smoke test)",
                                rounds_default=20).parse_args(argv)
    import jax

    t0 = time.perf_counter()
    cases = make_cases("quick" if args.quick else "cpu")
    rounds = args.rounds or (2 if args.quick else 20)
    steps = 4 if args.quick else 50
    res = {"env": common.environment(), "rounds": rounds,
           "cases": [measure(cases[n], steps, rounds) for n in ("small_mlp", "cnn_b100")],
           "command": common.command("fit_guard", argv)}
    res["wall_s"] = time.perf_counter() - t0
    out = args.out or common.results_dir(jax.devices()[0].platform, args.quick)
    common.write_results(out, "fit_guard", res, markdown(res))
    return res


if __name__ == "__main__":
    main()
