"""The book's simple CNN (note 003 §7): Conv → ReLU → Pool → Affine → ReLU → Affine.

On the 8×8 digits: Conv2D(30, 3×3) → ReLU → MaxPool2D(2) → Flatten → Dense(100) →
ReLU → Dense(10) (a 3×3 kernel instead of the book's 5×5 so that the 8×8 images keep a 6×6 map).
With ``--mnist DIR`` (a folder with the four MNIST idx files, plain or gzipped) it trains
the book's exact network, Conv2D(30, 5×5), on 28×28 MNIST. Adam (learning rate 0.001),
batch 100, as in the book.

    python examples/cnn.py                     # digits, 20 epochs, ~98 % test accuracy
    python examples/cnn.py --mnist ~/mnist     # MNIST, 20 epochs (~99 %, minutes on CPU)
    python examples/cnn.py --quick             # digits, 1 epoch (CI)

Writes ``cnn.png`` (loss and test accuracy per epoch) and ``cnn_filters.png`` (the 30
learned first-layer filters, the book's figure 7-24).
"""
import numpy as np

from funcnet import data, nn, optim, train
import _common


def load(mnist_dir):
    if mnist_dir is None:
        return _common.digits(), 3
    x_train, y_train = data.load_mnist(mnist_dir, split="train")
    x_test, y_test = data.load_mnist(mnist_dir, split="test")
    return (x_train, x_test, y_train, y_test), 5


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--mnist", default=None, help="folder with the MNIST idx files")
    args = p.parse_args()
    (x_train, x_test, y_train, y_test), k = load(args.mnist)
    model = nn.serial(nn.Conv2D(30, k), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                      nn.Dense(100), nn.ReLU(), nn.Dense(10))
    print(nn.summary(model, (-1,) + x_train.shape[1:]))
    init_key, fit_key = _common.keys(args.seed)
    _, params, state = model.init(init_key, (-1,) + x_train.shape[1:])
    epochs = 1 if args.quick else args.epochs
    params, state, _, hist = train.fit(
        model, params, state, optim.adam(1e-3), (x_train, y_train), epochs, batch_size=100,
        key=fit_key, eval_data=(x_test, y_test))
    print(f"CNN test accuracy {hist['eval_accuracy'][-1]:.4f}")

    plt = _common.pyplot()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_l.plot(hist["epoch"], hist["loss"], "o-", label="train")
    ax_l.plot(hist["epoch"], hist["eval_loss"], "s-", label="test")
    ax_l.set(xlabel="epoch", ylabel="loss", yscale="log", title="simple CNN")
    ax_a.plot(hist["epoch"], hist["eval_accuracy"], "s-")
    ax_a.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    ax_l.legend()
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
    _common.savefig(fig, args.out, "cnn.png")

    w = np.asarray(params[0]["w"])[:, :, 0, :]  # (k, k, 30): HWIO, one input channel
    fig, axes = plt.subplots(3, 10, figsize=(10, 3.2))
    for i, ax in enumerate(axes.ravel()):
        ax.imshow(w[:, :, i], cmap="gray_r")
        ax.axis("off")
    fig.suptitle("first-layer filters")
    _common.savefig(fig, args.out, "cnn_filters.png")
    return hist


if __name__ == "__main__":
    main()
