"""The zoom line search (strong Wolfe conditions), optax's ``scale_by_zoom_linesearch``:
Nocedal & Wright's Algorithms 3.5 (bracketing) and 3.6 (zoom, by cubic / quadratic
interpolation or bisection), with Hager & Zhang's approximate sufficient decrease as
optax. State classes ``ScaleByZoomLinesearchState`` and ``ZoomLinesearchInfo`` are optax
0.2.8's; the loop's own carry is private. See :mod:`.linesearch` for the protocol.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    Updates, check_count, check_nonnegative, check_state, optimizer, zeros_like)
from funcnet.optim.linesearch import (
    add_scale, cast_tree_like, check_factor, check_line_args, default_float, default_int,
    failed_print, real_dtype, scale_tree, tree_vdot, value_fn_kwargs)
from funcnet._describe import described

_map = jax.tree_util.tree_map
_STRATEGIES = ("one", "keep")


class ZoomLinesearchInfo(NamedTuple):
    """optax's ``ZoomLinesearchInfo``: the number of ``value_fn`` evaluations of the last
    search and its final sufficient-decrease and curvature errors (0: satisfied)."""

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """optax's ``ScaleByZoomLinesearchState``: the accepted step size, the loss and its
    gradient there (read by :func:`value_and_grad_from_state`) and the info."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Updates
    info: ZoomLinesearchInfo


class _Zoom(NamedTuple):
    """The search's carry: the last point tried, its errors, the phase flags, the
    bracket ``[low, high]`` (``f(low) <= f(high)``, not ``low < high``), the reference
    point of the cubic and the best point with sufficient decrease so far (``safe``)."""

    count: jax.Array
    stepsize: jax.Array
    value: jax.Array
    grad: Any
    slope: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array
    done: jax.Array
    failed: jax.Array
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array
    cubic_ref: jax.Array
    value_cubic_ref: jax.Array
    safe_stepsize: jax.Array
    safe_value: jax.Array
    safe_grad: Any


def _where(cond, a, b):
    return _map(lambda x, y: jnp.where(cond, x, y), a, b)


def _cubicmin(a, fa, fpa, b, fb, c, fc):
    """Critical point of the cubic through ``(a, fa)``, ``(b, fb)``, ``(c, fc)`` with
    slope ``fpa`` at ``a`` (NaN when there is none: then the point is not used)."""
    db, dc = b - a, c - a
    denom = (db * dc) ** 2 * (db - dc)
    rb, rc = fb - fa - fpa * db, fc - fa - fpa * dc
    big_a = (dc ** 2 * rb - db ** 2 * rc) / denom
    big_b = (-(dc ** 3) * rb + db ** 3 * rc) / denom
    return a + (-big_b + jnp.sqrt(big_b * big_b - 3.0 * big_a * fpa)) / (3.0 * big_a)


def _quadmin(a, fa, fpa, b, fb):
    """Critical point of the parabola through ``(a, fa)``, ``(b, fb)`` with slope
    ``fpa`` at ``a``."""
    db = b - a
    return a - fpa / (2.0 * ((fb - fa - fpa * db) / db ** 2))


