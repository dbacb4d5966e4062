"""A character-level transformer language model trained on Python's own source code.

The corpus exists offline on every machine with Python: a fixed list of modules of the
standard library (``textwrap.py``, ``functools.py``, ... read from ``sysconfig``'s stdlib
folder), as ASCII characters (anything else becomes ``?``). The model is a small GPT:
token and learned position embeddings, ``depth`` pre-norm blocks of causal
``MultiHeadAttention`` and a GELU MLP, each wrapped in ``nn.Residual``, a final
``LayerNorm`` and a ``Dense`` head over the 128 characters. Attention uses
``funcnet.ops.dot_product_attention``, whose backward rule keeps O(T) memory. Sampling
uses the same model built with ``decode=True`` (a key/value cache in its state).

::

    python examples/char_transformer.py            # 10 epochs of ~150 steps, ~4 min on 2 CPU cores
    python examples/char_transformer.py --quick    # CI smoke run (seconds)

Prints the model summary, one line per epoch, the test loss in bits per character, and
a sample continued from a prompt; writes ``char_transformer.png`` (training and test
loss per epoch).
"""
import sysconfig
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import nn, ops, optim, train
import _common

MODULES = ("textwrap.py", "functools.py", "string.py", "heapq.py", "bisect.py",
           "contextlib.py", "fractions.py", "random.py", "statistics.py", "shlex.py",
           "difflib.py", "dataclasses.py", "enum.py", "inspect.py", "argparse.py")
VOCAB = 128  # ASCII


def load_corpus(max_chars: int) -> np.ndarray:
    """The concatenated modules as int32 character codes in [0, 128)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    text = "".join((root / m).read_text(encoding="utf-8", errors="replace")
                   for m in MODULES if (root / m).is_file())
    codes = np.frombuffer(text.encode("ascii", errors="replace"), np.uint8)[:max_chars]
    return codes.astype(np.int32)


def windows(codes: np.ndarray, seq_len: int):
    """Non-overlapping ``(inputs, targets)`` windows ``(n, seq_len)`` shifted by one."""
    n = (len(codes) - 1) // seq_len
    x = codes[:n * seq_len].reshape(n, seq_len)
    y = codes[1:n * seq_len + 1].reshape(n, seq_len)
    return x, y


def build_model(seq_len: int, width: int, depth: int, heads: int, dropout: float,
                decode: bool = False):
    """The GPT; ``decode=True`` builds the same model (same params) with a key/value cache
    in its attention and position layers, for sampling one character at a time."""
    def block():
        attention = nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(heads, causal=True,
                                                                    decode=decode),
                              nn.Dropout(dropout))
        mlp = nn.serial(nn.LayerNorm(), nn.Dense(4 * width), nn.GELU(), nn.Dense(width),
                        nn.Dropout(dropout))
        return nn.serial(nn.Residual(attention), nn.Residual(mlp))

    return nn.serial(nn.Embedding(VOCAB, width), nn.PositionEmbedding(seq_len, decode=decode),
                     *[block() for _ in range(depth)], nn.LayerNorm(), nn.Dense(VOCAB))


def make_optimizer(lr: float, steps: int):
    """AdamW with gradient clipping and a linear warm-up (5 %) then cosine decay."""
    return optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(
        optim.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps),
        weight_decay=0.01))


def sample(decoder, params, prompt: str, length: int, seq_len: int, key,
           temperature: float = 0.8) -> str:
    """Autoregressive sampling with the key/value cache of ``decoder`` (the model built
    with ``decode=True``): one new character costs one position of attention per layer
    instead of a pass over the whole window. When the ``seq_len`` positions are used up,
    the cache is refilled with the last ``seq_len // 2`` characters."""
    codes = list(prompt.encode("ascii", errors="replace"))
    empty = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(
        lambda k: decoder.init(k, (1, seq_len))[2], jax.random.PRNGKey(0)))
    step = jax.jit(lambda cache, ids: decoder.apply(params, cache, ids))

    def prime(context):     # a fresh cache holding ``context``; the next character's logits
        logits, cache = step(empty, jnp.asarray(context, jnp.int32)[None])
        return logits[0, -1], cache, len(context)

    logits, cache, used = prime(codes[-seq_len:])
    for _ in range(length):
        key, sub = jax.random.split(key)
        codes.append(int(jax.random.categorical(sub, logits / temperature)))
        if used == seq_len:
            logits, cache, used = prime(codes[-(seq_len // 2):])
        else:
            logits, cache = step(cache, jnp.asarray([[codes[-1]]], jnp.int32))
            logits, used = logits[0, -1], used + 1
    return bytes(codes).decode("ascii", errors="replace")


def plot(history, out):
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    bits = 1 / np.log(2)
    ax.plot(history["epoch"], np.asarray(history["loss"]) * bits, "o-", label="train")
    ax.plot(history["epoch"], np.asarray(history["eval_loss"]) * bits, "s-", label="test")
    ax.set(xlabel="epoch", ylabel="bits per character", title="char-level transformer")
    ax.grid(alpha=0.3)
    ax.legend()
    return _common.savefig(fig, out, "char_transformer.png")


def main():
    p = _common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-chars", type=int, default=800_000)
    args = p.parse_args()
    if args.quick:
        args.epochs, args.seq_len, args.width, args.depth = 2, 32, 32, 1
        args.heads, args.max_chars, args.batch_size = 2, 20_000, 16
    t0 = time.perf_counter()
    x, y = windows(load_corpus(args.max_chars), args.seq_len)
    split = int(0.9 * len(x))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    model = build_model(args.seq_len, args.width, args.depth, args.heads, dropout=0.1)
    print(nn.summary(model, (-1, args.seq_len), input_dtype=jnp.int32))
    init_key, fit_key, sample_key = _common.keys(args.seed, 3)
    _, params, state = model.init(init_key, (-1, args.seq_len))
    steps = args.epochs * (len(x_train) // args.batch_size)
    opt = make_optimizer(args.lr, steps)
    params, state, _, history = train.fit(
        model, params, state, opt, (x_train, y_train), args.epochs,
        batch_size=args.batch_size, key=fit_key, eval_data=(x_test, y_test),
        loss_fn=ops.softmax_cross_entropy)
    result = train.evaluate(model, params, state, x_test, y_test)
    print(f"test loss {result['loss'] / np.log(2):.3f} bits/char, accuracy "
          f"{result['accuracy']:.3f} ({time.perf_counter() - t0:.1f} s in all)")
    decoder = build_model(args.seq_len, args.width, args.depth, args.heads, 0.1, decode=True)
    text = sample(decoder, params, "def ", 40 if args.quick else 300, args.seq_len,
                  sample_key)
    print("sample:\n" + text)
    plot(history, args.out)
    return result


if __name__ == "__main__":
    main()
