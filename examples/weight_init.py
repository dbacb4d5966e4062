"""Weight initialization: std 0.01 vs Xavier vs He on a deep ReLU MLP (the book's §6.2).

1. Activation histograms: 1000 random inputs through 5 ``Dense(100) → ReLU`` layers.
   With std 0.01 the activations shrink towards 0 layer after layer (vanishing signal);
   Xavier (``Var = 1/n`` for these square layers, the book's choice for sigmoid/tanh)
   still shrinks them under ReLU; He (``Var = 2/n``) keeps them spread in every layer.
2. Training: the same 6-layer MLP trained by SGD (learning rate 0.01) on the digits with
   each initialization (one compiled epoch reused for the three), as the book's figure
   6-15: std 0.01 does not learn at all, He learns fastest.

    python examples/weight_init.py            # 30 epochs
    python examples/weight_init.py --quick    # 1 epoch (CI)

Writes ``weight_init_activations.png`` and ``weight_init_loss.png``.
"""
import jax
import jax.numpy as jnp
import numpy as np

from funcnet import nn, optim, train
import _common

INITS = {"std 0.01": nn.initializers.normal(0.01),
         "Xavier": nn.initializers.xavier_normal(),
         "He": nn.initializers.he_normal()}
DEPTH, WIDTH = 5, 100


def mlp(w_init, out=10):
    layers = [layer for _ in range(DEPTH) for layer in (nn.Dense(WIDTH, w_init=w_init),
                                                       nn.ReLU())]
    return nn.serial(*layers, nn.Dense(out, w_init=w_init))


def activations(w_init, x, key):
    """The output of each of the DEPTH ReLU layers for inputs ``x``."""
    model = mlp(w_init)
    _, params, state = model.init(key, (-1, x.shape[1]))
    outs, h = [], x
    for layer, p, s in zip(model.layers, params, state):
        h, _ = layer.apply(p, s, h)
        if layer.name == "ReLU":
            outs.append(np.asarray(h))
    return outs


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    plt = _common.pyplot()
    k_x, k_init = _common.keys(args.seed)
    x = jax.random.normal(k_x, (1000, WIDTH), jnp.float32)
    fig, axes = plt.subplots(len(INITS), DEPTH, figsize=(12, 6.5), sharey="row")
    for row, (name, w_init) in zip(axes, INITS.items()):
        acts = activations(w_init, x, k_init)
        top = float(acts[0].max())  # one x range per row: shrinking activations pile up left
        for i, (ax, a) in enumerate(zip(row, acts)):
            ax.hist(a[a > 0], bins=30, range=(0, top))
            ax.set_title(f"{name}: layer {i + 1}, std {a.std():.1e}", fontsize=9)
            ax.tick_params(labelsize=7)
        row[0].set_ylabel("positive activations")
    _common.savefig(fig, args.out, "weight_init_activations.png")

    x_train, _, y_train, _ = _common.digits(flatten=True)
    epochs = 1 if args.quick else args.epochs
    template = mlp(nn.initializers.he_normal())  # same structure: one compiled epoch for all
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, w_init in INITS.items():
        _, params, state = mlp(w_init).init(k_init, (-1, 64))
        *_, hist = train.fit(template, params, state, optim.sgd(0.01), (x_train, y_train),
                             epochs, batch_size=32, key=k_init, progress=False)
        print(f"{name}: final training loss {hist['loss'][-1]:.4f}")
        ax.plot(hist["epoch"], hist["loss"], "o-", label=name)
    ax.set(xlabel="epoch", ylabel="training loss", yscale="log",
           title="5 hidden ReLU layers, SGD lr 0.01")
    ax.grid(alpha=0.3)
    ax.legend()
    _common.savefig(fig, args.out, "weight_init_loss.png")


if __name__ == "__main__":
    main()