@described
def scale_by_zoom_linesearch(max_linesearch_steps, max_learning_rate=None, tol=0.0,
                             increase_factor=2.0, slope_rtol=1e-4, curv_rtol=0.9,
                             approx_dec_rtol=1e-6, stepsize_precision=1e-5,
                             initial_guess_strategy="keep", verbose=False):
    """Line search for a step satisfying the strong Wolfe conditions (optax's
    ``scale_by_zoom_linesearch``).

    With ``phi(eta) = f(w + eta u)``, ``phi'(eta) = Re<grad f(w + eta u), u>`` (``u``:
    the updates, a descent direction), ``c1 = slope_rtol``, ``c2 = curv_rtol``, a step
    is accepted when both errors are ``<= tol``::

        decrease:  max(phi(eta) - phi(0) - c1 eta phi'(0), 0), or, if smaller, Hager &
                   Zhang's approximate decrease max(phi'(eta) - (2 c1 - 1) phi'(0),
                   phi(eta) - phi(0) - approx_dec_rtol |phi(0)|, 0)
        curvature: max(|phi'(eta)| - c2 |phi'(0)|, 0)          (NaN counts as inf)

    Bracketing (N&W Alg. 3.5) tries ``eta_0`` (1 for ``"one"``, the last accepted
    step for ``"keep"``), then ``increase_factor`` times the last (capped at
    ``max_learning_rate``), until a bracket is found; zoom (Alg. 3.6) then tries the
    cubic interpolant's minimum (kept if inside the bracket by 20% of its length), else
    the quadratic's (10%), else the midpoint. When ``max_linesearch_steps`` evaluations
    are spent, or the bracket is shorter than ``stepsize_precision`` with a
    sufficient-decrease step in hand, the best such step is taken (else the last
    one; 0 if it gave inf/NaN). The output is ``eta u``; the state keeps ``eta``,
    ``phi(eta)`` and the gradient there for :func:`value_and_grad_from_state`.

    Args:
      max_linesearch_steps: an int >= 1, the most evaluations of ``value_fn`` (each a
        ``jax.value_and_grad``) per update.
      max_learning_rate: ``None`` or >= 0, the largest step.
      tol: >= 0, the tolerance of both criteria.
      increase_factor: >= 1, the bracketing growth factor.
      slope_rtol: >= 0, ``c1``.
      curv_rtol: >= 0, ``c2`` (``math.inf`` drops the curvature criterion).
      approx_dec_rtol: ``None`` (Armijo only) or >= 0.
      stepsize_precision: >= 0, the shortest bracket zoomed into.
      initial_guess_strategy: ``"keep"`` or ``"one"`` (for quasi-Newton directions).
      verbose: print (``jax.debug.print``) when a search fails.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByZoomLinesearchState`; ``update`` needs
      ``params``, ``value=``, ``grad=`` and ``value_fn=``, other keyword arguments go to
      ``value_fn``. Usage: see :func:`~funcnet.optim.lbfgs`.

    References:
      Nocedal & Wright, Numerical Optimization, 1999, Algorithms 3.5, 3.6. Hager &
      Zhang, "Algorithm 851: CG_DESCENT", ACM TOMS 2006,
      https://doi.org/10.1145/1132973.1132979.
    """
    fn = "scale_by_zoom_linesearch"
    check_count(fn, "max_linesearch_steps", max_linesearch_steps, 1)
    if max_learning_rate is not None:
        check_nonnegative(fn, "max_learning_rate", max_learning_rate)
    check_nonnegative(fn, "tol", tol)
    check_factor(fn, "increase_factor", increase_factor, 1.0)
    check_nonnegative(fn, "slope_rtol", slope_rtol)
    check_factor(fn, "curv_rtol", curv_rtol, 0.0, allow_inf=True)
    if approx_dec_rtol is not None:
        check_nonnegative(fn, "approx_dec_rtol", approx_dec_rtol)
    check_nonnegative(fn, "stepsize_precision", stepsize_precision)
    _checks.static_choice(fn, "initial_guess_strategy", initial_guess_strategy, _STRATEGIES)
    verbose = _checks.static_bool(fn, "verbose", verbose)

    def init(params):
        rd = real_dtype(params)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.asarray(1.0, rd), value=jnp.asarray(jnp.inf, rd),
            grad=zeros_like(params), info=ZoomLinesearchInfo(
                default_int(0), default_float(jnp.inf), default_float(jnp.inf)))

    def update(updates, state, params=None, *, value=None, grad=None, value_fn=None,
               **extra_args):
        check_state(fn, state, ScaleByZoomLinesearchState)
        check_line_args(fn, params, value, grad, value_fn)
        kwargs = value_fn_kwargs(fn, value_fn, extra_args)
        value_and_grad = jax.value_and_grad(value_fn)
        rd = real_dtype(params)
        with jax.numpy_dtype_promotion("standard"):
            final = _search(value_and_grad, kwargs, params, updates, value, grad, state, rd)
        failed_print(verbose, (final.decrease_error > tol) | (final.curvature_error > tol),
                     f"{fn}: no step size satisfying both criteria found (step {{eta}}, "
                     f"decrease error {{dec}}, curvature error {{curv}})",
                     eta=final.stepsize, dec=final.decrease_error,
                     curv=final.curvature_error)
        new_state = ScaleByZoomLinesearchState(
            final.stepsize, final.value, final.grad,
            ZoomLinesearchInfo(final.count, final.decrease_error, final.curvature_error))
        return scale_tree(final.stepsize, updates), cast_tree_like(new_state, state)

    def _search(value_and_grad, kwargs, params, updates, value0, grad0, state, rd):
        def scalar(x):
            return jnp.asarray(x).astype(rd)

        value0 = scalar(value0)
        slope0 = scalar(jnp.real(tree_vdot(updates, grad0)))
        c1, c2, eps = scalar(slope_rtol), scalar(curv_rtol), scalar(tol)

        def on_line(eta):
            v, g = value_and_grad(add_scale(params, eta, updates), **kwargs)
            return scalar(v), g, scalar(jnp.real(tree_vdot(_map(jnp.conj, g), updates)))

        def errors(eta, v, slope):
            dec = v - value0 - c1 * eta * slope0                        # N&W (3.7a)
            if approx_dec_rtol is not None:                             # H&Z (23), (26)
                approx = jnp.maximum(slope - (2 * c1 - 1.0) * slope0,
                                     v - value0 - approx_dec_rtol * jnp.abs(value0))
                dec = jnp.minimum(approx, dec)
            curv = jnp.abs(slope) - c2 * jnp.abs(slope0)                # N&W (3.7b)
            return tuple(jnp.where(jnp.isnan(e), jnp.inf, jnp.maximum(e, 0.0))
                         for e in (dec, curv))

        def bracket(s):                                                 # N&W Alg. 3.5
            eta = jnp.where(s.count == 0, guess, increase_factor * s.stepsize).astype(rd)
            if max_learning_rate is None:
                reached = jnp.asarray(False)
            else:
                reached = eta >= max_learning_rate
                eta = jnp.minimum(eta, max_learning_rate).astype(rd)
            v, g, slope = on_line(eta)
            dec, curv = errors(eta, v, slope)
            err = jnp.maximum(dec, curv)
            safe = _where(dec <= eps, (eta, v, g), (s.safe_stepsize, s.safe_value, s.safe_grad))
            high_new = (dec > 0.0) | ((v >= s.value) & (s.count > 0))
            low_new = (slope >= 0.0) & ~high_new
            prev, new = (s.stepsize, s.value, s.slope), (eta, v, slope)
            low, value_low, slope_low = _where(low_new, new, prev)
            high, value_high, slope_high = _where(low_new, prev, new)
            found = high_new | low_new | (err <= eps)
            done = (err <= eps) | (reached & ~found)
            failed = (s.count + 1 >= max_linesearch_steps) & ~done
            return _Zoom(s.count + 1, eta, v, g, slope, dec, curv, found, done, failed,
                         low, value_low, slope_low, high, value_high, slope_high, low,
                         value_low, *safe)

        def zoom(s):                                                    # N&W Alg. 3.6
            lo, hi = s.low, s.high
            delta = jnp.abs(hi - lo)
            left, right = jnp.minimum(hi, lo), jnp.maximum(hi, lo)
            cubic = _cubicmin(lo, s.value_low, s.slope_low, hi, s.value_high, s.cubic_ref,
                              s.value_cubic_ref)
            use_cubic = (cubic > left + 0.2 * delta) & (cubic < right - 0.2 * delta)
            quad = _quadmin(lo, s.value_low, s.slope_low, hi, s.value_high)
            use_quad = ~use_cubic & (quad > left + 0.1 * delta) & (quad < right - 0.1 * delta)
            eta = jnp.where(use_cubic, cubic,
                            jnp.where(use_quad, quad, (lo + hi) / 2.0)).astype(rd)
            v, g, slope = on_line(eta)
            dec, curv = errors(eta, v, slope)
            done = jnp.maximum(dec, curv) <= eps
            safe = _where((dec <= eps) & (v < s.safe_value), (eta, v, g),
                          (s.safe_stepsize, s.safe_value, s.safe_grad))
            high_mid = (dec > 0.0) | (v >= s.value_low)
            high_low = (slope * (hi - lo) >= 0.0) & ~high_mid
            mid, low3, high3 = ((eta, v, slope), (lo, s.value_low, s.slope_low),
                                (hi, s.value_high, s.slope_high))
            new_high = _where(high_low, low3, _where(high_mid, mid, high3))
            new_low = _where(high_mid, low3, mid)
            ref = _where(high_mid | high_low, (hi, s.value_high), (lo, s.value_low))
            too_small = delta <= stepsize_precision
            failed = (((s.count + 1) >= max_linesearch_steps)
                      | (too_small & (safe[0] > 0.0))) & ~done
            return _Zoom(s.count + 1, eta, v, g, slope, dec, curv, s.interval_found, done,
                         failed, *new_low, *new_high, *ref, *safe)

        def take_safe(s):       # out of steps: the best step with sufficient decrease
            use = (s.safe_stepsize > 0.0) | jnp.isinf(s.decrease_error)
            eta, v, g = _where(use, (s.safe_stepsize, s.safe_value, s.safe_grad),
                               (s.stepsize, s.value, s.grad))
            return s._replace(stepsize=eta, value=v, grad=g)

        def step(s):
            s2 = jax.lax.cond(s.interval_found, zoom, bracket, s)
            s2 = jax.lax.cond(s2.failed, take_safe, lambda x: x, s2)
            return cast_tree_like(s2, s)

        guess = scalar(1.0 if initial_guess_strategy == "one" else state.learning_rate)
        zero, inf, false = scalar(0.0), scalar(jnp.inf), jnp.asarray(False)
        start = _Zoom(jnp.asarray(0, jnp.int32), zero, value0, grad0, slope0, inf, inf,
                      false, false, false, zero, value0, slope0, zero, value0, slope0,
                      zero, value0, zero, value0, grad0)
        return jax.lax.while_loop(lambda s: ~(s.done | s.failed), step, start)

    return optimizer(init, update)
