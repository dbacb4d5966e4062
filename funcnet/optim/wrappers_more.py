"""More wrappers and small blocks with optax 0.2.8's names, signatures and states:
``reduce_on_plateau`` (``optax.contrib``), ``lookahead`` (``LookaheadParams``,
``LookaheadState``), ``apply_every``, ``freeze``, ``selective_transform``,
``keep_params_nonnegative`` and the ``scale_gradient`` function.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.base import (
    EmptyState, OptState, Params, Updates, cast_like, check_count, check_hyperparameter,
    check_state, one_minus, optimizer, promote_dtypes, safe_increment, select_tree,
    tree_dtype, zero_count, zeros_like)
from funcnet.optim.combine import call_update, masked, multi_transform
from funcnet.optim.regularization import _check_params
from funcnet.optim.transforms import _stateless, set_to_zero
from funcnet._describe import described

_map = jax.tree_util.tree_map


# ------------------------------------------------------------------ reduce on plateau


class ReduceLROnPlateauState(NamedTuple):
    """optax's ``ReduceLROnPlateauState``: the scale applied to the updates (lowest
    dtype of the parameters), the best averaged value so far and the running average
    (highest dtype), and three int32 counters."""

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array
    avg_value: jax.Array


@described
def reduce_on_plateau(factor=0.1, patience=10, rtol=1e-4, atol=0.0, cooldown=0,
                      accumulation_size=1, min_scale=0.0):
    """Scale the updates down when the loss stops improving (optax's
    ``optax.contrib.reduce_on_plateau``; Keras' and PyTorch's ``ReduceLROnPlateau``).

    ``update(..., value=loss)`` averages ``accumulation_size`` values, then compares the
    average ``a`` with the best one ``b``::

        improved:  a < (1 - rtol) b - atol          (then b <- a, plateau count 0)
        else the plateau count grows; when it reaches ``patience`` (outside a cooldown):
            scale <- max(factor * scale, min_scale),  plateau count 0,  cooldown <- cooldown
        during a cooldown: the count stays 0 and the cooldown counts down

    and every update is multiplied by ``scale`` (1 at the start). Chain it after an
    optimizer: ``chain(adam(1e-3), reduce_on_plateau(factor=0.5, patience=5))``; in
    such a chain :func:`~funcnet.optim.current_learning_rate` (and ``fit``'s history)
    reports the learning rate times ``scale``. ``funcnet.train.fit`` and ``train_step``
    pass ``value=`` the batch loss: with ``accumulation_size`` = the steps per epoch the
    average is the epoch's training loss.

    Args:
      factor: in (0, 1), the scale's multiplier at a plateau.
      patience: int >= 1 (optax accepts 0, which never reduces), the averaged values
        without improvement that make a plateau.
      rtol: in [0, 1], relative improvement needed.
      atol: >= 0, absolute improvement needed (``rtol`` and ``atol`` not both 0).
      cooldown: int >= 0, averaged values ignored after a reduction.
      accumulation_size: int >= 1, values averaged before each comparison.
      min_scale: >= 0, the smallest scale.

    Returns:
      An ``Optimizer`` with state :class:`ReduceLROnPlateauState`; ``update`` needs
      ``value=`` (a scalar). An optax state continues here; optax's update rebuilds the
      state in its own class inside a ``lax.cond``, so give it a funcnet state as
      ``optax.contrib.ReduceLROnPlateauState(*state)``.

    References:
      Keras' ``ReduceLROnPlateau`` callback; PyTorch's
      ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """
    fn = "reduce_on_plateau"
    check_hyperparameter(fn, "factor", factor, 0.0, 1.0, low_inclusive=False,
                         high_inclusive=False)
    check_hyperparameter(fn, "rtol", rtol, 0.0, 1.0)
    check_hyperparameter(fn, "atol", atol, 0.0)
    tols = (_checks.concrete(rtol), _checks.concrete(atol))
    if all(t is not None and float(t) == 0.0 for t in tols):
        raise ValueError(f"{fn}: rtol and atol are both 0: one must be positive")
    check_count(fn, "patience", patience, 1)
    check_count(fn, "cooldown", cooldown, 0)
    check_count(fn, "accumulation_size", accumulation_size, 1)
    check_hyperparameter(fn, "min_scale", min_scale, 0.0)

    def init(params):
        low, high = tree_dtype(fn, params, "lowest"), tree_dtype(fn, params, "highest")
        return ReduceLROnPlateauState(
            scale=jnp.ones((), low), best_value=jnp.full((), jnp.inf, high),
            plateau_count=zero_count(), cooldown_count=zero_count(), count=zero_count(),
            avg_value=jnp.zeros((), high))

    def compare(state):
        """optax's ``_update_scale``: the comparison after ``accumulation_size`` values."""
        avg, best, scale = state.avg_value, state.best_value, state.scale
        improved = avg < cast_like(1 - rtol, best) * best - cast_like(atol, best)
        plateau = jnp.where(improved, zero_count(), safe_increment(state.plateau_count))
        hit = jnp.logical_and(state.cooldown_count <= 0,
                              plateau == jnp.asarray(patience, jnp.int32))
        cooling = state.cooldown_count > 0
        reduced = jnp.maximum(jnp.where(hit, scale * cast_like(factor, scale), scale),
                              cast_like(min_scale, scale))
        return state._replace(
            best_value=jnp.where(improved, avg.astype(best.dtype), best),
            plateau_count=jnp.where(cooling | hit, zero_count(), plateau),
            scale=jnp.where(cooling, scale, reduced),
            cooldown_count=jnp.where(cooling, state.cooldown_count - 1, jnp.where(
                hit, jnp.asarray(cooldown, jnp.int32), zero_count())).astype(jnp.int32),
            count=zero_count(), avg_value=jnp.zeros_like(avg))

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ReduceLROnPlateauState)
        if value is None:
            raise TypeError(f"{fn}: update needs value= (the loss; funcnet.train's step "
                            f"passes it)")
        if np.shape(value) != ():
            raise ValueError(f"{fn}: value must be a scalar, got shape {np.shape(value)}")
        avg = state.avg_value
        count = safe_increment(state.count)
        mean = ((state.count.astype(avg.dtype) * avg + jnp.asarray(value).astype(avg.dtype))
                / count.astype(avg.dtype))
        state = state._replace(avg_value=mean, count=count)
        done = count == jnp.asarray(accumulation_size, jnp.int32)
        state = _map(lambda new, old: jnp.where(done, new, old), compare(state), state)

        def scaled(g):
            dt = promote_dtypes(g.dtype, state.scale.dtype)
            return state.scale.astype(dt) * g.astype(dt)

        return _map(scaled, updates), state

    def factor_fn(state):
        check_state(fn, state, ReduceLROnPlateauState)
        return state.scale

    return optimizer(init, update, learning_rate_factor_fn=factor_fn)


