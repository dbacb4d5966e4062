"""Cold start: a model's eager ``init`` in a fresh process, funcnet against its peers.

A researcher's first call builds the parameters eagerly (``model.init(key, shape)``), and
every random draw of a new shape compiles before it runs: on XLA:CPU the first draw of a
``(5, 5, 1, 30)`` conv kernel costs far more than the draw itself. This script starts one
fresh Python process per library and case (imports not timed), times that library's
idiomatic eager initialisation of the case's model up to the arrays being ready, and
repeats it for ``--rounds`` rounds in an order that rotates every round.

Libraries (``benchmarks/libs``): funcnet (``make_model(case).init(key, shape)``), plain JAX
(``jax.random.normal`` per weight), Flax (``model.init(key, x)``, which also runs the forward
pass, as Flax's ``init`` does), Equinox (the module's constructor), and the control
``funcnet-shaped``: funcnet with its random draws patched back to the shaped
``jax.random`` call (the behaviour before ``funcnet._random.draw``; same values).

Usage::

    python -m benchmarks.cold_init            # -> benchmarks/results/<platform>/cold_init.*
    python -m benchmarks.cold_init --quick    # smoke test
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

CASES = ("small_mlp", "cnn_b100", "lstm")
LIBS = ("funcnet", "funcnet-shaped", "jax", "flax", "equinox")


def _shaped_draws() -> None:
    """Patch funcnet's draws back to ``sample(key, shape)`` (the control variant)."""
    import funcnet._random as random
    from funcnet.nn import initializers
    from funcnet.ops import dropout

    def shaped(sample, key, shape):
        return sample(key, tuple(shape))

    random.draw = initializers.draw = dropout.draw = shaped


def _initializer(lib: str, case):
    """``init(key) -> arrays`` of ``lib``'s idiom for ``case``'s model."""
    import jax
    import jax.numpy as jnp

    from benchmarks.cases import input_shape
    from benchmarks.libs import load

    shape, dtype = input_shape(case), jnp.dtype(case.dtype)
    if lib.startswith("funcnet"):
        model = load("funcnet").make_model(case)
        return lambda key: model.init(key, shape)[1]
    if lib == "jax":
        return lambda key: load("jax").init_params(case, key, dtype)
    if lib == "flax":
        model = load("flax").make_model(case)
        x = jnp.zeros(shape, dtype)           # time-major sequences, as flax_impl
        return lambda key: model.init(key, x)
    if lib == "equinox":
        import equinox as eqx
        return lambda key: eqx.filter(load("equinox").make_model(case, key), eqx.is_array)
    raise ValueError(lib)


def child(lib: str, case_name: str, profile: str) -> dict:
    """In a fresh process: seconds of ``lib``'s first eager init of the case's model, and
    of a second one (the same shapes: compiled already)."""
    import jax

    from benchmarks.cases import make_cases

    if lib == "funcnet-shaped":
        _shaped_draws()
    init = _initializer(lib, make_cases(profile)[case_name])
    key = jax.random.PRNGKey(0)
    jax.block_until_ready(key)
    first = common.timed(lambda: jax.block_until_ready(init(key)))
    second = common.timed(lambda: jax.block_until_ready(init(jax.random.PRNGKey(1))))
    return {"first_s": first, "second_s": second}


def _run_child(lib: str, case_name: str, profile: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.cold_init", "--child", lib, case_name, profile],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
    if out.returncode:
        return {"error": common.error_text(RuntimeError(out.stderr.strip()[-300:]))}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(libs: list[str], profile: str, rounds: int) -> dict:
    samples = {c: {lib: [] for lib in libs} for c in CASES}
    errors: dict = {}
    for r in range(rounds):
        for case_name in CASES:
            for lib in common.rotated(libs, r):
                got = _run_child(lib, case_name, profile)
                if "error" in got:
                    errors[f"{case_name}/{lib}"] = got["error"]
                else:
                    samples[case_name][lib].append(got)
    cases = {}
    for case_name, by_lib in samples.items():
        row = {lib: {k: common.summarize([s[k] for s in v]) for k in ("first_s", "second_s")}
               for lib, v in by_lib.items() if v}
        peers = [lib for lib in row if not lib.startswith("funcnet")]
        best = min(peers, key=lambda lib: row[lib]["first_s"]["median_s"]) if peers else None
        cases[case_name] = {"libs": row, "best_peer": best}
        if best and "funcnet" in row:
            cases[case_name]["funcnet_over_best_peer"] = (
                row["funcnet"]["first_s"]["median_s"] / row[best]["first_s"]["median_s"])
    return {"cases": cases, "errors": errors}


def markdown(res: dict) -> str:
    lines = common.header_lines(
        "Cold eager init", res,
        "one fresh process per library, case and round (imports not timed); medians of "
        f"{res['rounds']} rounds; the order of the libraries rotates every round",
        "first: the first eager init in the process (compiles every draw); second: "
        "another key, same shapes; funcnet-shaped: funcnet with its draws patched back "
        "to the shaped `jax.random` call (the control)")
    lines += ["| case | library | first init ms | second init ms | first / funcnet's |",
              "| --- | --- | ---: | ---: | ---: |"]
    for case_name, case in res["cases"].items():
        row = case["libs"]
        base = row.get("funcnet", {}).get("first_s", {}).get("median_s")
        for lib, t in row.items():
            first, second = t["first_s"]["median_s"], t["second_s"]["median_s"]
            ratio = f"{first / base:.2f}" if base else "–"
            lines.append(f"| {case_name} | {lib} | {first * 1e3:.0f} | {second * 1e3:.1f} | "
                         f"{ratio} |")
    lines.append("")
    for case_name, case in res["cases"].items():
        if "funcnet_over_best_peer" in case:
            lines.append(f"- {case_name}: funcnet's first init is "
                         f"**{case['funcnet_over_best_peer']:.2f} ×** the best peer's "
                         f"({case['best_peer']})")
    for k, v in res["errors"].items():
        lines.append(f"- error {k}: {v}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        print(json.dumps(child(*args[1:4])))
        return {}
    p = common.script_parser(__doc__, "tiny models, one round", rounds_default=5)
    opts = p.parse_args(args)
    import jax

    profile = "quick" if opts.quick else "cpu"
    rounds = opts.rounds or (1 if opts.quick else 5)
    libs = []
    for lib in LIBS:
        try:
            from benchmarks.libs import load
            load(lib.split("-")[0]).versions()
            libs.append(lib)
        except ImportError:
            pass
    t0 = time.perf_counter()
    res = {"command": common.command("cold_init", argv), "env": common.environment(),
           "rounds": rounds, "profile": profile, **measure(libs, profile, rounds)}
    res["wall_s"] = time.perf_counter() - t0
    out = opts.out or common.results_dir(jax.default_backend(), opts.quick)
    common.write_results(out, "cold_init", res, markdown(res))
    return res


if __name__ == "__main__":
    main()
