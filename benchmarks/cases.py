"""Benchmark cases: model shapes, sizes per profile, FLOP counts and synthetic data.

Every library builds the same model for a case from the numbers here, so the shapes,
dtypes and ops agree across libraries (only the memory layout may follow each library's
idiom: NCHW in Equinox and PyTorch, NHWC in the others).

Models (all trained with softmax cross-entropy on integer labels and Adam, lr 1e-3):

* ``mlp``: ``Dense(h1) -> ReLU -> ... -> Dense(h_k) -> ReLU -> Dense(out)``.
* ``cnn`` (the book CNN): ``Conv(F filters, k x k, stride 1, pad 0) -> ReLU ->
  MaxPool(2x2, stride 2) -> Flatten -> Dense(hidden) -> ReLU -> Dense(out)``, input
  ``(N, 28, 28, 1)``.
* ``rnn``: vanilla tanh RNN ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``, ``h_0 = 0``, inputs
  time-major ``(T, N, D)``, loss on the last state through ``Dense(out)``.
* ``lstm``: standard LSTM, gates ``i, f, g, o`` from one product
  ``x_t Wx + h_{t-1} Wh + b`` of width ``4H`` (``i, f, o`` sigmoid, ``g`` tanh),
  ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``, ``h_0 = c_0 = 0``; inputs and
  head as for ``rnn`` (``Dense(out)`` on the last ``h``), same dims and batch.

FLOPs are counted analytically for the matrix products and convolutions only (a
multiply-add counts 2): forward ``2 N D H`` per dense layer, backward ``2 N D H`` for the
weight gradient and ``2 N D H`` for the input gradient, except that no library computes
the gradient with respect to the data, so the first layer (and the input projection of
the RNN) costs ``4 N D H`` instead of ``6 N D H``. The LSTM counts as the RNN with ``4H``
outputs per product (per step, input projection ``D -> 4H`` and recurrent ``H -> 4H``).
Elementwise work, pooling, the loss and the optimizer are not counted, so the reported
TFLOP/s is a lower bound on the work done.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PROFILES = ("full", "cpu", "quick")


@dataclasses.dataclass
class Case:
    """One benchmark case.

    Attributes:
      name: case id used on the command line and in the results (``small_mlp``...).
      model: ``"mlp"``, ``"cnn"``, ``"rnn"`` or ``"lstm"``.
      dtype: ``"float32"`` or ``"bfloat16"`` (params, activations and optimizer state).
      batch: batch size N.
      dims: model dimensions (see :func:`make_cases`).
      scan_length: number of steps in one ``lax.scan`` call (scan mode of JAX libraries).
      repeats: minimum number of timing samples per library.
      note: free text recorded in the results (e.g. how the case was scaled down).
    """

    name: str
    model: str
    dtype: str
    batch: int
    dims: dict
    scan_length: int
    repeats: int = 20
    note: str = ""

    @property
    def flops(self) -> float:
        return step_flops(self)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["flops_per_step"] = self.flops
        return d


ALL_CASES = ("small_mlp", "wide_mlp_f32", "wide_mlp_bf16", "cnn_b100", "cnn_large", "rnn",
             "lstm")
# models over time-major (T, N, D) sequences, with the same dims (see make_cases)
RECURRENT = ("rnn", "lstm")


def make_cases(profile: str = "cpu") -> dict[str, Case]:
    """The cases of a size profile.

    ``full`` is the issue's sizes (for an accelerator); ``cpu`` scales the wide MLP and the
    large-batch CNN down so that a full run fits in about ten minutes on two CPU cores;
    ``quick`` is a tiny smoke test.
    """
    if profile not in PROFILES:
        raise ValueError(f"make_cases: profile must be one of {PROFILES}, got {profile!r}")
    quick = profile == "quick"
    rep = 2 if quick else 20
    mlp_small = dict(inp=784, hidden=[100, 100], out=10)
    cnn = dict(hw=28, cin=1, filters=30, k=5, hidden=100, out=10)
    if profile == "full":
        wide = wide16 = dict(inp=4096, hidden=[4096] * 5, out=10)
        wide_n, wide_note = 8192, "issue size: 5 x 4096, batch 8192"
        wide16_note, wide_scan = wide_note, 5
        cnn_large_n, cnn_large_rep, cnn_large_note = 4096, rep, "issue size: batch 4096"
        cnn_large_scan = 5
        rnn = dict(T=50, D=32, H=128, out=10)
        rnn_n = 64
    elif profile == "cpu":
        wide = dict(inp=1024, hidden=[1024] * 5, out=10)
        wide16 = dict(inp=512, hidden=[512] * 5, out=10)
        wide_n, wide_scan = 256, 3
        wide_note = "scaled down for CPU from 5 x 4096, batch 8192 to 5 x 1024, batch 256"
        wide16_note = ("scaled down for CPU from 5 x 4096, batch 8192 to 5 x 512, batch 256 "
                       "(CPUs without native bf16 matmul are slow in bfloat16)")
        cnn_large_n, cnn_large_rep = 1024, 5
        cnn_large_note = "scaled down for CPU from batch 4096 to 1024, 5 repeats"
        cnn_large_scan = 2
        rnn = dict(T=50, D=32, H=128, out=10)
        rnn_n = 64
    else:
        wide = wide16 = dict(inp=64, hidden=[64] * 5, out=10)
        wide_n, wide_note = 32, "quick smoke-test size"
        wide16_note, wide_scan = wide_note, 2
        cnn_large_n, cnn_large_rep, cnn_large_note = 16, rep, "quick smoke-test size"
        cnn_large_scan = 2
        rnn = dict(T=5, D=8, H=16, out=10)
        rnn_n = 4
    small_n = 8 if quick else 100
    cnn_n = 4 if quick else 100
    cases = [
        Case("small_mlp", "mlp", "float32", small_n, mlp_small,
             scan_length=4 if quick else 100, repeats=rep),
        Case("wide_mlp_f32", "mlp", "float32", wide_n, wide,
             scan_length=wide_scan, repeats=rep, note=wide_note),
        Case("wide_mlp_bf16", "mlp", "bfloat16", wide_n, wide16,
             scan_length=wide_scan, repeats=rep, note=wide16_note),
        Case("cnn_b100", "cnn", "float32", cnn_n, cnn,
             scan_length=2 if quick else 5, repeats=rep),
        Case("cnn_large", "cnn", "float32", cnn_large_n, cnn,
             scan_length=cnn_large_scan, repeats=cnn_large_rep, note=cnn_large_note),
        *(Case(m, m, "float32", rnn_n, dict(rnn), scan_length=4 if quick else 20,
               repeats=rep) for m in RECURRENT),
    ]
    return {c.name: c for c in cases}


def mlp_sizes(dims: dict) -> list[int]:
    return [dims["inp"], *dims["hidden"], dims["out"]]


def cnn_flat_size(dims: dict) -> int:
    ho = dims["hw"] - dims["k"] + 1
    return (ho // 2) * (ho // 2) * dims["filters"]


def step_flops(case: Case) -> float:
    """Matmul/conv FLOPs of one training step (forward + backward), see module doc."""
    n, d = case.batch, case.dims
    if case.model == "mlp":
        sizes = mlp_sizes(d)
        total = 0.0
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            total += (4 if i == 0 else 6) * n * a * b
        return total
    if case.model == "cnn":
        ho = d["hw"] - d["k"] + 1
        conv = 4.0 * n * ho * ho * d["k"] * d["k"] * d["cin"] * d["filters"]
        flat = cnn_flat_size(d)
        return conv + 6.0 * n * flat * d["hidden"] + 6.0 * n * d["hidden"] * d["out"]
    if case.model in RECURRENT:
        t, dd, h = d["T"], d["D"], d["H"]
        g = 4 * h if case.model == "lstm" else h  # width of the cell's products
        return t * (4.0 * n * dd * g + 6.0 * n * h * g) + 6.0 * n * h * d["out"]
    raise ValueError(f"step_flops: unknown model {case.model!r}")


def input_shape(case: Case) -> tuple[int, ...]:
    """Shape of one input batch in funcnet's conventions (NHWC images, (T, N, D) sequences)."""
    d = case.dims
    if case.model == "mlp":
        return (case.batch, d["inp"])
    if case.model == "cnn":
        return (case.batch, d["hw"], d["hw"], d["cin"])
    if case.model in RECURRENT:
        return (d["T"], case.batch, d["D"])
    raise ValueError(f"input_shape: unknown model {case.model!r}")


def make_batches(case: Case, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` float32 input batches and int32 labels, stacked on a leading axis."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, *input_shape(case)), dtype=np.float32)
    y = rng.integers(0, case.dims["out"], size=(count, case.batch)).astype(np.int32)
    return x, y