# ------------------------------------------------------------------------ lookahead


class LookaheadState(NamedTuple):
    """optax's ``LookaheadState``: the fast optimizer's state and the fast steps since
    the last synchronization (int32)."""

    fast_state: OptState
    steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
    """optax's ``LookaheadParams``: the fast parameters (take the gradients there) and
    the slow ones (evaluate there)."""

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> "LookaheadParams":
        """Fast and slow parameters both equal to ``params``."""
        return cls(slow=params, fast=params)


def _pair(fn, params):
    fast, slow = getattr(params, "fast", None), getattr(params, "slow", None)
    if fast is None or slow is None:
        raise ValueError(
            f"{fn}: update needs params=LookaheadParams(fast, slow) "
            f"(LookaheadParams.init_synced(params)), got {type(params).__name__}; "
            f"funcnet.train.fit and train_step pass the model's parameters, so lookahead "
            f"runs in a hand-written loop")
    return fast, slow


@described
def lookahead(fast_optimizer, sync_period, slow_step_size, reset_state=False):
    """Lookahead (Zhang et al., 2019), optax's ``lookahead``: ``fast_optimizer`` steps
    the fast parameters; every ``sync_period``-th step the slow ones move towards them
    and the fast ones restart from there::

        k-th step (k = sync_period):  slow <- slow + a (fast_k - slow),   fast <- slow

    with ``fast_k`` the fast parameters after the step and ``a = slow_step_size``. The
    parameters are a :class:`LookaheadParams` ``(fast, slow)``: take the gradients at
    ``params.fast``, evaluate at ``params.slow``, and apply the updates (a
    :class:`LookaheadParams` too) unchanged, with ``apply_updates(params, updates)``::

        params = LookaheadParams.init_synced(model_params)
        state = opt.init(params)
        updates, state = opt.update(jax.grad(loss)(params.fast), state, params)
        params = apply_updates(params, updates)

    Extra arguments of ``update`` go to ``fast_optimizer`` (optax's lookahead passes
    none). ``funcnet.train.fit`` trains the model's parameter tree itself (its step calls the
    model with them), so lookahead runs in a hand-written loop, not in ``fit``; nor
    inside ``chain`` (whose update checks that gradients and parameters match).

    Args:
      fast_optimizer: the inner optimizer (funcnet's or optax's).
      sync_period: int >= 1, fast steps per synchronization.
      slow_step_size: in [0, 1], ``a`` above.
      reset_state: re-initialize the fast optimizer's state at each synchronization
        (from the pre-step fast parameters, as optax). Selected leaf by leaf (a state
        keeps its dtypes, e.g. a bool flag; optax's arithmetic selection turns it into
        an int).

    Returns:
      An ``Optimizer`` with state :class:`LookaheadState`; its updates have the class of
      ``params`` (funcnet's or optax's ``LookaheadParams``).

    References:
      Zhang, Lucas, Hinton, Ba, "Lookahead Optimizer: k steps forward, 1 step back",
      NeurIPS 2019, https://arxiv.org/abs/1907.08610.
    """
    fn = "lookahead"
    _checks.check_optimizer(fn, "fast_optimizer", fast_optimizer)
    check_count(fn, "sync_period", sync_period, 1)
    check_hyperparameter(fn, "slow_step_size", slow_step_size, 0.0, 1.0)
    reset_state = _checks.static_bool(fn, "reset_state", reset_state)

    def init(params):
        fast = getattr(params, "fast", None)
        if fast is None:
            warnings.warn(f"{fn}: params has no attribute fast: init assumes it got the "
                          f"fast parameters (update needs LookaheadParams)", stacklevel=2)
            fast = params
        return LookaheadState(fast_state=fast_optimizer.init(fast),
                              steps_since_sync=zero_count())

    def update(updates, state, params=None, **extra_args):
        check_state(fn, state, LookaheadState)
        fast, slow = _pair(fn, params)
        updates, fast_state = call_update(fast_optimizer, updates, state.fast_state, fast,
                                          extra_args)
        sync = state.steps_since_sync == jnp.asarray(sync_period, jnp.int32) - 1

        def move(f, u, s):
            """optax's ``_lookahead_update``: (fast update, slow update) of one leaf."""
            dt = promote_dtypes(f.dtype, u.dtype, s.dtype)
            diff = f.astype(dt) + u.astype(dt) - s.astype(dt)
            on = sync.astype(dt)
            return (u.astype(dt) - on * one_minus(slow_step_size, diff) * diff,
                    cast_like(slow_step_size, diff) * on * diff)

        moved = _map(move, fast, updates, slow)
        treedef = jax.tree_util.tree_structure(fast)
        parts = treedef.flatten_up_to(moved)
        out = type(params)(fast=treedef.unflatten([p[0] for p in parts]),
                           slow=treedef.unflatten([p[1] for p in parts]))
        if reset_state:
            fresh = fast_optimizer.init(fast)
            fast_state = select_tree(sync, fresh, fast_state)
        steps = (state.steps_since_sync + 1) % jnp.asarray(sync_period, jnp.int32)
        return out, state._replace(fast_state=fast_state, steps_since_sync=steps)

    return optimizer(init, update)


