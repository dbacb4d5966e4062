"""A vanilla RNN (note 004) learns to predict the next value of noisy sine waves.

Sequences ``x_t = sin(f t + phase)`` (random frequency and phase per sequence), time-major
``(T, N, 1)``. The model is note 004's RNN, ``h_t = tanh(x_t wx + h_{t-1} wh + b)``
(:class:`funcnet.nn.RNN`, backward = BPTT in one reverse ``lax.scan``), with a Dense head
on every step, ``o_t = h_t V + c`` (one ``serial`` model, initialised on ``(T, -1, 1)``),
trained on the mean squared error of ``o_t`` against ``x_{t+1}`` with Adam; the whole
training run is one ``lax.scan``.

    python examples/rnn_sequence.py            # 1500 steps, test MSE ~1e-3
    python examples/rnn_sequence.py --quick    # 100 steps (CI)

Writes ``rnn_sequence.png`` (loss curve and a predicted test sequence).
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet import nn, ops, optim
import _common

T, HIDDEN = 40, 32
model = nn.serial(nn.RNN(HIDDEN), nn.Dense(1))   # (T, N, 1) -> (T, N, H) -> (T, N, 1)


def sines(key, n):
    """``(T + 1, n, 1)`` float32 sine sequences with random frequency and phase."""
    kf, kp = jax.random.split(key)
    freq = jax.random.uniform(kf, (1, n, 1), jnp.float32, minval=0.1, maxval=0.4)
    phase = jax.random.uniform(kp, (1, n, 1), jnp.float32, maxval=2 * np.pi)
    t = jnp.arange(T + 1, dtype=jnp.float32).reshape(T + 1, 1, 1)
    return jnp.sin(freq * t + phase)


def predict(params, xs):
    return model.apply(params, ((), ()), xs)[0]


def loss_fn(params, seq):
    return ops.mean_squared_error(predict(params, seq[:-1]), seq[1:])


def main():
    p = _common.parser(__doc__)
    p.add_argument("--steps", type=int, default=1500)
    args = p.parse_args()
    k_init, k_data = _common.keys(args.seed)
    _, params, _ = model.init(k_init, (T, -1, 1))
    opt = optim.adam(3e-3)
    steps = 100 if args.quick else args.steps

    @jax.jit
    def run(params, key):
        def step(carry, k):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, sines(k, 64))
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optim.apply_updates(params, updates), opt_state), loss
        carry, losses = lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
        return carry[0], losses

    params, losses = run(params, k_data)
    test = sines(jax.random.PRNGKey(12345), 256)
    test_mse = float(loss_fn(params, test))
    print(f"{steps} steps: train MSE {float(losses[-1]):.2e}, test MSE {test_mse:.2e}")

    plt = _common.pyplot()
    fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_l.plot(np.asarray(losses))
    ax_l.set(xlabel="Adam step (batch of 64 sequences)", ylabel="MSE", yscale="log",
             title=f"vanilla RNN({HIDDEN}), test MSE {test_mse:.1e}")
    pred = np.asarray(predict(params, test[:-1]))[:, 0, 0]
    ax_s.plot(np.arange(T + 1), np.asarray(test)[:, 0, 0], "k-", label="sequence")
    ax_s.plot(np.arange(1, T + 1), pred, "o", ms=3, label="one-step prediction")
    ax_s.set(xlabel="t", title="a test sequence")
    ax_s.legend()
    for ax in (ax_l, ax_s):
        ax.grid(alpha=0.3)
    _common.savefig(fig, args.out, "rnn_sequence.png")
    return test_mse


if __name__ == "__main__":
    main()
