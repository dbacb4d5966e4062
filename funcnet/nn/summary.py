"""Parameter counts and a printable model summary, branches and nesting indented."""
from __future__ import annotations

import jax

from funcnet import _checks
from funcnet.nn.base import Layer, count_params, fmt, record_inits

__all__ = ["count_params", "summary"]


def _batch_as(shape, size):
    """A shape (or nested tuple of shapes) with its ``-1`` batch sizes replaced."""
    if isinstance(shape, (tuple, list)) and any(isinstance(d, (tuple, list)) for d in shape):
        return tuple(_batch_as(s, size) for s in shape)
    return tuple(size if d == -1 else d for d in shape)


def _show(shape) -> str:
    """``-1`` batch sizes as ``N``; tuples of shapes (branches) nested."""
    return fmt(_batch_as(shape, "N"))


def _traced(shape):
    """A shape (or tuple of shapes) with ``-1`` replaced by 1, for tracing ``apply``."""
    return _batch_as(shape, 1)


def summary(model: Layer, input_shape, input_dtype=None) -> str:
    """A table of the model's layers: name, output shape, parameter count; then totals.

    Every sub-layer of a combinator is a row, indented under it and numbered by its path
    (``2.1`` is layer 1 of layer 2), so ``parallel`` branches and ``Residual`` blocks show
    their structure; a combinator's row counts the parameters of its whole subtree, so
    the rows of one depth add up to the total. ``-1`` batch dimensions print as ``N``.
    Only shapes are traced (``jax.eval_shape``): ``init`` to find the rows, and ``apply``
    on an input of ``input_shape`` and ``input_dtype`` to check that it returns the
    shape ``init`` promised. State (batch-norm running statistics) is counted separately
    from trainable parameters.

    Args:
      model: a :class:`Layer`.
      input_shape: as for ``model.init`` (a tuple of shapes for a multi-input model).
      input_dtype: dtype of the traced input (``None``: JAX's default float dtype; pass an
        integer dtype for a model that starts with an ``Embedding``).

    Returns:
      A multi-line string, e.g.::

        Layer            Output shape     Params
        ==========================================
        0 Dense(100)     (N, 100)         78,500
        1 ReLU           (N, 100)              0
        ...
        Total params: 79,510

    Raises:
      ValueError: ``model.apply`` returns another shape than ``model.init`` promised.
    """
    out = {}

    def init(key):
        out["shape"], params, state = model.init(key, input_shape)
        return params, state

    (params, state), rows = record_inits(lambda: jax.eval_shape(init, jax.random.PRNGKey(0)))
    dtype = _checks.check_dtype("summary", "input_dtype", input_dtype, kind=jax.numpy.number)
    x = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, dtype), _traced(input_shape),
                               is_leaf=lambda s: isinstance(s, tuple) and all(
                                   isinstance(d, int) for d in s))
    y = jax.eval_shape(lambda p, s, x: model.apply(p, s, x)[0], params, state, x)
    got = jax.tree_util.tree_map(lambda a: tuple(a.shape), y)
    if got != _traced(out["shape"]):
        raise ValueError(f"summary: {model.name}.apply returns shape {fmt(got)} on an input "
                         f"of shape {fmt(_traced(input_shape))}, but init promised "
                         f"{_show(out['shape'])}")
    if rows:
        table = [("  " * (len(r.path) - 1) + ".".join(map(str, r.path)) + " " + r.layer.name,
                  _show(r.output_shape), r.n_params) for r in rows]
    else:
        table = [(model.name, _show(out["shape"]), count_params(params))]
    w_name = max([len("Layer")] + [len(r[0]) for r in table]) + 2
    w_shape = max([len("Output shape")] + [len(r[1]) for r in table]) + 2
    w_par = max([len("Params")] + [len(f"{r[2]:,}") for r in table])
    header = f"{'Layer':<{w_name}}{'Output shape':<{w_shape}}{'Params':>{w_par}}"
    lines = [header, "=" * len(header)]
    lines += [f"{name:<{w_name}}{shape:<{w_shape}}{n:>{w_par},}" for name, shape, n in table]
    lines.append("=" * len(header))
    lines.append(f"Total params: {count_params(params):,}")
    if count_params(state):
        lines.append(f"Non-trainable state: {count_params(state):,}")
    lines.append(f"Input shape: {_show(input_shape)}  Output shape: {_show(out['shape'])}")
    return "\n".join(lines)
