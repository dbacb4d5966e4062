"""Training with and without Batch Normalization (note 003; the book's §6.3.2).

A 6-layer MLP (5 hidden layers of 100 ReLU units) trained by SGD (learning rate 0.01,
batch 100) on 1000 training digits, once as ``Dense → ReLU`` blocks and once as
``Dense → BatchNorm → ReLU`` blocks, from the same weights, for several scales of the
initial weights (normal with standard deviation ``w_std``). As in the book's figure 6-19,
batch norm trains fast at every scale while the plain network stalls when the initial
scale is too small or too large.

    python examples/batchnorm_comparison.py           # 4 weight scales, 40 epochs
    python examples/batchnorm_comparison.py --quick   # 1 scale, 2 layers, 2 epochs (CI)

Writes ``batchnorm_comparison.png`` (test accuracy per epoch, one panel per scale).
"""
import jax

from funcnet import nn, optim, train
import _common


def mlp(batch_norm: bool, w_std: float, depth: int = 5, width: int = 100):
    w_init = nn.initializers.normal(w_std)
    layers = []
    for _ in range(depth):
        layers += [nn.Dense(width, w_init=w_init)] + ([nn.BatchNorm()] if batch_norm else [])
        layers.append(nn.ReLU())
    return nn.serial(*layers, nn.Dense(10, w_init=w_init))


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    x_train, x_test, y_train, y_test = _common.digits(flatten=True)
    x_train, y_train = x_train[:1000], y_train[:1000]
    scales = [0.1] if args.quick else [0.01, 0.05, 0.1, 1.0]
    epochs = 2 if args.quick else args.epochs
    # one model object per variant: the compiled epoch is reused across weight scales
    depth = 2 if args.quick else 5
    models = {bn: mlp(bn, 1.0, depth) for bn in (False, True)}
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(scales), figsize=(3.2 * len(scales) + 0.5, 3.2),
                             squeeze=False)
    for ax, w_std in zip(axes[0], scales):
        for bn, model in models.items():
            _, params, state = mlp(bn, w_std, depth).init(jax.random.PRNGKey(args.seed),
                                                          (-1, 64))
            label = "with BatchNorm" if bn else "without"
            try:
                *_, hist = train.fit(model, params, state, optim.sgd(0.01), (x_train, y_train),
                                     epochs, batch_size=100, key=jax.random.PRNGKey(args.seed),
                                     eval_data=(x_test, y_test), progress=False)
            except FloatingPointError as e:  # too large a scale makes the plain MLP diverge
                print(f"w_std={w_std:g} {label}: diverged ({e})")
                ax.plot([], [], "-" if bn else "--", label=f"{label} (diverged)")
                continue
            print(f"w_std={w_std:g} {label}: test accuracy {hist['eval_accuracy'][-1]:.4f}")
            ax.plot(hist["epoch"], hist["eval_accuracy"], "-" if bn else "--", label=label)
        ax.set(title=f"initial w std {w_std:g}", xlabel="epoch", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    for ax in axes[0]:
        ax.legend(fontsize=8)
    _common.savefig(fig, args.out, "batchnorm_comparison.png")


if __name__ == "__main__":
    main()
