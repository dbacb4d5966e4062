"""A learning-rate sweep, 8 learning rates × 4 seeds, trained in ONE jitted call.

The whole training of one MLP (init from a seed, SGD with a traced learning rate, every
epoch a ``lax.scan`` over shuffled mini-batches of the digits via the pure
:func:`funcnet.train.train_step`) is a function of ``(learning_rate, seed)``;
``jax.vmap`` twice turns it into 32 trainings that XLA runs as one batched program.
funcnet's optimizers accept traced hyperparameters, so ``optim.sgd(lr)`` is built inside.

    python examples/vmap_sweep.py            # 30 epochs per model
    python examples/vmap_sweep.py --quick    # 2 epochs (CI)

Writes ``vmap_sweep.png``: final training loss against the learning rate (each seed a dot,
the mean a line); too small learns slowly, too large diverges.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet import data, nn, ops, optim, train
import _common

MODEL = nn.serial(nn.Dense(64), nn.ReLU(), nn.Dense(10))
LEARNING_RATES = np.logspace(-3, 0.5, 8).astype(np.float32)
SEEDS = np.arange(4)


def make_run(x, y, epochs, batch_size=64):
    def run(lr, seed):
        key = jax.random.PRNGKey(seed)
        _, params, state = MODEL.init(key, (-1, x.shape[1]))
        opt = optim.sgd(lr)
        step = train.train_step(MODEL, opt)

        def epoch(carry, k):
            xb, yb = data.epoch_batches(x, y, batch_size, k)

            def body(c, batch):
                *c, _ = step(*c, *batch, k)
                return tuple(c), None

            return lax.scan(body, carry, (xb, yb))[0], None

        carry = (params, state, opt.init(params))
        (params, state, _), _ = lax.scan(epoch, carry, jax.random.split(key, epochs))
        loss = ops.softmax_cross_entropy(MODEL.apply(params, state, x)[0], y)
        return jnp.where(jnp.isfinite(loss), loss, jnp.asarray(jnp.inf, loss.dtype))

    over_seeds = jax.vmap(run, in_axes=(None, 0))
    return jax.jit(jax.vmap(over_seeds, in_axes=(0, None)))  # (lrs, seeds) -> (8, 4)


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    x_train, _, y_train, _ = _common.digits(flatten=True)
    sweep = make_run(jnp.asarray(x_train), jnp.asarray(y_train), 2 if args.quick else args.epochs)
    final = np.asarray(sweep(jnp.asarray(LEARNING_RATES), jnp.asarray(args.seed + SEEDS)))
    for lr, row in zip(LEARNING_RATES, final):
        print(f"lr {lr:8.4f}: final loss " + "  ".join(f"{v:.4f}" for v in row))

    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    shown = np.where(np.isfinite(final), final, np.nan)
    for s in range(len(SEEDS)):
        ax.plot(LEARNING_RATES, shown[:, s], "o", alpha=0.5, color="C0")
    ax.plot(LEARNING_RATES, np.nanmean(shown, axis=1), "-", color="C1", label="mean of 4 seeds")
    ax.set(xscale="log", yscale="log", xlabel="learning rate (SGD)",
           ylabel="final training loss", title="8 learning rates × 4 seeds, one jit call")
    ax.grid(alpha=0.3)
    ax.legend()
    _common.savefig(fig, args.out, "vmap_sweep.png")
    return final


if __name__ == "__main__":
    main()
