"""A small U-Net that removes Gaussian noise from the embedded 8×8 digits.

Ronneberger et al. (2015), "U-Net": an encoder (two 3×3 convolutions), a stride-2
convolution down to 4×4, an upsampling path back to 8×8 and a skip connection that
concatenates the encoder's features with the upsampled ones (``FanOut`` / ``parallel`` /
``FanInConcat``), then a 1×1 convolution to one channel. The upsampling is bilinear
(``nn.Upsample2D``) followed by a 3×3 convolution, nearest with ``--up nearest``, or a
learned 4×4 transposed convolution of stride 2 with ``--up transpose``
(``nn.ConvTranspose2D``).
Trained with ``fit`` and the mean squared error against the clean images (a regression:
``loss_fn=ops.mean_squared_error``, the targets are images).

::

    python examples/unet_denoise.py            # 20 epochs, ~10 s on 2 CPU cores
    python examples/unet_denoise.py --quick    # CI smoke run

Prints the model summary, one line per epoch and the test PSNR of the noisy inputs and
of the network's outputs; writes ``unet_denoise.png`` (loss per epoch and test digits:
clean, noisy, denoised).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import nn, ops, optim, train
import _common


def conv(channels, stride=1):
    return nn.Conv2D(channels, 3, stride=stride, padding="SAME")


def upsample(channels, how):
    """8×8 from 4×4: a resize then a 3×3 convolution (Odena et al. 2016), or a transposed
    convolution (``(4 - 1)·2 - 2·1 + 4 = 8``)."""
    if how == "transpose":
        return nn.ConvTranspose2D(channels, 4, stride=2, padding=1)
    return nn.serial(nn.Upsample2D(2, "bilinear" if how == "bilinear" else "nearest"),
                     conv(channels))


def build_model(width=16, up="bilinear"):
    encoder = nn.serial(conv(width), nn.ReLU(), conv(width), nn.ReLU())
    bottom = nn.serial(conv(2 * width, stride=2), nn.ReLU(), conv(2 * width), nn.ReLU(),
                       upsample(width, up), nn.ReLU())
    return nn.serial(encoder, nn.FanOut(2), nn.parallel(bottom, nn.Identity),
                     nn.FanInConcat(-1), conv(width), nn.ReLU(), nn.Conv2D(1, 1))


def psnr(a, b):
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    a, b = (jnp.asarray(v, jnp.float32) for v in (a, b))
    return float(10 * jnp.log10(1.0 / jnp.mean((a - b) ** 2)))


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--sigma", type=float, default=0.3, help="noise standard deviation")
    p.add_argument("--up", choices=("bilinear", "nearest", "transpose"), default="bilinear")
    args = p.parse_args()
    epochs = 2 if args.quick else args.epochs
    t0 = time.perf_counter()
    clean_train, clean_test, _, _ = _common.digits()
    init_key, fit_key, noise_key = _common.keys(args.seed, 3)
    k_train, k_test = jax.random.split(noise_key)
    noisy_train = clean_train + args.sigma * np.asarray(
        jax.random.normal(k_train, clean_train.shape, clean_train.dtype))
    noisy_test = clean_test + args.sigma * np.asarray(
        jax.random.normal(k_test, clean_test.shape, clean_test.dtype))
    model = build_model(8 if args.quick else 16, args.up)
    print(nn.summary(model, (-1,) + clean_train.shape[1:]))
    _, params, state = model.init(init_key, (-1,) + clean_train.shape[1:])
    steps = epochs * (len(clean_train) // args.batch_size)
    opt = optim.adam(optim.cosine_decay_schedule(args.lr, steps))
    params, state, _, history = train.fit(
        model, params, state, opt, (noisy_train, clean_train), epochs,
        batch_size=args.batch_size, key=fit_key, eval_data=(noisy_test, clean_test),
        loss_fn=ops.mean_squared_error, metrics_fn=lambda out, y: {})
    denoised, _ = jax.jit(lambda x: model.apply(params, state, x))(noisy_test)
    before, after = psnr(noisy_test, clean_test), psnr(denoised, clean_test)
    print(f"test PSNR: noisy {before:.2f} dB, denoised {after:.2f} dB "
          f"({time.perf_counter() - t0:.1f} s in all)")
    plot(history, clean_test, noisy_test, np.asarray(denoised), args.out)
    return {"psnr_noisy": before, "psnr_denoised": after}


def plot(history, clean, noisy, denoised, out, n=8):
    plt = _common.pyplot()
    fig = plt.figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 3, 1)
    ax.plot(history["epoch"], history["loss"], "o-", label="train")
    ax.plot(history["epoch"], history["eval_loss"], "s-", label="test")
    ax.set(xlabel="epoch", ylabel="mean squared error", yscale="log", title="U-Net loss")
    ax.grid(alpha=0.3)
    ax.legend()
    rows = (("clean", clean), ("noisy", noisy), ("denoised", denoised))
    for r, (label, images) in enumerate(rows):
        for i in range(n):
            a = fig.add_subplot(3, 3 * n // 2, r * (3 * n // 2) + n // 2 + i + 1)
            a.imshow(np.clip(images[i, :, :, 0], 0, 1), cmap="gray_r", vmin=0, vmax=1)
            a.set_xticks([])
            a.set_yticks([])
            if i == 0:
                a.set_ylabel(label, fontsize=8)
    return _common.savefig(fig, out, "unet_denoise.png")


if __name__ == "__main__":
    main()
