"""Parameter counts and a printable model summary."""
from __future__ import annotations

import math

import jax

from funcnet.nn.base import Layer, fmt

__all__ = ["count_params", "summary"]


def count_params(params) -> int:
    """Total number of scalars in a params pytree (arrays or ``jax.ShapeDtypeStruct`` s).

    E.g. ``Dense(100)`` on 784 inputs: ``784 * 100 + 100 = 78500``.
    """
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def _abstract_init(layer: Layer, shape):
    """``(output_shape, params)`` of ``layer.init`` without computing any array."""
    out = {}

    def f(key):
        out["shape"], params, state = layer.init(key, shape)
        return params, state

    params, state = jax.eval_shape(f, jax.random.PRNGKey(0))
    return out["shape"], params, state


def _rows(layer: Layer, shape, prefix: str, depth: int, rows: list):
    if layer.layers:
        for i, child in enumerate(layer.layers):
            shape = _rows(child, shape, f"{prefix}{i}.", depth + 1, rows)
        return shape
    out_shape, params, state = _abstract_init(layer, shape)
    n_state = count_params(state)
    rows.append((prefix.rstrip(".") + " " + layer.name if prefix else layer.name,
                 fmt(tuple("N" if d == -1 else d for d in out_shape)),
                 count_params(params), n_state))
    return out_shape


def summary(model: Layer, input_shape) -> str:
    """A table of the model's layers: name, output shape, parameter count; then totals.

    ``-1`` batch dimensions print as ``N``. Only shapes are traced (``jax.eval_shape``), so
    summarising a large model costs no memory. State (batch-norm running statistics) is
    counted separately from trainable parameters.

    Args:
      model: a :class:`Layer` (a :func:`serial` model is listed layer by layer, nested
        serials with dotted indices ``2.0``).
      input_shape: as for ``model.init``.

    Returns:
      A multi-line string, e.g.::

        Layer            Output shape     Params
        ==========================================
        0 Dense(100)     (N, 100)         78,500
        1 ReLU           (N, 100)              0
        ...
        Total params: 79,510
    """
    rows: list = []
    out_shape = _rows(model, tuple(input_shape), "", 0, rows)
    w_name = max([len("Layer")] + [len(r[0]) for r in rows]) + 2
    w_shape = max([len("Output shape")] + [len(r[1]) for r in rows]) + 2
    w_par = max([len("Params")] + [len(f"{r[2]:,}") for r in rows])
    header = f"{'Layer':<{w_name}}{'Output shape':<{w_shape}}{'Params':>{w_par}}"
    lines = [header, "=" * len(header)]
    for name, shape, n, _ in rows:
        lines.append(f"{name:<{w_name}}{shape:<{w_shape}}{n:>{w_par},}")
    lines.append("=" * len(header))
    total = sum(r[2] for r in rows)
    n_state = sum(r[3] for r in rows)
    lines.append(f"Total params: {total:,}")
    if n_state:
        lines.append(f"Non-trainable state: {n_state:,}")
    lines.append(f"Input shape: {fmt(tuple('N' if d == -1 else d for d in input_shape))}  "
                 f"Output shape: {fmt(tuple('N' if d == -1 else d for d in out_shape))}")
    return "\n".join(lines)
