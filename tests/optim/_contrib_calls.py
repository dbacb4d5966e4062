"""Call strings of round 4's optimizers (Muon, schedule-free, Adan, Yogi, AdaDelta,
NovoGrad and the small blocks), evaluated verbatim in ``funcnet.optim`` and in optax
(``optax`` and ``optax.contrib`` merged), on parameters with a matrix ``w``, a vector
``b`` and a rank-3 ``t`` (Muon's batch of matrices).

``SCHED`` is one funcnet schedule given to both libraries: optax's own schedules
evaluate an int32 count in float32 (test_optim_schedules.py), so the calls that build
one inside optax (``warmup_steps=``) agree to 1e-6 only.
"""
import jax
import jax.numpy as jnp

import funcnet.optim as optim

SCHED = optim.linear_schedule(0.05, 0.01, 8)

CALLS = [
    # Muon: 2-D leaves by Newton-Schulz, the others by AdamW
    "muon(0.05)",
    "muon(0.05, (3.0, -3.2, 1.2), 4, 0.9, 1e-6, 0.1, nesterov=False, adam_b1=0.8, adam_b2=0.99,"
    " adam_eps_root=1e-9, adam_weight_decay=0.01, adam_learning_rate=0.01)",
    "muon(SCHED, ns_coeffs='dion', adaptive=True, preconditioning='aol', consistent_rms=0.2)",
    "muon(0.05, preconditioning='schatten', mu_dtype=jnp.float32,"
    " muon_weight_dimension_numbers={'w': MuonDimensionNumbers(), 'b': None,"
    " 't': MuonDimensionNumbers(0, (1, 2))})",
    "muon(0.05, ((3.0, -3.2, 1.2), (3.4445, -4.775, 2.0315)), 2, preconditioning='spectral',"
    " weight_decay=SCHED, weight_decay_mask=lambda p: jax.tree.map(lambda x: True, p),"
    " muon_weight_dimension_numbers=lambda p: {'w': None, 'b': None,"
    " 't': MuonDimensionNumbers(-1, 0)})",
    "multi_transform({'m': chain(scale_by_muon(beta=0.9, weight_dimension_numbers=lambda u:"
    " jax.tree.map(lambda x: MuonDimensionNumbers(), u)), scale(-0.05)), 's': sgd(0.1)},"
    " {'w': 'm', 'b': 's', 't': 'm'})",
    # schedule-free: a base optimizer without momentum, its x / y / z sequences
    "schedule_free_sgd()",
    "schedule_free_sgd(0.05, None, 0.8, 0.01, 1.0, jnp.float32)",
    "schedule_free_sgd(0.05, warmup_steps=3, weight_decay=0.01)",
    "schedule_free_adamw()",
    "schedule_free_adamw(0.05, None, 0.95, 0.99, 1e-6, 0.01, 0.5)",
    "schedule_free_adamw(0.05, warmup_steps=3, state_dtype=jnp.float32)",
    "schedule_free(adam(SCHED, b1=0.0), SCHED, b1=0.5)",
    "schedule_free(chain(clip_by_global_norm(1.0), sgd(0.05)), 0.05, weight_lr_power=0.0)",
    # Adan, Yogi, AdaDelta, NovoGrad
    "adan(0.02)",
    "adan(SCHED, 0.9, 0.8, 0.95, 1e-6, 0.0, 0.1, {'w': True, 'b': False, 't': True})",
    "yogi(0.05)",
    "yogi(SCHED, 0.8, 0.99, 1e-2)",
    "chain(scale_by_yogi(0.5, 0.9, 1e-4, 1e-8, 0.1), scale(-0.05))",
    "adadelta(5.0)",
    "adadelta(SCHED, 0.8, 1e-4, 0.01, lambda p: {'w': True, 'b': False, 't': True})",
    "novograd(0.05)",
    "novograd(SCHED, 0.8, 0.5, 1e-4, 1e-8, 0.01)",
    "chain(scale_by_novograd(mu_dtype=jnp.float32), scale(-0.05))",
    # small blocks and their aliases
    "chain(zero_nans(), adaptive_grad_clip(0.1), sgd(0.1))",
    "chain(adaptive_grad_clip(0.05, 1e-2, axis=(0,)), centralize(), adam(0.05))",
    "chain(centralize(), scale_by_sign(), scale(-0.01))",
    "sign_sgd(SCHED)",
    "signum(0.01, 0.5, jnp.float32)",
    "noisy_sgd(0.05, key=jax.random.key(3))",
    "noisy_sgd(SCHED, 0.1, 1.0, 7)",
    "chain(add_noise(0.01, 0.55, jax.random.key(1)), adam(0.05))",
]

PARAMS = {"w": jnp.array([[0.5, -1.0, 0.3, 0.8], [1.2, 0.1, -0.4, 0.6], [-0.7, 0.9, 0.2, -0.1]]),
          "b": jnp.array([0.5, -0.3, 0.1]),
          "t": jnp.arange(12.0).reshape(2, 3, 2) / 10 - 0.5}
STEPS = 8


def loss(p):
    """A smooth, non-quadratic objective coupling the rows and columns of each leaf."""
    w, t = p["w"], p["t"]
    return (jnp.sum((w @ w.T - jnp.eye(3)) ** 2) + jnp.sum(jnp.cos(w) * w)
            + jnp.sum((p["b"] - 1.0) ** 2 * jnp.arange(1.0, 4.0))
            + jnp.sum(t ** 4) + jnp.sum(jnp.sin(t) * t[::-1]))


def namespace(*libs):
    """The public names of ``libs`` (later ones win), ``jnp``, ``jax`` and ``SCHED``."""
    ns = {}
    for lib in libs:
        ns.update({k: getattr(lib, k) for k in dir(lib) if not k.startswith("_")})
    return {**ns, "jnp": jnp, "jax": jax, "SCHED": SCHED}


def steps(opt, params, state, n, scan=True):
    """``n`` updates on :func:`loss` (``lax.scan``: one compiled body; or a Python loop,
    cheaper eagerly). Returns the parameters and the state."""
    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return (optim.apply_updates(p, u), s), None

    if scan:
        return jax.lax.scan(body, (params, state), None, length=n)[0]
    carry = (params, state)
    for _ in range(n):
        carry = body(carry, None)[0]
    return carry
