"""Optimizers as pure state transitions, with optax's protocol.

::

    opt = funcnet.optim.adam(learning_rate=1e-3)     # float, array or schedule(step)
    opt_state = opt.init(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = funcnet.optim.apply_updates(params, updates)

Named optimizers (:mod:`.aliases`) are ``chain``-s of blocks (:mod:`.transforms`,
:mod:`.regularization`); states are NamedTuples of arrays; schedules live in
:mod:`.schedules`; gradient accumulation in :mod:`.accumulate`.
"""
from funcnet.optim import schedules
from funcnet.optim.accumulate import AccumulateState, accumulate
from funcnet.optim.aliases import adagrad, adam, adamw, momentum, nesterov, rmsprop, sgd
from funcnet.optim.base import EmptyState, Optimizer, apply_updates, chain
from funcnet.optim.regularization import add_decayed_weights, clip_by_global_norm, global_norm
from funcnet.optim.schedules import (
    constant, cosine_decay, exponential_decay, piecewise_constant, warmup_cosine_decay)
from funcnet.optim.transforms import (
    MomentumState, ScaleByAdagradState, ScaleByAdamState, ScaleByRmsState,
    ScaleByScheduleState, scale, scale_by_adagrad, scale_by_adam, scale_by_learning_rate,
    scale_by_momentum, scale_by_rms, scale_by_schedule)

__all__ = [
    "Optimizer", "EmptyState", "apply_updates", "chain",
    "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
    "scale", "scale_by_learning_rate", "scale_by_schedule", "scale_by_momentum",
    "scale_by_adam", "scale_by_rms", "scale_by_adagrad",
    "MomentumState", "ScaleByAdamState", "ScaleByRmsState", "ScaleByAdagradState",
    "ScaleByScheduleState",
    "clip_by_global_norm", "add_decayed_weights", "global_norm",
    "accumulate", "AccumulateState",
    "schedules", "constant", "exponential_decay", "cosine_decay", "warmup_cosine_decay",
    "piecewise_constant",
]
