"""Shared problems and reference optimizers for the funcnet.optim tests.

Each reference is a direct NumPy transcription of the formula in the paper / note, on
the flattened parameter vector (every optimizer here acts elementwise, except the global
norm clip, which is a norm of the whole vector), written independently of funcnet.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import funcnet.optim as optim


STEPS = 100

# ------------------------------------------------------------------------ problems

_rng = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_rng.normal(size=(5, 5)))
A = _Q @ np.diag([0.5, 1.0, 3.0, 10.0, 20.0]) @ _Q.T  # condition number 40
B = _rng.normal(size=5)
QUAD_PARAMS = {"a": jnp.asarray(_rng.normal(size=3)), "b": jnp.asarray(_rng.normal(size=2))}
QUAD_MIN = float(-0.5 * B @ np.linalg.solve(A, B))


def quad_loss(params):
    w = jnp.concatenate([params["a"], params["b"]])
    return 0.5 * w @ jnp.asarray(A, w.dtype) @ w - jnp.asarray(B, w.dtype) @ w


MLP_X = jnp.asarray(_rng.normal(size=(32, 8)))
MLP_Y = jnp.asarray(_rng.integers(0, 3, size=32), dtype=jnp.int32)


def mlp_init(key, dtype=jnp.float64):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (8, 16), dtype) / np.sqrt(8).astype(dtype),
            "b1": jnp.zeros(16, dtype),
            "w2": jax.random.normal(k2, (16, 3), dtype) / np.sqrt(16).astype(dtype),
            "b2": jnp.zeros(3, dtype)}


def mlp_loss(params):
    x = MLP_X.astype(params["w1"].dtype)
    h = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    logits = h @ params["w2"] + params["b2"][None, :]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, MLP_Y[:, None], axis=1))


MLP_PARAMS = mlp_init(jax.random.PRNGKey(0))
PROBLEMS = {"quadratic": (quad_loss, QUAD_PARAMS), "mlp": (mlp_loss, MLP_PARAMS)}


# ------------------------------------------------------------------- runners


def run(opt, loss, params, steps=STEPS):
    """``steps`` optimizer steps under lax.scan; returns (final params, losses[steps])."""

    def body(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optim.apply_updates(p, u), s), value

    (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
    return p, losses


@functools.lru_cache(maxsize=None)
def flat_grad(problem):
    """Jitted ``flat params -> flat gradient`` of a problem (compiled once per process)."""
    loss, params = PROBLEMS[problem]
    unravel = ravel_pytree(params)[1]
    return jax.jit(lambda x: ravel_pytree(jax.grad(loss)(unravel(x)))[0])


def run_reference(ref, problem, steps=STEPS, x0=None):
    """Plain Python loop of a NumPy reference on the flat vector from the problem's start
    (or ``x0``); returns flat params."""
    grad = flat_grad(problem)
    x = np.asarray(ravel_pytree(PROBLEMS[problem][1])[0] if x0 is None else x0, np.float64)
    init, step = ref
    state = init(x)
    for t in range(1, steps + 1):
        g = np.asarray(grad(jnp.asarray(x)), np.float64)
        x, state = step(x, g, state, t)
    return x


@functools.lru_cache(maxsize=None)
def reference_trajectory(oid, problem):
    """``run_reference`` of OPTIMIZERS' case ``oid`` from the problem's start, run once per
    process (read-only: callers must not modify it)."""
    (ref, lr), = [(r, lr) for i, _, r, lr in OPTIMIZERS if i == oid]
    return run_reference(ref(lr), problem)


@functools.lru_cache(maxsize=None)
def table_trajectories(problem):
    """Every optimizer of OPTIMIZERS on one problem, in ONE compiled call (compiling the
    14 scans together is several times cheaper than 14 separate jits on 2 CPU cores).

    Returns {id: (final flat params as NumPy, losses as NumPy)}.
    """
    loss, params = PROBLEMS[problem]
    out = jax.jit(lambda: {oid: run(make(lr), loss, params)
                           for oid, make, _, lr in OPTIMIZERS})()
    return {k: (np.asarray(ravel_pytree(p)[0]), np.asarray(l)) for k, (p, l) in out.items()}


# ------------------------------------------------- references (formulas of the notes)


def ref_sgd(lr):  # notes 001/003/004: W <- W - lr dL/dW
    return (lambda x: None), (lambda x, g, s, t: (x - lr * g, None))


def ref_momentum_classic(lr, beta):  # note 003: v <- beta v - lr g ; W <- W + v
    def step(x, g, v, t):
        v = beta * v - lr * g
        return x + v, v
    return np.zeros_like, step


def ref_nesterov_classic(lr, beta):  # Sutskever 2013: v <- beta v - lr g ; W += beta v - lr g
    def step(x, g, v, t):
        v = beta * v - lr * g
        return x + beta * v - lr * g, v
    return np.zeros_like, step


def ref_momentum_ema(lr, beta, nesterov=False):  # note 004: V = b V + (1-b) g ; W -= lr V
    def step(x, g, v, t):
        v = beta * v + (1 - beta) * g
        d = beta * v + (1 - beta) * g if nesterov else v
        return x - lr * d, v
    return np.zeros_like, step


def ref_adagrad(lr, g0=0.1, eps=1e-7):  # Duchi 2011, optax's G_0 and eps
    def step(x, g, h, t):
        h = h + g * g
        return x - lr * g / np.sqrt(h + eps), h
    return (lambda x: np.full_like(x, g0)), step


def ref_rmsprop(lr, rho=0.9, eps=1e-8):  # Tieleman & Hinton 2012
    def step(x, g, v, t):
        v = rho * v + (1 - rho) * g * g
        return x - lr * g / np.sqrt(v + eps), v
    return np.zeros_like, step


def ref_adam(lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, wd=0.0, lr_fn=None):
    """Notes 000/004 (004's W_t on the right read as W_{t-1}); AdamW when wd > 0."""
    def step(x, g, s, t):
        m, v = s
        a = lr if lr_fn is None else lr_fn(t - 1)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        return x - a * (m_hat / (np.sqrt(v_hat + eps_root) + eps) + wd * x), (m, v)
    return (lambda x: (np.zeros_like(x), np.zeros_like(x))), step


def ref_adam_folded(lr, b1=0.9, b2=0.999, eps_hat=lambda t: 1e-8):
    """Note 000, (modified): theta -= alpha_t m_t / (sqrt(v_t) + eps_hat)."""
    def step(x, g, s, t):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        alpha_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        return x - alpha_t * m / (np.sqrt(v) + eps_hat(t)), (m, v)
    return (lambda x: (np.zeros_like(x), np.zeros_like(x))), step


def ref_sgd_l2(lr, wd):  # note 001: GD on L + (wd/2) sum W^2
    return (lambda x: None), (lambda x, g, s, t: (x - lr * (g + wd * x), None))


def ref_clip_sgd(lr, c):  # Pascanu 2013: g <- g * c / ||g|| if ||g|| >= c
    def step(x, g, s, t):
        n = np.sqrt(np.sum(g * g))
        g = g if n < c else g * c / n
        return x - lr * g, None
    return (lambda x: None), step


def ref_lion(lr, b1=0.9, b2=0.99, wd=1e-3):  # Chen et al. 2023, Algorithm 2
    def step(x, g, m, t):
        c = b1 * m + (1 - b1) * g
        return x - lr * (np.sign(c) + wd * x), b2 * m + (1 - b2) * g
    return np.zeros_like, step


def ref_adamax(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):  # Kingma & Ba 2015, Algorithm 2
    def step(x, g, s, t):
        m, u = s
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)  # optax's eps, inside the max
        return x - lr * (m / (1 - b1 ** t) / u + wd * x), (m, u)
    return (lambda x: (np.zeros_like(x), np.zeros_like(x))), step


