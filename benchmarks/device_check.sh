#!/usr/bin/env bash
# The accelerator check of funcnet in one command (issue 17), for a fresh GPU/TPU machine
# with JAX, flax, optax, equinox and torch already installed and no network:
#
#   bash benchmarks/device_check.sh            # GPU/TPU sizes, under 8 minutes
#   bash benchmarks/device_check.sh --quick    # the same stages, tiny sizes (CPU test, ~3 min)
#
# Stages, each under its own `timeout` (a stage that fails or times out is recorded and
# the next one runs; nothing already written is lost):
#   setup     funcnet from this checkout (`pip install --no-deps --no-build-isolation -e .`,
#             never touching the machine's JAX; falls back to PYTHONPATH), devices, versions
#   tests     tests/test_accelerator.py on the default backend (conv2d's backward chosen by
#             lax.platform_dependent, bf16 compute, donation, pmap / sharded / shard_map steps
#             on every device) and, without --quick, the suites whose code paths differ per
#             platform (conv2d, pooling, train step, parallel API); skipped with a message
#             when pytest is missing
#   bench     python -m benchmarks.run: small_mlp (per step and in lax.scan), wide_mlp_bf16
#             (5x4096, batch 8192, bf16, % of the measured matmul peak), cnn_large (book CNN,
#             batch 4096, time and memory) against plain JAX, Flax, Equinox, PyTorch eager
#   extras    benchmarks/ops_vs_autodiff.py, conv_lowering.py, pool_lowering.py,
#             fit_guard.py, dispatch.py (per-call host cost of a step), decode.py (cached
#             decoding vs Flax and plain JAX) and attention.py, each
#             when present; ops_vs_autodiff, the two lowering scripts and attention write
#             after every row, so a stage cut short keeps what it measured
#
# Results: benchmarks/results/<platform>/ (<platform>-quick with --quick; cpu-device-check
# for a full run on a CPU, so the committed CPU results stay): results.json/md,
# the extras' files, dispatch.json/md, device_check.md (stage table, devices, versions,
# targets) and device_check.log (every stage's output). When $OUT is set (the device
# tool's output folder) the summary, the log, results.json/md and a tarball of the
# results folder are copied there as well.
#
# Environment: PYTHON (default python3), DEVICE_CHECK_BUDGET (seconds for the whole run,
# default 470; 300 with --quick), DEVICE_CHECK_EXTRAS (the extras to run, in order, default
# "ops_vs_autodiff conv_lowering pool_lowering fit_guard dispatch decode attention"; e.g. one that
# timed out),
# DEVICE_CHECK_BENCH=0 (skip the bench stage when rerunning extras).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument $arg (use --quick)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$QUICK" = 1 ]; then BUDGET=${DEVICE_CHECK_BUDGET:-300}; else BUDGET=${DEVICE_CHECK_BUDGET:-470}; fi
START=$(date +%s)
TMP=$(mktemp -d)
LOG="$TMP/device_check.log"
ROWS="$TMP/rows"
: > "$LOG"; : > "$ROWS"
touch "$TMP/start"  # files older than this are not this run's

