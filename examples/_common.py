"""Shared helpers of the example scripts: command line, digits split, plotting.

The examples import this module as ``_common`` (Python puts the script's folder first
on ``sys.path`` when running ``python examples/<name>.py``).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax

from funcnet import data

DEFAULT_OUT = Path(__file__).resolve().parent / "out"
SPLIT_KEY = 0  # the fixed 80/20 split every example uses


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with ``--out``, ``--quick`` and ``--seed`` (and the docstring)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder for the PNG plots (default: examples/out/)")
    p.add_argument("--quick", action="store_true", help="tiny run for CI (seconds)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of init and shuffling")
    return p


def digits(*, flatten: bool = False):
    """The embedded digits, split 80/20 with a fixed key: ``x_train, x_test, y_train, y_test``."""
    x, y = data.load_digits(flatten=flatten)
    return data.train_test_split(x, y, key=SPLIT_KEY, stratify=True)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib
    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def savefig(fig, out: Path, name: str) -> Path:
    """Saves ``fig`` as ``out/name`` (creating ``out``), closes it, prints and returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    print(f"wrote {path}")
    return path


def plot_loss_accuracy(history, out: Path, name: str, title: str = ""):
    """Training and test loss (log scale) and accuracy per epoch, side by side, from
    ``fit``'s history (``eval_data`` given): writes ``out/name``."""
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ep = history["epoch"]
    ax_loss.plot(ep, history["loss"], "o-", label="train")
    ax_loss.plot(ep, history["eval_loss"], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log",
                title=f"{title} loss".strip())
    ax_acc.plot(ep, history["accuracy"], "o-", label="train")
    ax_acc.plot(ep, history["eval_accuracy"], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title} accuracy".strip())
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return savefig(fig, out, name)


def keys(seed: int, n: int = 2):
    """``n`` independent PRNG keys from ``seed``."""
    return tuple(jax.random.split(jax.random.PRNGKey(seed), n))