def ref_amsgrad(lr, b1=0.9, b2=0.999, eps=1e-8):  # Reddi et al. 2018 (on v_hat, as optax)
    def step(x, g, s, t):
        m, v, v_max = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        v_max = np.maximum(v_max, v / (1 - b2 ** t))
        return x - lr * (m / (1 - b1 ** t)) / (np.sqrt(v_max) + eps), (m, v, v_max)
    return (lambda x: (np.zeros_like(x),) * 3), step


def ref_adabelief(lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16):  # Zhuang 2020, Alg. 2
    def step(x, g, st, t):
        m, s = st
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps_root
        return x - lr * (m / (1 - b1 ** t)) / (np.sqrt(s / (1 - b2 ** t)) + eps), (m, s)
    return (lambda x: (np.zeros_like(x), np.zeros_like(x))), step


def ref_radam(lr, b1=0.9, b2=0.999, eps=1e-8, threshold=5.0):  # Liu et al. 2020, Alg. 2
    rho_inf = 2 / (1 - b2) - 1

    def step(x, g, s, t):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho < threshold:
            return x - lr * m_hat, (m, v)
        r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        return x - lr * r * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps), (m, v)
    return (lambda x: (np.zeros_like(x), np.zeros_like(x))), step


def _leafwise(fn, *vectors):
    """``fn(*leaves)`` (a number) for each parameter leaf of the flat vectors (ravel_pytree's
    order), spread over the leaf's entries: LAMB, LARS and Adafactor act per leaf."""
    sizes = _LEAF_SIZES[vectors[0].size]
    parts = zip(*[np.split(v, np.cumsum(sizes)[:-1]) for v in vectors])
    return np.concatenate([np.full(n, fn(*leaves)) for n, leaves in zip(sizes, parts)])