say() { echo "$*" | tee -a "$LOG"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# stage NAME CAP_SECONDS MIN_SECONDS NOTE -- command...: runs the command under
# `timeout min(CAP, time left)`; records status and seconds in the summary table.
stage() {
  local name=$1 cap=$2 min=$3 note=$4; shift 5
  local rem t0 rc status secs
  rem=$(left)
  if [ "$rem" -lt "$min" ]; then
    say "=== $name: skipped (${rem}s left of the ${BUDGET}s budget)"
    echo "| $name | skipped: out of time | 0 | $note |" >> "$ROWS"
    return 0
  fi
  [ "$cap" -gt "$rem" ] && cap=$rem
  say "=== $name (timeout ${cap}s): $*"
  t0=$(date +%s)
  timeout -k 10 "$cap" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  secs=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${cap}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  say "=== $name: $status in ${secs}s"
  echo "| $name | $status | $secs | $note |" >> "$ROWS"
  return 0
}

# ------------------------------------------------------------------------------ setup
say "device_check.sh $* — $(date -u +%Y-%m-%dT%H:%M:%SZ), python: $(command -v "$PY")"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "device_check.sh: $PY not found (set PYTHON=...)" >&2; exit 2
fi
INSTALLED=$(cd /tmp && "$PY" -c "import funcnet, os; print(os.path.dirname(os.path.dirname(os.path.abspath(funcnet.__file__))))" 2>/dev/null || true)
if [ "$INSTALLED" = "$ROOT" ]; then
  say "funcnet already importable from this checkout ($ROOT): no install"
  echo "| install | ok: already installed from this checkout | 0 | |" >> "$ROWS"
else
  stage install 120 20 "pip install --no-deps --no-build-isolation -e . (the machine's JAX is kept)" -- \
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
  INSTALLED=$(cd /tmp && "$PY" -c "import funcnet, os; print(os.path.dirname(os.path.dirname(os.path.abspath(funcnet.__file__))))" 2>/dev/null || true)
  if [ "$INSTALLED" != "$ROOT" ]; then
    say "funcnet is not importable from this checkout after pip: using PYTHONPATH=$ROOT"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
PLATFORM=$("$PY" -c "import jax; print(jax.devices()[0].platform)" 2>>"$LOG" || echo unknown)
RES="$ROOT/benchmarks/results/$PLATFORM"
if [ "$QUICK" = 1 ]; then
  RES="$RES-quick"
elif [ "$PLATFORM" = cpu ]; then  # keep the committed CPU results (benchmarks.run --sizes cpu)
  RES="$RES-device-check"
fi
mkdir -p "$RES"
stage devices 90 10 "jax.devices(), versions" -- "$PY" - <<'EOF'
import importlib.metadata as md, platform, jax
print("python", platform.python_version(), "| jax", jax.__version__, "| backend",
      jax.default_backend())
for d in jax.devices():
    print(" ", d, "|", d.device_kind)
for name in ("jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "equinox", "optax",
             "torch", "numpy", "pytest", "funcnet"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
import funcnet
print("  funcnet imported from", funcnet.__file__)
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>&1 | tee -a "$LOG"

# ------------------------------------------------------------------------------ tests
TEST_ENV=()
if "$PY" -c "import pytest" >/dev/null 2>&1; then
  TEST_ENV=(env FUNCNET_ACCELERATOR_TESTS=1)
  if [ "$PLATFORM" = cpu ]; then  # two fake devices, so the parallel paths are exercised
    TEST_ENV+=("XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=2")
  fi
  TESTS=(tests/test_accelerator.py)
  # the suites whose code paths differ per platform (on an H200 the stage took 95 s with
  # them, 19 s without)
  [ "$QUICK" = 0 ] && TESTS+=(tests/ops/test_conv.py tests/ops/test_conv_lowering.py tests/ops/test_pool.py \
    tests/train/test_step.py tests/parallel/test_parallel_api.py)
  stage tests 180 30 "${TESTS[*]} (platform_dependent, bf16, donation, pmap/sharded on every device)" -- \
    "${TEST_ENV[@]}" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
else
  say "=== tests: skipped: pytest is not installed for $PY"
  echo "| tests | skipped: pytest missing | 0 | |" >> "$ROWS"
fi

# ------------------------------------------------------------------------------ bench
CASES=small_mlp,wide_mlp_bf16,cnn_large
if [ "$QUICK" = 1 ]; then
  BENCH_ARGS=(--quick --cases "$CASES" --scan-cases small_mlp --torch-modes eager)
  BENCH_CAP=170
else
  BENCH_ARGS=(--sizes full --cases "$CASES" --torch-modes eager --budget 3)
  BENCH_CAP=240
fi
BENCH_ENV=(env)
if [ "$PLATFORM" = gpu ]; then  # leave room on the GPU for the PyTorch worker process
  BENCH_ENV+=("XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}")
fi
if [ "${DEVICE_CHECK_BENCH:-1}" = 0 ]; then
  say "=== bench: skipped (DEVICE_CHECK_BENCH=0)"
  echo "| bench | skipped: DEVICE_CHECK_BENCH=0 | 0 | |" >> "$ROWS"
else
  stage bench "$BENCH_CAP" 60 "benchmarks.run $CASES vs jax, flax, equinox, torch eager" -- \
    "${BENCH_ENV[@]}" "$PY" -m benchmarks.run "${BENCH_ARGS[@]}" --out "$RES"
fi

# ------------------------------------------------------------------------------ extras
QFLAG=()
[ "$QUICK" = 1 ] && QFLAG=(--quick)
# attention last: it writes after every T, so the time left decides how far it gets
for mod in ${DEVICE_CHECK_EXTRAS:-ops_vs_autodiff conv_lowering pool_lowering fit_guard dispatch decode attention}; do
  case $mod in   # on an H200: ops_vs_autodiff 13 of 15 ops in 80 s, attention to T = 4096 in 52 s
    ops_vs_autodiff) cap=100 ;;
    attention) cap=90 ;;
    dispatch|pool_lowering|decode) cap=40 ;;
    *) cap=60 ;;
  esac
  if [ -f "benchmarks/$mod.py" ]; then
    stage "$mod" "$cap" 15 "benchmarks/$mod.py" -- \
      "${BENCH_ENV[@]}" "$PY" -m "benchmarks.$mod" "${QFLAG[@]}" --out "$RES"
  else
    say "=== $mod: skipped (benchmarks/$mod.py not present)"
    echo "| $mod | skipped: not present | 0 | |" >> "$ROWS"
  fi
