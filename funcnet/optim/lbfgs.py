"""L-BFGS: the block ``scale_by_lbfgs`` (two-loop recursion) and the named optimizer
``lbfgs`` (the block, a sign flip or learning rate, and a line search), with optax
0.2.8's names, signatures, defaults and state class ``ScaleByLBFGSState``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    Params, Updates, check_state, check_trees_match, optimizer, safe_increment)
from funcnet.optim.combine import chain
from funcnet.optim.linesearch import add_scale, cast_tree_like, scale_tree, tree_vdot
from funcnet.optim.linesearch_zoom import scale_by_zoom_linesearch
from funcnet.optim.regularization import squared_norm
from funcnet.optim.transforms import identity, scale, scale_by_learning_rate
from funcnet._describe import described

_map = jax.tree_util.tree_map


class ScaleByLBFGSState(NamedTuple):
    """optax's ``ScaleByLBFGSState``: ``count`` (int32), the params and updates of the
    last call, the ring buffers of the last ``m`` differences ``s_j = w_{j+1} - w_j`` and
    ``y_j = u_{j+1} - u_j`` (each leaf stacked: shape ``(m, *leaf.shape)``) and the
    weights ``rho_j = 1 / Re<y_j, s_j>`` (shape ``(m,)``, JAX's default float; 0 for an
    empty slot or ``<y, s> = 0``). Slot ``(count - 1) % m`` holds the newest pair."""

    count: jax.Array
    params: Params
    updates: Params
    diff_params_memory: Updates
    diff_updates_memory: Updates
    weights_memory: jax.Array


def _two_loop(u, dws, dus, rhos, gamma, oldest):
    """``P u`` for the L-BFGS inverse-Hessian approximation ``P`` (Nocedal & Wright,
    Algorithm 7.4): from the newest pair to the oldest ``a_j = rho_j Re<s_j, q>``,
    ``q -= a_j y_j``; then ``r = gamma q``; from the oldest to the newest ``b_j = rho_j
    Re<y_j, r>``, ``r += (a_j - b_j) s_j``. Empty slots have ``rho = 0`` (no-ops)."""
    m = rhos.shape[0]
    order = (oldest + jnp.arange(m)) % m           # oldest first, newest last

    def pair(i):
        return _map(lambda x: x[i], dws), _map(lambda x: x[i], dus)

    def backward(q, i):
        dw, du = pair(i)
        alpha = rhos[i] * jnp.real(tree_vdot(dw, q))
        return cast_tree_like(add_scale(q, -alpha, du), q), alpha

    q, alphas = jax.lax.scan(backward, u, order, reverse=True)
    r = cast_tree_like(scale_tree(gamma, q), q)

    def forward(r, i_alpha):
        i, alpha = i_alpha
        dw, du = pair(i)
        beta = rhos[i] * jnp.real(tree_vdot(du, r))
        return cast_tree_like(add_scale(r, alpha - beta, dw), r), None

    return jax.lax.scan(forward, r, (order, alphas))[0]


@described
def scale_by_lbfgs(memory_size=10, scale_init_precond=True):
    """The L-BFGS direction ``P_k u_k`` (optax's ``scale_by_lbfgs``), ``u_k`` the
    updates (gradients) and ``P_k`` the inverse-Hessian approximation of the last
    ``m = memory_size`` pairs ``s_j = w_{j+1} - w_j``, ``y_j = u_{j+1} - u_j``::

        P_{k,j+1} = V_j^T P_{k,j} V_j + rho_j s_j s_j^T,   V_j = I - rho_j y_j s_j^T,
        rho_j = 1 / Re<y_j, s_j> (0 if that is 0),         P_{k,k-m} = gamma_k I,
        gamma_k = Re<y_{k-1}, s_{k-1}> / |y_{k-1}|^2  (1 if |y| = 0; 1 without
                  scale_init_precond); gamma_0 = min(1, 1 / |u_0|)

    computed by the two-loop recursion (Nocedal & Wright, Algorithm 7.4) in ``O(m n)``.
    Each call first stores the pair made of the given params and updates and those of
    the previous call (nothing at the first call), then preconditions: in a chain with
    a line search, the memory is updated once the step is taken. The output is a
    descent *direction* (not negated): :func:`lbfgs` flips the sign.

    Args:
      memory_size: an int >= 1, ``m`` (the state holds ``2 m`` copies of the params).
      scale_init_precond: a bool, use ``gamma_k`` above (else the identity).

    Returns:
      An ``Optimizer`` with state :class:`ScaleByLBFGSState`; ``update`` needs
      ``params`` (extra keyword arguments are ignored).

    References:
      Nocedal & Wright, Numerical Optimization, 1999, Algorithms 7.4, 7.5. Liu &
      Nocedal, "On the limited memory BFGS method for large scale optimization",
      Math. Programming 1989.
    """
    fn = "scale_by_lbfgs"
    m = _checks.static_int(fn, "memory_size", memory_size, minimum=1)
    scale_init_precond = _checks.static_bool(fn, "scale_init_precond", scale_init_precond)

    def init(params):
        stacked = _map(lambda p: jnp.zeros((m,) + jnp.shape(p), jnp.result_type(p)), params)
        return ScaleByLBFGSState(
            count=jnp.zeros([], jnp.int32), params=_map(jnp.zeros_like, params),
            updates=_map(jnp.zeros_like, params), diff_params_memory=stacked,
            diff_updates_memory=stacked, weights_memory=jnp.zeros(m))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        check_state(fn, state, ScaleByLBFGSState, updates, "updates")
        if params is None:
            raise TypeError(f"{fn}: update needs params (the pairs s_j are differences "
                            f"of parameters)")
        check_trees_match(fn, "updates", updates, "params", params)
        if state.weights_memory.shape != (m,):
            raise ValueError(f"{fn}: state.weights_memory has shape "
                             f"{state.weights_memory.shape}, expected ({m},) (memory_size)")
        first = state.count == 0
        oldest, prev = state.count % m, (state.count - 1) % m
        with jax.numpy_dtype_promotion("standard"):
            ds = _map(lambda a, b: jnp.where(first, jnp.zeros_like(a), a - b), params,
                      state.params)
            dy = _map(lambda a, b: jnp.where(first, jnp.zeros_like(a), a - b), updates,
                      state.updates)
            sy = jnp.real(tree_vdot(dy, ds))
            rho = jnp.where(first | (sy == 0.0), 0.0, 1.0 / sy)
            dws, dus = (_map(lambda mem, d: mem.at[prev].set(d.astype(mem.dtype)), mem, d)
                        for mem, d in ((state.diff_params_memory, ds),
                                       (state.diff_updates_memory, dy)))
            rhos = state.weights_memory.at[prev].set(rho.astype(state.weights_memory.dtype))
            if scale_init_precond:
                yy = squared_norm(dy)
                norm = jnp.sqrt(squared_norm(jax.lax.stop_gradient(updates)))
                gamma = jnp.where(first, jnp.minimum(1.0, 1.0 / norm),
                                  jnp.where(yy > 0.0, sy / yy, 1.0))
            else:
                gamma = jnp.asarray(1.0)
            direction = _two_loop(updates, dws, dus, rhos, gamma, oldest)
        return direction, state._replace(
            count=safe_increment(state.count), params=params, updates=updates,
            diff_params_memory=dws, diff_updates_memory=dus, weights_memory=rhos)

    return optimizer(init, update)


@described
def lbfgs(learning_rate=None, memory_size=10, scale_init_precond=True,
          linesearch=scale_by_zoom_linesearch(max_linesearch_steps=20,
                                              initial_guess_strategy="one")):
    """L-BFGS (optax's ``lbfgs``): ``chain(scale_by_lbfgs(memory_size,
    scale_init_precond), scale(-1) or scale_by_learning_rate(learning_rate),
    linesearch)``, so ``w_{k+1} = w_k - eta_k P_k g_k`` with ``eta_k`` from the line
    search (by default :func:`scale_by_zoom_linesearch` with 20 evaluations and a first
    guess of 1), or the learning rate times the line search's step. See
    :func:`scale_by_lbfgs` for ``P_k``.

    The state is ``(ScaleByLBFGSState, EmptyState or ScaleByScheduleState,
    line-search state)``, optax's. Usage, as optax's (the gradient the line search
    computed at the accepted point is reused)::

        opt = funcnet.optim.lbfgs()
        value_and_grad = funcnet.optim.value_and_grad_from_state(f)
        state = opt.init(params)
        for _ in range(20):
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                        value_fn=f)
            params = funcnet.optim.apply_updates(params, updates)

    Args:
      learning_rate: ``None`` (the line search sets the step), or a number >= 0, an
        array or a schedule.
      memory_size: an int >= 1.
      scale_init_precond: a bool.
      linesearch: an optimizer taking ``value``/``grad``/``value_fn`` (the zoom or
        backtracking search), or ``None`` (no line search: then pass a learning rate).

    Returns:
      An ``Optimizer``; with a line search, ``update`` needs ``params``, ``value=``,
      ``grad=`` and ``value_fn=`` (other keyword arguments go to ``value_fn``).

    References:
      Nocedal & Wright, Numerical Optimization, 1999, Algorithms 7.4, 7.5. Liu &
      Nocedal, Math. Programming 1989.
    """
    fn = "lbfgs"
    with _checks.context(fn):
        base_scaling = scale(-1.0) if learning_rate is None else \
            scale_by_learning_rate(learning_rate)
        if linesearch is None:
            linesearch = identity()
        _checks.check_optimizer(fn, "linesearch", linesearch)
        return chain(scale_by_lbfgs(memory_size, scale_init_precond), base_scaling,
                     linesearch, name=fn)