def _trust(w, a, coeff=1.0):
    """LAMB's / LARS's ratio ``coeff ||w|| / ||a||`` per leaf (1 where a norm is 0)."""
    def ratio(wl, al):
        wn, an = np.linalg.norm(wl), np.linalg.norm(al)
        return 1.0 if wn == 0 or an == 0 else coeff * wn / an
    return _leafwise(ratio, w, a)


def ref_lamb(lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.0):  # You et al. 2020, Algorithm 2
    def step(x, g, s, t):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        a = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * x
        return x - lr * _trust(x, a) * a, (m, v)
    return (lambda x: (np.zeros_like(x), np.zeros_like(x))), step


def ref_lars(lr, coeff=0.001, wd=0.0, momentum=0.9, nesterov=False):  # You et al. 2017
    def step(x, g, v, t):
        a = g + wd * x
        a = _trust(x, a, coeff) * a
        v = momentum * v - lr * a
        return x + (momentum * v - lr * a if nesterov else v), v
    return np.zeros_like, step


def ref_adafactor(lr, clip=1.0, eps=1e-30):
    """Shazeer & Stern 2018, Algorithm 4 (no factoring: the leaves here are too small for
    optax's min_dim_size_to_factor=128), with update clipping, the relative step
    max(RMS(W), 1e-3) and optax's float32 decay 1 - t^-0.8."""
    rms = lambda a: np.sqrt(np.mean(a ** 2))  # noqa: E731

    def step(x, g, v, t):
        b = np.float32(1) - np.float32(t) ** np.float32(-0.8)
        v = np.float64(b) * v + np.float64(np.float32(1) - b) * (g ** 2 + eps)
        u = g / np.sqrt(v)
        u = u / _leafwise(lambda a: max(1.0, rms(a) / clip), u)
        return x - lr * u * _leafwise(lambda w: max(rms(w), 1e-3), x), v
    return np.zeros_like, step


def _warmup_cos(t, init=0.0, peak=0.1, warm=10, total=80, end=0.01):
    if t < warm:
        return init + (peak - init) * t / warm
    s = min(t - warm, total - warm)
    return end + (peak - end) * 0.5 * (1 + np.cos(np.pi * s / (total - warm)))


def _sched():
    return optim.warmup_cosine_decay_schedule(0.0, 0.1, 10, 80, end_value=0.01)