# ---------------------------------------------------------------------- apply_every


class ApplyEvery(NamedTuple):
    """optax's ``ApplyEvery`` state: the call count modulo ``k`` and the running sum."""

    count: jax.Array
    grad_acc: Updates


@described
def apply_every(k=1):
    """Sum the updates of ``k`` calls and emit the sum every ``k``-th call, zeros in
    between (optax's ``apply_every``)::

        a_t = g_t + (a_{t-1} if t is not the first of its group of k)
        u_t = a_t if t is the last of its group else 0

    Blocks chained before it still update their states at every call: for an exact
    "k micro-batches = one step" use :func:`~funcnet.optim.accumulate` (``MultiSteps``).

    Args:
      k: int >= 1.

    Returns:
      An ``Optimizer`` with state :class:`ApplyEvery`.
    """
    fn = "apply_every"
    check_count(fn, "k", k, 1)

    def init(params):
        return ApplyEvery(count=zero_count(), grad_acc=zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ApplyEvery, updates, "grad_acc")
        k_ = jnp.asarray(k, jnp.int32)
        c = state.count % k_

        def add(g, a):
            dt = promote_dtypes(g.dtype, a.dtype)
            return jnp.where(c != 0, a.astype(dt), jnp.zeros((), dt)) + g.astype(dt)

        acc = _map(add, updates, state.grad_acc)
        out = _map(lambda a: jnp.where(c == k_ - 1, a, jnp.zeros_like(a)), acc)
        return out, state._replace(
            count=safe_increment(state.count) % k_,
            grad_acc=_map(lambda a, o: a.astype(o.dtype), acc, state.grad_acc))

    return optimizer(init, update)


