"""An LSTM tags every bracket of padded strings with its nesting depth: padded sequence
labels through ``fit``.

Each example is a string over ``(`` and ``)`` of length 2..``max_len`` (a random walk
that never closes below depth 0), padded with token 0 to one length; its label is, per
position, the depth after that bracket (a class in ``[0, max_len]``), and ``-100``
in the padding. The targets travel to ``fit`` as a dict, ``y = {"labels": (N, T),
"mask": (N, T)}``: every entry is shuffled, batched and (in ``evaluate``) padded with
the tokens, and the loss and the metric get the batch's dict::

    loss_fn    = softmax_cross_entropy(logits, t["labels"], where=t["mask"])
    metrics_fn = {"accuracy": train.accuracy(logits, t["labels"], where=t["mask"])}

so the padding never counts (a ``-100`` label in a plain array ``y`` is refused). The
model embeds the tokens and runs :class:`funcnet.nn.LSTM` time-major on ``(xs, None,
lengths)`` (outputs 0 at padded steps), then a Dense layer per step. ``--check`` reruns
the training with other labels in the padding and prints whether the parameters come out
bit for bit the same.

::

    python examples/depth_tagger.py            # 5 epochs, ~15 s on 2 CPU cores
    python examples/depth_tagger.py --check    # the padding's labels change nothing
    python examples/depth_tagger.py --quick    # CI smoke run (seconds)

Prints the model summary, one line per epoch, the test accuracy over all test tokens
(``evaluate`` weighs each string by its kept tokens) and, for comparison, the mean of
each string's accuracy; writes ``depth_tagger.png`` (loss and accuracy per epoch).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import nn, ops, optim, train
import _common

PAD, OPEN, CLOSE = 0, 1, 2
IGNORE = -100


def make_data(n: int, max_len: int, seed: int):
    """``(tokens (n, max_len) int32, {"labels", "mask"})``: depth after each bracket,
    ``IGNORE`` where padded."""
    rng = np.random.default_rng(seed)
    tokens = np.full((n, max_len), PAD, np.int32)
    labels = np.full((n, max_len), IGNORE, np.int32)
    for i, length in enumerate(rng.integers(2, max_len + 1, n)):
        depth = 0
        for t in range(length):
            opening = depth == 0 or rng.random() < 0.5
            depth += 1 if opening else -1
            tokens[i, t], labels[i, t] = (OPEN if opening else CLOSE), depth
    return tokens, {"labels": labels, "mask": tokens != PAD}


def Tagger(width: int, features: int, classes: int) -> nn.Layer:
    """Padded tokens ``(N, T)`` -> per-step class scores ``(N, T, classes)``."""
    embed, lstm, head = nn.Embedding(3, features), nn.LSTM(width), nn.Dense(classes)

    def init(key, input_shape):
        n, t = input_shape
        k_embed, k_lstm, k_head = jax.random.split(key, 3)
        _, p_embed, _ = embed.init(k_embed, (n, t))
        _, p_lstm, _ = lstm.init(k_lstm, ((t, -1, features), None, (-1,)))
        _, p_head, _ = head.init(k_head, (-1, width))
        return (n, t, classes), {"embed": p_embed, "lstm": p_lstm, "head": p_head}, ()

    def apply(params, state, tokens, *, key=None, train=False):
        lengths = jnp.sum(tokens != PAD, axis=1)                     # (N,)
        xs, _ = embed.apply(params["embed"], (), tokens.T)           # time-major (T, N, F)
        hs, _ = lstm.apply(params["lstm"], (), (xs, None, lengths))  # 0 at padded steps
        logits, _ = head.apply(params["head"], (), hs)               # (T, N, C)
        return jnp.swapaxes(logits, 0, 1), state

    return nn.Layer(init, apply, f"Tagger({lstm.name})")


def loss_fn(logits, t):
    return ops.softmax_cross_entropy(logits, t["labels"], where=t["mask"])


def metrics_fn(logits, t):
    return {"accuracy": train.accuracy(logits, t["labels"], where=t["mask"])}


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-len", type=int, default=30)
    p.add_argument("--train-size", type=int, default=8_000)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--check", action="store_true",
                   help="train again with other padding labels and compare the params")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.max_len, args.train_size, args.width = 2, 10, 512, 16
    t0 = time.perf_counter()
    x_train, y_train = make_data(args.train_size, args.max_len, seed=1)
    x_test, y_test = make_data(max(args.train_size // 4, 256), args.max_len, seed=2)
    model = Tagger(args.width, 16, args.max_len + 1)
    print(nn.summary(model, (-1, args.max_len), input_dtype=jnp.int32))
    init_key, fit_key = _common.keys(args.seed)
    _, params0, state0 = model.init(init_key, (-1, args.max_len))
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(args.lr))
    kw = dict(batch_size=args.batch_size, key=fit_key, loss_fn=loss_fn,
              metrics_fn=metrics_fn)
    params, state, _, history = train.fit(model, params0, state0, opt, (x_train, y_train),
                                          args.epochs, eval_data=(x_test, y_test), **kw)
    result = train.evaluate(model, params, state, x_test, y_test, loss_fn=loss_fn,
                            metrics_fn=metrics_fn)
    logits, _ = jax.jit(lambda x: model.apply(params, state, x))(x_test)
    mask = y_test["mask"]
    right = (np.asarray(jnp.argmax(logits, -1)) == y_test["labels"]) & mask
    per_string = (right.sum(1) / mask.sum(1)).mean()
    print(f"test accuracy {result['accuracy']:.3f} over all {int(mask.sum())} tokens "
          f"(evaluate), {per_string:.3f} as the mean of each string's "
          f"({time.perf_counter() - t0:.1f} s in all)")
    if args.check:
        other = {**y_train, "labels": np.where(y_train["mask"], y_train["labels"], 3)}
        again = train.fit(model, params0, state0, opt, (x_train, other), args.epochs,
                          progress=False, **kw)[0]
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(again),
                                                        jax.tree_util.tree_leaves(params)))
        print(f"other labels in the padding: params {'bit for bit equal' if same else 'DIFFER'}")
    _common.plot_loss_accuracy(history, args.out, "depth_tagger.png", "depth tagger")
    return result


if __name__ == "__main__":
    main()