# id, funcnet factory (lr -> Optimizer), reference (lr -> (init, step)), lr
OPTIMIZERS = [
    ("sgd", lambda lr: optim.sgd(lr), ref_sgd, 0.05),
    ("momentum_classic", lambda lr: optim.momentum(lr, 0.9),
     lambda lr: ref_momentum_classic(lr, 0.9), 0.02),
    ("momentum_ema", lambda lr: optim.momentum(lr, 0.8, form="ema"),
     lambda lr: ref_momentum_ema(lr, 0.8), 0.1),
    ("nesterov_classic", lambda lr: optim.nesterov(lr, 0.9),
     lambda lr: ref_nesterov_classic(lr, 0.9), 0.02),
    ("nesterov_ema", lambda lr: optim.nesterov(lr, 0.9, form="ema"),
     lambda lr: ref_momentum_ema(lr, 0.9, nesterov=True), 0.1),
    ("adagrad", lambda lr: optim.adagrad(lr), ref_adagrad, 0.3),
    # decay 0.99: with 0.9 the quadratic run is sign-like near g = 0 and amplifies
    # 1e-17 rounding differences (XLA vs NumPy) to 1e-4 by step 80; the default 0.9 is
    # checked against optax on the MLP.
    ("rmsprop", lambda lr: optim.rmsprop(lr, 0.99),
     lambda lr: ref_rmsprop(lr, 0.99), 0.01),
    ("adam", lambda lr: optim.adam(lr), ref_adam, 0.05),
    ("adam_hparams", lambda lr: optim.adam(lr, 0.8, 0.99, 1e-3, 1e-6),
     lambda lr: ref_adam(lr, 0.8, 0.99, 1e-3, eps_root=1e-6), 0.05),
    ("adam_folded", lambda lr: optim.adam(lr, eps=1e-3, form="folded"),
     lambda lr: ref_adam_folded(lr, eps_hat=lambda t: 1e-3), 0.05),
    ("adamw", lambda lr: optim.adamw(lr, weight_decay=0.1),
     lambda lr: ref_adam(lr, wd=0.1), 0.05),
    ("sgd_l2", lambda lr: optim.chain(optim.add_decayed_weights(0.1), optim.sgd(lr)),
     lambda lr: ref_sgd_l2(lr, 0.1), 0.05),
    ("clip_sgd", lambda lr: optim.chain(optim.clip_by_global_norm(0.5), optim.sgd(lr)),
     lambda lr: ref_clip_sgd(lr, 0.5), 0.05),
    ("adam_schedule", lambda lr: optim.adam(_sched()),
     lambda lr: ref_adam(None, lr_fn=_warmup_cos), None),
    ("lion", lambda lr: optim.lion(lr), ref_lion, 0.01),
    ("lion_hparams", lambda lr: optim.lion(lr, 0.8, 0.95, weight_decay=0.1),
     lambda lr: ref_lion(lr, 0.8, 0.95, 0.1), 0.01),
    ("adamax", lambda lr: optim.adamax(lr), ref_adamax, 0.05),
    ("adamaxw", lambda lr: optim.adamaxw(lr, 0.8, 0.99, 1e-6, weight_decay=0.1),
     lambda lr: ref_adamax(lr, 0.8, 0.99, 1e-6, wd=0.1), 0.05),
    ("amsgrad", lambda lr: optim.amsgrad(lr), ref_amsgrad, 0.05),
    ("adabelief", lambda lr: optim.adabelief(lr), ref_adabelief, 0.02),
    ("radam", lambda lr: optim.radam(lr), ref_radam, 0.1),
    ("radam_threshold", lambda lr: optim.radam(lr, 0.8, 0.99, threshold=8.0),
     lambda lr: ref_radam(lr, 0.8, 0.99, threshold=8.0), 0.05),
    ("lamb", lambda lr: optim.lamb(lr, weight_decay=0.01),
     lambda lr: ref_lamb(lr, wd=0.01), 0.05),
    # lr 0.03: at 0.1 the MLP run reaches a zero loss by step 50, where LARS's step keeps
    # its size (||w|| / ||g|| grows as g -> 0) and the run turns chaotic: a 1e-14 change of
    # the start moved the final params by 2e-4 (test_references_are_well_conditioned)
    ("lars", lambda lr: optim.lars(lr, trust_coefficient=0.1),
     lambda lr: ref_lars(lr, 0.1), 0.03),
    ("lars_nesterov", lambda lr: optim.lars(lr, 0.01, trust_coefficient=0.1, momentum=0.8,
                                            nesterov=True),
     lambda lr: ref_lars(lr, 0.1, 0.01, 0.8, nesterov=True), 0.3),
    ("adafactor", lambda lr: optim.adafactor(lr), ref_adafactor, 0.05),
    ("adafactor_clip", lambda lr: optim.adafactor(lr, clipping_threshold=0.5),
     lambda lr: ref_adafactor(lr, clip=0.5), 0.05),
]
OPT_IDS = [o[0] for o in OPTIMIZERS]
_LEAF_SIZES = {sum(sizes): sizes for sizes in (
    [int(np.size(x)) for x in jax.tree_util.tree_leaves(p)] for _, p in PROBLEMS.values())}