# ----------------------------------------------------------------- freezing leaves


def _check_bool_mask(fn, name, mask) -> None:
    """A bool or a tree of bools (0-d bool arrays too): a static mask."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
        if not (isinstance(leaf, (bool, np.bool_)) or (
                _checks.is_array(leaf) and np.shape(leaf) == ()
                and jnp.issubdtype(leaf.dtype, jnp.bool_))):
            where = _checks.path_str(path) if path else ""
            raise TypeError(f"{fn}: {name}{where} must be a bool, got "
                            f"{type(leaf).__name__} (a static mask: a bool or a tree of "
                            f"bools)")


@described
def freeze(mask):
    """Zero the updates where ``mask`` is True (optax's ``freeze``):
    ``masked(set_to_zero(), mask)``.

    Args:
      mask: a bool (freeze everything or nothing), a tree of bools with the parameters'
        structure or a prefix of it, or a function ``params -> such a tree`` (static).

    Returns:
      An ``Optimizer`` with state :class:`~funcnet.optim.MaskedState`.
    """
    if not callable(mask):
        _check_bool_mask("freeze", "mask", mask)
    return masked(set_to_zero(), mask)


@described
def selective_transform(optimizer, *, freeze_mask):
    """Apply ``optimizer`` to the leaves where ``freeze_mask`` is False and zero the
    others (optax's ``selective_transform``): ``partition({"train": optimizer,
    "freeze": set_to_zero()}, labels)``; the frozen leaves get no optimizer state.

    Args:
      optimizer: the optimizer of the trained leaves.
      freeze_mask: keyword-only; a bool or a tree of bools with the parameters'
        structure (or a prefix of it), True where frozen. A function is refused (optax
        would read it as one True leaf and freeze everything).

    Returns:
      An ``Optimizer`` with state :class:`~funcnet.optim.PartitionState`.
    """
    fn = "selective_transform"
    _checks.check_optimizer(fn, "optimizer", optimizer)
    _check_bool_mask(fn, "freeze_mask", freeze_mask)
    labels = _map(lambda m: "freeze" if m else "train", freeze_mask)
    return multi_transform({"train": optimizer, "freeze": set_to_zero()},
                           lambda params: labels)


# ------------------------------------------------------------------- constraints


NonNegativeParamsState = EmptyState   # optax's alias


@described
def keep_params_nonnegative():
    """Keep the parameters >= 0 after the update (optax's ``keep_params_nonnegative``):
    ``u <- -w`` where ``w + u < 0`` (the parameter lands on 0), else ``u``. Put it last
    in a chain; a negative parameter is moved to 0.

    Returns:
      A stateless ``Optimizer``; ``update`` needs ``params``.
    """
    fn = "keep_params_nonnegative"

    def leaf(u, p):
        dt = promote_dtypes(u.dtype, p.dtype)
        u, p = u.astype(dt), p.astype(dt)
        return jnp.where(p + u < 0, -p, u)

    def transform(updates, params):
        _check_params(fn, updates, params)
        return _map(leaf, updates, params)

    return _stateless(fn, transform)


# ------------------------------------------------------------------ scale_gradient


@jax.custom_vjp
def _scale_gradient(inputs, scale):
    del scale
    return inputs


def _scale_gradient_fwd(inputs, scale):
    return inputs, scale


def _scale_gradient_bwd(scale, g):
    return _map(lambda x: x * cast_like(scale, x), g), None


_scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


def scale_gradient(inputs: Any, scale) -> Any:
    """The identity on a tree of arrays whose gradient is multiplied by ``scale`` in the
    backward pass (optax's ``scale_gradient``): ``y = x``, ``dL/dx = scale * dL/dy``.

    ``scale = 1`` returns ``inputs`` itself and ``scale = 0`` is
    ``jax.lax.stop_gradient`` (for concrete values, as optax).

    Args:
      inputs: a tree of arrays (or numbers).
      scale: a real number or scalar array (possibly traced; then never special-cased).

    Returns:
      ``inputs`` (the same values), with scaled gradients.
    """
    check_hyperparameter("scale_gradient", "scale", scale)
    s = _checks.concrete(scale)
    if s is not None and float(s) == 1.0:
        return inputs
    if s is not None and float(s) == 0.0:
        return jax.lax.stop_gradient(inputs)
    return _scale_gradient(inputs, jnp.asarray(scale))
