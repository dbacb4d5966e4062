"""Compare SGD, Momentum, AdaGrad and Adam, as in the book's optimizer comparison.

1. The four optimizers on f(x, y) = x^2 / 20 + y^2 from (-7, 2) for 30 steps, with the
   book's learning rates (SGD 0.95, Momentum 0.1, AdaGrad 1.5, Adam 0.3): a 2x2 plot of
   the trajectories over the contour lines of f.
2. A small MLP classifier (64-100-100-10, ReLU, softmax cross-entropy, built from
   ``funcnet.ops``) trained on the embedded 8x8 digits with each optimizer: a plot of the
   training-loss curves, and the test accuracy printed.

The optimizers are ``funcnet.optim`` pure state transitions; each training run is one
jitted ``lax.scan``. To stay close to the book's code, AdaGrad starts from ``G_0 = 0``
and Adam uses note 000's folded form with ``eps = 1e-7``.

Usage::

    python examples/optimizer_comparison.py [--quick] [--out DIR] [--seed N]

``--quick`` runs a few steps only (CI smoke test, < 20 s); the full run takes < 2 min.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import funcnet.optim as optim  # noqa: E402
from funcnet import ops  # noqa: E402
import _common  # noqa: E402


def book_optimizers(which: str):
    """The four optimizers with the book's learning rates (``which``: "toy" or "mlp")."""
    if which == "toy":
        return {
            "SGD": optim.sgd(0.95),
            "Momentum": optim.momentum(0.1, 0.9),
            "AdaGrad": optim.adagrad(1.5, initial_accumulator_value=0.0),
            "Adam": optim.adam(0.3, eps=1e-7, form="folded"),
        }
    return {
        "SGD": optim.sgd(0.1),
        "Momentum": optim.momentum(0.05, 0.9),
        "AdaGrad": optim.adagrad(0.05, initial_accumulator_value=0.0),
        "Adam": optim.adam(0.003, eps=1e-7, form="folded"),
    }


# ------------------------------------------------------------- 1. the toy function


def toy_f(p):
    return p["x"] ** 2 / 20.0 + p["y"] ** 2


def toy_trajectory(opt, steps: int):
    params = {"x": jnp.asarray(-7.0), "y": jnp.asarray(2.0)}

    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(toy_f)(p), s, p)
        p = optim.apply_updates(p, u)
        return (p, s), jnp.stack([p["x"], p["y"]])

    _, path = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
    start = jnp.stack([params["x"], params["y"]])[None, :]
    return jnp.concatenate([start, path])


def plot_toy(paths: dict, out: Path) -> Path:
    xs, ys = np.meshgrid(np.linspace(-10, 10, 401), np.linspace(-5, 5, 201))
    zs = xs ** 2 / 20.0 + ys ** 2
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, path) in zip(axes.ravel(), paths.items()):
        ax.contour(xs, ys, zs, levels=np.linspace(0.5, 10, 8) ** 2 / 4, colors="gray",
                   linewidths=0.6)
        ax.plot(path[:, 0], path[:, 1], "o-", color="red", markersize=3)
        ax.plot(0, 0, "+", color="black", markersize=10)
        ax.set(xlim=(-10, 10), ylim=(-5, 5), title=name, xlabel="x", ylabel="y")
    fig.suptitle("f(x, y) = x²/20 + y², 30 steps from (-7, 2)")
    fig.tight_layout()
    path = out / "optimizer_trajectories.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------- 2. MLP on digits


def load_data():
    """The digits as 64-vectors, split 80/20 like every example: ``(train, test)`` pairs."""
    x_train, x_test, y_train, y_test = _common.digits(flatten=True)
    return (x_train, y_train), (x_test, y_test)


def mlp_init(key, sizes=(64, 100, 100, 10)):
    params = []
    for k, (m, n) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        scale = np.float32(np.sqrt(2.0 / m))
        params.append({"w": jax.random.normal(k, (m, n), jnp.float32) * scale,
                       "b": jnp.zeros((n,), jnp.float32)})
    return params


def mlp_logits(params, x):
    for layer in params[:-1]:
        x = ops.relu(ops.affine(x, layer["w"], layer["b"]))
    return ops.affine(x, params[-1]["w"], params[-1]["b"])


def mlp_loss(params, x, y):
    return ops.softmax_cross_entropy(mlp_logits(params, x), y)


def train_all(opts: dict, data, steps: int, batch_size: int = 128, seed: int = 0):
    """Train one MLP per optimizer on the same mini-batches; one compiled call for all."""
    (x, y), _ = data
    idx = jax.random.randint(jax.random.PRNGKey(seed + 1), (steps, batch_size), 0, len(y))
    params = mlp_init(jax.random.PRNGKey(seed))
    x, y = jnp.asarray(x), jnp.asarray(y)

    def run(opt, params, idx):
        def body(carry, i):
            p, s = carry
            loss, g = jax.value_and_grad(mlp_loss)(p, x[i], y[i])
            u, s = opt.update(g, s, p)
            return (optim.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), idx)
        return p, losses

    return jax.jit(lambda p, i: {n: run(o, p, i) for n, o in opts.items()})(params, idx)


@jax.jit
def _predict(params, x):
    return jnp.argmax(mlp_logits(params, x), axis=-1)


def accuracy(params, x, y) -> float:
    return float(np.mean(np.asarray(_predict(params, jnp.asarray(x))) == y))


def plot_losses(curves: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, losses in curves.items():
        ax.plot(np.arange(1, len(losses) + 1), losses, label=name, linewidth=1)
    ax.set(xlabel="iteration", ylabel="training loss (mini-batch)", yscale="log",
           title="MLP 64-100-100-10 on the 8x8 digits")
    ax.legend()
    fig.tight_layout()
    path = out / "optimizer_digits_loss.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    args = _common.parser(__doc__).parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    toy = jax.jit(lambda: {n: toy_trajectory(o, 30) for n, o in book_optimizers("toy").items()})
    out = toy()
    paths = {name: np.asarray(out[name]) for name in book_optimizers("toy")}
    for name, path in paths.items():
        print(f"{name:9s} after 30 steps: x={path[-1, 0]: .4f}  y={path[-1, 1]: .4f}")
    print("saved", plot_toy(paths, args.out), f"({time.perf_counter() - t0:.1f} s)")

    data = load_data()
    steps = 10 if args.quick else 600
    curves, results = {}, {}
    trained = train_all(book_optimizers("mlp"), data, steps, seed=args.seed)
    print(f"trained in {time.perf_counter() - t0:.1f} s")
    for name in book_optimizers("mlp"):
        params, losses = trained[name]
        curves[name] = np.asarray(losses)
        results[name] = accuracy(params, *data[1])
        print(f"{name:9s} loss {curves[name][0]:.3f} -> {curves[name][-1]:.4f}  "
              f"test accuracy {results[name]:.3f}")
    print("saved", plot_losses(curves, args.out))
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main()
