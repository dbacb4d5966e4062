"""PyTorch runs in a child process, driven step by step by the runner.

On a small CPU, PyTorch's OpenMP pool and XLA's thread pool in one process fight over
the cores (a 1 ms PyTorch step was measured at 15-70 ms after JAX had run in the same
process). The runner therefore keeps PyTorch in a worker process and asks it for one
sample at a time, so the libraries are still interleaved round by round while each
library's threads are alone in their process.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import time
import traceback

from benchmarks import common
from benchmarks.cases import Case, make_batches


class _Local:
    """One torch (mode) entry inside the worker."""

    def __init__(self, case: Case, mode: str, residuals: bool):
        import torch

        from benchmarks.libs import load

        cuda = torch.cuda.is_available()
        if cuda:  # this entry's own peak: its model, optimizer state and steps
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.b = load("torch").build(case, compile=(mode == "compile"))
        x, y = make_batches(case, 1, seed=1)
        self.x, self.y = self.b.prepare(x[0], y[0])
        self.residual_bytes = self.b.residual_bytes(self.x, self.y) if residuals else None
        self.compile_s = None
        if mode == "compile":  # the first calls trace and compile (the optimizer may recompile)
            self.compile_s = common.timed(lambda: self.run(3))
        self.peak_bytes = None
        if cuda:
            self.run(2)
            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        self.n_inner = 1

    def run(self, n: int):
        loss = None
        for _ in range(n):
            loss = self.b.step(self.x, self.y)
        self.b.sync()
        return loss

    def sample(self):
        t0 = time.perf_counter()
        loss = self.run(self.n_inner)
        dt = (time.perf_counter() - t0) / self.n_inner
        return dt, float(loss.detach().float().cpu())


def _serve(conn) -> None:
    entries: dict[str, _Local] = {}
    while True:
        cmd, kw = conn.recv()
        if cmd == "stop":
            conn.send(("ok", None))
            return
        try:
            if cmd == "build":
                case = Case(**kw["case"])
                e = entries[kw["mode"]] = _Local(case, kw["mode"], kw["residuals"])
                res = {"compile_s": e.compile_s, "residual_bytes": e.residual_bytes,
                       "device": e.b.device, "peak_bytes": e.peak_bytes}
            elif cmd == "run":
                e = entries[kw["mode"]]
                t = common.timed(lambda: e.run(kw["n"]))
                res = t
            elif cmd == "set_inner":
                entries[kw["mode"]].n_inner = kw["n"]
                res = None
            elif cmd == "drop":  # end of a case: free its models
                entries.clear()
                res = None
            elif cmd == "sample":
                res = entries[kw["mode"]].sample()
            elif cmd == "peak":
                res = common.torch_matmul_peak(kw["dtype"], kw["n"], kw["repeats"])
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", res))
        except Exception as exc:  # noqa: BLE001 - reported to the runner
            conn.send(("err", f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                       traceback.format_exc()[-2000:]))


class Worker:
    """Handle on a worker process: ``call(cmd, **kw)`` returns its answer or raises."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()

    def call(self, cmd: str, **kw):
        self.conn.send((cmd, kw))
        msg = self.conn.recv()
        if msg[0] == "err":
            raise RuntimeError(msg[1])
        return msg[1]

    def close(self):
        try:
            self.call("stop")
        except Exception:  # noqa: BLE001
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


def case_fields(case: Case) -> dict:
    return dataclasses.asdict(case)
