"""Linear SVM on the digits: multiclass hinge loss + L2, vanilla gradient descent (note 001).

Scores ``s = x W + b``; loss ``L = mean_i sum_{j != y_i} max(0, s_j - s_{y_i} + 1)
+ (reg / 2) sum W^2`` (:func:`funcnet.ops.multiclass_hinge`, :func:`funcnet.ops.l2_penalty`);
full-batch gradient descent ``W <- W - lr dL/dW`` run as one ``lax.scan``. Before
training, the analytic gradient (``jax.grad`` through the custom backward rules) is
compared with central differences (:func:`funcnet.gradcheck.numerical_grad`) in float64.

    python examples/linear_svm.py            # 500 steps, ~97 % test accuracy
    python examples/linear_svm.py --quick    # 30 steps (CI)

Writes ``linear_svm.png``: the loss curve and the ten learned weight templates.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet import gradcheck, ops, train
import _common

REG = 1e-3


def loss_fn(params, x, y, reg=REG):
    scores = ops.affine(x, params["w"], params["b"])
    return ops.multiclass_hinge(scores, y) + ops.l2_penalty(params["w"], reg)


def gradient_check(x, y):
    """Max relative error between ``jax.grad`` and central differences, in float64."""
    with jax.enable_x64(True):
        k = jax.random.PRNGKey(1)
        params = {"w": 0.01 * jax.random.normal(k, (x.shape[1], 10), jnp.float64),
                  "b": jnp.zeros((10,), jnp.float64)}
        xs = jnp.asarray(x[:20], jnp.float64)

        def f(p):
            return loss_fn(p, xs, y[:20])

        analytic, numeric = jax.grad(f)(params), gradcheck.numerical_grad(f, params)
        errors = [float(jnp.max(jnp.abs(a - n)) / (jnp.max(jnp.abs(a) + jnp.abs(n)) + 1e-12))
                  for a, n in zip(jax.tree_util.tree_leaves(analytic),
                                  jax.tree_util.tree_leaves(numeric))]
    for name, err in zip(sorted(params), errors):
        print(f"gradient check {name}: max relative error {err:.2e}")
    return max(errors)


def train_gd(x, y, steps, lr, key):
    params = {"w": 0.001 * jax.random.normal(key, (x.shape[1], 10), jnp.float32),
              "b": jnp.zeros((10,), jnp.float32)}

    @jax.jit
    def run(params):
        def step(p, _):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y)
            return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), loss
        return lax.scan(step, params, None, length=steps)

    return run(params)


def main():
    p = _common.parser(__doc__)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.5)
    args = p.parse_args()
    x_train, x_test, y_train, y_test = _common.digits(flatten=True)
    err = gradient_check(x_train, y_train)
    assert err < 1e-6, f"analytic and numerical gradients differ: {err:.2e}"
    steps = 30 if args.quick else args.steps
    params, losses = train_gd(x_train, y_train, steps, args.lr, _common.keys(args.seed)[0])
    acc = float(train.accuracy(ops.affine(x_test, params["w"], params["b"]), y_test))
    print(f"{steps} steps: train loss {float(losses[-1]):.4f}, test accuracy {acc:.4f}")

    plt = _common.pyplot()
    fig = plt.figure(figsize=(10, 3.6))
    grid = fig.add_gridspec(2, 8)
    ax = fig.add_subplot(grid[:, :3])
    ax.plot(np.arange(1, steps + 1), np.asarray(losses))
    ax.set(xlabel="gradient-descent step", ylabel="hinge loss + L2", yscale="log",
           title=f"linear SVM, test accuracy {acc:.3f}")
    ax.grid(alpha=0.3)
    w = np.asarray(params["w"]).reshape(8, 8, 10)
    for c in range(10):
        a = fig.add_subplot(grid[c // 5, 3 + c % 5])
        a.imshow(w[:, :, c], cmap="RdBu_r")
        a.set_title(str(c))
        a.axis("off")
    _common.savefig(fig, args.out, "linear_svm.png")
    return acc


if __name__ == "__main__":
    main()
