"""A small ResNet (residual blocks with batch norm) on the embedded 8×8 digits.

He et al. (2016), "Deep Residual Learning for Image Recognition": each block computes
``relu(x + F(x))`` with ``F = conv-BN-ReLU-conv-BN``; where the shape changes (stride 2,
more channels) the shortcut is a 1×1 convolution with batch norm (option B of the
paper). Built from ``nn.Residual`` and, for the projection shortcut, stax's
``FanOut`` / ``parallel`` / ``FanInSum``; the head is global average pooling and a Dense
layer.

::

    python examples/resnet.py            # 15 epochs, 10-20 s on 2 CPU cores, ~99 %
    python examples/resnet.py --quick    # CI smoke run

Prints the model summary, one line per epoch and the test accuracy; writes
``resnet.png`` (loss and accuracy per epoch).
"""
import time

from funcnet import nn, optim, train
import _common


def conv_bn(channels, kernel=3, stride=1):
    return [nn.Conv2D(channels, kernel, stride=stride, padding="SAME", use_bias=False),
            nn.BatchNorm()]


def block(channels, stride=1, project=False):
    """``relu(shortcut(x) + F(x))``; identity shortcut unless ``project``."""
    residual = nn.serial(*conv_bn(channels, stride=stride), nn.ReLU(), *conv_bn(channels))
    if not project:
        return nn.serial(nn.Residual(residual), nn.ReLU())
    shortcut = nn.serial(*conv_bn(channels, kernel=1, stride=stride))
    return nn.serial(nn.FanOut(2), nn.parallel(residual, shortcut), nn.FanInSum(), nn.ReLU())


def build_model(width=16):
    return nn.serial(*conv_bn(width), nn.ReLU(),
                     block(width), block(width),
                     block(2 * width, stride=2, project=True), block(2 * width),
                     nn.GlobalAvgPool2D(), nn.Dense(10))


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args()
    epochs = 2 if args.quick else args.epochs
    t0 = time.perf_counter()
    x_train, x_test, y_train, y_test = _common.digits()
    model = build_model(8 if args.quick else 16)
    print(nn.summary(model, (-1,) + x_train.shape[1:]))
    init_key, fit_key = _common.keys(args.seed)
    _, params, state = model.init(init_key, (-1,) + x_train.shape[1:])
    steps = epochs * (len(x_train) // args.batch_size)
    opt = optim.adamw(optim.cosine_decay_schedule(args.lr, steps), weight_decay=1e-4)
    params, state, _, history = train.fit(
        model, params, state, opt, (x_train, y_train), epochs, batch_size=args.batch_size,
        key=fit_key, eval_data=(x_test, y_test))
    result = train.evaluate(model, params, state, x_test, y_test)
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
          f"({time.perf_counter() - t0:.1f} s in all)")
    _common.plot_loss_accuracy(history, args.out, "resnet.png", "ResNet")
    return result


if __name__ == "__main__":
    main()
