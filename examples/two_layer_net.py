"""The book's two-layer net: Affine → ReLU → Affine → Softmax-with-Loss (notes 002/003).

``TwoLayerNet(input_size=64, hidden_size=50, output_size=10)`` on the flattened digits,
trained by mini-batch SGD (learning rate 0.1, batch 100) with the class-index form of the
softmax cross-entropy, whose backward rule is ``(y - t) / N`` (note 003). Train and test
accuracy are measured after every epoch, as in the book's figure 4-12.

    python examples/two_layer_net.py            # 100 epochs, ~96 % test accuracy
    python examples/two_layer_net.py --quick    # 3 epochs (CI)

Writes ``two_layer_net.png`` (loss and train/test accuracy per epoch).
"""
from funcnet import nn, optim, train
import _common


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=100)
    args = p.parse_args()
    x_train, x_test, y_train, y_test = _common.digits(flatten=True)
    model = nn.serial(nn.Dense(50, w_init=nn.initializers.normal(0.01)), nn.ReLU(),
                      nn.Dense(10, w_init=nn.initializers.normal(0.01)))
    init_key, fit_key = _common.keys(args.seed)
    _, params, state = model.init(init_key, (-1, 64))
    epochs = 3 if args.quick else args.epochs
    params, state, _, hist = train.fit(
        model, params, state, optim.sgd(0.1), (x_train, y_train), epochs, batch_size=100,
        key=fit_key, eval_data=(x_test, y_test), progress=not args.quick)
    print(f"two-layer net after {epochs} epochs: train accuracy {hist['accuracy'][-1]:.4f} "
          f"(during the last epoch), test accuracy {hist['eval_accuracy'][-1]:.4f}")

    plt = _common.pyplot()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_l.plot(hist["epoch"], hist["loss"])
    ax_l.set(xlabel="epoch", ylabel="training loss", yscale="log", title="softmax-with-loss")
    ax_a.plot(hist["epoch"], hist["accuracy"], label="train (during the epoch)")
    ax_a.plot(hist["epoch"], hist["eval_accuracy"], "--", label="test")
    ax_a.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    ax_a.legend()
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
    _common.savefig(fig, args.out, "two_layer_net.png")
    return hist


if __name__ == "__main__":
    main()