done

# ------------------------------------------------------------------------------ summary
TOTAL=$(( $(date +%s) - START ))
{
  echo "# device_check.sh — $PLATFORM$([ "$QUICK" = 1 ] && echo ", --quick")"
  echo
  echo "- date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ); wall time ${TOTAL}s of a ${BUDGET}s budget"
  echo "- command: \`bash benchmarks/device_check.sh $*\`; python: \`$(command -v "$PY")\`"
  echo "- funcnet from: \`${INSTALLED:-PYTHONPATH $ROOT}\`"
  echo
  echo '```'
  sed -n '/^=== devices (/,/^=== devices:/p' "$LOG" | sed '1d;$d'
  echo '```'
  echo
  echo "| stage | status | seconds | what |"
  echo "|---|---|---:|---|"
  cat "$ROWS"
  echo
  if [ "$RES/results.json" -nt "$TMP/start" ]; then
    "$PY" - "$RES/results.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"## Benchmarks ({r['profile']} sizes; full table in results.md)\n")
for dt, p in r["env"].get("peak", {}).items():
    print(f"- measured matmul peak {dt} ({p['n']}²): {p['tflops']:.1f} TFLOP/s")
print()
print("| case | library | mode | ms/step | TFLOP/s | % peak | mem MiB | × best peer (same mode) |")
print("|---|---|---|---:|---:|---:|---:|---:|")
f = lambda x, s: "–" if x is None else format(x, s)
for c in r["cases"]:
    for row in c["rows"]:
        if row.get("error"):
            print(f"| {c['name']} | {row['library']} | {row['mode']} | error: {row['error'][:60]} | | | | |")
            continue
        mem = (row.get("memory") or {}).get("total")
        print(f"| {c['name']} | {row['library']} | {row['mode']} | "
              f"{row['time']['median_s'] * 1e3:.3f} | {f(row.get('gflops') and row['gflops'] / 1e3, '.2f')} | "
              f"{f(row.get('pct_peak'), '.0f')} | {f(mem and mem / 2 ** 20, '.1f')} | "
              f"{f(row.get('ratio_same_mode'), '.2f')} |")
print("\n## Targets\n")
for t in r.get("targets", []):
    print(f"- {t['text']}")
EOF
  else
    echo "(no benchmark results from this run: see device_check.log)"
  fi
} > "$TMP/device_check.md" 2>>"$LOG"
cp "$TMP/device_check.md" "$TMP/device_check.log" "$RES/"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$TMP/device_check.md" "$TMP/device_check.log" "$OUT/"
  for f in results.json results.md; do
    [ "$RES/$f" -nt "$TMP/start" ] && cp "$RES/$f" "$OUT/"
  done
  (cd "$(dirname "$RES")" && find "$(basename "$RES")" -type f -newer "$TMP/start" -print0 |
     tar -czf "$OUT/results_$(basename "$RES").tar.gz" --null -T -)
fi
cat "$TMP/device_check.md"
echo "device_check.sh: results in $RES${OUT:+ and $OUT} (${TOTAL}s)"
rm -rf "$TMP"
