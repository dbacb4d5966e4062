"""Call strings of round 6's wrappers and blocks (optax 0.2.8's names), evaluated
verbatim in ``funcnet.optim`` and in optax on round 4's parameters and loss
(``_contrib_calls``). ``NORM`` is a measurement written with ``jnp`` only (the same
function in both libraries); calls holding ``value`` get ``value=`` the loss at each
update (:func:`needs_value`).
"""
CALLS = [
    # conditional updates (a step counter; extra args forwarded to the condition)
    "chain(conditionally_transform(scale_by_adam(), lambda s: s % 2 == 0), scale(-0.05))",
    "conditionally_mask(adam(0.05), lambda s, value: value > 2.0, True)",
    # named chain, flatten
    "named_chain(('clip', clip_by_global_norm(1.0)), ('opt', sgd(0.05, 0.9)))",
    "flatten(adam(0.05))",
    "flatten(chain(clip(0.5), sgd(0.05, 0.9)))",
    # norm scalings
    "normalize_by_update_norm(-0.1, 1e-3)",
    "chain(scale_by_param_block_norm(0.5), sgd(0.05))",
    # monitors
    "chain(sgd(0.05, 0.9), snapshot('norm', NORM), clip_by_global_norm(0.5))",
    "chain(sgd(0.05, 0.9), monitor({'norm': NORM, 'clipped': measure_with_ema("
    "lambda u: NORM(u) > 1.0, 0.9), 'avg': measure_with_ema(NORM, 0.5, False)}),"
    " clip_by_global_norm(1.0))",
    # protocol helpers
    "chain(stateless(lambda u, p: jax.tree.map(lambda g, w: g + 0.01 * w, u, p)), sgd(0.05))",
    "chain(stateless_with_tree_map(lambda g, w: g * jnp.tanh(w)), sgd(0.05, 0.9))",
    "with_extra_args_support(sgd(0.05))",
]


def needs_value(call: str) -> bool:
    return "value" in call


def NORM(tree):  # noqa: N802 - a constant of the call strings
    """The global norm, in plain ``jnp`` (so both libraries measure the same)."""
    import jax
    import jax.numpy as jnp
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))
