"""PyTorch eager and ``torch.compile`` (NCHW images, ``nn.RNN``/``nn.LSTM``), torch.optim.Adam.

``compile=True`` compiles the forward + loss (AOTAutograd compiles its backward) and the
optimizer step separately, as the PyTorch tutorials do; ``zero_grad`` and ``backward``
stay eager calls.
"""
from __future__ import annotations

import numpy as np

from benchmarks.cases import RECURRENT, Case, cnn_flat_size, mlp_sizes
from benchmarks.libs import TorchBuild

NAME = "torch"


def versions() -> dict[str, str]:
    """From package metadata: the runner's process must not start PyTorch's threads."""
    from importlib import metadata

    try:
        return {"torch": metadata.version("torch")}
    except metadata.PackageNotFoundError as e:
        raise ImportError("torch is not installed") from e


def make_model(case: Case):
    import torch
    from torch import nn

    d = case.dims
    if case.model == "mlp":
        sizes = mlp_sizes(d)
        layers = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        return nn.Sequential(*layers)
    if case.model == "cnn":
        return nn.Sequential(
            nn.Conv2d(d["cin"], d["filters"], d["k"]), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Linear(cnn_flat_size(d), d["hidden"]), nn.ReLU(),
            nn.Linear(d["hidden"], d["out"]))
    if case.model in RECURRENT:
        lstm = case.model == "lstm"

        class RNN(nn.Module):
            def __init__(self):
                super().__init__()
                # time-major, as funcnet
                self.rnn = (nn.LSTM(d["D"], d["H"]) if lstm
                            else nn.RNN(d["D"], d["H"], nonlinearity="tanh"))
                self.head = nn.Linear(d["H"], d["out"])

            def forward(self, x):
                _, h = self.rnn(x)
                if lstm:  # nn.LSTM's final state is (h, c)
                    h = h[0]
                return self.head(h[0])
        return RNN()
    raise ValueError(case.model)


def build(case: Case, compile: bool = False) -> TorchBuild:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[case.dtype]
    model = make_model(case).to(device=device, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn(x, y):
        return F.cross_entropy(model(x), y)

    opt_step = opt.step
    if compile:
        loss_fn = torch.compile(loss_fn)
        opt_step = torch.compile(opt.step)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        opt_step()
        return loss

    def prepare(x, y):
        if case.model == "cnn":
            x = np.moveaxis(x, -1, -3)
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=dtype)
        return xt, torch.from_numpy(y.astype(np.int64)).to(device)

    def residual_bytes(x, y):
        if compile:
            return None
        keep = {p.untyped_storage().data_ptr() for p in model.parameters()}
        keep |= {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
        seen = {}

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in keep:
                seen[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), y)
        del loss
        return int(sum(seen.values()))

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    return TorchBuild(step, prepare, residual_bytes, device, sync)
