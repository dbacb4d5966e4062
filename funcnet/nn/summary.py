"""Parameter counts and a printable model summary, branches and nesting indented."""
from __future__ import annotations

import jax

from funcnet.nn.base import (Layer, apply_shape, check_layer, count_params, fmt, is_shape,
                              record_inits)

__all__ = ["count_params", "summary"]


def _batch_as(shape, size):
    """A shape (or nested tuple of shapes, ``None`` entries kept) with its ``-1`` sizes
    replaced."""
    if shape is None:
        return None
    if not is_shape(shape):
        return tuple(_batch_as(s, size) for s in shape)
    return tuple(size if d == -1 else d for d in shape)


def _show(shape) -> str:
    """``-1`` sizes as ``N``; tuples of shapes (branches) nested."""
    return fmt(_batch_as(shape, "N"))


def summary(model: Layer, input_shape, input_dtype=None) -> str:
    """A table of the model's layers: name, output shape, parameter count; then totals.

    Every sub-layer of a combinator is a row, indented under it and numbered by its path
    (``2.1`` is layer 1 of layer 2), so ``parallel`` branches and ``Residual`` blocks show
    their structure; a combinator's row counts the parameters of its whole subtree, so
    the rows of one depth add up to the total. ``-1`` sizes print as ``N``. Only shapes
    are traced (``jax.eval_shape``): ``init`` to find the rows, and ``apply`` on an input
    of ``input_shape`` and ``input_dtype`` to check that it returns the shape ``init``
    promised. State (batch-norm running statistics) is counted separately from
    trainable parameters.

    Args:
      model: a :class:`Layer`.
      input_shape: as for ``model.init``: a shape, or a tuple of shapes for a multi-input
        model, with ``None`` for the recurrent layers' carry placeholder, e.g.
        ``((T, -1, D), None, (-1,))``.
      input_dtype: the dtype of the traced input: one dtype for every array, or a tuple
        of dtypes with the structure of ``input_shape`` (or a prefix of it, JAX's rule for
        ``in_axes``), where ``None`` is JAX's default float dtype (the entry of a
        ``None`` shape is ignored). Default ``None``: floats everywhere. Integer inputs
        say so: ``jnp.int32`` for a model that starts with an ``Embedding``;
        ``(None, None, jnp.int32)`` for an LSTM's ``((T, -1, D), None, (-1,))`` (lengths);
        ``(None, jnp.int32)`` for ``Bidirectional``'s ``((T, -1, D), (-1,))``; ``(None,
        jnp.bool_)`` for ``MultiHeadAttention``'s ``((-1, T, F), mask_shape)``.

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
      TypeError: ``model`` is not a Layer (a function, or ``nn.Dense`` not called); an
        input of the wrong dtype (float lengths, say): the message shows
        the dtypes traced and how to pass ``input_dtype``.
    """
    check_layer("summary", "model", model)
    out = {}

    def init(key):
        out["shape"], params, state = model.init(key, input_shape)
        return params, state

    (params, state), rows = record_inits(lambda: jax.eval_shape(init, jax.random.PRNGKey(0)))
    try:
        got = apply_shape("summary", model.apply, params, state, input_shape, input_dtype)
    except TypeError as err:
        raise TypeError(f"summary: {err} (summary traced {model.name}.apply on input_dtype="
                        f"{input_dtype!r}; pass input_dtype, a dtype or a tuple of dtypes "
                        f"shaped like input_shape, e.g. (None, None, jnp.int32) for "
                        f"((T, -1, D), None, (-1,)) with integer lengths)") from err
    if _show(got) != _show(out["shape"]):
        raise ValueError(f"summary: {model.name}.apply returns shape {_show(got)} on an input "
                         f"of shape {_show(input_shape)}, but init promised "
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
